import Synchronization

/// A request as the handler sees it: the head, and the body still arriving.
public struct HTTP2Request: Sendable {
    public let method: String
    /// The `:path`, query included.
    public let path: String
    public let authority: String?
    public let scheme: String?
    /// Regular (non-pseudo) header fields, in arrival order.
    public let headers: HTTP2Headers
    /// The request body; reading it opens the peer's flow-control window.
    public let body: HTTP2InboundBody
    /// The peer's address, as text.
    public let remoteAddress: String
    /// The subject of the client certificate the TLS handshake verified (mTLS), e.g. `/CN=client`; nil
    /// on h2c and on TLS without client certificates.
    public var peerIdentity: String? = nil

    /// The path without its query string.
    public var pathWithoutQuery: Substring { stripQuery(path) }

    /// The value of one query parameter (no percent-decoding).
    public func queryParameter(_ name: String) -> String? {
        guard let q = path.firstIndex(of: "?") else { return nil }
        for pair in path[path.index(after: q)...].split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1)
            if kv.first.map(String.init) == name { return kv.count > 1 ? String(kv[1]) : "" }
        }
        return nil
    }
}

/// The response side of one stream. Safe to use from any task; calls are carried to the connection's loop.
///
/// Order: ``sendHead(status:headers:endStream:)`` (optional: the first write sends `200`), any number of
/// ``write(_:)``, then ``finish(trailers:)``. A handler that returns without finishing is finished for it.
public final class HTTP2ResponseWriter: Sendable {
    private let outbound: OutboundBody
    private let submitHead: @Sendable (Int, HTTP2Headers, Bool) -> Void
    private let state = Mutex<(headSent: Bool, ended: Bool)>((false, false))

    init(outbound: OutboundBody, submitHead: @escaping @Sendable (Int, HTTP2Headers, Bool) -> Void) {
        self.outbound = outbound
        self.submitHead = submitHead
    }

    /// Whether the head has gone (or is on its way).
    public var headSent: Bool { state.withLock { $0.headSent } }
    /// Whether the response is complete.
    public var isFinished: Bool { state.withLock { $0.ended } }

    /// Sends the status and headers. With `endStream` the response ends here (e.g. gRPC Trailers-Only).
    public func sendHead(status: Int = 200, headers: HTTP2Headers = HTTP2Headers(), endStream: Bool = false) {
        let send = state.withLock { s -> Bool in
            if s.headSent { return false }
            s.headSent = true
            if endStream { s.ended = true }
            return true
        }
        guard send else { return }
        submitHead(status, headers, endStream)
        if endStream { outbound.finish() }
    }

    /// Queues body bytes, waiting while the peer is slower than the producer.
    public func write(_ bytes: [UInt8]) async throws {
        sendHead()
        try await outbound.write(bytes)
    }

    /// Ends the body, sending trailers when there are any.
    public func finish(trailers: HTTP2Headers = HTTP2Headers()) {
        sendHead()
        let first = state.withLock { s -> Bool in
            defer { s.ended = true }
            return !s.ended
        }
        if first { outbound.finish(trailers: trailers) }
    }
}

/// Answers requests on one route.
public protocol HTTP2Handler: Sendable {
    /// Handles one request. Runs in its own task, cancelled if the peer resets the stream.
    func handle(_ request: HTTP2Request, _ response: HTTP2ResponseWriter) async throws
}

extension HTTP2Handler {
    /// Runs the handler as either protocol's connection does: the response it leaves open is finished; a
    /// failure before the head is a 500; one after it calls `cutShort`, for the protocol to end the response
    /// its way (HTTP/2 resets the stream, HTTP/1.1 closes the connection).
    func respond(to request: HTTP2Request, with writer: HTTP2ResponseWriter, cutShort: @escaping @Sendable () -> Void) async {
        do {
            try await handle(request, writer)
            writer.finish()
        } catch {
            if !writer.headSent {
                writer.sendHead(status: 500, headers: ["content-type": "text/plain"], endStream: true)
            } else if !writer.isFinished {
                cutShort()
            }
        }
    }
}

/// A handler written as a closure.
public struct HTTP2ClosureHandler: HTTP2Handler {
    let body: @Sendable (HTTP2Request, HTTP2ResponseWriter) async throws -> Void
    public init(_ body: @escaping @Sendable (HTTP2Request, HTTP2ResponseWriter) async throws -> Void) {
        self.body = body
    }
    public func handle(_ request: HTTP2Request, _ response: HTTP2ResponseWriter) async throws {
        try await body(request, response)
    }
}

/// A response known in advance, served on the event loop without starting a task. Its header block is
/// laid out once, when it is made.
public struct HTTP2FixedResponse: Sendable {
    public let status: Int
    /// The headers as sent (`content-length` added).
    public let headers: HTTP2Headers
    public let body: [UInt8]
    let prepared: PreparedHeaderBlock

    public init(status: Int = 200, headers: HTTP2Headers = HTTP2Headers(), body: [UInt8]) {
        var headers = headers
        if headers["content-length"] == nil { headers.add("content-length", String(body.count)) }
        self.status = status
        self.headers = headers
        self.body = body
        self.prepared = PreparedHeaderBlock(pseudo: [(":status", String(status))], headers: headers)
    }
}

/// What a path is answered with.
public enum HTTP2Route: Sendable {
    case fixed(HTTP2FixedResponse)
    case handler(any HTTP2Handler)
    /// Answered on the event loop once the whole request has arrived (no task).
    case inline(any HTTP2InlineHandler)
    /// Started on the event loop once the whole request has arrived, answered later from anywhere (no task).
    case deferred(any HTTP2DeferredHandler)
}

/// Maps request paths to routes: exact paths first, then the longest matching prefix, then a fallback.
public struct HTTP2Router: Sendable {
    private var exact: [String: HTTP2Route] = [:]
    private var prefixes: [(String, HTTP2Route)] = []
    /// Answer for paths nothing else matches (404 by default).
    public var fallback: HTTP2Route = .fixed(HTTP2FixedResponse(status: 404, headers: ["content-type": "text/plain"], body: Array("not found\n".utf8)))

    public init() {}

    /// Routes one exact path (query ignored).
    public mutating func add(_ path: String, _ route: HTTP2Route) {
        exact[path] = route
    }

    /// Routes every path that starts with `prefix`.
    public mutating func add(prefix: String, _ route: HTTP2Route) {
        prefixes.append((prefix, route))
        prefixes.sort { $0.0.count > $1.0.count }
    }

    public func route(for path: Substring) -> HTTP2Route {
        if let r = exact[String(path)] { return r }
        for (p, r) in prefixes where path.utf8.starts(with: p.utf8) { return r }
        return fallback
    }
}

/// A path without its query string.
func stripQuery(_ path: String) -> Substring {
    // Over the UTF-8 bytes: a Character search costs grapheme breaking on every request.
    if let q = path.utf8.firstIndex(of: UInt8(ascii: "?")) { return path[..<q] }
    return path[...]
}
