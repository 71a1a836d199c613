import Foundation
import KilnModel

/// A generation the engine runs: prompt tokens, how to sample, when to stop.
public struct GenerationRequest: Sendable {
    public enum Priority: Int, Sendable, Comparable {
        case interactive = 0, batch = 1
        public static func < (a: Priority, b: Priority) -> Bool { a.rawValue < b.rawValue }
    }
    public var id: Int
    public var prompt: [Int]
    public var parameters: SamplingParameters
    public var maxTokens: Int
    /// Tokens that end the generation (EOS, end of turn); the stop token itself is reported.
    public var stopTokens: Set<Int>
    public var priority: Priority
    /// Whether the chosen token's log-probability is wanted (it needs the step's logits on the host).
    public var wantsLogprob: Bool
    /// Tokens this generation already produced elsewhere (a worker that failed mid-stream): it goes on
    /// after them as if it had sampled them itself. They are computed with the prompt, count against
    /// `maxTokens`, are seen by the penalties, and the sampler's counter starts after them.
    public var resumed: [Int]

    public init(id: Int, prompt: [Int], parameters: SamplingParameters = .greedy, maxTokens: Int,
                stopTokens: Set<Int> = [], priority: Priority = .interactive, wantsLogprob: Bool = false, resumed: [Int] = []) {
        self.wantsLogprob = wantsLogprob
        self.resumed = resumed
        self.id = id
        self.prompt = prompt
        self.parameters = parameters
        self.maxTokens = maxTokens
        self.stopTokens = stopTokens
        self.priority = priority
    }
}

public enum FinishReason: String, Sendable { case stop, length, cancelled, error }

/// What one step produced for one request: a token, and/or the end of the request.
public struct StepEvent: Sendable, Equatable {
    public let requestID: Int
    public let token: SampledToken?
    public let finish: FinishReason?
    /// Prompt tokens served from the prefix cache (set on the request's first token).
    public let cachedPromptTokens: Int
}

/// The engine's core: iteration-level (continuous) batching over a `DecoderBackend` and a `KVCacheManager`.
/// Each `step()` admits waiting requests while blocks allow, gives running ones a share of the step's token
/// budget (prompts are prefilled in chunks, so a long prompt never stalls the others' decoding), runs one
/// backend step, samples, and reports. When blocks run out, the most recently admitted request is preempted
/// — its blocks freed, its tokens kept — and later recomputed; its client sees only a pause, and because the
/// kernels are batch-invariant and the sampler counter-based, it produces the same tokens. In steady greedy
/// decoding on a backend that overlaps steps, each step's successor is submitted before its picks are read
/// (`advance`, `speculate`), so the device never waits for the host between steps.
public final class Scheduler {
    struct Running {
        var request: GenerationRequest
        var tokens: [Int]          // prompt + generated, the sequence's KV contents once computed
        var computed = 0
        var generated: [Int] = []
        var cachedPromptTokens = 0
        var reportedCached = false
        let arrival: Int
    }

    public let backend: DecoderBackend
    public let cache: KVCacheManager
    public let tokenBudget: Int
    public let maxWaiting: Int
    /// Sequences in one step at most (the backend's batch limit), and never more than the backend's logit
    /// rows (each running sequence may want one row a step).
    public let maxRunning: Int
    private var waiting: [Running] = []
    private var running: [Running] = []   // in admission order
    private var arrivals = 0
    public private(set) var preemptions = 0
    public private(set) var completed = 0, cancelled = 0, steps = 0
    /// Steps submitted while the step before them still ran (see `pipeline`).
    public private(set) var overlappedSteps = 0

    /// The backend's pipelined interface, when it has one and pipelining is on: in steady greedy decoding
    /// the next step is submitted before the running one's picks are read (the device feeds them), so the
    /// host's bookkeeping overlaps the device's work instead of leaving it idle between steps.
    private let pipeline: PipelinedDecoderBackend?
    /// A greedy step submitted through `pipeline` whose picks are not yet read.
    private struct InFlight {
        let step: SubmittedStep
        /// The request each logit row samples for.
        let rows: [Int]
        /// Per request the step computes tokens of: how many of its tokens are computed once it is done.
        let computed: [Int: Int]
    }
    private var inFlight: InFlight?
    /// Whether greedy steps are pipelined (see `pipeline`).
    public var pipelinesSteps: Bool { pipeline != nil }
    /// Requests that ended (finished, cancelled) while the step in flight still writes into their blocks:
    /// their blocks are freed once it is done.
    private var freeAfterStep: Set<Int> = []

