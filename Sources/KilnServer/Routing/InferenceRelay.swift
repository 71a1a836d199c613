import KilnAPI
import KilnHTTP2
import KilnRPC
import KilnRouter
import Logging
import Synchronization

/// `kiln route`'s relay of `kiln.v1.Inference`: each call goes to the backend its session key (or, keyless,
/// the response-time policy) picks and comes back message by message.
///
/// - The request (one message on every method of the service) is read whole, at most `maxMessageBytes`, so
///   that it can be sent again. The response is never buffered: each chunk the worker sends is written to the
///   client as it comes.
/// - Session key: `ChatRequest.session_id` / `EndSessionRequest.session_id`, else metadata `x-session-id`.
///   `session_id: "new"` is given its random id here, not by a worker, so that the id's ring owner holds the
///   session; the id goes back in the initial metadata, as a worker would send it.
/// - A call is retried, at most `maxAttempts` times in all, only while no response message has reached the
///   client: on a refused or lost connection, UNAVAILABLE, or RESOURCE_EXHAUSTED with
///   `grpc-retry-pushback-ms` (after the pushback). Each retry goes to the next backend of the key's probe
///   order (`excluding` the ones tried) after an exponential backoff with jitter from 100 ms to 1 s. When
///   every attempt was pushed back, the client gets RESOURCE_EXHAUSTED with the shortest pushback; otherwise
///   UNAVAILABLE.
/// - A Generate or Chat call whose backend fails after part of the answer
///   reached the client — the connection lost or reset, GOAWAY without the stream, UNAVAILABLE (a drain's
///   handoff says so with the `kiln-migrate` trailer) — continues on the next backend of the key's probe
///   order with the tokens already streamed as the request's `continuation`: the worker goes on exactly where
///   the failed one stopped, and the client's stream has no gap, duplicate or error (a chat session's turn
///   needs workers that share sessions, `--session-store`). At most `maxMigrations`
///   times a call (`kiln route --max-migrations`); such calls carry `kiln-migratable: 1` so that a draining
///   worker hands them over instead of running them out, and one that moved ends with the trailer
///   `kiln-migrations: N`.
/// - `GetStats` is answered by the router itself (``UnaryRelay``): each backend's health, load, picks,
///   spills and retries.
/// - The client's deadline goes on as the time remaining (`grpc-timeout`); a client's cancel resets the
///   worker's stream, which frees its KV blocks; the worker's status and trailers reach the client unchanged.
public struct InferenceRelay: HTTP2Handler {
    public static let servicePrefix = "/kiln.v1.Inference/"
    let backends: BackendSet
    let maxMessageBytes: Int
    let maxAttempts: Int
    /// Times one Generate or Chat stream may move to another backend after its backend failed mid-stream.
    let maxMigrations: Int
    /// How calls without a session key pick (`kiln route --keyless-policy`).
    let keylessPolicy: BalancingPolicy
    let logger: Logger

    public init(backends: BackendSet, keylessPolicy: BalancingPolicy = .leastResponseTime, maxMessageBytes: Int = 4 << 20,
                maxAttempts: Int = 3, maxMigrations: Int = 3, logger: Logger) {
        self.backends = backends
        self.keylessPolicy = keylessPolicy
        self.maxMessageBytes = maxMessageBytes
        self.maxAttempts = max(1, maxAttempts)
        self.maxMigrations = max(0, maxMigrations)
        self.logger = logger
    }

    /// Mounts the relay for every method of `kiln.v1.Inference`: the unary ones through ``UnaryRelay`` (on
    /// the event loop), the streaming ones (and any method the router does not know) here, in a task.
    public func mount(on router: inout HTTP2Router) {
        router.add(prefix: Self.servicePrefix, .handler(self))
        UnaryRelay(self).mount(on: &router)
    }

