import KilnHTTP2
import Synchronization

/// Per-call settings.
public struct RPCCallOptions: Sendable {
    /// Seconds the call may take; sent as `grpc-timeout` and enforced here too.
    public var timeout: Double?
    /// Request metadata (`-bin` names carry base64 values).
    public var metadata: HTTP2Headers
    /// Send request messages gzip-compressed (`grpc-encoding: gzip`).
    public var compressRequests: Bool
    public init(timeout: Double? = nil, metadata: HTTP2Headers = HTTP2Headers(), compressRequests: Bool = false) {
        self.timeout = timeout
        self.metadata = metadata
        self.compressRequests = compressRequests
    }
}

/// One call on an ``RPCChannel``: request messages out, response messages in, then a status.
/// A status other than OK is thrown, as an ``RPCError``, by the response sequence at its end.
public final class RPCClientCall: Sendable {
    private let call: HTTP2ClientCall
    private let maxReceiveMessageSize: Int
    private let compressRequests: Bool
    private struct State {
        var initialMetadata: HTTP2Headers?
        var trailingMetadata = HTTP2Headers()
        var receivedMessage = false
        var deadlineExceeded = false
        var timer: Task<Void, Never>?
    }
    private let state = Mutex(State())

    init(call: HTTP2ClientCall, timeout: Double?, maxReceiveMessageSize: Int, compressRequests: Bool = false) {
        self.call = call
        self.maxReceiveMessageSize = maxReceiveMessageSize
        self.compressRequests = compressRequests
        if let timeout {
            let timer = Task { [weak self] in
                try? await Task.sleep(nanoseconds: UInt64(max(0, timeout) * 1e9))
                guard !Task.isCancelled, let self else { return }
                self.state.withLock { $0.deadlineExceeded = true }
                self.call.cancel()
            }
            state.withLock { $0.timer = timer }
        }
    }

    /// Whether any response message arrived (a retry is safe only before that).
    public var receivedMessage: Bool { state.withLock { $0.receivedMessage } }
    /// Trailing metadata, once the responses have ended.
    public var trailingMetadata: HTTP2Headers { state.withLock { $0.trailingMetadata } }

    /// Sends one request message.
    public func send(_ payload: [UInt8]) async throws {
        do {
            if compressRequests {
                try await call.write(GRPCMessageFramer.frame(try GzipCodec.compress(payload), compressed: true))
            } else {
                try await call.write(GRPCMessageFramer.frame(payload))
            }
        } catch {
            throw mapError(error)
        }
    }

    /// Ends the request stream.
    public func finish() { call.finish() }

    /// Cancels the call (RST_STREAM); the responses end with CANCELLED.
    public func cancel() { call.cancel() }

    /// The response head's metadata; throws the call's status if the call failed before a message.
    public func initialMetadata() async throws -> HTTP2Headers {
        if let m = state.withLock({ $0.initialMetadata }) { return m }
        let head: HTTP2ResponseHead
        do {
            head = try await call.response()
        } catch {
            throw mapError(error)
        }
        guard head.status == 200 else {
            throw RPCError(RPCStatusCode(httpStatus: head.status), "HTTP status \(head.status)")
        }
        guard let ct = head.headers["content-type"], ct.hasPrefix("application/grpc") else {
            throw RPCError(.unknown, "response content-type \(head.headers["content-type"] ?? "missing") is not gRPC")
        }
        if head.endStream {
            // Trailers-Only: the head carries the status.
            state.withLock { $0.initialMetadata = HTTP2Headers(); $0.trailingMetadata = head.headers }
            try Self.check(status: head.headers)
            return HTTP2Headers()
        }
        state.withLock { $0.initialMetadata = head.headers }
        return head.headers
    }

    /// The response messages; the sequence throws the status at its end when it is not OK.
    public var responses: AsyncThrowingStream<[UInt8], Error> {
        AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    let head = try await self.initialMetadata()
                    let gzip = head["grpc-encoding"] == "gzip"
                    var deframer = GRPCMessageDeframer(maxMessageSize: self.maxReceiveMessageSize)
                    while let chunk = try await self.call.body.next() {
                        deframer.append(chunk)
                        while let m = try deframer.next() {
                            var payload = m.payload
                            if m.compressed {
                                guard gzip else { throw RPCError(.internal, "compressed response without an encoding") }
                                payload = try GzipCodec.decompress(payload, limit: self.maxReceiveMessageSize)
                            }
                            self.state.withLock { $0.receivedMessage = true }
                            continuation.yield(payload)
                        }
                    }
                    if deframer.hasPartialMessage { throw RPCError(.internal, "response ended inside a message") }
                    let trailers = self.call.body.trailers
                    if !trailers.isEmpty { self.state.withLock { $0.trailingMetadata = trailers } }
                    try Self.check(status: self.state.withLock { $0.trailingMetadata })
                    self.endTimer()
                    continuation.finish()
                } catch {
                    self.endTimer()
                    continuation.finish(throwing: self.mapError(error))
                }
            }
            continuation.onTermination = { reason in
                if case .cancelled = reason {
                    task.cancel()
                    self.call.cancel()
                }
            }
        }
    }

    private func endTimer() {
        state.withLock { $0.timer?.cancel(); $0.timer = nil }
    }

    static func check(status headers: HTTP2Headers) throws {
        guard let raw = headers["grpc-status"] else {
            throw RPCError(.unknown, "response ended without grpc-status")
        }
        let code = RPCStatusCode(grpcStatus: raw)
        guard code == .ok else {
            throw RPCError(code, StatusMessageCoding.decode(headers["grpc-message"] ?? ""))
        }
    }

    /// Transport errors as statuses: a lost connection is UNAVAILABLE (retryable), a reset CANCELLED or
    /// INTERNAL, the local deadline DEADLINE_EXCEEDED.
    func mapError(_ error: Error) -> RPCError {
        if state.withLock({ $0.deadlineExceeded }) { return RPCError(.deadlineExceeded, "deadline exceeded") }
        if let e = error as? RPCError { return e }
        if error is CancellationError { return RPCError(.cancelled, "cancelled", cause: error) }
        guard let h = error as? HTTP2Error else { return RPCError(wrapping: error) }
        switch h {
        case .streamReset(let code):
            switch code {
            case 7: return RPCError(.unavailable, "stream refused", cause: h)       // REFUSED_STREAM
            case 8: return RPCError(.cancelled, "stream cancelled", cause: h)       // CANCEL
            case 11: return RPCError(.resourceExhausted, "enhance your calm", cause: h)
            default: return RPCError(.internal, h.description, cause: h)
            }
        case .connectionClosed, .goingAway, .system, .tls, .timeout, .badAddress:
            return RPCError(.unavailable, h.description, cause: h)
        default:
            return RPCError(.internal, h.description, cause: h)
        }
    }
}