    /// `pipelined`: whether to use the backend's pipelined interface, when it has one. By default
    /// (nil) KILN_ENGINE_PIPELINE=1/0 says, else the backend's `overlapsSteps`: on where the device is not the
    /// host's own CPU (on lavapipe the host's work competes with the "device" for the same cores, and measured
    /// no faster). Results are the same either way; only when the host works changes.
    public init(backend: DecoderBackend, cache: KVCacheManager, tokenBudget: Int = 256, maxWaiting: Int = 1024, maxRunning: Int = 64,
                pipelined: Bool? = nil) {
        precondition(cache.blockSize == backend.blockSize)
        let pipelinedBackend = backend as? PipelinedDecoderBackend
        let environment = ProcessInfo.processInfo.environment["KILN_ENGINE_PIPELINE"].map { $0 != "0" }
        pipeline = (pipelined ?? environment ?? pipelinedBackend?.overlapsSteps ?? false) ? pipelinedBackend : nil
        self.maxRunning = min(maxRunning, backend.maxLogitRows)
        self.backend = backend
        self.cache = cache
        self.tokenBudget = tokenBudget
        self.maxWaiting = maxWaiting
    }

    public var hasWork: Bool { !waiting.isEmpty || !running.isEmpty || inFlight != nil }
    public var runningCount: Int { running.count }
    public var waitingCount: Int { waiting.count }

    /// Queues a request. Refused (load shedding) when the waiting queue is full or the request can never fit.
    public func submit(_ request: GenerationRequest) throws {
        guard waiting.count < maxWaiting else { throw SchedulerError.queueFull(maxWaiting) }
        guard !request.prompt.isEmpty else { throw SchedulerError.invalid("prompt is empty") }
        guard request.maxTokens > 0 else { throw SchedulerError.invalid("max_tokens must be positive") }
        let longest = request.prompt.count + request.maxTokens
        guard longest <= backend.config.contextLength else {
            throw SchedulerError.invalid("prompt (\(request.prompt.count) tokens) + max_tokens exceeds the context (\(backend.config.contextLength))")
        }
        guard cache.blocksFor(tokens: longest) <= cache.pool.count else {
            throw SchedulerError.invalid("the request needs more KV blocks than the pool has")
        }
        guard request.resumed.count < request.maxTokens else {
            throw SchedulerError.invalid("\(request.resumed.count) tokens already generated leave none of max_tokens (\(request.maxTokens))")
        }
        try request.parameters.validate()
        // A resumed generation starts as a preempted one restarts: its generated tokens recomputed with the
        // prompt (from the prefix cache where it has them), the next one sampled at index resumed.count.
        waiting.append(Running(request: request, tokens: request.prompt + request.resumed, generated: request.resumed, arrival: arrivals))
        arrivals += 1
    }

    /// Ends a request now: it gets no more events, and its blocks are free before the next step (or, when
    /// the pipelined path has a step in flight that writes them, as soon as that step is done). `reason`
    /// says why, for the counters: `.stop` when the caller found a stop string (a completion), anything else
    /// a cancellation.
    public func cancel(_ id: Int, reason: FinishReason = .cancelled) -> Bool {
        if let i = running.firstIndex(where: { $0.request.id == id }) {
            if inFlight?.computed[id] != nil { freeAfterStep.insert(id) } else { cache.free(id) }
            running.remove(at: i)
        } else if let i = waiting.firstIndex(where: { $0.request.id == id }) {
            waiting.remove(at: i)
        } else {
            return false
        }
        if reason == .stop || reason == .length { completed += 1 } else { cancelled += 1 }
        return true
    }

