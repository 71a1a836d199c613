import KilnEngine
import KilnModel
import KilnVulkan
import KilnTestSupport
import XCTest

/// The scheduler driving the Vulkan decoder (lavapipe): concurrent and preempted requests produce exactly
/// the tokens they produce alone.
final class SchedulerOnVulkanTests: XCTestCase {
    func testConcurrentAndPreemptedRequestsEqualAlone() throws {
        var builder = TestModelBuilder()
        builder.width = 128; builder.feedForwardWidth = 256; builder.type = .q4_1
        let file = try GGUFFile(file: MappedFile(copying: builder.build().serialized()))
        let device = try VulkanDevice()
        func run(_ requests: [GenerationRequest], blocks: Int, pipelined: Bool = true) throws -> ([Int: [Int]], Scheduler) {
            let decoder = try VulkanDecoder(device: device, file: file, blockCount: blocks, maxTokens: 64, maxSequences: 16, maxLogitRows: 16)
            let s = Scheduler(backend: decoder, cache: KVCacheManager(blockCount: blocks, blockSize: 16), tokenBudget: 64, pipelined: pipelined)
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
        let (together, pipelined) = try run(requests, blocks: 64)
        // Steady greedy decoding submits each step before the previous one's picks are read (fed on the
        // device); turning that off changes no token.
        XCTAssertGreaterThan(pipelined.overlappedSteps, 0)
        let (synchronous, unpipelined) = try run(requests, blocks: 64, pipelined: false)
        XCTAssertEqual(unpipelined.overlappedSteps, 0)
        XCTAssertEqual(synchronous, together)
        let (pressured, s) = try run(requests, blocks: 12)
        XCTAssertGreaterThan(s.preemptions, 0)
        for (i, r) in requests.enumerated() {
            XCTAssertEqual(together[r.id], alone[i], "request \(i) batched")
            XCTAssertEqual(pressured[r.id], alone[i], "request \(i) under KV pressure")
        }
        XCTAssertEqual(s.cache.pool.freeCount, 12)
        // The decoder's logit rows bound how many sequences run in one step.
        let narrow = try VulkanDecoder(device: device, file: file, blockCount: 16, maxTokens: 64, maxSequences: 16, maxLogitRows: 3)
        XCTAssertEqual(Scheduler(backend: narrow, cache: KVCacheManager(blockCount: 16, blockSize: 16), maxRunning: 16).maxRunning, 3)
        // By default steps are pipelined only where the device is not the host's CPU: off on lavapipe
        // (unless KILN_ENGINE_PIPELINE says otherwise).
        if ProcessInfo.processInfo.environment["KILN_ENGINE_PIPELINE"] == nil {
            let byDefault = Scheduler(backend: narrow, cache: KVCacheManager(blockCount: 16, blockSize: 16)).pipelinesSteps
            XCTAssertEqual(byDefault, device.info.kind != .cpu, "pipelined by default on \(device.info.kind.rawValue)")
        }
        // The kernel family follows the device type unless KILN_VULKAN_KERNELS names one.
        if ProcessInfo.processInfo.environment["KILN_VULKAN_KERNELS"] == nil {
            XCTAssertEqual(KernelFamily.choose(for: device), device.info.kind == .cpu ? .cpu : .gpu)
        }

        // Asking for the chosen token's logprob moves sampling to the host (full logits read back); the
        // tokens must not change.
        let onHost = requests.map { r in
            GenerationRequest(id: r.id, prompt: r.prompt, maxTokens: r.maxTokens, wantsLogprob: true)
        }
        let (hostChosen, _) = try run(onHost, blocks: 64)
        for (i, r) in requests.enumerated() { XCTAssertEqual(hostChosen[r.id], alone[i], "request \(i) sampled on the host") }

        // Top-k sampling goes through the device's top candidates; mixed with requests that need the full
        // logits (top-k off), or alone, each request gets the same tokens.
        let sampled = requests.map { r in
            var p = SamplingParameters(); p.temperature = 0.9; p.topK = r.id % 2 == 0 ? 20 : 0; p.topP = 0.95; p.seed = UInt64(r.id)
            return GenerationRequest(id: r.id, prompt: r.prompt, parameters: p, maxTokens: r.maxTokens)
        }
        let sampledAlone = try sampled.map { try run([$0], blocks: 16).0[$0.id] ?? [] }
        let (sampledTogether, _) = try run(sampled, blocks: 64)
        for (i, r) in sampled.enumerated() { XCTAssertEqual(sampledTogether[r.id], sampledAlone[i], "sampled request \(i) batched") }
        XCTAssertNotEqual(sampledAlone, alone, "sampling at temperature 0.9 should leave the greedy path somewhere")
    }

    /// Top candidates and greedy picks, found on the device or by the host, equal the host's over the same
    /// step's logits (the kernel test covers the real vocabulary's size; this one the decoder's wiring), also
    /// with the GPU kernel family's top-k.
    func testDeviceTopCandidatesEqualTheHosts() throws {
        let device = try VulkanDevice()
        var builder = TestModelBuilder()
        builder.width = 128; builder.feedForwardWidth = 256; builder.type = .q8_0
        let file = try GGUFFile(file: MappedFile(copying: builder.build().serialized()))
        var rng = TestRandom(fixed: 5)
        let tokens = (0..<40).map { _ in Int.random(in: 3..<270, using: &rng) }
        let batch = DecodeBatch(tokens: tokens, positions: Array(0..<20) + Array(0..<20), sequences: Array(repeating: 0, count: 20) + Array(repeating: 1, count: 20),
                                blockTables: [[0, 1], [2, 3]], logitRows: [5, 19, 39])
        var greedy: [[Int]] = []
        for (onDevice, family) in [(true, KernelFamily.cpu), (false, .cpu), (true, .gpu)] {
            let decoder = try VulkanDecoder(device: device, file: file, blockCount: 8, maxTokens: 64, maxSequences: 4, maxLogitRows: 4,
                                            kernelFamily: family, samplesOnDevice: onDevice)
            let (candidates, logits) = try decoder.candidates(batch, alsoLogits: true)
            XCTAssertEqual(candidates.count, 3)
            for (row, c) in candidates.enumerated() {
                let expected = TopCandidates(logits: logits[row], count: 64)
                XCTAssertEqual(c.ids, expected.ids, "row \(row), on device: \(onDevice), \(family) family")
                XCTAssertEqual(c.scores, expected.scores, "row \(row), on device: \(onDevice), \(family) family")
                XCTAssertEqual(c.logNormalizer, expected.logNormalizer, accuracy: 1e-5 * max(1, abs(expected.logNormalizer)))
            }
            let chosen = try decoder.greedy(batch)
            XCTAssertEqual(chosen, logits.map { argmax($0) }, "greedy, on device: \(onDevice), \(family) family")
            greedy.append(chosen)
        }
        XCTAssertEqual(greedy[0], greedy[1])
    }
}
