import KilnAPI
import KilnHTTP2
import KilnRPC
import KilnRouter
import Logging
import Synchronization

/// `kiln route`'s relay of the unary methods of `kiln.v1.Inference` (EndSession, Tokenize, Detokenize,
/// ListModels, GetModel; GetStats is answered here), driven by the event loop with no task per call: the
/// request arrives whole (``HTTP2DeferredHandler``), goes to the backend as one ``HTTP2Exchange``, and the
/// one response message comes back whole — a unary call has nothing to stream. A task, its continuations
/// and async body streams cost more than the rest of the relay together (`make bench-router`), so the
/// streaming methods (Generate, Chat) keep ``InferenceRelay``'s task, and these do not.
///
/// The rules are ``InferenceRelay``'s: the same session key, retries before anything reached the client
/// (on the key's probe order, exponential backoff with jitter, `grpc-retry-pushback-ms`), deadlines passed
/// on as the time remaining and enforced here too a moment after, a client's reset cancelling the
/// backend's call, and the worker's status and trailers passed back unchanged.
public struct UnaryRelay: HTTP2DeferredHandler {
    /// The methods served here; the rest of the service goes to ``InferenceRelay``.
    public static let methods = ["EndSession", "Tokenize", "Detokenize", "ListModels", "GetModel", "GetStats"]
    let relay: InferenceRelay

    public init(_ relay: InferenceRelay) {
        self.relay = relay
    }

    public var maxRequestBodySize: Int { relay.maxMessageBytes + 5 }

    /// Mounts the unary methods (exact paths, ahead of the service prefix).
    public func mount(on router: inout HTTP2Router) {
        for method in Self.methods { router.add(InferenceRelay.servicePrefix + method, .deferred(self)) }
    }

    public func start(_ request: HTTP2InlineRequest, _ responder: HTTP2DeferredResponder) {
        guard GRPCRequestHead.isGRPC(contentType: request.headers["content-type"]) else {
            return responder.respond(HTTP2InlineResponse(status: 415, headers: ["content-type": "text/plain"], body: GRPCRequestHead.wrongContentType))
        }
        guard !request.bodyTooLarge else {
            return responder.respond(Self.failure(.resourceExhausted, "request message larger than \(relay.maxMessageBytes) bytes"))
        }
        if request.pathWithoutQuery == "/kiln.v1.Inference/GetStats" {
            // The router's own stats (each backend), not one worker's.
            var stats = Kiln_V1_ServerStats()
            stats.backends = relay.backends.stats()
            return responder.respond(HTTP2InlineResponse(headers: ["content-type": "application/grpc"],
                                                         body: GRPCMessageFramer.frame(stats.serializedBytes()), trailers: ["grpc-status": "0"]))
        }
        let now = BackendSet.now()
        var deadline: UInt64?
        if let text = request.headers["grpc-timeout"] {
            guard let timeout = GRPCTimeout.parse(text) else {
                return responder.respond(Self.failure(.internal, "malformed grpc-timeout \(text)"))
            }
            deadline = now &+ min(timeout, GRPCTimeout.longest)
        }
        switch relay.prepare(path: request.pathWithoutQuery, body: request.body, headers: request.headers) {
        case .ready(let keyHash, let body, let extraHeaders):
            UnaryRelayCall(relay: relay, responder: responder, path: request.path, headers: relay.forwardedHeaders(request.headers),
                           body: body, keyHash: keyHash, deadline: deadline, extraHeaders: extraHeaders).start()
        case .refused(let message):
            responder.respond(Self.failure(.invalidArgument, message))
        }
    }

    /// A call ended by the router itself, Trailers-Only.
    static func failure(_ code: RPCStatusCode, _ message: String, extra: HTTP2Headers = HTTP2Headers()) -> HTTP2InlineResponse {
        HTTP2InlineResponse(headers: InferenceRelay.trailersOnly(code, message, extra: extra))
    }
}

/// One unary call through the router: its attempts, their timers, and its one answer. Its steps run on
/// event loops (the client's, the backend connection's), so its state is behind a lock.
final class UnaryRelayCall: Sendable {
    /// Calls alive now: a test's check that finished calls are freed (a reference cycle would keep each
    /// call, its request and its response for ever).
    static let live = Atomic<Int>(0)

