import ArgumentParser
import Foundation
import KilnModel

/// `kiln tokenize`: the token ids of a text, on one line.
struct Tokenize: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the token ids of a text, separated by spaces.")

    @Option(help: "GGUF model or vocabulary-only file (default: the SmolLM2 model).") var model = DefaultModel.path
    @Option(help: "The text.") var text: String?
    @Option(help: "Read the text from this file (exact bytes).") var file: String?
    @Flag(name: .customLong("no-special"), help: "Do not parse special tokens written in the text.") var noSpecial = false

    func validate() throws {
        guard (text == nil) != (file == nil) else { throw ValidationError("give exactly one of --text and --file") }
    }

    func run() throws {
        let bytes: [UInt8]
        if let text {
            bytes = Array(text.utf8)
        } else if let file {
            guard let data = FileManager.default.contents(atPath: file) else { throw ValidationError("cannot read \(file)") }
            bytes = [UInt8](data)
        } else {
            bytes = []
        }
        let tokenizer = try Tokenizer(gguf: GGUFFile(path: model))
        // BOS only when the model's add_bos_token asks for it.
        let ids = tokenizer.encode(bytes: bytes, addSpecial: true, parseSpecial: !noSpecial)
        print(ids.map(String.init).joined(separator: " "))
    }
}
