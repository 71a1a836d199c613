import KilnEngine
import KilnModel
import KilnVulkan
import XCTest

/// The scheduler driving the Vulkan decoder (lavapipe): concurrent and preempted requests produce exactly
/// the tokens they produce alone.
final class SchedulerOnVulkanTests: XCTestCase {
    func testConcurrentAndPreemptedRequestsEqualAlone() throws {
        var builder = TestModelBuilder()
        builder.width = 128; builder.feedForwardWidth = 256; builder.type = .q4_1
        let file = try GGUFFile(file: MappedFile(copying: builder.build().serialized()))
        let device = try VulkanDevice()
        func run(_ requests: [GenerationRequest], blocks: Int) throws -> ([Int: [Int]], Scheduler) {
            let decoder = try VulkanDecoder(device: device, file: file, blockCount: blocks, maxTokens: 64, maxSequences: 16, maxLogitRows: 16)
            let s = Scheduler(backend: decoder, cache: KVCacheManager(blockCount: blocks, blockSize: 16), tokenBudget: 64)
            for r in requests { try s.submit(r) }
            var out: [Int: [Int]] = [:]
            while s.hasWork { for e in try s.step() { if let t = e.token { out[e.requestID, default: []].append(t.id) } } }
            return (out, s)
        }
        var rng = SplitMix64(seed: 3)
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

        // Asking for the chosen token's logprob moves sampling to the host (full logits read back); the
        // tokens must not change.
        let onHost = requests.map { r in
            GenerationRequest(id: r.id, prompt: r.prompt, maxTokens: r.maxTokens, wantsLogprob: true)
        }
        let (hostChosen, _) = try run(onHost, blocks: 64)
        for (i, r) in requests.enumerated() { XCTAssertEqual(hostChosen[r.id], alone[i], "request \(i) sampled on the host") }
    }
}
