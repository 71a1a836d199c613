import ArgumentParser

@main
struct Kiln: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kiln",
        abstract: "Kiln: a model server on HTTP/2.",
        subcommands: [Serve.self, Route.self, Chat.self, Generate.self, Tokenize.self, Logprobs.self, ModelInfo.self, MakeTestModel.self, Bench.self],
        defaultSubcommand: Serve.self
    )
}
