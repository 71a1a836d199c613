import KilnHTTP2

/// What a server method knows about its call besides the messages.
public struct RPCServerContext: Sendable {
    /// `/package.Service/Method`.
    public let path: String
    /// Request metadata: every non-pseudo header the client sent (`-bin` values still base64).
    public let metadata: HTTP2Headers
    /// Nanoseconds the client allows for the call (`grpc-timeout`), if it set one.
    public let timeoutNanoseconds: UInt64?
    /// The peer's address.
    public let remoteAddress: String
    /// The subject of the client certificate the TLS handshake verified (mTLS); nil without one.
    public var peerIdentity: String? = nil
    /// The call's response side, for metadata (messages go through the method's writer or return value).
    let responses: RPCResponseWriter

    /// Adds response metadata sent before the first message (a unary method's way to set headers).
    public func addInitialMetadata(_ name: String, _ value: String) { responses.addInitialMetadata(name, value) }

    /// Adds response metadata sent with the status.
    public func addTrailingMetadata(_ name: String, _ value: String) { responses.addTrailingMetadata(name, value) }
}

/// The request messages of one call, as raw protobuf payloads in order.
public struct RPCRequestMessages: AsyncSequence, Sendable {
    public typealias Element = [UInt8]
    let body: HTTP2InboundBody
    let maxMessageSize: Int
    /// Whether the client declared `grpc-encoding: gzip` (compressed messages are then gzip).
    var gzip = false

    public struct AsyncIterator: AsyncIteratorProtocol {
        let body: HTTP2InboundBody
        var deframer: GRPCMessageDeframer
        let gzip: Bool
        let maxMessageSize: Int
        var ended = false
        /// The bytes of the message handed on last, still charged to the connection's request buffer budget.
        var handedOn = 0
        /// Keep every message charged until the call ends (a unary call holds its one message throughout).
        var chargesUntilTheEnd = false

        public mutating func next() async throws -> [UInt8]? {
            // A message's bytes stay charged to the connection's buffer budget while it is assembled and
            // while the handler works on it: until it asks for the next one (or the call ends).
            body.holdBytesUntilReleased()
            if !chargesUntilTheEnd && handedOn > 0 {
                body.releaseBytes(handedOn)
                handedOn = 0
            }
            while true {
                if let message = try deframer.next() {
                    handedOn = 5 + message.payload.count
                    return try RequestMessageRules.payload(of: message, gzip: gzip, limit: maxMessageSize)
                }
                if ended { return nil }
                guard let chunk = try await body.next() else {
                    ended = true
                    if deframer.hasPartialMessage { throw RequestMessageRules.truncated }
                    return nil
                }
                deframer.append(chunk)
            }
        }
    }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(body: body, deframer: GRPCMessageDeframer(maxMessageSize: maxMessageSize), gzip: gzip, maxMessageSize: maxMessageSize)
    }

    /// The one message of a unary or server-streaming call: exactly one must come.
    public func single() async throws -> [UInt8] {
        var it = makeAsyncIterator()
        it.chargesUntilTheEnd = true
        guard let first = try await it.next() else { throw RequestMessageRules.noMessage }
        if try await it.next() != nil { throw RequestMessageRules.moreThanOne }
        return first
    }
}

/// The response side of one call: initial metadata, messages, then (from the server) the status.
public final class RPCResponseWriter: Sendable {
    private let response: HTTP2ResponseWriter
    private let metadata = Mutex<(initial: HTTP2Headers, trailing: HTTP2Headers)>((HTTP2Headers(), HTTP2Headers()))

    init(response: HTTP2ResponseWriter) { self.response = response }

    /// Adds initial metadata; only before the first message.
    public func addInitialMetadata(_ name: String, _ value: String) {
        metadata.withLock { $0.initial.add(name, value) }
    }

    /// Adds trailing metadata, sent with the status.
    public func addTrailingMetadata(_ name: String, _ value: String) {
        metadata.withLock { $0.trailing.add(name, value) }
    }

    private func sendHeadIfNeeded() {
        guard !response.headSent else { return }
        var headers = metadata.withLock { $0.initial }
        headers.replace("content-type", "application/grpc")
        headers.replace("grpc-accept-encoding", "gzip, identity")
        response.sendHead(status: 200, headers: headers)
    }

    /// Sends one message, waiting while the client reads slower than this writes.
    public func write(_ payload: [UInt8]) async throws {
        sendHeadIfNeeded()
        try await response.write(GRPCMessageFramer.frame(payload))
    }

    /// Ends the call with a status: trailers after messages, or Trailers-Only when nothing was sent.
    func finish(_ error: RPCError?) {
        let code = error?.code ?? .ok
        var fields = metadata.withLock { $0.trailing }
        fields.replace("grpc-status", String(code.rawValue))
        if let message = error?.message, !message.isEmpty {
            fields.replace("grpc-message", StatusMessageCoding.encode(message))
        }
        if response.headSent {
            response.finish(trailers: fields)
        } else {
            var headers = metadata.withLock { $0.initial }
            headers.replace("content-type", "application/grpc")
            for f in fields { headers.replace(f.name, f.value) }
            response.sendHead(status: 200, headers: headers, endStream: true)
        }
    }
}

import Synchronization
