import CLinux
import Glibc
import Synchronization

/// An HTTP/2 client for one server: many concurrent calls multiplexed on one connection, which is
/// re-established when it drops or the server sends GOAWAY.
public final class HTTP2Client: Sendable {
    public let host: String
    public let port: Int
    private let group: EventLoopGroup
    private let tlsContext: TLSContext?
    private let serverName: String?
    private let timeouts: ConnectionLifecycle.Timeouts
    private let windowSize: UInt32
    private let current = Mutex<ClientConnection?>(nil)

    /// - Parameters:
    ///   - tls: TLS settings; nil speaks h2c with prior knowledge.
    ///   - connectTimeout: seconds for TCP connect plus TLS handshake.
    public init(host: String, port: Int, tls: TLSClientConfiguration? = nil, group: EventLoopGroup,
                connectTimeout: Double = 10, idleTimeout: Double = 300, keepaliveInterval: Double = 0,
                keepaliveTimeout: Double = 20, windowSize: UInt32 = 1 << 20) throws {
        self.host = host
        self.port = port
        self.group = group
        self.tlsContext = try tls.map { try TLSContext.client($0) }
        self.serverName = tls?.serverName ?? host
        self.timeouts = ConnectionLifecycle.Timeouts(
            handshake: nanos(connectTimeout), idle: nanos(idleTimeout), pingInterval: nanos(keepaliveInterval),
            pingTimeout: nanos(keepaliveTimeout), drainGrace: 0)
        self.windowSize = windowSize
    }

    /// The live connection, or a new one.
    private func connection() throws -> ClientConnection {
        try current.withLock { c in
            if let existing = c, existing.isAvailable { return existing }
            if let old = c { old.loop.execute { old.closeGracefully() } }
            let address = try SocketAddress(host: host, port: port)
            let fd = try Socket.startConnect(to: address)
            let channel: ByteChannel
            if let tlsContext {
                do {
                    channel = try TLSChannel(fd: fd, context: tlsContext, isServer: false, serverName: serverName)
                } catch {
                    Glibc.close(fd)
                    throw error
                }
            } else {
                channel = PlainChannel(fd: fd)
            }
            let loop = group.nextLoop()
            let fresh = ClientConnection(loop: loop, fd: fd, channel: channel, timeouts: timeouts, windowSize: windowSize)
            loop.execute {
                do {
                    try fresh.start(events: EPOLLIN.rawValue | EPOLLOUT.rawValue)
                } catch {
                    fresh.close(reason: "register: \(error)")
                }
            }
            c = fresh
            return fresh
        }
    }

    /// Starts a call. With `endStream` the request has no body; otherwise write it and call `finish()`.
    public func makeCall(method: String = "POST", path: String, authority: String? = nil,
                         headers: HTTP2Headers = HTTP2Headers(), endStream: Bool = false) throws -> HTTP2ClientCall {
        let call = HTTP2ClientCall(method: method, path: path, authority: authority ?? "\(host):\(port)",
                                   headers: headers, endStream: endStream, bufferSize: 256 * 1024)
        let conn = try connection()
        conn.loop.execute { conn.submit(call) }
        return call
    }

    /// Sends a whole request and collects the whole response.
    public func request(method: String = "GET", path: String, headers: HTTP2Headers = HTTP2Headers(),
                        body: [UInt8]? = nil) async throws -> HTTP2ClientResponse {
        let call = try makeCall(method: method, path: path, headers: headers, endStream: body == nil)
        if let body {
            try await call.write(body)
            call.finish()
        }
        let head = try await call.response()
        let bytes = try await call.body.collect()
        return HTTP2ClientResponse(status: head.status, headers: head.headers, body: bytes, trailers: call.body.trailers)
    }

    /// Closes the connection gracefully; calls in flight may finish.
    public func close() {
        current.withLock { c in
            if let conn = c { conn.loop.execute { conn.closeGracefully() } }
            c = nil
        }
    }
}
