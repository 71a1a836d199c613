/// A request answered on the event loop, with no task: the whole request (head and body) in, the whole
/// response (head, body, trailers) out. For cheap work that never blocks — a health check, an echo, a
/// lookup — where starting a task would cost more than the work itself.
public protocol HTTP2InlineHandler: Sendable {
    /// Request body bytes buffered at most; past it the rest is discarded and `bodyTooLarge` is set.
    var maxRequestBodySize: Int { get }
    /// Called on the connection's loop once the request has ended. Must not block.
    func respond(to request: HTTP2InlineRequest) -> HTTP2InlineResponse
}

/// A whole request, as an inline handler sees it.
public struct HTTP2InlineRequest: Sendable {
    public let method: String
    public let path: String
    public let headers: HTTP2Headers
    public let body: [UInt8]
    /// The body passed the handler's limit: `body` holds only its first bytes.
    public let bodyTooLarge: Bool
    public let remoteAddress: String

    /// The path without its query string.
    public var pathWithoutQuery: Substring { stripQuery(path) }
}

/// A whole response: head, body, then trailers when there are any (sent after the body, with END_STREAM).
public struct HTTP2InlineResponse: Sendable {
    public var status: Int
    public var headers: HTTP2Headers
    public var body: [UInt8]
    public var trailers: HTTP2Headers

    public init(status: Int = 200, headers: HTTP2Headers = HTTP2Headers(), body: [UInt8] = [], trailers: HTTP2Headers = HTTP2Headers()) {
        self.status = status
        self.headers = headers
        self.body = body
        self.trailers = trailers
    }
}

/// A route that is given the whole request at once, on the loop (inline or deferred), as either protocol's
/// connection holds it while the body arrives.
enum WholeRequestRoute {
    case inline(any HTTP2InlineHandler)
    case deferred(any HTTP2DeferredHandler)

    var maxRequestBodySize: Int {
        switch self {
        case .inline(let h): return h.maxRequestBodySize
        case .deferred(let h): return h.maxRequestBodySize
        }
    }
}