    public func handle(_ request: HTTP2Request, _ response: HTTP2ResponseWriter) async throws {
        if try await GRPCRequestHead.refusesNonGRPC(request, response) { return }
        let started = BackendSet.now()
        var deadline: UInt64?
        if let text = request.headers["grpc-timeout"] {
            guard let timeout = GRPCTimeout.parse(text) else {
                return Self.fail(response, .internal, "malformed grpc-timeout \(text)")
            }
            deadline = started &+ min(timeout, GRPCTimeout.longest)
        }
        // The whole request, bounded.
        var body: [UInt8] = []
        for try await chunk in request.body {
            guard body.count + chunk.count <= maxMessageBytes + 5 else {
                return Self.fail(response, .resourceExhausted, "request message larger than \(maxMessageBytes) bytes")
            }
            body += chunk
        }
        let keyHash: UInt64?, extraHeaders: HTTP2Headers
        switch prepare(path: request.pathWithoutQuery, body: body, headers: request.headers) {
        case .ready(let hash, let rewritten, let extra):
            (keyHash, body, extraHeaders) = (hash, rewritten, extra)
        case .refused(let message):
            return Self.fail(response, .invalidArgument, message)
        }
        guard let deadline else {
            return await route(path: request.path, headers: request.headers, body: body, keyHash: keyHash, deadline: nil, extraHeaders: extraHeaders, response: response)
        }
        // The worker enforces the deadline it is sent; the router enforces it too, a moment later, so that a
        // worker that cannot answer (hung, partitioned) still costs the client no more than its deadline.
        let path = request.path
        let incoming = request.headers
        let message = body
        let added = extraHeaders
        let expired = await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                await self.route(path: path, headers: incoming, body: message, keyHash: keyHash, deadline: deadline, extraHeaders: added, response: response)
                return false
            }
            group.addTask {
                let now = BackendSet.now()
                let end = deadline &+ Self.deadlineGrace
                if end > now { guard (try? await Task.sleep(nanoseconds: end - now)) != nil else { return false } }
                return true
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
        if expired && !response.isFinished {
            let trailers: HTTP2Headers = ["grpc-status": String(RPCStatusCode.deadlineExceeded.rawValue),
                                          "grpc-message": StatusMessageCoding.encode("deadline exceeded (the router cancelled the backend's call)")]
            if response.headSent { response.finish(trailers: trailers) } else { Self.fail(response, .deadlineExceeded, "deadline exceeded (the router cancelled the backend's call)") }
        }
    }

    /// Response bytes already arrived from the worker that go on to the client in one write (messages that
    /// came together leave together; each still goes as soon as it has arrived).
    static let batchBytes = 64 << 10

    /// How long after the client's deadline the router gives up on a backend that has not answered it.
    static let deadlineGrace: UInt64 = 100_000_000

