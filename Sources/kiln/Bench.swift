#if canImport(Glibc)
@preconcurrency import Glibc   // C's `stdout`, for printLineByLine (first: a plain import before it wins)
#endif
import ArgumentParser
import Foundation
import KilnEngine
import KilnModel
import KilnVulkan

/// `kiln bench …`: measurements the `make bench-*` scripts drive; each figure is printed as a `BENCH` line.
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Benchmarks (used by make bench-*).", subcommands: [BenchModel.self, BenchDecode.self, BenchEngine.self, BenchServe.self, BenchRing.self])
}

/// Makes stdout line-buffered even into a pipe or file, so that a benchmark stopped by a time limit keeps the
/// figures it had printed (block-buffered, a killed `kiln bench decode` on a GPU machine printed nothing).
func printLineByLine() { setvbuf(stdout, nil, _IOLBF, 0) }

/// `kiln bench model`: GGUF open time, tokenizer throughput and the CPU reference decoder's speed.
struct BenchModel: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "model", abstract: "GGUF open time, tokenizer MB/s, CPU decoder tok/s.")

    @Option(help: "GGUF model.") var model = DefaultModel.path
    @Option(help: "Text file to tokenize.") var text: String?
    @Option(help: "Repetitions of each measurement (the median is reported).") var rounds = 5
    @Option(help: "Which figures: all, open, tokenizer, decoder.") var only = "all"
    @Option(name: .customLong("decode-tokens"), help: "Tokens the decoder generates.") var decodeTokens = 32

    func run() throws {
        printLineByLine()
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
            var logits = try decoder.forward(prompt.filter { $0 < weights.config.vocabularySize })[0]
            let time = try seconds {
                for _ in 0..<decodeTokens { logits = try decoder.forward([argmax(logits)])[0] }
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

/// `kiln bench decode`: the Vulkan decoder's prefill tok/s for one long prompt and decode tok/s at several
/// batch sizes (greedy on the device).
struct BenchDecode: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "decode", abstract: "Prefill and batched decode tok/s, on Vulkan or the CPU backend.")

    @Option(help: "GGUF model.") var model = DefaultModel.path
    @Option(name: .customLong("prompt-tokens"), help: "Prefill length.") var promptTokens = 512
    @Option(help: "Batch sizes for decode, comma-separated.") var batches = "1,4,16,32"
    @Option(help: "Decode steps timed per batch size.") var steps = 8
    @Option(name: .customLong("vulkan-device"), help: "Vulkan device index.") var vulkanDevice: Int?
    @Option(help: "cpu, vulkan, or auto (what `kiln serve` would pick).") var backend: BackendChoice = .auto
    @Option(help: "Threads of the CPU backend (default: one per core).") var threads: Int?
    @Flag(name: .customLong("compare-swiglu"),
          help: "Also run a decoder with SwiGLU as a dispatch of its own, alternating step by step with the fused one, and print both medians and their ratio.")
    var compareSwiGLU = false
    @Flag(name: .customLong("compare-norm-rope"),
          help: "Instead: the other decoder has RMSNorm and RoPE + KV store as dispatches of their own (folded into the matrix kernels in the CPU family).")
    var compareNormRope = false
    @Flag(name: .customLong("compare-pipeline"),
          help: "Also time greedy decode steps submitted while the previous one runs (its picks fed on the device) against steps submitted after the previous one's picks are read, alternating, and print both medians and their ratio.")
    var comparePipeline = false

    func run() throws {
        printLineByLine()
        switch backend {
        case .cpu: return try runOnCPU()
        case .reference: throw ValidationError("the reference decoder is not benchmarked here (kiln bench model times it)")
        case .auto where !((try? VulkanDevice.available()) ?? []).contains(where: { $0.kind == .discreteGPU || $0.kind == .integratedGPU }):
            return try runOnCPU()
        default: break
        }
        let file = try GGUFFile(path: model)
        let device = try VulkanDevice(index: vulkanDevice)
        print("device: \(device.info)")
        let sizes = batches.split(separator: ",").compactMap { Int($0) }
        let maxBatch = sizes.max() ?? 1
        let blockSize = 16
        let perSequence = (16 + steps + 1 + blockSize - 1) / blockSize
        let promptBlocks = (promptTokens + blockSize - 1) / blockSize
        // Blocks: the prompt's, room for `steps` more tokens after it, and each decoding sequence's.
        let tailBlocks = (steps + blockSize - 1) / blockSize + 1
        let decoder = try VulkanDecoder(device: device, file: file, blockCount: promptBlocks + tailBlocks + maxBatch * perSequence, blockSize: blockSize,
                                        maxTokens: max(promptTokens, maxBatch * 16), maxSequences: maxBatch, maxLogitRows: maxBatch)
        print("kernels: \(decoder.kernelFamily) family, \(decoder.kvCache) KV, SwiGLU \(decoder.fusesSwiGLU ? "fused into gate|up" : "a dispatch of its own"), "
              + "RMSNorm \(decoder.foldsNorm ? "folded into the matrix kernels" : "a dispatch of its own"), "
              + "RoPE + KV store \(decoder.fusesRope ? "in the QKV kernel" : "a dispatch of its own")")
        if compareSwiGLU && compareNormRope { throw ValidationError("compare one fusion at a time") }
        // The comparison's other decoder: the same but for SwiGLU (or RMSNorm and RoPE), with a KV pool of its own.
        let separate = compareSwiGLU || compareNormRope
            ? try VulkanDecoder(device: device, file: file, blockCount: promptBlocks + maxBatch * perSequence, blockSize: blockSize,
                                maxTokens: max(promptTokens, maxBatch * 16), maxSequences: maxBatch, maxLogitRows: maxBatch,
                                fusesSwiGLU: compareSwiGLU ? false : nil, foldsNorm: compareNormRope ? false : nil, fusesRope: compareNormRope ? false : nil)
            : nil
        let fusion = compareSwiGLU ? "swiglu" : "norm_rope"
        let vocabulary = decoder.config.vocabularySize
        let prompt = (0..<promptTokens).map { (($0 * 7919) % (vocabulary - 100)) + 50 }
        let prefill = try seconds { _ = try decoder.greedy(.sequence(prompt, startingAt: 0, blockTable: Array(0..<promptBlocks))) }
        print(String(format: "BENCH vulkan_prefill_tok_s %.2f tok/s", Double(promptTokens) / prefill))
        // Batch-1 decode after the long prompt: attention over ~`promptTokens` keys per step.
        let longTable = Array(0..<promptBlocks) + Array(promptBlocks + maxBatch * perSequence ..< promptBlocks + maxBatch * perSequence + tailBlocks)
        var last = try decoder.greedy(.sequence(prompt, startingAt: 0, blockTable: longTable))
        let longDecode = try seconds {
            for step in 0..<steps { last = try decoder.greedy(.sequence(last, startingAt: promptTokens + step, blockTable: longTable)) }
        }
        print(String(format: "BENCH vulkan_decode_b1_ctx%d_tok_s %.2f tok/s", promptTokens, Double(steps) / longDecode))
        if let separate {
            let step = DecodeBatch.sequence(prompt, startingAt: 0, blockTable: Array(0..<promptBlocks))
            try compare("prefill", what: fusion, ("fused", { _ = try decoder.greedy(step) }), ("separate", { _ = try separate.greedy(step) }), rounds: 3)
        }
        for b in sizes {
            let tables = (0..<b).map { s in Array(promptBlocks + s * perSequence ..< promptBlocks + (s + 1) * perSequence) }
            // Prefill 16 tokens per sequence in one step, then time `steps` decode steps for all of them.
            var batch = DecodeBatch(tokens: [], positions: [], sequences: [], blockTables: tables, logitRows: [])
            for s in 0..<b {
                for i in 0..<16 { batch.tokens.append(prompt[(s * 16 + i) % promptTokens]); batch.positions.append(i); batch.sequences.append(s) }
                batch.logitRows.append(batch.tokens.count - 1)
            }
            var next = try decoder.greedy(batch)
            let time = try seconds {
                for step in 0..<steps {
                    next = try decoder.greedy(DecodeBatch(tokens: next, positions: Array(repeating: 16 + step, count: b),
                                                          sequences: Array(0..<b), blockTables: tables, logitRows: Array(0..<b)))
                }
            }
            print(String(format: "BENCH vulkan_decode_b%d_tok_s %.2f tok/s", b, Double(b * steps) / time))
            if let separate {
                _ = try separate.greedy(batch)
                // Both decoders decode the same tokens (the fused one's picks), one step each in turn,
                // cycling over the `steps` positions their tables have room for.
                var round = 0, input = batch
                try compare("decode_b\(b)", what: fusion, ("fused", {
                    input = DecodeBatch(tokens: next, positions: Array(repeating: 16 + round % steps, count: b), sequences: Array(0..<b),
                                        blockTables: tables, logitRows: Array(0..<b))
                    next = try decoder.greedy(input)
                }), ("separate", {
                    _ = try separate.greedy(input)
                    round += 1
                }), rounds: 2 * steps)
            }
            if comparePipeline {
                // The same decode steps, alternating rounds of `steps` each: submitted one after another with the
                // host reading each step's picks first (synchronous), or each submitted before the previous
                // one's picks are read (pipelined). Both decode the same positions from the same tokens.
                let start = next
                func decodeRound(pipelined: Bool) throws {
                    var tokens = start
                    var previous: SubmittedStep?
                    for step in 0..<steps {
                        let batch = DecodeBatch(tokens: previous == nil || !pipelined ? tokens : Array(repeating: 0, count: b),
                                                positions: Array(repeating: 16 + step, count: b), sequences: Array(0..<b), blockTables: tables, logitRows: Array(0..<b))
                        if pipelined {
                            let submitted = try decoder.submitGreedy(batch, feeds: previous == nil ? [] : (0..<b).map { TokenFeed(token: $0, previousRow: $0) })
                            if let previous { tokens = try decoder.waitGreedy(previous) }
                            previous = submitted
                        } else {
                            tokens = try decoder.waitGreedy(decoder.submitGreedy(batch, feeds: []))
                        }
                    }
                    if let previous { _ = try decoder.waitGreedy(previous) }
                }
                try compare("decode_b\(b)", what: "pipeline", ("pipelined", { try decodeRound(pipelined: true) }), ("synchronous", { try decodeRound(pipelined: false) }),
                            rounds: 6)
            }
            guard b == maxBatch else { continue }
            // Top-k sampling (k = 40) at the largest batch: through the decoder's top candidates (found on the
            // device or by the host, as `samplesOnDevice` says) against every row's full logits copied out and
            // sampled by the host, alternating, over the same positions.
            var parameters = SamplingParameters(); parameters.topK = 40; parameters.temperature = 0.8
            let sampler = Sampler(parameters)
            var viaCandidates = 0.0, viaLogits = 0.0
            for (round, candidates) in [true, false, true, false].enumerated() {
                let elapsed = try seconds {
                    for step in 0..<steps {
                        let batch = DecodeBatch(tokens: next, positions: Array(repeating: 16 + step, count: b),
                                                sequences: Array(0..<b), blockTables: tables, logitRows: Array(0..<b))
                        next = candidates ? try decoder.candidates(batch, alsoLogits: false).candidates.enumerated().map { sampler.sample($0.element, index: $0.offset).id }
                                          : try decoder.logits(batch).enumerated().map { sampler.sample($0.element, context: [], index: $0.offset).id }
                    }
                }
                if round > 1 { if candidates { viaCandidates += elapsed } else { viaLogits += elapsed } }   // rounds 0-1 warm up
            }
            print("top candidates found \(decoder.samplesOnDevice ? "on the device" : "by the host")")
            print(String(format: "BENCH vulkan_decode_b%d_topk_candidates_tok_s %.2f tok/s", b, Double(b * steps) / viaCandidates))
            print(String(format: "BENCH vulkan_decode_b%d_topk_full_logits_tok_s %.2f tok/s", b, Double(b * steps) / viaLogits))
        }
        if KernelProfileMode.current.isOn { print(decoder.profileReport()) }
    }

    /// Times two variants alternately, `rounds` times each, and prints each one's median time and the ratio
    /// of the second's to the first's (an interleaved A/B: the machine's swings hit both alike).
    private func compare(_ name: String, what: String, _ a: (String, () throws -> Void), _ b: (String, () throws -> Void), rounds: Int) throws {
        var ta: [Double] = [], tb: [Double] = []
        for _ in 0..<rounds {
            ta.append(try seconds(a.1))
            tb.append(try seconds(b.1))
        }
        let ma = ta.sorted()[ta.count / 2], mb = tb.sorted()[tb.count / 2]
        print(String(format: "BENCH vulkan_%@_%@_%@_ms %.2f ms", name, what, a.0, ma * 1000))
        print(String(format: "BENCH vulkan_%@_%@_%@_ms %.2f ms", name, what, b.0, mb * 1000))
        print(String(format: "BENCH vulkan_%@_%@_%@_vs_%@_ratio %.3f x", name, what, b.0, a.0, mb / ma))
    }

    func seconds(_ body: () throws -> Void) rethrows -> Double {
        let start = DispatchTime.now().uptimeNanoseconds
        try body()
        return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    }
}
