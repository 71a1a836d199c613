import ArgumentParser
import Foundation
import KilnEngine
import KilnModel
import KilnVulkan

/// `kiln bench engine`: the closed-loop workload of `kiln bench serve` (the same prompts, greedy, end of
/// sequence ignored, every stream starting together) run on the engine directly — the scheduler driving the
/// decoder, no RPC, no server. `make bench-serve` divides the served tok/s by this figure: what is left is
/// the serving overhead (transport, RPC, streaming, the engine loop's hand-offs), with the prefill that both
/// runs must do taken out of the comparison.
struct BenchEngine: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "engine", abstract: "Closed-loop generation on the engine directly (no server).")

    @Option(help: "GGUF model.") var model = DefaultModel.path
    @Option(help: "Concurrent streams, comma-separated.") var concurrency = "16"
    @Option(name: .customLong("new-tokens"), help: "Tokens generated per request.") var newTokens = 64
    @Option(name: .customLong("step-tokens"), help: "Tokens computed in one step at most (as kiln serve's --step-tokens).") var stepTokens = 256
    @Option(name: .customLong("kv-blocks"), help: "KV blocks (as make bench-serve gives kiln serve).") var kvBlocks = 2048
    @Option(name: .customLong("vulkan-device"), help: "Vulkan device index.") var vulkanDevice: Int?
    @Option(help: "Decoder, as kiln serve's --backend (default auto: what kiln serve picks here).") var backend: BackendChoice = .auto
    @Flag(name: .customLong("compare-pipeline"),
          help: "Run each level with the scheduler's pipelined steps and without, alternating (rounds of each), and print both medians and their ratio.")
    var comparePipeline = false
    @Option(help: "Rounds of each when comparing.") var rounds = 3

    func run() throws {
        printLineByLine()
        let file = try GGUFFile(path: model)
        let tokenizer = try Tokenizer(gguf: file)
        let levels = try concurrency.split(separator: ",").map { guard let v = Int($0), v > 0 else { throw ValidationError("bad --concurrency") }; return v }
        let maxBatch = 64
        let decoder = try makeBackend(file: file, choice: backend, deviceIndex: vulkanDevice, blocks: kvBlocks,
                                      maxTokens: stepTokens, maxSequences: maxBatch, maxLogitRows: maxBatch)
        var serial = 0
        /// One closed-loop run of `streams` requests; returns generated tokens per second.
        func measure(_ streams: Int, pipelined: Bool?) throws -> Double {
            // A fresh cache per run, as bench serve's prompts are distinct (no prefix is shared).
            let scheduler = Scheduler(backend: decoder, cache: KVCacheManager(blockCount: kvBlocks, blockSize: 16), tokenBudget: stepTokens,
                                      maxRunning: maxBatch, pipelined: pipelined)
            var generated = 0
            let start = DispatchTime.now().uptimeNanoseconds
            for s in 0..<streams {
                serial += 1
                let prompt = tokenizer.encode(BenchServe.prompt(serial), addSpecial: true, parseSpecial: false)
                try scheduler.submit(GenerationRequest(id: s, prompt: prompt, maxTokens: newTokens, stopTokens: []))
            }
            while scheduler.hasWork { generated += try scheduler.step().filter { $0.token != nil }.count }
            return Double(generated) / (Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        }
        for streams in levels {
            guard comparePipeline else {
                print(String(format: "BENCH engine_c%d_n%d_tok_s %.2f tok/s", streams, newTokens, try measure(streams, pipelined: nil)))
                continue
            }
            // Interleaved A/B: the machine's swings hit both alike.
            var piped: [Double] = [], sync: [Double] = []
            for _ in 0..<rounds {
                piped.append(try measure(streams, pipelined: true))
                sync.append(try measure(streams, pipelined: false))
            }
            let a = piped.sorted()[piped.count / 2], b = sync.sorted()[sync.count / 2]
            print(String(format: "BENCH engine_c%d_n%d_pipelined_tok_s %.2f tok/s", streams, newTokens, a))
            print(String(format: "BENCH engine_c%d_n%d_synchronous_tok_s %.2f tok/s", streams, newTokens, b))
            print(String(format: "BENCH engine_c%d_n%d_pipelined_vs_synchronous_ratio %.3f x", streams, newTokens, a / b))
        }
    }
}
