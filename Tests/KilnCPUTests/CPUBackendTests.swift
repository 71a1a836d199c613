import CKilnCPU
import KilnCPU
import KilnEngine
import KilnModel
import KilnTestSupport
import XCTest

/// The CPU backend on small random-weight models: logits against the float32 reference decoder, and
/// bit-identical logits however a step is batched, chunked, placed in the pool or threaded.
final class CPUBackendTests: XCTestCase {
    private func model(_ type: GGMLType, architecture: String = "llama", width: Int = 128, ffn: Int = 256, seed: UInt64 = 1) throws -> GGUFFile {
        var builder = TestModelBuilder()
        builder.width = width; builder.feedForwardWidth = ffn; builder.type = type
        builder.architecture = architecture; builder.seed = seed
        return try GGUFFile(file: MappedFile(copying: builder.build().serialized()))
    }

    private static func relativeL2(_ a: [Float], _ b: [Float]) -> Double {
        var e = 0.0, n = 0.0
        for (x, y) in zip(a, b) { e += Double(x - y) * Double(x - y); n += Double(y) * Double(y) }
        return (e / n).squareRoot()
    }

    func testLogitsAgreeWithTheReferenceDecoder() throws {
        var rng = TestRandom()
        for (type, architecture) in [(GGMLType.q4_1, "llama"), (.q8_0, "llama"), (.q4_0, "llama"), (.q5_1, "llama"), (.q6_K, "llama"),
                                     (.f16, "llama"), (.q8_0, "qwen2")] {
            // K formats need rows of 256.
            let file = try model(type, architecture: architecture, width: type == .q6_K ? 256 : 128, ffn: 256)
            let cpu = try CPUBackend(file: file, blockCount: 8, threads: 2)
            let reference = ReferenceBackend(weights: try ReferenceWeights(gguf: file), blockCount: 8)
            let tokens = (0..<40).map { _ in Int.random(in: 3..<260, using: &rng) }
            let batch = DecodeBatch.sequence(tokens, startingAt: 0, blockTable: [5, 1, 6], wanted: tokens.count)
            let ours = try cpu.logits(batch), theirs = try reference.logits(batch)
            XCTAssertEqual(ours.count, theirs.count)
            // Activations are quantized to 8 bits before each of the nine products a token goes through here
            // (about 0.4% each, as llama.cpp does), and random weights amplify it at some positions; a wiring
            // mistake (RoPE, the cache, attention) is off by about 100% everywhere.
            let errors = zip(ours, theirs).map { Self.relativeL2($0, $1) }
            XCTAssertLessThanOrEqual(errors.reduce(0, +) / Double(errors.count), 3e-2, "\(type) \(architecture): mean over positions")
            XCTAssertLessThanOrEqual(errors.max() ?? 1, 6e-2, "\(type) \(architecture): worst position")
            // Greedy picks come from the same logits.
            XCTAssertEqual(try cpu.greedy(DecodeBatch.sequence([7], startingAt: 40, blockTable: [5, 1, 6])).count, 1)
        }
    }

    /// The acceptance's four invariances, on a Q4_1 model (the default model's layers), with every kernel
    /// family this CPU has.
    func testLogitsAreBitIdenticalHoweverAStepIsSplit() throws {
        var rng = TestRandom()
        let file = try model(.q4_1)
        let prompts = (0..<8).map { i in (0..<(9 + 5 * i)).map { _ in Int.random(in: 3..<260, using: &rng) } }
        for isa in (0...kiln_cpu_best_isa().rawValue).map({ kiln_isa(rawValue: $0) }) {
            XCTAssertEqual(kiln_cpu_set_isa(isa), 0)
            defer { kiln_cpu_set_isa(kiln_cpu_best_isa()) }
            let family = String(cString: kiln_cpu_isa_name(isa))
            let two = try CPUBackend(file: file, blockCount: 64, threads: 2)

            // Each prompt alone, every position's logits, contiguous blocks.
            var alone: [[[Float]]] = []
            for p in prompts {
                let table = Array(0..<(p.count + 15) / 16)
                alone.append(try two.logits(DecodeBatch.sequence(p, startingAt: 0, blockTable: table, wanted: p.count)))
            }

            // 1. All eight batched in one step, each in scattered blocks of its own.
            var tokens: [Int] = [], positions: [Int] = [], sequences: [Int] = [], tables: [[Int]] = [], rows: [Int] = []
            var free = Array(8..<64).shuffled(using: &rng)
            for (s, p) in prompts.enumerated() {
                tables.append((0..<(p.count + 15) / 16).map { _ in free.removeLast() })
                for (i, t) in p.enumerated() {
                    rows.append(tokens.count)
                    tokens.append(t); positions.append(i); sequences.append(s)
                }
            }
            let batched = try two.logits(DecodeBatch(tokens: tokens, positions: positions, sequences: sequences, blockTables: tables, logitRows: rows))
            XCTAssertEqual(Array(batched), alone.flatMap { $0 }, "\(family): batched (scattered blocks) vs alone")

            // 2. The longest prompt in chunks of 7, and token by token, in scattered blocks.
            let longest = prompts[7], table = [60, 3, 41]
            for chunk in [7, 1] {
                var chunked: [[Float]] = []
                var start = 0
                while start < longest.count {
                    let piece = Array(longest[start..<min(start + chunk, longest.count)])
                    chunked += try two.logits(DecodeBatch.sequence(piece, startingAt: start, blockTable: table, wanted: piece.count))
                    start += piece.count
                }
                XCTAssertEqual(chunked, alone[7], "\(family): chunks of \(chunk) vs whole")
            }

            // 3. One thread, and more threads than cores.
            for threads in [1, 5] {
                let other = try CPUBackend(file: file, blockCount: 64, threads: threads)
                let p = prompts[5]
                let got = try other.logits(DecodeBatch.sequence(p, startingAt: 0, blockTable: [9, 2, 33], wanted: p.count))
                XCTAssertEqual(got, alone[5], "\(family): \(threads) threads vs 2")
            }
        }
    }