    /// Sends the call to backends until one takes it or the attempts run out; a Generate or Chat call that
    /// fails mid-stream goes on on the next backend (``MigratableStream``), at most `maxMigrations` times.
    private func route(path: String, headers incoming: HTTP2Headers, body: [UInt8], keyHash: UInt64?, deadline: UInt64?, extraHeaders: HTTP2Headers,
                       response: HTTP2ResponseWriter) async {
        var tried = Set<String>()
        var backoff = 0.1
        var lastFailure = "no backend is available"
        var attempts = 0, migrations = 0
        var pushbacks: [Int] = []
        var stream = maxMigrations > 0 ? MigratableStream(path: Substring(path), body: body, maxMessageBytes: maxMessageBytes) : nil
        // Whether part of the answer has reached the client: the call can then only go on, never start over.
        var committed = false
        while true {
            var headers = forwardedHeaders(incoming)
            if stream != nil { headers.add(StreamHandoff.migratableHeader, "1") }
            if let deadline {
                let now = BackendSet.now()
                guard now < deadline else {
                    let message = committed ? "deadline exceeded while the stream moved to another backend" : "deadline exceeded before a backend answered"
                    return Self.end(response, .deadlineExceeded, message)
                }
                headers.add("grpc-timeout", GRPCTimeout.format(nanoseconds: deadline - now))
            }
            guard let (backend, _) = backends.pick(keyHash: keyHash, keyless: keylessPolicy, excluding: tried, isRetry: attempts > 0) else { break }
            tried.insert(backend.name)
            attempts += 1
            if committed { backends.noteMigration(to: backend) }
            let callStarted = BackendSet.now()
            let outcome: Outcome
            if var s = stream {
                outcome = await relayMigrating(to: backend, path: path, headers: headers, body: committed ? s.continuedBody() : body,
                                               stream: &s, committed: committed, migrations: migrations, extraHeaders: extraHeaders, response: response)
                stream = s
            } else {
                outcome = await relay(to: backend, path: path, headers: headers, body: body, extraHeaders: extraHeaders, response: response)
            }
            let ended = BackendSet.now()
            let seconds = Double(ended - callStarted) / 1e9
            switch outcome {
            case .done(let result, let trailers):
                backends.finish(backend, result: result, seconds: seconds, load: Self.loadReport(in: trailers, at: ended))
                return
            case .migrate(let reason):
                // Part of the answer reached the client: the next backend continues it from the tokens streamed.
                backends.finish(backend, result: .failed, seconds: nil)
                committed = true
                migrations += 1
                lastFailure = "\(backend.address): \(reason)"
                logger.info("moving \(path) on after \(stream?.tokens.count ?? 0) tokens (migration \(migrations)): \(lastFailure)")
                guard migrations <= maxMigrations, !Task.isCancelled else { break }
                continue
            case .retry(let reason, let pushbackMs):
                backends.finish(backend, result: pushbackMs == nil ? .failed : .succeeded, seconds: nil)
                lastFailure = "\(backend.address): \(reason)"
                if let pushbackMs { pushbacks.append(pushbackMs) }
                logger.info("retrying \(path) after attempt \(attempts): \(lastFailure)")
                guard attempts < maxAttempts, !Task.isCancelled else { break }
                let wait = pushbackMs.map { Double($0) / 1000 } ?? backoff * Double.random(in: 0.5...1.0)
                backoff = min(1.0, backoff * 2)
                if let deadline, BackendSet.now() &+ UInt64(wait * 1e9) >= deadline { break }
                guard (try? await Task.sleep(for: .seconds(wait))) != nil else { return }
                continue
            }
            break
        }
        guard !Task.isCancelled else { return }
        if committed {
            return Self.end(response, .unavailable, "the stream could not go on after \(migrations) migration(s): \(lastFailure)")
        }
        if attempts > 0, pushbacks.count == attempts, let wait = pushbacks.min() {
            // Every backend tried is over its limit and said when to come back: so does the router.
            return Self.fail(response, .resourceExhausted, lastFailure, extra: ["grpc-retry-pushback-ms": String(wait)])
        }
        Self.fail(response, .unavailable, lastFailure)
    }

    // MARK: Keys

    /// A request ready to go on: its key's ring hash, its body (rewritten when the router gave the session its
    /// id) and the metadata the router adds to the answer; or why it is refused (INVALID_ARGUMENT).
    enum Prepared {
        case ready(keyHash: UInt64?, body: [UInt8], extraHeaders: HTTP2Headers)
        case refused(String)
    }

    func prepare(path: Substring, body: [UInt8], headers: HTTP2Headers) -> Prepared {
        switch extractKey(path: path, body: body, headers: headers) {
        case .key(let key):
            return .ready(keyHash: key.map { StableHash.hash($0) }, body: body, extraHeaders: HTTP2Headers())
        case .newSession(let id, let rewritten):
            return .ready(keyHash: StableHash.hash(id), body: rewritten, extraHeaders: ["x-session-id": id])
        case .bad(let message):
            return .refused(message)
        }
    }

    enum KeyExtraction {
        case key(String?)
        case newSession(id: String, rewrittenBody: [UInt8])
        case bad(String)
    }

