import ArgumentParser
import KilnModel

/// `kiln model-info PATH`: the metadata and tensor table of a GGUF file.
struct ModelInfo: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "model-info", abstract: "Print a GGUF file's metadata and tensors.")

    @Argument(help: "GGUF file.") var path: String

    func run() throws {
        let file = try GGUFFile(path: path)
        print("GGUF version \(file.version), \(file.metadata.count) metadata keys, \(file.tensors.count) tensors, alignment \(file.alignment)")
        for key in file.metadataKeys {
            print("\(key) = \(file.metadata[key]!)")
        }
        if let config = try? ModelConfig(gguf: file) {
            print("config: \(config)")
        }
        print("tensors:")
        for t in file.tensors {
            print("  \(t.name)  \(t.type)  \(t.dimensions)  offset \(t.fileOffset)  \(t.byteCount) bytes")
        }
    }
}
