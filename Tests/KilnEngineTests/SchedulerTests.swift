import KilnEngine
import KilnModel
import KilnTestSupport
import XCTest

/// The scheduler on a small random-weight model with the CPU reference backend: batching, preemption and
/// prefix caching never change a request's tokens, and nothing leaks.
final class SchedulerTests: XCTestCase {
    static let weights: ReferenceWeights = {
        var builder = TestModelBuilder()
        builder.contextLength = 512
        return try! ReferenceWeights(gguf: GGUFFile(file: MappedFile(copying: builder.build().serialized())))
    }()

    private func scheduler(blocks: Int, budget: Int = 64, maxWaiting: Int = 100, pipelined: Bool = true) -> Scheduler {
        let backend = ReferenceBackend(weights: Self.weights, blockCount: blocks, blockSize: 16)
        return Scheduler(backend: backend, cache: KVCacheManager(blockCount: blocks, blockSize: 16), tokenBudget: budget, maxWaiting: maxWaiting,
                         pipelined: pipelined)
    }

    private func requests(count: Int, promptLength: Int, maxTokens: Int, sampled: Bool = false) -> [GenerationRequest] {
        var rng = TestRandom(fixed: 11)
        return (0..<count).map { i in
            var p = SamplingParameters.greedy
            if sampled { p = SamplingParameters(); p.temperature = 0.8; p.topK = 40; p.seed = UInt64(i) }
            return GenerationRequest(id: i, prompt: (0..<promptLength + i).map { _ in Int.random(in: 3..<270, using: &rng) },
                                     parameters: p, maxTokens: maxTokens, priority: i % 3 == 0 ? .batch : .interactive)
        }
    }

    /// Runs until idle; returns each request's tokens and finish reason.
    private func drain(_ s: Scheduler) throws -> [Int: (tokens: [Int], finish: FinishReason?, cached: Int)] {
        var out: [Int: (tokens: [Int], finish: FinishReason?, cached: Int)] = [:]
        var steps = 0
        while s.hasWork {
            for e in try s.step() {
                var entry = out[e.requestID] ?? ([], nil, 0)
                if let t = e.token { entry.tokens.append(t.id) }
                entry.finish = e.finish ?? entry.finish
                entry.cached += e.cachedPromptTokens
                out[e.requestID] = entry
            }
            steps += 1
            XCTAssertLessThan(steps, 10_000, "scheduler does not make progress")
            if steps >= 10_000 { break }
        }
        return out
    }

    private func alone(_ r: GenerationRequest) throws -> [Int] {
        let s = scheduler(blocks: 64)
        try s.submit(r)
        return try drain(s)[r.id]?.tokens ?? []
    }

    /// Waiting interactive requests are admitted before batch ones, whatever their order of arrival.
    func testInteractiveRequestsAreAdmittedBeforeBatchOnes() throws {
        let backend = ReferenceBackend(weights: Self.weights, blockCount: 64, blockSize: 16)
        let s = Scheduler(backend: backend, cache: KVCacheManager(blockCount: 64, blockSize: 16), tokenBudget: 64, maxWaiting: 10,
                          maxRunning: 1, pipelined: false)
        try s.submit(GenerationRequest(id: 1, prompt: [5, 6, 7], maxTokens: 3, priority: .batch))
        try s.submit(GenerationRequest(id: 2, prompt: [8, 9, 10], maxTokens: 3, priority: .interactive))
        try s.submit(GenerationRequest(id: 3, prompt: [11, 12], maxTokens: 3, priority: .batch))
        var order: [Int] = []
        var steps = 0
        while s.hasWork && steps < 100 {
            for e in try s.step() where e.token != nil { order.append(e.requestID) }
            steps += 1
        }
        XCTAssertEqual(order, [2, 2, 2, 1, 1, 1, 3, 3, 3])
    }

    /// When blocks run out, the request admitted last is the one preempted; the older one runs on unbroken.
    func testThePreemptedRequestIsTheNewest() throws {
        // 4 blocks of 16: two 20-token prompts take 2 blocks each, and both need a third at 32 tokens.
        let s = scheduler(blocks: 4, pipelined: false)
        try s.submit(GenerationRequest(id: 1, prompt: Array(3..<23), maxTokens: 30))
        try s.submit(GenerationRequest(id: 2, prompt: Array(30..<50), maxTokens: 30))
        var stepsAfterPreemption: [[Int]] = []
        var steps = 0
        while s.hasWork && steps < 500 {
            let before = s.preemptions
            let ids = try s.step().filter { $0.token != nil }.map(\.requestID)
            if before > 0 && stepsAfterPreemption.count < 3 { stepsAfterPreemption.append(ids) }
            steps += 1
        }
        XCTAssertGreaterThan(s.preemptions, 0, "the pool should have run out")
        XCTAssertEqual(stepsAfterPreemption, [[1], [1], [1]], "the older request decodes alone after the newer one is preempted")
    }