    private let relay: InferenceRelay
    private let responder: HTTP2DeferredResponder
    private let path: String
    /// The client's metadata as the worker gets it (`grpc-timeout` is added per attempt).
    private let headers: HTTP2Headers
    private let body: [UInt8]
    private let keyHash: UInt64?
    private let deadline: UInt64?
    private let extraHeaders: HTTP2Headers

    private struct State {
        var tried = Set<String>()
        var attempts = 0
        var backoff = 0.1
        var pushbacks: [Int] = []
        var lastFailure = "no backend is available"
        /// Answered, expired or cancelled: later completions only settle their backend's books.
        var finished = false
        var exchange: HTTP2Exchange?
        var deadlineTimer: LoopTimer?
        var retryTimer: LoopTimer?
    }
    private let state = Mutex(State())

    init(relay: InferenceRelay, responder: HTTP2DeferredResponder, path: String, headers: HTTP2Headers, body: [UInt8],
         keyHash: UInt64?, deadline: UInt64?, extraHeaders: HTTP2Headers) {
        self.relay = relay
        self.responder = responder
        self.path = path
        self.headers = headers
        self.body = body
        self.keyHash = keyHash
        self.deadline = deadline
        self.extraHeaders = extraHeaders
        Self.live.add(1, ordering: .relaxed)
    }

    deinit { Self.live.subtract(1, ordering: .relaxed) }

    func start() {
        if let deadline {
            // The worker enforces the deadline it is sent; the router does too, a moment later, so that a
            // worker that cannot answer (hung, partitioned) costs the client no more than its deadline.
            let now = BackendSet.now()
            let end = deadline &+ InferenceRelay.deadlineGrace
            let timer = responder.loop.scheduleTimer(afterNanos: end > now ? end - now : 0) { [self] in expire() }
            state.withLock { $0.deadlineTimer = timer }
        }
        responder.onCancel { [self] in cancel() }
        attempt(1)
    }

    private func attempt(_ number: Int) {
        var headers = self.headers
        if let deadline {
            let now = BackendSet.now()
            guard now < deadline else { return answer(UnaryRelay.failure(.deadlineExceeded, "deadline exceeded before a backend answered")) }
            headers.add("grpc-timeout", GRPCTimeout.format(nanoseconds: deadline - now))
        }
        let picked = state.withLock { s -> Backend? in
            guard !s.finished, let (backend, _) = relay.backends.pick(keyHash: keyHash, keyless: relay.keylessPolicy, excluding: s.tried, isRetry: number > 1) else { return nil }
            s.tried.insert(backend.name)
            s.attempts += 1
            return backend
        }
        guard let backend = picked else { return giveUp() }
        let started = BackendSet.now()
        do {
            // The completion may run before this returns (a connection already closed): it must not find the
            // lock held.
            let exchange = try backend.client.exchange(path: path, headers: headers, body: body, maxResponseBytes: relay.maxMessageBytes + 5) { [self] result in
                completed(result, backend: backend, attempt: number, started: started)
            }
            let cancelNow = state.withLock { s -> Bool in
                s.exchange = exchange
                return s.finished
            }
            if cancelNow { exchange.cancel() }
        } catch {
            retry(after: number, backend: backend, reason: "connect: \(error)", pushbackMs: nil)
        }
    }

    private func completed(_ result: Result<HTTP2Exchange.Response, HTTP2Error>, backend: Backend, attempt: Int, started: UInt64) {
        let ended = BackendSet.now()
        let seconds = Double(ended - started) / 1e9
        if state.withLock({ $0.finished }) {
            return relay.backends.finish(backend, result: .abandoned, seconds: nil)
        }
        let response: HTTP2Exchange.Response
        switch result {
        case .failure(.bodyTooLarge):
            relay.backends.finish(backend, result: .succeeded, seconds: seconds)
            return answer(UnaryRelay.failure(.resourceExhausted, "the backend's response is larger than \(relay.maxMessageBytes) bytes"))
        case .failure(let error):
            return retry(after: attempt, backend: backend, reason: "\(error)", pushbackMs: nil)
        case .success(let r):
            response = r
        }
        if response.trailersOnly {
            // The call failed (or ended) before any message.
            if case .retry(let reason, let pushbackMs) = InferenceRelay.retryable(response.headers) {
                return retry(after: attempt, backend: backend, reason: reason, pushbackMs: pushbackMs)
            }
            relay.backends.finish(backend, result: InferenceRelay.judge(response.headers), seconds: seconds,
                                  load: InferenceRelay.loadReport(in: response.headers, at: ended))
            return answer(HTTP2InlineResponse(status: response.status, headers: InferenceRelay.merged(response.headers, extraHeaders)))
        }
        guard response.status == 200 else {
            if [502, 503, 504].contains(response.status) {
                return retry(after: attempt, backend: backend, reason: "HTTP \(response.status)", pushbackMs: nil)
            }
            relay.backends.finish(backend, result: .succeeded, seconds: seconds)
            return answer(HTTP2InlineResponse(status: response.status, headers: response.headers, body: response.body, trailers: response.trailers))
        }
        if response.body.isEmpty, case .retry(let reason, let pushbackMs) = InferenceRelay.retryable(response.trailers) {
            // Headers, then trailers, no message: still nothing the client has seen.
            return retry(after: attempt, backend: backend, reason: reason, pushbackMs: pushbackMs)
        }
        relay.backends.finish(backend, result: InferenceRelay.judge(response.trailers), seconds: seconds,
                              load: InferenceRelay.loadReport(in: response.trailers, at: ended))
        answer(HTTP2InlineResponse(status: 200, headers: InferenceRelay.merged(response.headers, extraHeaders),
                                   body: response.body, trailers: response.trailers))
    }