    /// Runs one iteration and returns its events.
    public func step() throws -> [StepEvent] {
        if let pipeline, let current = inFlight { return try advance(pipeline, current) }
        admit()
        guard !running.isEmpty else { return [] }

        // Build the batch: decoding requests first (one token each), then prefill chunks in admission order.
        var batch = DecodeBatch(tokens: [], positions: [], sequences: [], blockTables: [], logitRows: [])
        var wanted: [Int] = []   // index into running, per logit row
        var processed: [(Int, Int)] = []  // (running index, tokens computed after the step)
        var budget = tokenBudget
        let order = running.indices.sorted { (running[$0].tokens.count - running[$0].computed == 1 ? 0 : 1, $0) < (running[$1].tokens.count - running[$1].computed == 1 ? 0 : 1, $1) }
        for i in order where budget > 0 {
            let r = running[i]
            let remaining = r.tokens.count - r.computed
            guard remaining > 0 else { continue }
            let chunk = min(remaining, budget)
            budget -= chunk
            let table = batch.blockTables.count
            batch.blockTables.append(cache.blockTable(r.request.id))
            for p in r.computed..<r.computed + chunk {
                batch.tokens.append(r.tokens[p]); batch.positions.append(p); batch.sequences.append(table)
            }
            processed.append((i, r.computed + chunk))
            if r.computed + chunk == r.tokens.count {
                batch.logitRows.append(batch.tokens.count - 1)
                wanted.append(i)
            }
        }
        // When every sequence sampling this step is plain greedy, the backend picks the tokens itself (argmax
        // on the device, the first maximum on ties, like the host's) and returns one id per row.
        let onDevice = wanted.allSatisfy { running[$0].request.parameters.choosesOnDevice && !running[$0].request.wantsLogprob }
        // Otherwise a row whose sampling never looks past the most likely few tokens is sampled from the
        // backend's top candidates (top-k on the device); the others from their full logits. Which way a row
        // goes depends on its own parameters only, so its result never depends on the rest of the step.
        let count = backend.topCandidateCount
        let fromCandidates = wanted.map { running[$0].request.parameters.needsOnly(topCandidates: count) }
        if let pipeline, onDevice, !wanted.isEmpty {
            let step = try pipeline.submitGreedy(batch, feeds: [])
            var computed: [Int: Int] = [:]
            for (i, done) in processed { computed[running[i].request.id] = done }
            let current = InFlight(step: step, rows: wanted.map { running[$0].request.id }, computed: computed)
            inFlight = current
            return try advance(pipeline, current)
        }
        var logits: [[Float]] = [], candidates: [TopCandidates] = []
        if !onDevice && fromCandidates.contains(true) {
            (candidates, logits) = try backend.candidates(batch, alsoLogits: fromCandidates.contains(false))
        } else if !onDevice {
            logits = try backend.logits(batch)
        }
        let chosen = onDevice ? try backend.greedy(batch) : []
        steps += 1
        for (i, done) in processed {
            running[i].computed = done
            cache.markComputed(running[i].request.id, upTo: done)
        }

        var events: [StepEvent] = []
        var finished: Set<Int> = []
        for (row, i) in wanted.enumerated() {
            let r = running[i]
            // A token chosen on the device carries no log-probability (0): nobody asked for it.
            let sampler = Sampler(r.request.parameters)
            let sampled = onDevice ? SampledToken(id: chosen[row], logprob: 0, top: [])
                : fromCandidates[row] ? sampler.sample(candidates[row], index: r.generated.count)
                : sampler.sample(logits[row], context: r.tokens, index: r.generated.count)
            let event = append(sampled, to: i)
            events.append(event)
            if event.finish != nil { finished.insert(i) }
        }
        // Finished requests release their blocks; the others reserve room for their new token.
        release(finished, stillWrittenBy: nil)
        try reserveNewTokens()
        return events
    }

    /// Removes the finished running requests (indices into `running`) and frees their blocks, or, for those
    /// the step in flight `next` still writes into, frees them once it is done (`freeAfterStep`).
    private func release(_ finished: Set<Int>, stillWrittenBy next: InFlight?) {
        for i in finished.sorted(by: >) {
            let id = running[i].request.id
            if next?.computed[id] != nil { freeAfterStep.insert(id) } else { cache.free(id) }
            running.remove(at: i)
            completed += 1
        }
    }

