import Synchronization

/// One request sent whole and its response collected whole, reported to a completion handler instead of
/// awaited: for callers that live on an event loop (`kiln route`'s unary relay), where the tasks and
/// continuations of ``HTTP2ClientCall`` would cost more than the call. Made by
/// ``HTTP2Client/exchange(method:path:authority:headers:body:maxResponseBytes:completion:)``.
///
/// The completion runs exactly once, on the connection's loop, and must not block. The response body is
/// taken in as it arrives (the flow-control window reopens at once) up to `maxResponseBytes`; a longer one
/// resets the stream and completes with ``HTTP2Error/bodyTooLarge``.
public final class HTTP2Exchange: Sendable {
    /// A whole response. `trailersOnly`: the response ended with its head (gRPC's Trailers-Only), so
    /// `headers` holds what would otherwise be the trailers.
    public struct Response: Sendable {
        public let status: Int
        public let headers: HTTP2Headers
        public let body: [UInt8]
        public let trailers: HTTP2Headers
        public let trailersOnly: Bool
    }

    let method: String
    let path: String
    let authority: String
    let headers: HTTP2Headers
    let body: [UInt8]
    let maxResponseBytes: Int

    private struct State {
        var connection: ClientConnection?
        var streamID: Int32 = 0
        var cancelled = false
        /// Taken when it runs: a completion that holds its caller, which holds the exchange (to cancel it),
        /// would otherwise keep both alive for ever.
        var completion: (@Sendable (Result<Response, HTTP2Error>) -> Void)?
    }
    private let state: Mutex<State>

    init(method: String, path: String, authority: String, headers: HTTP2Headers, body: [UInt8], maxResponseBytes: Int,
         completion: @escaping @Sendable (Result<Response, HTTP2Error>) -> Void) {
        self.method = method
        self.path = path
        self.authority = authority
        self.headers = headers
        self.body = body
        self.maxResponseBytes = maxResponseBytes
        self.state = Mutex(State(completion: completion))
    }

    /// Resets the stream (`CANCEL`); the completion runs with ``HTTP2Error/streamReset(_:)`` unless the
    /// response was already complete.
    public func cancel() {
        let (connection, id) = state.withLock { s -> (ClientConnection?, Int32) in
            s.cancelled = true
            return (s.connection, s.streamID)
        }
        guard let connection else { return }  // not yet submitted: `bind` sees the flag
        if connection.loop.inEventLoop {
            connection.cancelStream(id)
        } else {
            connection.loop.execute { connection.cancelStream(id) }
        }
    }

    // MARK: Connection side

    /// The stream is open; returns false if the caller cancelled before it was (the connection resets it).
    func bind(connection: ClientConnection, streamID: Int32) -> Bool {
        state.withLock { s in
            s.connection = connection
            s.streamID = streamID
            return !s.cancelled
        }
    }

    /// Runs the completion, the first time only, and lets go of it.
    func complete(_ result: Result<Response, HTTP2Error>) {
        let completion = state.withLock { s -> (@Sendable (Result<Response, HTTP2Error>) -> Void)? in
            defer { s.completion = nil; s.connection = nil }
            return s.completion
        }
        completion?(result)
    }
}
