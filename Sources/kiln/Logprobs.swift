import ArgumentParser
import Foundation
import KilnModel
import KilnVulkan

/// `kiln logprobs --tokens "ID ..."`: teacher-forces the ids through the CPU reference decoder and prints,
/// for every position after the first, the log-probability of the given token and the top N.
struct Logprobs: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Teacher-force token ids and print log-probabilities as JSON lines.")

    @Option(help: "GGUF model (default: the SmolLM2 model `make model` fetches).") var model = DefaultModel.path
    @Option(help: "Decoder: auto (Vulkan on a real GPU, else the native CPU backend), vulkan (any Vulkan device, lavapipe included), cpu (the native CPU backend) or reference (the float32 oracle).") var backend: BackendChoice = .auto
    @Option(help: "Threads of the CPU backend (default: one per core).") var threads: Int?
    @Option(name: .customLong("vulkan-device"), help: "Vulkan device index (default: the best one).") var vulkanDevice: Int?
    @Option(help: "Token ids, separated by spaces.") var tokens: String
    @Option(name: .customLong("logits-out"), help: "Also write the raw float32 logits to this file.") var logitsOut: String?
    @Option(help: "How many of the most likely tokens to list per position.") var top = 5
    @Option(name: .customLong("kv-cache-type"), help: "KV pool element type on the Vulkan backend: f16 or f32.") var kvCacheType: KVCacheType = .f16

    func run() throws {
        let ids = try tokens.split(whereSeparator: { $0 == " " || $0 == "," }).map { piece -> Int in
            guard let id = Int(piece) else { throw ValidationError("not a token id: \(piece)") }
            return id
        }
        guard ids.count >= 2 else { throw ValidationError("--tokens needs at least two ids") }
        let file = try GGUFFile(path: model)
        let config = try ModelConfig(gguf: file)
        if let bad = ids.first(where: { $0 < 0 || $0 >= config.vocabularySize }) {
            throw ValidationError("token id \(bad) is outside the vocabulary (0..<\(config.vocabularySize))")
        }
        let decoder = try SequenceDecoder(file: file, backend: backend, deviceIndex: vulkanDevice, kvCache: kvCacheType, threads: threads)
        // Logits at position i predict token i + 1.
        let logits = try decoder.forward(Array(ids.dropLast()), logitCount: ids.count - 1)
        if let logitsOut {
            // Raw float32 rows, for comparing backends.
            let data = logits.flatMap { $0 }.withUnsafeBytes { Data($0) }
            try data.write(to: URL(fileURLWithPath: logitsOut))
        }
        for (i, row) in logits.enumerated() {
            let lp = logSoftmax(row)
            let best = lp.indices.sorted { lp[$0] > lp[$1] }.prefix(max(top, 0))
            let topJSON = best.map { "[\($0), \(json(lp[$0]))]" }.joined(separator: ", ")
            print("{\"pos\": \(i + 1), \"token\": \(ids[i + 1]), \"logprob\": \(json(lp[ids[i + 1]])), \"top\": [\(topJSON)]}")
        }
    }

    private func json(_ x: Double) -> String { x.isFinite ? String(format: "%.6f", x) : "-1e30" }
}