    /// Prompts are prefilled in chunks of at most the step's token budget (`--step-tokens`).
    func testPrefillChunksStayWithinTheStepBudget() throws {
        for (budget, expectedSteps) in [(16, 4), (64, 1)] {
            let s = scheduler(blocks: 16, budget: budget, pipelined: false)
            try s.submit(GenerationRequest(id: 1, prompt: Array(3..<53), maxTokens: 2))  // 50 tokens
            var steps = 0
            while s.hasWork && steps < 100 {
                steps += 1
                if try s.step().contains(where: { $0.token != nil }) { break }
            }
            XCTAssertEqual(steps, expectedSteps, "a 50-token prompt under a \(budget)-token budget")
        }
    }

    func testConcurrentRequestsEqualAlone() throws {
        for sampled in [false, true] {
            let rs = requests(count: 8, promptLength: 20, maxTokens: 24, sampled: sampled)
            let s = scheduler(blocks: 64, budget: 48)
            for r in rs { try s.submit(r) }
            let together = try drain(s)
            for r in rs {
                XCTAssertEqual(together[r.id]?.tokens, try alone(r), "request \(r.id) (sampled: \(sampled))")
                XCTAssertEqual(together[r.id]?.finish, .length)
                XCTAssertEqual(together[r.id]?.tokens.count, 24)
            }
            XCTAssertEqual(s.cache.pool.freeCount, 64, "blocks leaked")
        }
    }

    /// A request resumed after k of its tokens (as another worker would send them) goes on with exactly the
    /// rest, sampled or greedy, with penalties, batched with others; resuming with every token but one
    /// leaves one; resuming with max_tokens of them is refused.
    func testAResumedRequestGoesOnExactly() throws {
        for sampled in [false, true] {
            var rs = requests(count: 4, promptLength: 18, maxTokens: 20, sampled: sampled)
            for i in rs.indices where i % 2 == 1 { rs[i].parameters.repetitionPenalty = 1.3; rs[i].parameters.frequencyPenalty = 0.5 }
            let full = try rs.map { try alone($0) }
            let s = scheduler(blocks: 64, budget: 48)
            for (i, r) in rs.enumerated() {
                var resumed = r
                resumed.resumed = Array(full[i].prefix([1, 7, 13, 19][i]))
                try s.submit(resumed)
            }
            let rest = try drain(s)
            for (i, r) in rs.enumerated() {
                let k = [1, 7, 13, 19][i]
                XCTAssertEqual(rest[r.id]?.tokens, Array(full[i].dropFirst(k)), "request \(i) resumed after \(k) (sampled: \(sampled))")
                XCTAssertEqual(rest[r.id]?.finish, .length)
            }
            XCTAssertEqual(s.cache.pool.freeCount, 64, "blocks leaked")
        }
        var whole = requests(count: 1, promptLength: 18, maxTokens: 20)[0]
        whole.resumed = Array(repeating: 5, count: 20)
        XCTAssertThrowsError(try scheduler(blocks: 64).submit(whole))
    }

    /// 16 blocks of 16 tokens for 6 requests needing 5 blocks each: queueing and preemption, same tokens.
    func testKVPressurePreemptsAndStillProducesTheSameTokens() throws {
        let rs = requests(count: 6, promptLength: 40, maxTokens: 30)
        let s = scheduler(blocks: 16, budget: 64)
        for r in rs { try s.submit(r) }
        let pressured = try drain(s)
        XCTAssertGreaterThan(s.preemptions, 0, "the pool should have run out")
        for r in rs { XCTAssertEqual(pressured[r.id]?.tokens, try alone(r), "request \(r.id)") }
        XCTAssertEqual(s.cache.pool.freeCount, 16)
        XCTAssertNil(s.cache.checkInvariants())
    }

    func testCancelFreesBlocksAndPrefixCacheIsUsed() throws {
        let s = scheduler(blocks: 32)
        let prompt = Array(3..<60)
        try s.submit(GenerationRequest(id: 1, prompt: prompt, maxTokens: 100))
        _ = try s.step(); _ = try s.step()
        XCTAssertTrue(s.cancel(1))
        // Its blocks are free once no step in flight writes them (the pipelined path may have one).
        while s.hasWork { _ = try s.step() }
        XCTAssertEqual(s.cache.pool.freeCount, 32)
        XCTAssertNil(s.cache.checkInvariants())
        // The cancelled request's full prompt blocks are still cached: a new request with the same prompt uses them.
        try s.submit(GenerationRequest(id: 2, prompt: prompt + [7], maxTokens: 2))
        let result = try drain(s)
        XCTAssertEqual(result[2]?.cached, 48, "three full blocks of the 57-token prompt")
        XCTAssertEqual(result[2]?.tokens, try alone(GenerationRequest(id: 2, prompt: prompt + [7], maxTokens: 2)))
    }

