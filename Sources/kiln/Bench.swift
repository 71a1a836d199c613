import ArgumentParser
import Foundation
import KilnModel

/// `kiln bench …`: measurements the `make bench-*` scripts drive; each figure is printed as a `BENCH` line.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Benchmarks (used by make bench-*).", subcommands: [BenchModel.self])
}

/// `kiln bench model`: GGUF open time, tokenizer throughput and the CPU reference decoder's speed.
struct BenchModel: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "model", abstract: "GGUF open time, tokenizer MB/s, CPU decoder tok/s.")

    @Option(help: "GGUF model.") var model = DefaultModel.path
    @Option(help: "Text file to tokenize.") var text: String?
    @Option(help: "Repetitions of each measurement (the median is reported).") var rounds = 5
    @Option(help: "Which figures: all, open, tokenizer, decoder.") var only = "all"
    @Option(name: .customLong("decode-tokens"), help: "Tokens the decoder generates.") var decodeTokens = 32

    func run() throws {
        if only == "all" || only == "open" {
            // Open from scratch each round: mmap plus header parse (metadata, vocabulary arrays, tensor table).
            let times = try (0..<rounds).map { _ in try seconds { _ = try GGUFFile(path: model) } }
            print(String(format: "BENCH gguf_open_ms %.2f ms", median(times) * 1000))
        }
        let file = try GGUFFile(path: model)
        if only == "all" || only == "tokenizer" {
            guard let text, let data = FileManager.default.contents(atPath: text) else {
                throw ValidationError("--text FILE is needed for the tokenizer figure")
            }
            let tokenizer = try Tokenizer(gguf: file)
            let bytes = [UInt8](data)
            var count = 0
            let times = (0..<rounds).map { _ in seconds { count = tokenizer.encode(bytes: bytes, parseSpecial: true).count } }
            print("tokenizer: \(bytes.count) bytes -> \(count) tokens")
            print(String(format: "BENCH tokenizer_mb_s %.2f MB/s", Double(bytes.count) / 1e6 / median(times)))
        }
        if only == "all" || only == "decoder" {
            let weights = try ReferenceWeights(gguf: file)
            let decoder = ReferenceDecoder(weights: weights)
            let prompt = [1, 9690, 198, 2683, 359, 253, 5356, 5646]  // a short ChatML-style prompt
            var logits = decoder.forward(prompt.filter { $0 < weights.config.vocabularySize })[0]
            let time = seconds {
                for _ in 0..<decodeTokens { logits = decoder.forward([argmax(logits)])[0] }
            }
            print(String(format: "BENCH cpu_decoder_tok_s %.2f tok/s", Double(decodeTokens) / time))
        }
    }

    private func seconds(_ body: () throws -> Void) rethrows -> Double {
        let start = DispatchTime.now().uptimeNanoseconds
        try body()
        return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    }

    private func median(_ xs: [Double]) -> Double { xs.sorted()[xs.count / 2] }
}
