import CLinux
import Glibc
import Synchronization

/// An HTTP/2 client for one server: a small pool of connections, each carrying many concurrent calls.
///
/// Calls go on the first connection with room under the server's `SETTINGS_MAX_CONCURRENT_STREAMS`; when
/// every connection is full and the pool is below `maxConnections`, another is opened (past that, calls queue
/// in the least busy connection until a stream frees). A connection that drops or receives GOAWAY is
/// replaced on the next call. Connecting again after failed attempts waits an exponential backoff with
/// jitter (`ReconnectBackoff`); calls made meanwhile fail at once with `HTTP2Error.connectionClosed`, so that
/// a caller with somewhere else to go goes there.
public final class HTTP2Client: Sendable {
    public let host: String
    public let port: Int
    public let maxConnections: Int
    /// `HOST:PORT`, the `:authority` of calls that name none (made once, not per call).
    private let defaultAuthority: String
    private let group: EventLoopGroup
    private let tlsContext: TLSContext?
    private let serverName: String?
    private let timeouts: ConnectionLifecycle.Timeouts
    private let windowSize: UInt32
    private let pool = Mutex<Pool>(Pool())

    private struct Pool {
        var connections: [ClientConnection] = []
        var backoff = ReconnectBackoff()
        var learnedMaxStreams = 100
    }

    /// - Parameters:
    ///   - tls: TLS settings; nil speaks h2c with prior knowledge.
    ///   - connectTimeout: seconds for TCP connect plus TLS handshake.
    ///   - maxConnections: connections the pool may hold at once (at least 1).
    public init(host: String, port: Int, tls: TLSClientConfiguration? = nil, group: EventLoopGroup,
                connectTimeout: Double = 10, idleTimeout: Double = 300, keepaliveInterval: Double = 0,
                keepaliveTimeout: Double = 20, windowSize: UInt32 = 1 << 20, maxConnections: Int = 1) throws {
        self.host = host
        self.port = port
        self.maxConnections = max(1, maxConnections)
        self.defaultAuthority = "\(host):\(port)"
        self.group = group
        self.tlsContext = try tls.map { try TLSContext.client($0) }
        self.serverName = tls?.serverName ?? host
        self.timeouts = ConnectionLifecycle.Timeouts(
            handshake: nanos(connectTimeout), idle: nanos(idleTimeout), pingInterval: nanos(keepaliveInterval),
            pingTimeout: nanos(keepaliveTimeout), drainGrace: 0)
        self.windowSize = windowSize
    }

    /// Connections open (or opening) now.
    public var connectionCount: Int {
        pool.withLock { p in p.connections.filter(\.isAvailable).count }
    }

    /// A connection for one more call, with the call reserved on it.
    private func connection() throws -> ClientConnection {
        try pool.withLock { p in
            // Forget connections that closed or were told to go away (their calls finish on their own), and
            // learn from them whether connecting works.
            let now = MonotonicClock.nanos()
            p.connections.removeAll { c in
                guard !c.isAvailable else { return false }
                if c.becameReady {
                    p.backoff.succeeded()
                    p.learnedMaxStreams = c.peerMaxConcurrentStreams
                } else {
                    p.backoff.failed(now: now)
                }
                return true
            }
            if let roomy = p.connections.first(where: \.hasRoom) {
                roomy.reserve()
                return roomy
            }
            if p.connections.count >= maxConnections, let busy = p.connections.min(by: { $0.reservedCalls < $1.reservedCalls }) {
                busy.reserve()  // nghttp2 holds the call until one of the server's streams frees
                return busy
            }
            guard p.backoff.mayConnect(now: now) else { throw HTTP2Error.connectionClosed }
            // A new connection expects the stream limit the others learned (a server gives each the same).
            let fresh = try open(expectedMaxStreams: p.connections.first(where: \.becameReady)?.peerMaxConcurrentStreams ?? p.learnedMaxStreams)
            fresh.reserve()
            p.connections.append(fresh)
            return fresh
        }
    }

    private func open(expectedMaxStreams: Int) throws -> ClientConnection {
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
        let fresh = ClientConnection(loop: loop, fd: fd, channel: channel, timeouts: timeouts, windowSize: windowSize,
                                     expectedMaxStreams: expectedMaxStreams)
        loop.execute {
            do {
                try fresh.start(events: EPOLLIN.rawValue | EPOLLOUT.rawValue)
            } catch {
                fresh.close(reason: "register: \(error)")
            }
        }
        return fresh
    }

    /// Starts a call. With `endStream` the request has no body; otherwise write it and call `finish()`.
    public func makeCall(method: String = "POST", path: String, authority: String? = nil,
                         headers: HTTP2Headers = HTTP2Headers(), endStream: Bool = false) throws -> HTTP2ClientCall {
        let call = HTTP2ClientCall(method: method, path: path, authority: authority ?? defaultAuthority,
                                   headers: headers, endStream: endStream, bufferSize: 256 * 1024)
        let conn = try connection()
        conn.loop.execute { conn.submit(call) }
        return call
    }

    /// Sends a whole request and collects the whole response without a task: `completion` runs once, on
    /// the connection's loop (it must not block), with the response or why there is none. Returns the
    /// exchange, to cancel. Throws, without calling `completion`, when no connection may be opened now.
    @discardableResult
    public func exchange(method: String = "POST", path: String, authority: String? = nil, headers: HTTP2Headers = HTTP2Headers(),
                         body: [UInt8], maxResponseBytes: Int,
                         completion: @escaping @Sendable (Result<HTTP2Exchange.Response, HTTP2Error>) -> Void) throws -> HTTP2Exchange {
        let exchange = HTTP2Exchange(method: method, path: path, authority: authority ?? defaultAuthority, headers: headers,
                                     body: body, maxResponseBytes: maxResponseBytes, completion: completion)
        let conn = try connection()
        if conn.loop.inEventLoop {
            conn.submit(exchange)
        } else {
            conn.loop.execute { conn.submit(exchange) }
        }
        return exchange
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

    /// Closes the connections gracefully; calls in flight may finish.
    public func close() {
        pool.withLock { p in
            for conn in p.connections { conn.loop.execute { conn.closeGracefully() } }
            p.connections = []
        }
    }
}

/// When a client may try to connect again after failed attempts: 100 ms after the first failure, doubling
/// up to 3 s, each wait drawn from [0.8, 1.2]× (gRPC's connection backoff, shortened: a router's peers are
/// on the same network and its health checks run every few seconds). One connection that completes its
/// handshake resets it.
struct ReconnectBackoff: Sendable {
    static let initialNanos: UInt64 = 100_000_000
    static let maxNanos: UInt64 = 3_000_000_000
    private(set) var failures = 0
    private(set) var retryAt: UInt64 = 0

    func mayConnect(now: UInt64) -> Bool { now >= retryAt }

    mutating func failed(now: UInt64) {
        failures += 1
        let base = min(Self.maxNanos, Self.initialNanos << UInt64(min(failures - 1, 16)))
        retryAt = now &+ UInt64(Double(base) * Double.random(in: 0.8...1.2))
    }

    mutating func succeeded() {
        failures = 0
        retryAt = 0
    }
}