    /// A block copied (copy-on-write) reads back as the original.
    func testCopyBlockCarriesTheCache() throws {
        let file = try model(.q8_0)
        let cpu = try CPUBackend(file: file, blockCount: 8, threads: 2)
        let prompt = Array(3..<40)
        let whole = try cpu.logits(DecodeBatch.sequence(prompt + [50], startingAt: 0, blockTable: [0, 1, 2]))
        try cpu.copyBlock(from: 1, to: 5)
        try cpu.copyBlock(from: 2, to: 6)
        let copied = try cpu.logits(DecodeBatch.sequence([50], startingAt: prompt.count, blockTable: [0, 5, 6]))
        XCTAssertEqual(copied, whole)
        XCTAssertThrowsError(try cpu.copyBlock(from: 8, to: 0))
    }

    /// Bad batches are refused, never trapped on.
    func testBadBatchesThrow() throws {
        let cpu = try CPUBackend(file: try model(.q8_0), blockCount: 4, threads: 2)
        let bad = [
            DecodeBatch.sequence([100_000], startingAt: 0, blockTable: [0]),
            DecodeBatch.sequence([5], startingAt: -1, blockTable: [0]),
            DecodeBatch.sequence([5], startingAt: 16, blockTable: [0]),
            DecodeBatch.sequence([5], startingAt: 0, blockTable: [4]),
            DecodeBatch(tokens: [], positions: [], sequences: [], blockTables: [], logitRows: []),
        ]
        for b in bad { XCTAssertThrowsError(try cpu.logits(b)) }
        // A pool whose slots do not fit the kernels' 32-bit indexes is refused at load.
        XCTAssertThrowsError(try CPUBackend(file: try model(.q8_0), blockCount: 1 << 28, blockSize: 16, threads: 1))
    }

    /// The scheduler's acceptance on this backend: concurrent and preempted requests produce exactly the
    /// tokens they produce alone, greedy and sampled.
    func testSchedulerOnTheCPUBackend() throws {
        let file = try model(.q4_1)
        func run(_ requests: [GenerationRequest], blocks: Int) throws -> ([Int: [Int]], Scheduler) {
            let decoder = try CPUBackend(file: file, blockCount: blocks, threads: 2)
            let s = Scheduler(backend: decoder, cache: KVCacheManager(blockCount: blocks, blockSize: 16), tokenBudget: 64)
            for r in requests { try s.submit(r) }
            var out: [Int: [Int]] = [:]
            while s.hasWork { for e in try s.step() { if let t = e.token { out[e.requestID, default: []].append(t.id) } } }
            return (out, s)
        }
        var rng = TestRandom(fixed: 3)
        let requests = (0..<8).map { i in
            GenerationRequest(id: i, prompt: (0..<(30 + i)).map { _ in Int.random(in: 3..<270, using: &rng) }, maxTokens: 20)
        }
        let alone = try requests.map { try run([$0], blocks: 16).0[$0.id] ?? [] }
        let (together, _) = try run(requests, blocks: 64)
        let (pressured, s) = try run(requests, blocks: 12)
        XCTAssertGreaterThan(s.preemptions, 0)
        for (i, r) in requests.enumerated() {
            XCTAssertEqual(together[r.id], alone[i], "request \(i) batched")
            XCTAssertEqual(pressured[r.id], alone[i], "request \(i) under KV pressure")
        }
        XCTAssertEqual(s.cache.pool.freeCount, 12)
        let sampled = requests.map { r in
            var p = SamplingParameters(); p.temperature = 0.9; p.topK = r.id % 2 == 0 ? 20 : 0; p.topP = 0.95; p.seed = UInt64(r.id)
            return GenerationRequest(id: r.id, prompt: r.prompt, parameters: p, maxTokens: r.maxTokens)
        }
        let sampledAlone = try sampled.map { try run([$0], blocks: 16).0[$0.id] ?? [] }
        let (sampledTogether, _) = try run(sampled, blocks: 64)
        for (i, r) in sampled.enumerated() { XCTAssertEqual(sampledTogether[r.id], sampledAlone[i], "sampled request \(i) batched") }
        XCTAssertNotEqual(sampledAlone, alone)
    }
}