    /// Each running request's index in `running`, by request id (valid until `running` changes).
    private var runningIndex: [Int: Int] {
        Dictionary(uniqueKeysWithValues: running.enumerated().map { ($1.request.id, $0) })
    }

    /// Adds a sampled token to running request `i` and returns its event: the token, and the end of the
    /// request when the token is a stop token or the last one allowed.
    private func append(_ sampled: SampledToken, to i: Int) -> StepEvent {
        var r = running[i]
        r.generated.append(sampled.id)
        r.tokens.append(sampled.id)
        var finish: FinishReason?
        if r.request.stopTokens.contains(sampled.id) { finish = .stop } else if r.generated.count >= r.request.maxTokens { finish = .length }
        let cached = r.reportedCached ? 0 : r.cachedPromptTokens
        r.reportedCached = true
        running[i] = r
        return StepEvent(requestID: r.request.id, token: sampled, finish: finish, cachedPromptTokens: cached)
    }

    /// Completes the step in flight: first submits the step after it when that one is known without its
    /// picks (`speculate`), then waits for the picks and reports them as the synchronous path would.
    private func advance(_ pipeline: PipelinedDecoderBackend, _ current: InFlight) throws -> [StepEvent] {
        let next: InFlight?, picks: [Int]
        do {
            next = try speculate(pipeline, after: current)
            picks = try pipeline.waitGreedy(current.step)
        } catch {
            // The backend failed (the engine fails the requests in flight): nothing stays in flight.
            inFlight = nil
            for id in freeAfterStep { cache.free(id) }
            freeAfterStep = []
            throw error
        }
        inFlight = next
        steps += 1
        let index = runningIndex
        for (id, done) in current.computed {
            guard let i = index[id] else { continue }   // ended meanwhile
            running[i].computed = done
            cache.markComputed(id, upTo: done)
        }
        var events: [StepEvent] = []
        var finished: Set<Int> = []
        for (row, id) in current.rows.enumerated() {
            guard let i = index[id] else { continue }
            let event = append(SampledToken(id: picks[row], logprob: 0, top: []), to: i)
            // The next step computes this token already (fed on the device): its cache entry was a placeholder.
            if next?.computed[id] != nil { cache.setToken(id, at: running[i].tokens.count - 1, to: picks[row]) }
            events.append(event)
            if event.finish != nil { finished.insert(i) }
        }
        release(finished, stillWrittenBy: next)
        for id in freeAfterStep where next?.computed[id] == nil {
            cache.free(id)
            freeAfterStep.remove(id)
        }
        if next == nil { try reserveNewTokens() }
        return events
    }

    /// The step after `current`, submitted now with `current`'s picks fed on the device, when it can be
    /// known before they are read: every running request is decoding one token in `current`, none waits to
    /// be admitted, and the pool has room for each one's next token. A request that turns out to have
    /// stopped at `current` has computed one token for nothing. Nil where the next step waits for the picks.
    private func speculate(_ pipeline: PipelinedDecoderBackend, after current: InFlight) throws -> InFlight? {
        guard waiting.isEmpty, !running.isEmpty, running.count == current.rows.count else { return nil }
        var continuing: [(row: Int, index: Int)] = []
        let index = runningIndex
        for (row, id) in current.rows.enumerated() {
            guard let i = index[id],
                  current.computed[id] == running[i].tokens.count, cache.tokenCount(id) == running[i].tokens.count else { return nil }
            // Ends at `current` for length: nothing to compute after it.
            if running[i].generated.count + 1 >= running[i].request.maxTokens { continue }
            continuing.append((row, i))
        }
        guard !continuing.isEmpty, continuing.count <= tokenBudget else { return nil }
        let needed = continuing.reduce(0) { $0 + cache.blocksToAppend(running[$1.index].request.id, count: 1) }
        guard needed <= cache.pool.freeCount else { return nil }
        var batch = DecodeBatch(tokens: [], positions: [], sequences: [], blockTables: [], logitRows: [])
        var feeds: [TokenFeed] = []
        var computed: [Int: Int] = [:]
        for (row, i) in continuing {
            let id = running[i].request.id, position = running[i].tokens.count
            // The pick is not known yet: a placeholder holds its place until `advance` reads it.
            guard let copies = cache.append(id, tokens: [0]) else { preconditionFailure("room checked above") }
            for c in copies { try backend.copyBlock(from: c.source, to: c.destination) }
            feeds.append(TokenFeed(token: batch.tokens.count, previousRow: row))
            batch.tokens.append(0); batch.positions.append(position); batch.sequences.append(batch.blockTables.count)
            batch.blockTables.append(cache.blockTable(id))
            batch.logitRows.append(batch.tokens.count - 1)
            computed[id] = position + 1
        }
        let step = try pipeline.submitGreedy(batch, feeds: feeds)
        overlappedSteps += 1
        return InFlight(step: step, rows: continuing.map { running[$0.index].request.id }, computed: computed)
    }

