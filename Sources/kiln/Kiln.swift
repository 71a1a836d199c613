import ArgumentParser

@main
struct Kiln: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kiln",
        abstract: "Kiln: a model server on HTTP/2.",
        subcommands: [Serve.self, Tokenize.self, Logprobs.self, ModelInfo.self],
        defaultSubcommand: Serve.self
    )
}