    /// The call's session key, from the request message (Chat, EndSession) or the metadata.
    func extractKey(path: Substring, body: [UInt8], headers: HTTP2Headers) -> KeyExtraction {
        let metadataKey = headers["x-session-id"].flatMap { $0.isEmpty ? nil : $0 }
        let isChat = path == "/kiln.v1.Inference/Chat"
        guard isChat || path == "/kiln.v1.Inference/EndSession" else { return .key(metadataKey) }
        var deframer = GRPCMessageDeframer(maxMessageSize: maxMessageBytes)
        deframer.append(body)
        guard let message = try? deframer.next() else { return .bad("the request must hold one gRPC message") }
        // A compressed message is left to the worker to read; its key can only come from the metadata.
        guard !message.compressed else { return .key(metadataKey) }
        if isChat {
            guard var chat = try? Kiln_V1_ChatRequest(serializedBytes: message.payload) else {
                return .bad("the request is not a kiln.v1.ChatRequest")
            }
            if chat.sessionId == "new" {
                chat.sessionId = SessionStore.newID()
                return .newSession(id: chat.sessionId, rewrittenBody: GRPCMessageFramer.frame(chat.serializedBytes()))
            }
            return .key(chat.sessionId.isEmpty ? metadataKey : chat.sessionId)
        }
        guard let end = try? Kiln_V1_EndSessionRequest(serializedBytes: message.payload) else {
            return .bad("the request is not a kiln.v1.EndSessionRequest")
        }
        return .key(end.sessionId.isEmpty ? metadataKey : end.sessionId)
    }

    /// The client's metadata as the worker should see it: everything but the deadline (sent as what remains)
    /// and `te` (always `trailers`).
    func forwardedHeaders(_ incoming: HTTP2Headers) -> HTTP2Headers {
        var out = incoming
        out.removeAll { $0.name == "grpc-timeout" || $0.name == "te" || $0.name == "content-length" }
        out.add("te", "trailers")
        return out
    }

    // MARK: One attempt

    enum Outcome {
        /// The call reached the client (in full, or as far as the client stayed), with the worker's trailers
        /// when it sent them.
        case done(Balancer.CallResult, trailers: HTTP2Headers?)
        /// Nothing reached the client; another backend may take the call (after `pushbackMs` if given).
        case retry(String, pushbackMs: Int?)
        /// Part of the answer reached the client and the backend failed: the next one continues it.
        case migrate(String)
    }

    /// Sends the call to one backend and relays the answer, unless the backend fails it before its first
    /// message, when nothing is sent to the client and the caller may retry.
    func relay(to backend: Backend, path: String, headers: HTTP2Headers, body: [UInt8], extraHeaders: HTTP2Headers,
               response: HTTP2ResponseWriter) async -> Outcome {
        let call: HTTP2ClientCall
        do {
            call = try backend.client.makeCall(path: path, headers: headers)
        } catch {
            return .retry("connect: \(error)", pushbackMs: nil)
        }
        return await withTaskCancellationHandler {
            await relay(call, body: body, extraHeaders: extraHeaders, response: response)
        } onCancel: {
            call.cancel()  // the client went away: so does the worker's call, and its KV blocks with it
        }
    }

    private func relay(_ call: HTTP2ClientCall, body: [UInt8], extraHeaders: HTTP2Headers,
                       response: HTTP2ResponseWriter) async -> Outcome {
        let head: HTTP2ResponseHead
        let first: [UInt8]?
        do {
            try await call.write(body)
            call.finish()
            head = try await call.response()
            if head.endStream {
                // Trailers-Only: the call failed (or ended) before any message.
                if let retry = Self.retryable(head.headers) { return retry }
                response.sendHead(status: head.status, headers: Self.merged(head.headers, extraHeaders), endStream: true)
                return .done(Self.judge(head.headers), trailers: head.headers)
            }
            guard head.status == 200 else {
                if [502, 503, 504].contains(head.status) { return .retry("HTTP \(head.status)", pushbackMs: nil) }
                response.sendHead(status: head.status, headers: head.headers)
                response.finish()
                return .done(.succeeded, trailers: nil)
            }
            first = try await call.body.nextBatch(maxBytes: Self.batchBytes)
        } catch {
            call.cancel()
            if Task.isCancelled { return .done(.abandoned, trailers: nil) }
            return .retry("\(error)", pushbackMs: nil)
        }
        guard let first else {
            // Headers, then trailers, no message: still nothing the client has seen.
            let trailers = call.body.trailers
            if let retry = Self.retryable(trailers) { return retry }
            response.sendHead(status: 200, headers: Self.merged(head.headers, extraHeaders))
            response.finish(trailers: trailers)
            return .done(Self.judge(trailers), trailers: trailers)
        }
        // Committed: from here the call is the client's, whatever happens.
        response.sendHead(status: 200, headers: Self.merged(head.headers, extraHeaders))
        do {
            try await response.write(first)
        } catch {
            call.cancel()
            return .done(.abandoned, trailers: nil)
        }
        while true {
            let chunk: [UInt8]?
            do {
                chunk = try await call.body.nextBatch(maxBytes: Self.batchBytes)
            } catch {
                if Task.isCancelled { return .done(.abandoned, trailers: nil) }
                response.finish(trailers: ["grpc-status": String(RPCStatusCode.unavailable.rawValue),
                                           "grpc-message": StatusMessageCoding.encode("the backend went away mid-call")])
                return .done(.failed, trailers: nil)
            }
            guard let chunk else { break }
            do {
                try await response.write(chunk)
            } catch {
                call.cancel()
                return .done(.abandoned, trailers: nil)
            }
        }
        let trailers = call.body.trailers
        response.finish(trailers: trailers)
        return .done(Self.judge(trailers), trailers: trailers)
    }

