import Synchronization

/// A request answered later, without a task: like ``HTTP2InlineHandler`` the whole request is gathered on
/// the event loop, but the answer may come afterwards, from any thread, through an ``HTTP2DeferredResponder``
/// — when another connection has answered, say. For work that waits on I/O but needs no task to do it
/// (`kiln route`'s relay of unary calls), where a task per request would cost more than the request.
public protocol HTTP2DeferredHandler: Sendable {
    /// Request body bytes buffered at most; past it the rest is discarded and `bodyTooLarge` is set.
    var maxRequestBodySize: Int { get }
    /// Called on the connection's loop once the request has ended. Must not block: it starts the work and
    /// returns; the work answers through `responder` (once).
    func start(_ request: HTTP2InlineRequest, _ responder: HTTP2DeferredResponder)
}

/// The answer to one deferred request. Safe to use from any thread; the response is carried to the
/// connection's loop.
///
/// A request that is never answered holds its stream until the client resets it or the connection closes:
/// a handler bounds its own work (a deadline, a timer).
public final class HTTP2DeferredResponder: Sendable {
    private let connection: any DeferredResponseTarget
    private let streamID: Int32
    private struct State {
        var answered = false
        var cancelled = false
        var onCancel: (@Sendable () -> Void)?
    }
    private let state = Mutex(State())

    init(target: any DeferredResponseTarget, streamID: Int32) {
        self.connection = target
        self.streamID = streamID
    }

    /// The loop the request arrived on; the handler's `start` runs there, and so does an `onCancel` handler.
    public var loop: EventLoop { connection.loop }

    /// Whether the client reset the stream (or the connection closed) before an answer.
    public var isCancelled: Bool { state.withLock { $0.cancelled } }

    /// Sends the whole response. Only the first call counts; after a cancel, nothing is sent.
    public func respond(_ response: HTTP2InlineResponse) {
        let first = state.withLock { s -> Bool in
            guard !s.answered, !s.cancelled else { return false }
            s.answered = true
            s.onCancel = nil
            return true
        }
        guard first else { return }
        let connection = self.connection, id = streamID
        if connection.loop.inEventLoop {
            connection.submitDeferredResponse(streamID: id, response)
        } else {
            connection.loop.execute { connection.submitDeferredResponse(streamID: id, response) }
        }
    }

    /// Runs `body` (on the connection's loop) if the client resets the stream or the connection closes
    /// before the answer; at once if that has already happened. One handler: a later call replaces it.
    public func onCancel(_ body: @escaping @Sendable () -> Void) {
        let now = state.withLock { s -> Bool in
            if s.answered { return false }
            if s.cancelled { return true }
            s.onCancel = body
            return false
        }
        if now { body() }
    }

    /// The stream ended before an answer. Loop side.
    func cancel() {
        let handler = state.withLock { s -> (@Sendable () -> Void)? in
            guard !s.answered, !s.cancelled else { return nil }
            s.cancelled = true
            defer { s.onCancel = nil }
            return s.onCancel
        }
        handler?()
    }
}

/// A connection a deferred answer is carried to, on its loop (HTTP/2 names the stream, HTTP/1.1 the request).
protocol DeferredResponseTarget: AnyObject, Sendable {
    var loop: EventLoop { get }
    func submitDeferredResponse(streamID: Int32, _ response: HTTP2InlineResponse)
}