    /// Admits waiting requests (interactive before batch, then arrival order) while the pool can hold them.
    private func admit() {
        waiting.sort { ($0.request.priority, $0.arrival) < ($1.request.priority, $1.arrival) }
        while let next = waiting.first, running.count < maxRunning {
            guard let cached = cache.admit(next.request.id, tokens: next.tokens) else { break }
            var r = waiting.removeFirst()
            r.computed = cached
            if !r.reportedCached { r.cachedPromptTokens = min(cached, r.request.prompt.count) }
            running.append(r)
        }
    }

    /// Every running request whose last token is sampled but not yet in its blocks gets room for it;
    /// when the pool is out of blocks, the most recently admitted request is preempted (recomputed later).
    private func reserveNewTokens() throws {
        var i = 0
        while i < running.count {
            let r = running[i]
            let held = cache.tokenCount(r.request.id)
            if held < r.tokens.count {
                if let copies = cache.append(r.request.id, tokens: Array(r.tokens[held...])) {
                    for c in copies { try backend.copyBlock(from: c.source, to: c.destination) }
                } else {
                    preemptNewest()
                    i = 0
                    continue
                }
            }
            i += 1
        }
    }

    /// A snapshot of the counters and the pool.
    public var stats: EngineStats {
        EngineStats(blocksTotal: cache.pool.count, blocksFree: cache.pool.freeCount, blocksCached: cache.pool.cachedCount,
                    blockSize: cache.blockSize, running: running.count, waiting: waiting.count, completed: completed,
                    cancelled: cancelled, preemptions: preemptions, promptTokens: cache.admittedPromptTokens,
                    cachedPromptTokens: cache.cachedPromptTokens, steps: steps)
    }

    private func preemptNewest() {
        guard var victim = running.popLast() else { return }
        cache.free(victim.request.id)
        victim.computed = 0
        waiting.insert(victim, at: 0)
        preemptions += 1
    }
}

/// Counters and gauges of a scheduler and its KV pool, taken between steps.
public struct EngineStats: Sendable, Equatable {
    public var blocksTotal = 0, blocksFree = 0, blocksCached = 0, blockSize = 0
    public var running = 0, waiting = 0
    public var completed = 0, cancelled = 0, preemptions = 0
    public var promptTokens = 0, cachedPromptTokens = 0
    public var steps = 0
    public init() {}
    public init(blocksTotal: Int, blocksFree: Int, blocksCached: Int, blockSize: Int, running: Int, waiting: Int, completed: Int,
                cancelled: Int, preemptions: Int, promptTokens: Int, cachedPromptTokens: Int, steps: Int) {
        self.blocksTotal = blocksTotal; self.blocksFree = blocksFree; self.blocksCached = blocksCached; self.blockSize = blockSize
        self.running = running; self.waiting = waiting; self.completed = completed; self.cancelled = cancelled
        self.preemptions = preemptions; self.promptTokens = promptTokens; self.cachedPromptTokens = cachedPromptTokens; self.steps = steps
    }
}

public enum SchedulerError: Error, CustomStringConvertible, Equatable {
    case queueFull(Int)
    case invalid(String)
    public var description: String {
        switch self {
        case .queueFull(let n): return "the waiting queue is full (\(n) requests)"
        case .invalid(let why): return why
        }
    }
}