    /// Attempt `number` failed before anything reached the client: the next backend, after a wait, if
    /// attempts and time remain.
    private func retry(after number: Int, backend: Backend, reason: String, pushbackMs: Int?) {
        relay.backends.finish(backend, result: pushbackMs == nil ? .failed : .succeeded, seconds: nil)
        let failure = "\(backend.address): \(reason)"
        relay.logger.info("retrying \(path) after attempt \(number): \(failure)")
        let wait: Double? = state.withLock { s in
            s.lastFailure = failure
            if let pushbackMs { s.pushbacks.append(pushbackMs) }
            guard number < relay.maxAttempts, !s.finished else { return nil }
            let wait = pushbackMs.map { Double($0) / 1000 } ?? s.backoff * Double.random(in: 0.5...1.0)
            s.backoff = min(1.0, s.backoff * 2)
            if let deadline, BackendSet.now() &+ UInt64(wait * 1e9) >= deadline { return nil }
            return wait
        }
        guard let wait else { return giveUp() }
        let timer = responder.loop.scheduleTimer(afterNanos: UInt64(wait * 1e9)) { [self] in attempt(number + 1) }
        let cancelNow = state.withLock { s -> Bool in
            s.retryTimer = timer
            return s.finished
        }
        if cancelNow { timer.cancel() }
    }

    /// No attempt is left: UNAVAILABLE, or RESOURCE_EXHAUSTED with the shortest pushback when every backend
    /// tried said when to come back.
    private func giveUp() {
        let (attempts, pushbacks, lastFailure) = state.withLock { ($0.attempts, $0.pushbacks, $0.lastFailure) }
        if attempts > 0, pushbacks.count == attempts, let wait = pushbacks.min() {
            return answer(UnaryRelay.failure(.resourceExhausted, lastFailure, extra: ["grpc-retry-pushback-ms": String(wait)]))
        }
        answer(UnaryRelay.failure(.unavailable, lastFailure))
    }

    /// Sends the one answer and stops the timers.
    private func answer(_ response: HTTP2InlineResponse) {
        guard let timers = finish() else { return }
        timers.forEach { $0.cancel() }
        responder.respond(response)
    }

    /// The deadline (and its grace) has passed with no answer: the backend's call is cancelled, the client
    /// gets DEADLINE_EXCEEDED.
    private func expire() {
        guard let timers = finish() else { return }
        timers.forEach { $0.cancel() }
        state.withLock { $0.exchange }?.cancel()
        responder.respond(UnaryRelay.failure(.deadlineExceeded, "deadline exceeded (the router cancelled the backend's call)"))
    }

    /// The client reset the stream: so does the backend's call, which frees what the worker held for it.
    private func cancel() {
        guard let timers = finish() else { return }
        timers.forEach { $0.cancel() }
        state.withLock { $0.exchange }?.cancel()
    }

    /// Marks the call finished; returns its timers, or nil if it already was.
    private func finish() -> [LoopTimer]? {
        state.withLock { s -> [LoopTimer]? in
            guard !s.finished else { return nil }
            s.finished = true
            defer { s.deadlineTimer = nil; s.retryTimer = nil }
            return [s.deadlineTimer, s.retryTimer].compactMap { $0 }
        }
    }
}
