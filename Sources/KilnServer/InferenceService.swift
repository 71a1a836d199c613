import Foundation
import KilnAPI
import KilnEngine
import KilnModel
import KilnRPC
import Logging

/// `kiln.v1.Inference` on one model: Generate and Chat stream one message per token from the engine loop
/// (answers to deterministic requests replayed from the result cache; chat sessions kept server-side);
/// Tokenize, Detokenize, ListModels, GetModel and GetStats answer directly.
public struct InferenceService: Kiln_V1_InferenceService {
    public let modelName: String
    let tokenizer: Tokenizer
    let template: ChatTemplate?
    let info: Kiln_V1_ModelInfo
    let engine: EngineLoop
    let contextLength: Int
    let options: InferenceOptions
    let results: ResultCache
    let sessions: SessionStore
    /// Sessions shared with the other workers through Redis, when `--session-store` is given.
    let sharedSessions: SharedSessionStore?
    /// The result cache's second level in Redis, when `--result-cache-store` is given.
    let sharedResults: SharedResultCache?
    let counters = GenerationCounters()
    /// The migratable streams a drain hands over to the router in front (`kiln serve --handoff-grace`).
    public let handoff = StreamHandoff()
    /// The most bytes of text that can still fit the context (the context times the longest token's bytes):
    /// longer text is refused before it is tokenized, which would take the connection's loop for long.
    let longestText: Int
    let logger = Logger(label: "kiln.inference")

    public init(modelName: String, file: GGUFFile, engine: EngineLoop, options: InferenceOptions = InferenceOptions()) throws {
        self.modelName = modelName
        tokenizer = try Tokenizer(gguf: file)
        let source = file.metadata["tokenizer.chat_template"]?.string
        template = try source.map { try ChatTemplate(jinjaSource: $0) }
        let config = try ModelConfig(gguf: file)
        var info = Kiln_V1_ModelInfo()
        info.name = modelName
        info.architecture = config.architecture
        info.contextLength = UInt32(config.contextLength)
        info.vocabularySize = UInt32(config.vocabularySize)
        info.quantization = file.tensor("blk.0.attn_q.weight")?.type.description ?? ""
        info.parameters = UInt64(file.tensors.reduce(0) { $0 + $1.elementCount })
        info.isDefault = true
        info.chatTemplate = template?.family.rawValue ?? ""
        self.info = info
        self.engine = engine
        self.options = options
        contextLength = config.contextLength
        let longestToken = (0..<tokenizer.vocabulary.count).reduce(1) { [tokenizer] in max($0, tokenizer.piece($1, renderSpecial: true).count) }
        longestText = config.contextLength * longestToken
        results = ResultCache(bytes: options.resultCacheBytes, timeToLive: options.resultCacheTimeToLive)
        sessions = SessionStore(maxSessions: options.maxSessions, memoryBudget: options.sessionMemoryBytes,
                                idleTimeToLive: options.sessionIdleTimeToLive)
        let vocabularySize = tokenizer.vocabulary.count
        sharedResults = options.resultCacheStore.map {
            SharedResultCache(redis: RedisConnection(address: $0), timeToLive: options.resultCacheTimeToLive,
                              vocabularySize: vocabularySize, logger: Logger(label: "kiln.results"))
        }
        sharedSessions = options.sessionStore.map {
            SharedSessionStore(redis: RedisConnection(address: $0), timeToLive: options.sessionIdleTimeToLive, logger: Logger(label: "kiln.sessions"))
        }
    }

    private var runner: GenerationRun {
        GenerationRun(tokenizer: tokenizer, engine: engine, results: results, sharedResults: sharedResults, counters: counters,
                      handoff: handoff, logger: logger)
    }

    private func checkModel(_ name: String, field: String = "model") throws {
        guard name.isEmpty || name == modelName else {
            throw RPCError(.invalidArgument, "\(field): model \(name.prefix(64).debugDescription) is not served here (this server runs \"\(modelName)\")")
        }
    }

    public func generate(request: Kiln_V1_GenerateRequest, responses: RPCTypedWriter<Kiln_V1_GenerateResponse>, context: RPCServerContext) async throws {
        defer { reportLoad(context) }
        try checkModel(request.model)
        guard !request.prompt.isEmpty else { throw RPCError(.invalidArgument, "prompt is empty") }
        try checkLength(request.prompt.utf8.count, field: "prompt")
        let ids = tokenizer.encode(request.prompt, addSpecial: true, parseSpecial: request.parseSpecialTokens)
        let plan = try self.plan(prompt: ids, sampling: request.sampling, priority: request.priority,
                                 continuation: request.continuation, context: context)
        _ = try await run(plan, responses: responses, context: context)
    }

