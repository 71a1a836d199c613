import CLinux
import Glibc
import Logging
import Synchronization

/// An HTTP/2 server: h2c and TLS listeners on a group of event loops, requests routed to handlers.
public final class HTTP2Server: Sendable {
    public let configuration: HTTP2ServerConfiguration
    private let router: HTTP2Router
    private let group: EventLoopGroup
    private let tlsContext: TLSContext?
    private let logger: Logger

    private struct State {
        var connections: [ObjectIdentifier: AcceptedConnection] = [:]
        var listenerFDs: [Int32] = []
        var shuttingDown = false
        var closedWaiters: [CheckedContinuation<Void, Never>] = []
        var totalAccepted = 0
    }
    private let state = Mutex(State())
    private let addresses = Mutex<(h2c: SocketAddress?, tls: SocketAddress?)>((nil, nil))

    /// Makes a server; nothing listens until ``start()``.
    /// Request body bytes every connection holds together (`maxBufferedRequestBytesTotal`).
    public let requestBudget: RequestBufferBudget

    public init(configuration: HTTP2ServerConfiguration, router: HTTP2Router, group: EventLoopGroup,
                logger: Logger = Logger(label: "kiln.http2")) throws {
        self.configuration = configuration
        self.router = router
        self.group = group
        self.logger = logger
        requestBudget = RequestBufferBudget(limit: configuration.maxBufferedRequestBytesTotal)
        self.tlsContext = try configuration.tls.map { try TLSContext.server($0) }
    }

    /// The bound h2c address (its port is the real one when 0 was asked for).
    public var h2cAddress: SocketAddress? { addresses.withLock { $0.h2c } }
    /// The bound TLS address.
    public var tlsAddress: SocketAddress? { addresses.withLock { $0.tls } }
    /// Connections open now.
    public var connectionCount: Int { state.withLock { $0.connections.count } }

    /// Binds the listeners and starts accepting.
    public func start() throws {
        if let port = configuration.h2cPort {
            let fd = try listen(port: port, tls: nil)
            addresses.withLock { $0.h2c = Socket.localAddress(fd) }
        }
        if let port = configuration.tlsPort, let tls = tlsContext {
            let fd = try listen(port: port, tls: tls)
            addresses.withLock { $0.tls = Socket.localAddress(fd) }
        }
    }

    private func listen(port: Int, tls: TLSContext?) throws -> Int32 {
        let address = try SocketAddress(host: configuration.host, port: port)
        let fd = try Socket.listen(on: address)
        state.withLock { $0.listenerFDs.append(fd) }
        for loop in group.loops {
            let source = ListenerSource(fd: fd, loop: loop) { [self] client, remote, loop in
                accepted(client, remote: remote, loop: loop, tls: tls)
            }
            let events = EPOLLIN.rawValue | EPOLLEXCLUSIVE.rawValue
            loop.execute { try? loop.register(fd: fd, source: source, events: events) }
        }
        return fd
    }

    /// Runs on the accepting loop.
    private func accepted(_ fd: Int32, remote: String, loop: EventLoop, tls: TLSContext?) {
        let admitted = state.withLock { s -> Bool in
            if s.shuttingDown || s.connections.count >= configuration.maxConnections { return false }
            s.totalAccepted += 1
            return true
        }
        guard admitted else {
            close(fd)
            return
        }
        let channel: ByteChannel
        if let tls {
            guard let t = try? TLSChannel(fd: fd, context: tls, isServer: true, serverName: nil) else {
                close(fd)
                return
            }
            channel = t
        } else {
            channel = PlainChannel(fd: fd)
        }
        let connection = ServerConnection(loop: loop, fd: fd, channel: channel, remoteAddress: remote,
                                          config: configuration, router: router, requestBudget: requestBudget)
        connection.onClosed = { [self] c in removed(c) }
        connection.onHandOff = { [self] old, new in replaced(old, by: new) }
        state.withLock { $0.connections[ObjectIdentifier(connection)] = connection }
        do {
            try connection.start()
            if tls == nil { connection.advanceHandshake() }
        } catch {
            connection.close(reason: "register: \(error)")
        }
    }

    /// A connection found to speak HTTP/1.1 is now served by `new`.
    private func replaced(_ old: ServerConnection, by new: HTTP1Connection) {
        new.onClose = { [self] c in removed(c) }
        state.withLock { s in
            s.connections[ObjectIdentifier(old)] = nil
            s.connections[ObjectIdentifier(new)] = new
        }
    }

    private func removed(_ connection: AcceptedConnection) {
        // Why a connection ended during a drain tells an operator whether its streams ran out or were cut.
        if state.withLock({ $0.shuttingDown }) {
            logger.info("connection closed while draining: \(connection.closeReason ?? "unknown")")
        }
        let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.connections[ObjectIdentifier(connection)] = nil
            guard s.shuttingDown && s.connections.isEmpty else { return [] }
            defer { s.closedWaiters = [] }
            return s.closedWaiters
        }
        for w in waiters { w.resume() }
    }

    /// Stops accepting, lets in-flight streams finish (until the drain deadline), and returns once every
    /// connection has closed. New connections are refused from the moment this is called.
    public func shutdown() async {
        let (fds, connections) = state.withLock { s -> ([Int32], [AcceptedConnection]) in
            s.shuttingDown = true
            defer { s.listenerFDs = [] }
            return (s.listenerFDs, Array(s.connections.values))
        }
        await stopListening(fds)
        let deadline = MonotonicClock.nanos() + nanos(configuration.drainDeadline)
        for c in connections {
            c.loop.execute { c.beginShutdown(deadline: deadline) }
        }
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let done = state.withLock { s -> Bool in
                if s.connections.isEmpty { return true }
                s.closedWaiters.append(c)
                return false
            }
            if done { c.resume() }
        }
    }

    /// Takes the listening sockets off every loop, then closes them so that connects are refused.
    private func stopListening(_ fds: [Int32]) async {
        guard !fds.isEmpty else { return }
        for loop in group.loops {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                loop.execute {
                    for fd in fds { loop.deregister(fd: fd) }
                    c.resume()
                }
            }
        }
        for fd in fds { close(fd) }
    }
}
