import ArgumentParser
import KilnModel

/// `kiln make-test-model OUT.gguf`: a small random-weight llama model for fast tests.
struct MakeTestModel: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "make-test-model", abstract: "Write a small random-weight llama (or qwen2) GGUF for tests.")

    @Option(help: "Transformer blocks.") var layers = 2
    @Option(help: "Embedding width.") var dim = 64
    @Option(name: .customLong("ffn-dim"), help: "Feed-forward width.") var ffnDim = 128
    @Option(help: "Attention heads.") var heads = 4
    @Option(name: .customLong("kv-heads"), help: "Key/value heads.") var kvHeads = 2
    @Option(help: "Context length.") var context = 512
    @Option(help: "Weight type: F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q4_K Q5_K Q6_K.") var type = "Q8_0"
    @Option(help: "Random seed.") var seed: UInt64 = 1
    @Option(help: "Architecture: llama, or qwen2 (biases on Q, K and V).") var architecture = "llama"
    @Argument(help: "Output file.") var output: String

    func run() throws {
        guard let t = GGMLType.allCases.first(where: { $0.description.caseInsensitiveCompare(type) == .orderedSame }) else {
            throw ValidationError("unknown type \(type) (one of \(GGMLType.allCases.map(\.description).joined(separator: " ")))")
        }
        guard dim % heads == 0, heads % kvHeads == 0, (dim / heads) % 2 == 0 else {
            throw ValidationError("--dim must split into --heads of even width, and --heads into --kv-heads")
        }
        guard ModelConfig.supportedArchitectures.contains(architecture) else {
            throw ValidationError("unknown architecture \(architecture) (one of \(ModelConfig.supportedArchitectures.joined(separator: " ")))")
        }
        var builder = TestModelBuilder()
        builder.architecture = architecture
        builder.layers = layers; builder.width = dim; builder.feedForwardWidth = ffnDim
        builder.heads = heads; builder.kvHeads = kvHeads; builder.contextLength = context
        builder.type = t; builder.seed = seed
        try builder.build().write(to: output)
        print("wrote \(output)")
    }
}
