/// Where and how an ``HTTP2Server`` listens, and the limits it enforces.
public struct HTTP2ServerConfiguration: Sendable {
    public var host: String = "127.0.0.1"
    /// Cleartext HTTP/2 with prior knowledge (h2c); nil disables it. 0 picks a free port.
    public var h2cPort: Int? = 8080
    /// TLS port; used only when `tls` is set. 0 picks a free port.
    public var tlsPort: Int? = 8443
    public var tls: TLSServerConfiguration?

    /// `SETTINGS_MAX_CONCURRENT_STREAMS` advertised to clients.
    public var maxConcurrentStreams: UInt32 = 256
    /// `SETTINGS_MAX_HEADER_LIST_SIZE`, also enforced: a larger request gets 431.
    public var maxHeaderListSize: Int = 16 * 1024
    /// Largest request body; past it the stream is answered 413 and reset.
    public var maxRequestBodySize: Int = 64 * 1024 * 1024
    /// Per-stream receive window (`SETTINGS_INITIAL_WINDOW_SIZE`).
    public var initialWindowSize: UInt32 = 256 * 1024
    /// Connection-level receive window.
    public var connectionWindowSize: Int32 = 4 * 1024 * 1024
    /// Request body bytes one connection may hold at once (received, not yet taken by their handlers: the
    /// whole body of an inline request, a gRPC message still being assembled); a stream whose bytes would
    /// pass it is reset with ENHANCE_YOUR_CALM (`RequestBufferBudget`).
    public var maxBufferedRequestBytes: Int = 16 * 1024 * 1024
    /// The same bound over every connection of the server together.
    public var maxBufferedRequestBytesTotal: Int = 512 * 1024 * 1024
    /// Bytes a response may have queued before its writer waits.
    public var responseBufferSize: Int = 256 * 1024
    /// Open connections at most; more are closed on accept.
    public var maxConnections: Int = 10_000

    /// Seconds a connection may take for its TLS handshake and preface, and an HTTP/1.1 request for its head.
    public var handshakeTimeout: Double = 10
    /// Seconds without streams or received bytes before a connection is closed.
    public var idleTimeout: Double = 300
    /// Seconds without received bytes before a keepalive PING (0: never).
    public var keepaliveInterval: Double = 60
    /// Seconds a PING may go unanswered before the connection is closed.
    public var keepaliveTimeout: Double = 20
    /// Seconds between the shutdown notice and the final GOAWAY during a graceful shutdown.
    public var drainGrace: Double = 0.2
    /// Seconds in-flight streams get to finish after a graceful shutdown starts.
    public var drainDeadline: Double = 30
    /// How often connections check their timers.
    public var timerGranularity: Double = 0.1

    public init() {}

    var timeouts: ConnectionLifecycle.Timeouts {
        ConnectionLifecycle.Timeouts(
            handshake: nanos(handshakeTimeout), idle: nanos(idleTimeout),
            pingInterval: nanos(keepaliveInterval), pingTimeout: nanos(keepaliveTimeout),
            drainGrace: nanos(drainGrace))
    }
}

func nanos(_ seconds: Double) -> UInt64 { UInt64(max(0, seconds) * 1e9) }