    /// The worker's load report among a call's trailers (`LoadReport`), if it sent one.
    static func loadReport(in trailers: HTTP2Headers?, at now: UInt64) -> WorkerLoad? {
        guard let value = trailers?[LoadReport.header], let r = LoadReport.decode(value) else { return nil }
        return WorkerLoad(running: r.running, waiting: r.waiting, freeBlocks: r.freeBlocks, receivedAt: now)
    }

    /// Whether a status that ended a call before any message lets another backend try it.
    static func retryable(_ fields: HTTP2Headers) -> Outcome? {
        let code = RPCStatusCode(grpcStatus: fields["grpc-status"])
        if code == .unavailable { return .retry("UNAVAILABLE: \(StatusMessageCoding.decode(fields["grpc-message"] ?? ""))", pushbackMs: nil) }
        if code == .resourceExhausted, let text = fields["grpc-retry-pushback-ms"], let ms = Int(text), ms >= 0 {
            return .retry("RESOURCE_EXHAUSTED, pushback \(ms) ms", pushbackMs: min(ms, 10_000))
        }
        return nil
    }

    /// What a finished call says of its backend's health: only UNAVAILABLE blames it.
    static func judge(_ fields: HTTP2Headers) -> Balancer.CallResult {
        RPCStatusCode(grpcStatus: fields["grpc-status"]) == .unavailable ? .failed : .succeeded
    }

    static func merged(_ a: HTTP2Headers, _ b: HTTP2Headers) -> HTTP2Headers {
        guard !b.isEmpty else { return a }
        var out = a
        out.append(contentsOf: b)
        return out
    }

    /// Ends a call from the router itself: Trailers-Only, or trailers after the messages already sent.
    static func end(_ response: HTTP2ResponseWriter, _ code: RPCStatusCode, _ message: String) {
        guard response.headSent else { return fail(response, code, message) }
        response.finish(trailers: ["grpc-status": String(code.rawValue), "grpc-message": StatusMessageCoding.encode(message)])
    }

    /// Ends a call from the router itself, Trailers-Only.
    static func fail(_ response: HTTP2ResponseWriter, _ code: RPCStatusCode, _ message: String, extra: HTTP2Headers = HTTP2Headers()) {
        response.sendHead(status: 200, headers: trailersOnly(code, message, extra: extra), endStream: true)
    }

    /// The head of a call the router ends itself: gRPC's Trailers-Only.
    static func trailersOnly(_ code: RPCStatusCode, _ message: String, extra: HTTP2Headers = HTTP2Headers()) -> HTTP2Headers {
        var headers: HTTP2Headers = ["content-type": "application/grpc", "grpc-status": String(code.rawValue),
                                     "grpc-message": StatusMessageCoding.encode(message)]
        headers.append(contentsOf: extra)
        return headers
    }
}