    public func chat(request: Kiln_V1_ChatRequest, responses: RPCTypedWriter<Kiln_V1_GenerateResponse>, context: RPCServerContext) async throws {
        defer { reportLoad(context) }
        try checkModel(request.model)
        guard !request.messages.isEmpty else { throw RPCError(.invalidArgument, "messages is empty") }
        guard let template else { throw RPCError(.failedPrecondition, "the model has no chat template") }
        try checkLength(request.messages.reduce(0) { $0 + $1.content.utf8.count + $1.role.utf8.count }, field: "messages")
        let new = request.messages.map { ChatMessage(role: $0.role, content: $0.content) }
        if let bad = new.first(where: { $0.role.isEmpty }) { throw RPCError(.invalidArgument, "messages.role is empty (content \(bad.content.prefix(40).debugDescription))") }
        guard !request.sessionId.isEmpty else {
            let text = template.render(new, addGenerationPrompt: true)
            let plan = try self.plan(prompt: tokenizer.encode(text, addSpecial: true, parseSpecial: true),
                                     sampling: request.sampling, priority: request.priority, continuation: request.continuation, context: context)
            _ = try await run(plan, responses: responses, context: context)
            return
        }

        // "new" asks the server for an id nobody can guess, sent back in the initial metadata.
        let id = request.sessionId == "new" ? SessionStore.newID() : request.sessionId
        guard id.utf8.count <= 256 else { throw RPCError(.invalidArgument, "session_id is longer than 256 bytes") }
        if request.sessionId == "new" { context.addInitialMetadata("x-session-id", id) }
        // A session this worker does not hold may have been kept by another one that is gone.
        if let shared = sharedSessions, request.sessionId != "new", !sessions.contains(id),
           case .found(let stored) = await shared.load(id), stored.tokens.allSatisfy({ $0 >= 0 && $0 < tokenizer.vocabulary.count }) {
            sessions.adopt(id, stored)
        }
        let known = sessions.contains(id)
        // A turn continued from another worker needs the session's history as that worker had it.
        guard request.continuation.isEmpty || known else {
            throw RPCError(.failedPrecondition, "session_id \"\(id)\": its history is not here (no --session-store, or it did not answer), so the turn cannot go on exactly")
        }
        var session: SessionStore.Session
        do { session = try sessions.begin(id, owner: context.peerIdentity) } catch SessionStore.Failure.notFound {
            throw RPCError(.notFound, "session_id \"\(id)\" is not found")
        } catch {
            throw RPCError(.aborted, "session_id \"\(id)\" is already running a turn; send the next one after it ends")
        }
        var committed = false
        defer { if !committed { sessions.abandon(id) } }
        // A new session is written at once, empty, so that a worker continuing its first turn finds it.
        if !known, let shared = sharedSessions { _ = await shared.save(id, session) }

        // The conversation rendered in full; when it starts with what the model has already seen, only the
        // rest is tokenized and appended, so the prompt begins with the session's exact tokens.
        let messages = session.messages + new
        let rendered = template.render(messages, addGenerationPrompt: true)
        let prompt: [Int], promptText: String
        let renderedBytes = Array(rendered.utf8)
        if !session.tokens.isEmpty, renderedBytes.starts(with: session.text.utf8) {
            let rest = String(decoding: renderedBytes[session.text.utf8.count...], as: UTF8.self)
            prompt = session.tokens + tokenizer.encode(rest, addSpecial: false, parseSpecial: true)
            promptText = session.text + rest
        } else {
            prompt = tokenizer.encode(rendered, addSpecial: true, parseSpecial: true)
            promptText = rendered
        }
        var plan = try self.plan(prompt: prompt, sampling: request.sampling, priority: request.priority,
                                 continuation: request.continuation, context: context, field: "session_id \"\(id)\": the history")
        // Another worker can continue a session's turn only from the shared store: without one, a drain runs
        // the turn out here.
        if sharedSessions == nil { plan.migratable = false }
        // Only a turn that finished returns here: one cut short throws, and the session stays as it was.
        let outcome = try await run(plan, responses: responses, context: context)
        session.messages = messages + [ChatMessage(role: "assistant", content: outcome.text)]
        session.text = promptText + outcome.seenText
        session.tokens = prompt + outcome.tokens
        sessions.commit(id, session)
        committed = true
        // Stored before the call ends, so that a turn whose answer the client has is never lost with its worker.
        if let shared = sharedSessions { _ = await shared.save(id, session) }
    }