    func testStopTokensAndBadRequests() throws {
        let first = try alone(GenerationRequest(id: 1, prompt: [5, 6, 7], maxTokens: 5))
        let s = scheduler(blocks: 8, maxWaiting: 2)
        let stop = first[2]
        try s.submit(GenerationRequest(id: 1, prompt: [5, 6, 7], maxTokens: 5, stopTokens: [stop]))
        let result = try drain(s)
        let through = try XCTUnwrap(first.firstIndex(of: stop))
        XCTAssertEqual(result[1]?.tokens, Array(first[...through]), "ends at the first stop token, which is reported")
        XCTAssertEqual(result[1]?.finish, .stop)
        XCTAssertThrowsError(try s.submit(GenerationRequest(id: 2, prompt: [], maxTokens: 5)))
        XCTAssertThrowsError(try s.submit(GenerationRequest(id: 3, prompt: [5], maxTokens: 0)))
        XCTAssertThrowsError(try s.submit(GenerationRequest(id: 4, prompt: [5], maxTokens: 600)))  // past the context
        var bad = SamplingParameters(); bad.topP = 2
        XCTAssertThrowsError(try s.submit(GenerationRequest(id: 5, prompt: [5], parameters: bad, maxTokens: 3))) {
            XCTAssertEqual(($0 as? SamplingError)?.field, "top_p")
        }
        try s.submit(GenerationRequest(id: 6, prompt: [5], maxTokens: 3))
        try s.submit(GenerationRequest(id: 7, prompt: [5], maxTokens: 3))
        XCTAssertThrowsError(try s.submit(GenerationRequest(id: 8, prompt: [5], maxTokens: 3))) {
            XCTAssertEqual($0 as? SchedulerError, .queueFull(2))
        }
    }

    /// The pipelined path (the next greedy step submitted before the running one's picks are read, the picks
    /// fed by the backend) gives every request the same tokens, finish reasons and cached-prefix counts as the
    /// synchronous path: through stop tokens met while the next step is already submitted, length limits,
    /// KV pressure and a cancellation while a step is in flight. No block leaks.
    func testPipelinedStepsEqualSynchronousOnes() throws {
        var rs = requests(count: 8, promptLength: 20, maxTokens: 0)
        for i in rs.indices { rs[i].maxTokens = 6 + 3 * i }
        // Every other request stops at its own fourth token (what it generates alone).
        for i in rs.indices where i % 2 == 1 { rs[i].stopTokens = [try alone(rs[i])[3]] }
        func run(blocks: Int, pipelined: Bool, cancelling: Int? = nil) throws -> (results: [Int: [Int]], finishes: [Int: FinishReason], s: Scheduler) {
            let s = scheduler(blocks: blocks, budget: 64, pipelined: pipelined)
            for r in rs { try s.submit(r) }
            var results: [Int: [Int]] = [:], finishes: [Int: FinishReason] = [:]
            var steps = 0
            while s.hasWork {
                for e in try s.step() {
                    if let t = e.token { results[e.requestID, default: []].append(t.id) }
                    if let f = e.finish { finishes[e.requestID] = f }
                }
                steps += 1
                // Cancelled between steps, when (pipelined) a step that computes its next token is in flight.
                if steps == 6, let id = cancelling { XCTAssertTrue(s.cancel(id)); results[id] = nil }
                XCTAssertNil(s.cache.checkInvariants())
                if steps > 2_000 { XCTFail("no progress"); break }
            }
            XCTAssertEqual(s.cache.pool.freeCount, blocks, "blocks leaked (pipelined: \(pipelined))")
            return (results, finishes, s)
        }
        for (blocks, cancelling) in [(64, nil), (64, 4), (8, nil)] as [(Int, Int?)] {
            let sync = try run(blocks: blocks, pipelined: false, cancelling: cancelling)
            let piped = try run(blocks: blocks, pipelined: true, cancelling: cancelling)
            XCTAssertEqual(piped.results, sync.results, "\(blocks) blocks, cancelling \(String(describing: cancelling))")
            XCTAssertEqual(piped.finishes, sync.finishes)
            XCTAssertEqual(sync.s.overlappedSteps, 0)
            XCTAssertGreaterThan(piped.s.overlappedSteps, 0, "steady decoding should submit steps ahead")
            for (i, r) in rs.enumerated() where r.id != cancelling {
                XCTAssertEqual(piped.finishes[r.id], i % 2 == 1 ? .stop : .length, "request \(i)")
            }
            if blocks == 8 { XCTAssertGreaterThan(piped.s.preemptions, 0, "the pool should have run out") }
        }
    }
}
