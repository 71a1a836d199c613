import Synchronization

/// The status and headers that open a response.
public struct HTTP2ResponseHead: Sendable {
    public let status: Int
    public let headers: HTTP2Headers
    /// The response ended with its head (no body, no trailers), as gRPC's Trailers-Only does.
    public let endStream: Bool
}

/// One request on an ``HTTP2Client``: a request body to write and a response to read. Safe to use from
/// any task; work is carried to the owning connection's loop.
public final class HTTP2ClientCall: Sendable {
    public let method: String
    public let path: String
    public let authority: String
    public let headers: HTTP2Headers
    /// The response body; trailers are on it once it ends.
    public let body: HTTP2InboundBody
    /// Nil when the request was sent with its head alone (`endStream`).
    let outbound: OutboundBody?

    private struct State {
        var connection: ClientConnection?
        var streamID: Int32 = 0
        var head: Result<HTTP2ResponseHead, Error>?
        var headWaiters: [CheckedContinuation<HTTP2ResponseHead, Error>] = []
        var cancelled = false
    }
    private let state = Mutex(State())

    init(method: String, path: String, authority: String, headers: HTTP2Headers, endStream: Bool, bufferSize: Int) {
        self.method = method
        self.path = path
        self.authority = authority
        self.headers = headers
        // The closures reach the connection through `state`, bound once the call is submitted.
        let box = WeakCall()
        body = HTTP2InboundBody { box.call?.onLoop { c, id in c.reportConsumed(streamID: id) } }
        outbound = endStream ? nil : OutboundBody(highWatermark: bufferSize, lowWatermark: bufferSize / 4) {
            box.call?.onLoop { c, id in c.resumeData(streamID: id) }
        }
        box.call = self
    }

    // MARK: Caller side

    /// Queues request body bytes, waiting while the server is slower than the producer.
    public func write(_ bytes: [UInt8]) async throws {
        guard let outbound else { throw HTTP2Error.invalidState("request was sent without a body") }
        try await outbound.write(bytes)
    }

    /// Ends the request body, with trailers if any.
    public func finish(trailers: HTTP2Headers = HTTP2Headers()) {
        outbound?.finish(trailers: trailers)
    }

    /// Waits for the response head.
    public func response() async throws -> HTTP2ResponseHead {
        try await withCheckedThrowingContinuation { c in
            let ready = state.withLock { s -> Result<HTTP2ResponseHead, Error>? in
                if let h = s.head { return h }
                s.headWaiters.append(c)
                return nil
            }
            if let ready { c.resume(with: ready) }
        }
    }

    /// Resets the stream (`CANCEL`); pending reads and writes fail.
    public func cancel() {
        state.withLock { $0.cancelled = true }
        onLoop { c, id in c.cancelStream(id) }
    }

    // MARK: Connection side

    /// Runs `work` on the owning loop once the call has a stream.
    private func onLoop(_ work: @escaping @Sendable (ClientConnection, Int32) -> Void) {
        let (connection, id) = state.withLock { ($0.connection, $0.streamID) }
        guard let connection else { return }
        connection.loop.execute { work(connection, id) }
    }

    func bind(connection: ClientConnection, streamID: Int32) {
        let cancelled = state.withLock { s -> Bool in
            s.connection = connection
            s.streamID = streamID
            return s.cancelled
        }
        if cancelled { connection.cancelStream(streamID) }
    }

    func deliverHead(_ head: Result<HTTP2ResponseHead, Error>) {
        let waiters = state.withLock { s -> [CheckedContinuation<HTTP2ResponseHead, Error>] in
            if s.head != nil { return [] }
            s.head = head
            defer { s.headWaiters = [] }
            return s.headWaiters
        }
        for w in waiters { w.resume(with: head) }
    }

    /// The stream ended abnormally: everything still waiting fails with `error`.
    func fail(_ error: HTTP2Error) {
        deliverHead(.failure(error))
        body.finish(error: error)
        outbound?.fail(error)
    }
}

private final class WeakCall: @unchecked Sendable {
    // Written once in HTTP2ClientCall.init before the call is shared.
    weak var call: HTTP2ClientCall?
}

/// A whole response, collected.
public struct HTTP2ClientResponse: Sendable {
    public let status: Int
    public let headers: HTTP2Headers
    public let body: [UInt8]
    public let trailers: HTTP2Headers
}