    /// Runs a plan; a stream a drain handed over ends with UNAVAILABLE and the `kiln-migrate` trailer, for
    /// the router in front to continue it on another worker.
    private func run(_ plan: GenerationPlan, responses: RPCTypedWriter<Kiln_V1_GenerateResponse>, context: RPCServerContext) async throws -> GenerationOutcome {
        do {
            return try await runner.run(plan, responses: responses)
        } catch is StreamHandoff.HandedOff {
            context.addTrailingMetadata(StreamHandoff.migrateTrailer, "1")
            throw RPCError(.unavailable, "this worker is draining: the stream continues on another worker")
        }
    }

    /// Puts the engine's load as the call ends in the trailers (ORCA, `LoadReport`), for routers in front.
    private func reportLoad(_ context: RPCServerContext) {
        let e = engine.stats.engine
        context.addTrailingMetadata(LoadReport.header, LoadReport.encode(running: e.running, waiting: e.waiting, freeBlocks: e.blocksFree))
    }

    /// Refuses text that cannot fit the context whatever it tokenizes to.
    private func checkLength(_ bytes: Int, field: String) throws {
        guard bytes <= longestText else {
            throw RPCError(.invalidArgument, "\(field) is \(bytes) bytes; more than \(longestText) cannot fit the context (\(contextLength) tokens)")
        }
    }

    /// Token ids one Detokenize call turns into text at most.
    static let mostTokenIDs = 1 << 18

    /// When the call's deadline passes, in `DispatchTime` nanoseconds.
    static func deadline(of context: RPCServerContext) -> UInt64? {
        context.timeoutNanoseconds.map { DispatchTime.now().uptimeNanoseconds &+ $0 }
    }

    /// Checks a request's sampling fields and limits, naming the field of a bad one.
    func plan(prompt: [Int], sampling: Kiln_V1_SamplingParameters?, priority: Kiln_V1_Priority, continuation: [UInt32] = [],
              context: RPCServerContext? = nil, field: String = "prompt") throws -> GenerationPlan {
        let s = sampling ?? Kiln_V1_SamplingParameters()
        var p = SamplingParameters()
        p.temperature = s.temperature ?? 1
        p.topK = Int(s.topK)
        p.topP = s.topP ?? 1
        p.minP = s.minP
        p.repetitionPenalty = s.repetitionPenalty ?? 1
        p.frequencyPenalty = s.frequencyPenalty
        p.presencePenalty = s.presencePenalty
        p.seed = s.seed ?? UInt64.random(in: 0...UInt64.max)
        p.logprobs = Int(s.topLogprobs)
        do { try p.validate() } catch let e as SamplingError {
            throw RPCError(.invalidArgument, "sampling.\(e.field == "logprobs" ? "top_logprobs" : e.field) \(e.reason)")
        }
        guard s.stop.count <= 16 else { throw RPCError(.invalidArgument, "sampling.stop has \(s.stop.count) strings (at most 16)") }
        if let bad = s.stop.first(where: { $0.isEmpty || $0.utf8.count > 256 }) {
            throw RPCError(.invalidArgument, "sampling.stop: \(bad.prefix(32).debugDescription)\(bad.utf8.count > 32 ? " (\(bad.utf8.count) bytes)" : "") must be 1 to 256 bytes")
        }
        let maxTokens = Int(s.maxTokens ?? UInt32(options.defaultMaxTokens))
        guard maxTokens > 0, maxTokens < contextLength else {
            throw RPCError(.invalidArgument, "sampling.max_tokens must be in 1...\(contextLength - 1) (got \(maxTokens))")
        }
        guard !prompt.isEmpty else { throw RPCError(.invalidArgument, "\(field) is empty") }
        guard prompt.count + maxTokens <= contextLength else {
            throw RPCError(.invalidArgument, "\(field) (\(prompt.count) tokens) + sampling.max_tokens (\(maxTokens)) exceeds the context (\(contextLength) tokens)")
        }
        guard continuation.count <= maxTokens else {
            throw RPCError(.invalidArgument, "continuation has \(continuation.count) tokens, more than sampling.max_tokens (\(maxTokens))")
        }
        if let bad = continuation.first(where: { Int($0) >= tokenizer.vocabulary.count }) {
            throw RPCError(.invalidArgument, "continuation: \(bad) is outside the vocabulary (\(tokenizer.vocabulary.count))")
        }
        let stopTokens = s.ignoreEos ? [] : tokenizer.vocabulary.endOfGeneration
        // No key when the result cache is off (nothing is then kept per token for it), nor for a
        // continuation (the cache holds whole answers from their first message).
        let key = (results.isEnabled || sharedResults != nil) && continuation.isEmpty ? ResultCache.Key(model: modelName, prompt: prompt, parameters: p, seeded: s.seed != nil,
                                                      wantLogprob: s.logprobs, maxTokens: maxTokens, stops: s.stop, stopTokens: stopTokens) : nil
        var plan = GenerationPlan(prompt: prompt, parameters: p, maxTokens: maxTokens, stops: s.stop, stopTokens: stopTokens,
                                  wantLogprob: s.logprobs, priority: priority == .batch ? .batch : .interactive, cacheKey: key)
        plan.continuation = continuation.map { Int($0) }
        if let context {
            plan.deadline = Self.deadline(of: context)
            plan.migratable = StreamHandoff.isMigratable(context)
        }
        return plan
    }

    public func endSession(request: Kiln_V1_EndSessionRequest, context: RPCServerContext) async throws -> Kiln_V1_EndSessionResponse {
        guard !request.sessionId.isEmpty else { throw RPCError(.invalidArgument, "session_id is empty") }
        var response = Kiln_V1_EndSessionResponse()
        // One kept by another worker is read first, so that its owner is checked here as well.
        if let shared = sharedSessions, !sessions.contains(request.sessionId), case .found(let stored) = await shared.load(request.sessionId) {
            sessions.adopt(request.sessionId, stored)
        }
        do { response.existed = try sessions.end(request.sessionId, owner: context.peerIdentity) } catch {
            throw RPCError(.notFound, "session_id \(request.sessionId.prefix(64).debugDescription) is not found")
        }
        if response.existed, let shared = sharedSessions { _ = await shared.remove(request.sessionId) }
        return response
    }

    public func tokenize(request: Kiln_V1_TokenizeRequest, context: RPCServerContext) async throws -> Kiln_V1_TokenizeResponse {
        try checkModel(request.model)
        try checkLength(request.text.utf8.count, field: "text")
        var response = Kiln_V1_TokenizeResponse()
        response.tokenIds = tokenizer.encode(request.text, addSpecial: request.addSpecialTokens, parseSpecial: request.parseSpecialTokens).map { UInt32($0) }
        return response
    }

    public func detokenize(request: Kiln_V1_DetokenizeRequest, context: RPCServerContext) async throws -> Kiln_V1_DetokenizeResponse {
        try checkModel(request.model)
        guard request.tokenIds.count <= Self.mostTokenIDs else {
            throw RPCError(.invalidArgument, "token_ids has \(request.tokenIds.count) ids (at most \(Self.mostTokenIDs))")
        }
        if let bad = request.tokenIds.first(where: { Int($0) >= tokenizer.vocabulary.count }) {
            throw RPCError(.invalidArgument, "token_ids: \(bad) is outside the vocabulary (\(tokenizer.vocabulary.count))")
        }
        var response = Kiln_V1_DetokenizeResponse()
        response.text = tokenizer.decode(request.tokenIds.map { Int($0) })
        return response
    }

    public func listModels(request: Kiln_V1_ListModelsRequest, context: RPCServerContext) async throws -> Kiln_V1_ListModelsResponse {
        var response = Kiln_V1_ListModelsResponse()
        response.models = [info]
        return response
    }

    public func getModel(request: Kiln_V1_GetModelRequest, context: RPCServerContext) async throws -> Kiln_V1_ModelInfo {
        guard request.name.isEmpty || request.name == modelName else {
            throw RPCError(.notFound, "name: model \"\(request.name)\" is not served here (this server runs \"\(modelName)\")")
        }
        return info
    }

    public func getStats(request: Kiln_V1_GetStatsRequest, context: RPCServerContext) async throws -> Kiln_V1_ServerStats {
        let (e, refused, streams) = engine.stats
        let cache = results.counts
        var s = Kiln_V1_ServerStats()
        s.kvBlocksTotal = UInt32(e.blocksTotal)
        s.kvBlocksFree = UInt32(e.blocksFree)
        s.kvBlocksCached = UInt32(e.blocksCached)
        s.blockSize = UInt32(e.blockSize)
        s.runningRequests = UInt32(e.running)
        s.waitingRequests = UInt32(e.waiting)
        s.completedRequests = UInt64(counters.count(.completed))
        s.cancelledRequests = UInt64(counters.count(.cancelled))
        s.deadlineExceededRequests = UInt64(counters.count(.deadlineExceeded))
        s.failedRequests = UInt64(counters.count(.failed))
        s.interruptedRequests = UInt64(counters.count(.interrupted))
        s.engineStreams = UInt32(streams)
        s.refusedRequests = UInt64(refused)
        s.preemptions = UInt64(e.preemptions)
        s.promptTokens = UInt64(e.promptTokens)
        s.cachedPromptTokens = UInt64(e.cachedPromptTokens)
        s.resultCacheHits = UInt64(cache.hits)
        s.resultCacheMisses = UInt64(cache.misses)
        s.sessions = UInt32(sessions.count)
        s.steps = UInt64(e.steps)
        s.storeFailures = UInt64((sharedSessions?.redis.failures ?? 0) + (sharedResults?.redis.failures ?? 0))
        return s
    }
}
