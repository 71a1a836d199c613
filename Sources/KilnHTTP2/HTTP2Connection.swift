import CNGHTTP2
import CLinux
import Glibc

/// One HTTP/2 connection: a socket, its TLS session if any, and an nghttp2 session, owned by one loop.
///
/// nghttp2 does no I/O here: bytes read from the socket go into `nghttp2_session_mem_recv`, bytes to send
/// come out of `nghttp2_session_mem_send` into one output buffer written with as few syscalls as possible.
/// The connection closes when nghttp2 wants neither to read nor to write, when the peer goes, or when its
/// ``ConnectionLifecycle`` says so. ``ServerConnection`` and ``ClientConnection`` add the stream handling.
///
/// Every method runs on `loop`'s thread; the class is `@unchecked Sendable` only so that closures queued
/// to the loop from other threads may carry it.
class HTTP2Connection: EventLoopSource, EventLoopFlushable, @unchecked Sendable {
    let loop: EventLoop
    let fd: Int32
    let channel: ByteChannel
    let isServer: Bool
    /// The nghttp2 session once the handshake is done.
    var session: OpaquePointer?
    var lifecycle: ConnectionLifecycle
    private(set) var isClosed = false
    /// Why the connection closed (set once, when it does).
    private(set) var closeReason: String?
    /// Called once, on the loop, after the connection closed.
    var onClose: ((HTTP2Connection) -> Void)?

    private var out: [UInt8] = []
    private var outStart = 0
    private var pollingWrite = false
    private var flushQueued = false
    private var timerID: UInt64?
    private let tickInterval: UInt64
    /// Largest amount of framed output gathered before a write.
    private static let outputBatch = 64 * 1024

    init(loop: EventLoop, fd: Int32, channel: ByteChannel, isServer: Bool, timeouts: ConnectionLifecycle.Timeouts, tickInterval: UInt64) {
        self.loop = loop
        self.fd = fd
        self.channel = channel
        self.isServer = isServer
        self.lifecycle = ConnectionLifecycle(timeouts: timeouts, now: MonotonicClock.nanos())
        self.tickInterval = tickInterval
    }

    // MARK: Subclass hooks

    /// The SETTINGS this side sends first.
    var initialSettings: [nghttp2_settings_entry] { [] }
    /// The connection-level receive window to open at start.
    var connectionWindowSize: Int32 { 65_535 }
    /// The session exists and may be used.
    func sessionReady() {}
    /// The connection is closed: fail or cancel whatever still waits on it.
    func connectionDidClose() {}
    /// Streams still open, for the idle timeout.
    var openStreamCount: Int { 0 }
    /// Which protocol to speak once the handshake is done (the client and ALPN's h2 by default).
    func negotiatedProtocol() -> NegotiatedProtocol {
        if let alpn = channel.alpn, alpn != "h2" { return .refused("ALPN \(alpn) is not h2") }
        return .h2
    }
    /// The peer speaks HTTP/1.1: give the socket to a connection that does (server side).
    func handOffToHTTP1() { close(reason: "HTTP/1.1 is not served here") }

    /// Bytes read before the protocol was known (to tell it), fed to whichever protocol it is.
    var sniffed: [UInt8] = []

    /// Reads what has arrived into `sniffed`; false when nothing could be read now (or the connection closed).
    func readSniffedBytes() -> Bool {
        let buffer = loop.readBuffer
        switch channel.read(into: buffer) {
        case .done(let n):
            lifecycle.received(now: MonotonicClock.nanos())
            sniffed.append(contentsOf: UnsafeRawBufferPointer(rebasing: buffer[..<n]))
            return true
        case .wantRead, .wantWrite:
            return !sniffed.isEmpty
        case .eof:
            close(reason: "peer closed before its first request")
            return false
        case .failed(let why):
            close(reason: "read: \(why)")
            return false
        }
    }

    /// Leaves the socket open and registered to nobody, for the connection that takes it over.
    func detach() {
        guard !isClosed else { return }
        isClosed = true
        closeReason = "handed over"
        lifecycle.closed()
        if let t = timerID { loop.cancelTimer(t) }
        loop.deregister(fd: fd)
        onClose = nil
    }

    func onBeginHeaders(_ frame: UnsafePointer<nghttp2_frame>) -> Int32 { 0 }
    func onHeader(_ frame: UnsafePointer<nghttp2_frame>, name: UnsafeBufferPointer<UInt8>, value: UnsafeBufferPointer<UInt8>) -> Int32 { 0 }
    func onFrameReceived(_ frame: UnsafePointer<nghttp2_frame>) -> Int32 { 0 }
    func onDataChunk(streamID: Int32, _ data: UnsafeBufferPointer<UInt8>) -> Int32 { 0 }
    func onFrameSent(_ frame: UnsafePointer<nghttp2_frame>) -> Int32 { 0 }

    /// A frame nghttp2 could not send (a header block past its 64 KiB limit, say). A stream whose HEADERS
    /// (its response, or its trailers) did not go is reset, so that the peer is not left waiting for an end
    /// that will never come.
    func onFrameNotSent(_ session: OpaquePointer, _ frame: UnsafePointer<nghttp2_frame>, error: Int32) -> Int32 {
        let hd = frame.pointee.hd
        guard hd.type == UInt8(NGHTTP2_HEADERS.rawValue), hd.stream_id != 0 else { return 0 }
        if debugTransport {
            let line = "kiln.http2: stream \(hd.stream_id): HEADERS not sent (\(String(cString: nghttp2_strerror(error)))); resetting it\n"
            _ = line.withCString { Glibc.write(2, $0, strlen($0)) }
        }
        _ = nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), hd.stream_id, NGHTTP2_INTERNAL_ERROR.rawValue)
        return 0
    }
    func onStreamClose(streamID: Int32, errorCode: UInt32) -> Int32 { 0 }

    // MARK: Start

    /// Registers with the loop; for TLS the handshake starts when the socket is ready.
    func start(events: UInt32 = EPOLLIN.rawValue) throws {
        try loop.register(fd: fd, source: self, events: events)
        pollingWrite = events & EPOLLOUT.rawValue != 0
        scheduleTick()
    }

    /// Advances the TLS handshake (a no-op for cleartext), then opens the HTTP/2 session.
    func advanceHandshake() {
        switch channel.handshake() {
        case .done:
            switch negotiatedProtocol() {
            case .h2: break
            case .undecided:
                setPollingWrite(false)
                return
            case .http1:
                handOffToHTTP1()
                return
            case .refused(let why):
                close(reason: why)
                return
            }
            do {
                session = try makeSession()
            } catch {
                close(reason: "session: \(error)")
                return
            }
            lifecycle.established(now: MonotonicClock.nanos())
            sessionReady()
            setPollingWrite(false)
            if !sniffed.isEmpty, let session {
                // The bytes read to tell the protocol are HTTP/2's first.
                let rv = sniffed.withUnsafeBufferPointer { nghttp2_session_mem_recv(session, $0.baseAddress, $0.count) }
                sniffed = []
                if rv < 0 { return protocolFailure(Int32(rv)) }
            }
            flushNow()
            // TLS may already hold application data that arrived with the handshake.
            if !isClosed { readAvailable() }
        case .wantRead:
            setPollingWrite(false)
        case .wantWrite:
            setPollingWrite(true)
        case .eof:
            close(reason: "peer closed during handshake")
        case .failed(let why):
            close(reason: "handshake: \(why)")
        }
    }

    // MARK: Events

    func handleEvents(_ events: UInt32) {
        if isClosed { return }
        if session == nil {
            if events & (EPOLLERR.rawValue | EPOLLHUP.rawValue) != 0 && events & EPOLLIN.rawValue == 0 {
                close(reason: "socket error")
                return
            }
            advanceHandshake()
            return
        }
        if events & (EPOLLIN.rawValue | EPOLLHUP.rawValue | EPOLLERR.rawValue) != 0 {
            readAvailable()
        }
        if !isClosed && events & EPOLLOUT.rawValue != 0 {
            flushNow()
        }
    }

    /// Reads until the socket has nothing more, feeding nghttp2, then writes what nghttp2 produced.
    func readAvailable() {
        guard let session else { return }
        let buffer = loop.readBuffer
        while !isClosed {
            switch channel.read(into: buffer) {
            case .done(let n):
                lifecycle.received(now: MonotonicClock.nanos())
                let rv = nghttp2_session_mem_recv(session, buffer.baseAddress!.assumingMemoryBound(to: UInt8.self), n)
                if rv < 0 {
                    protocolFailure(Int32(rv))
                    return
                }
                // A short read drained the socket: answer now instead of paying for a read that would
                // only say EAGAIN (level-triggered epoll reports anything that arrives later).
                if n < buffer.count && !channel.hasBufferedInput {
                    flushNow()
                    return
                }
            case .wantRead:
                flushNow()
                return
            case .wantWrite:
                setPollingWrite(true)
                return
            case .eof:
                close(reason: "peer closed")
                return
            case .failed(let why):
                close(reason: "read: \(why)")
                return
            }
        }
    }

    /// nghttp2 refused the input. Where it has queued a GOAWAY, send it; then close.
    func protocolFailure(_ code: Int32) {
        if code != NGHTTP2_ERR_BAD_CLIENT_MAGIC.rawValue, let session {
            _ = nghttp2_session_terminate_session(session, NGHTTP2_PROTOCOL_ERROR.rawValue)
            flushNow()
        }
        close(reason: "protocol error: \(String(cString: nghttp2_strerror(code)))")
    }

    /// Writes pending frames at the end of this loop iteration.
    func requestFlush() {
        if flushQueued || isClosed { return }
        flushQueued = true
        loop.enqueueFlush(self)
    }

    /// Pulls frames out of nghttp2 and writes them until nghttp2 has none or the socket is full.
    func flushNow() {
        flushQueued = false
        guard !isClosed, let session else { return }
        while true {
            while out.count - outStart < Self.outputBatch && nghttp2_session_want_write(session) != 0 {
                var ptr: UnsafePointer<UInt8>?
                let n = nghttp2_session_mem_send(session, &ptr)
                if n < 0 {
                    close(reason: "mem_send: \(String(cString: nghttp2_strerror(Int32(n))))")
                    return
                }
                if n == 0 { break }
                out.append(contentsOf: UnsafeBufferPointer(start: ptr, count: n))
            }
            if outStart == out.count { break }
            let result = out.withUnsafeBytes { raw in
                channel.write(UnsafeRawBufferPointer(rebasing: raw[outStart...]))
            }
            switch result {
            case .done(let n):
                outStart += n
                if outStart == out.count {
                    out.removeAll(keepingCapacity: out.capacity <= 4 * Self.outputBatch)
                    outStart = 0
                }
            case .wantWrite:
                compactOutput()
                setPollingWrite(true)
                return
            case .wantRead:
                compactOutput()
                return
            case .eof:
                close(reason: "peer closed")
                return
            case .failed(let why):
                close(reason: "write: \(why)")
                return
            }
        }
        setPollingWrite(false)
        if nghttp2_session_want_read(session) == 0 && nghttp2_session_want_write(session) == 0 {
            close(reason: "session finished")
        }
    }

    private func compactOutput() {
        if outStart > Self.outputBatch {
            out.removeFirst(outStart)
            outStart = 0
        }
    }

    private func setPollingWrite(_ on: Bool) {
        guard on != pollingWrite, !isClosed else { return }
        pollingWrite = on
        loop.modify(fd: fd, events: on ? (EPOLLIN.rawValue | EPOLLOUT.rawValue) : EPOLLIN.rawValue)
    }

    /// Asks nghttp2 to continue a deferred stream whose producer has new bytes.
    func resumeData(streamID: Int32) {
        guard let session, !isClosed else { return }
        if nghttp2_session_resume_data(session, streamID) == 0 {
            requestFlush()
        }
    }

    // MARK: Timers and lifecycle

    private func scheduleTick() {
        // A strong capture: a weak one would give the connection a side table and make every retain of
        // it (one per nghttp2 callback) take the slow path. Cancelled timers are dropped unrun.
        timerID = loop.schedule(afterNanos: tickInterval) { [self] in
            guard !self.isClosed else { return }
            self.perform(self.lifecycle.tick(now: MonotonicClock.nanos(), openStreams: self.openStreamCount))
            if !self.isClosed { self.scheduleTick() }
        }
    }

    func perform(_ actions: [ConnectionLifecycle.Action]) {
        for action in actions {
            switch action {
            case .sendPing:
                if let session { _ = nghttp2_submit_ping(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), nil) }
                requestFlush()
            case .sendShutdownNotice:
                if let session { _ = nghttp2_submit_shutdown_notice(session) }
                requestFlush()
            case .sendGoAway:
                if let session {
                    _ = nghttp2_submit_goaway(session, UInt8(NGHTTP2_FLAG_NONE.rawValue),
                                              nghttp2_session_get_last_proc_stream_id(session),
                                              NGHTTP2_NO_ERROR.rawValue, nil, 0)
                }
                requestFlush()
            case .close(let reason):
                if let session {
                    _ = nghttp2_session_terminate_session(session, NGHTTP2_NO_ERROR.rawValue)
                    flushNow()
                }
                close(reason: reason)
            }
        }
    }

    /// Starts a graceful shutdown: no new streams, in-flight ones may finish until `deadline`.
    func beginShutdown(deadline: UInt64) {
        guard !isClosed else { return }
        perform(lifecycle.beginShutdown(now: MonotonicClock.nanos(), deadline: deadline, isServer: isServer))
    }

    /// Closes the socket now and fails whatever still waits on this connection.
    func close(reason: String) {
        guard !isClosed else { return }
        isClosed = true
        closeReason = reason
        if debugTransport {
            let line = "kiln.http2: \(isServer ? "server" : "client") connection \(fd) closed: \(reason)\n"
            _ = line.withCString { Glibc.write(2, $0, strlen($0)) }
        }
        lifecycle.closed()
        if let t = timerID { loop.cancelTimer(t) }
        loop.deregister(fd: fd)
        channel.close()
        connectionDidClose()
        if let s = session {
            nghttp2_session_del(s)
            session = nil
        }
        Glibc.close(fd)
        onClose?(self)
        onClose = nil
    }

    // MARK: Shared nghttp2 helpers

    /// Creates the nghttp2 session for this side and queues the initial SETTINGS and window.
    private func makeSession() throws -> OpaquePointer {
        let callbacks = SessionCallbacks.make()
        defer { nghttp2_session_callbacks_del(callbacks) }
        var option: OpaquePointer?
        nghttp2_option_new(&option)
        defer { nghttp2_option_del(option) }
        // Flow-control windows follow the reader, not receipt.
        nghttp2_option_set_no_auto_window_update(option, 1)
        var session: OpaquePointer?
        let me = Unmanaged.passUnretained(self).toOpaque()
        let rv = isServer ? nghttp2_session_server_new2(&session, callbacks, me, option)
                          : nghttp2_session_client_new2(&session, callbacks, me, option)
        guard rv == 0, let session else { throw HTTP2Error.nghttp2("session_new", String(cString: nghttp2_strerror(rv))) }
        var settings = initialSettings
        _ = nghttp2_submit_settings(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), &settings, settings.count)
        _ = nghttp2_session_set_local_window_size(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), 0, connectionWindowSize)
        return session
    }

    /// A data provider reading from `body`, which the caller keeps alive until the stream closes.
    static func dataProvider(for body: OutboundBody) -> nghttp2_data_provider {
        var provider = nghttp2_data_provider()
        provider.source.ptr = Unmanaged.passUnretained(body).toOpaque()
        provider.read_callback = outboundReadCallback
        return provider
    }
}

/// Set `KILN_HTTP2_DEBUG=1` to print why each connection closed.
let debugTransport = getenv("KILN_HTTP2_DEBUG") != nil

/// nghttp2's data callback: frames whatever the stream's ``OutboundBody`` holds, deferring when it is empty.
private let outboundReadCallback: nghttp2_data_source_read_callback = { session, streamID, buf, length, flags, source, _ in
    guard let buf, let flags, let ptr = source?.pointee.ptr else { return Int(NGHTTP2_ERR_CALLBACK_FAILURE.rawValue) }
    let body = Unmanaged<OutboundBody>.fromOpaque(ptr).takeUnretainedValue()
    switch body.read(into: buf, capacity: length) {
    case .deferred:
        return Int(NGHTTP2_ERR_DEFERRED.rawValue)
    case .bytes(let n, let end, let trailers):
        if end {
            flags.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue
            if !trailers.isEmpty {
                flags.pointee |= NGHTTP2_DATA_FLAG_NO_END_STREAM.rawValue
                let rv = withNameValuePairs([], trailers) { nva, count in
                    nghttp2_submit_trailer(session, streamID, nva, count)
                }
                if rv != 0 { return Int(NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue) }
            }
        }
        return n
    }
}

/// The callbacks shared by server and client sessions; each forwards to the connection in `user_data`.
enum SessionCallbacks {
    static func make() -> OpaquePointer? {
        var callbacks: OpaquePointer?
        nghttp2_session_callbacks_new(&callbacks)
        nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks) { _, frame, ud in
            guard let frame, let ud else { return 0 }
            return Unmanaged<HTTP2Connection>.fromOpaque(ud).takeUnretainedValue().onBeginHeaders(frame)
        }
        nghttp2_session_callbacks_set_on_header_callback(callbacks) { _, frame, name, namelen, value, valuelen, _, ud in
            guard let frame, let ud else { return 0 }
            return Unmanaged<HTTP2Connection>.fromOpaque(ud).takeUnretainedValue().onHeader(
                frame, name: UnsafeBufferPointer(start: name, count: namelen), value: UnsafeBufferPointer(start: value, count: valuelen))
        }
        nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks) { _, frame, ud in
            guard let frame, let ud else { return 0 }
            return Unmanaged<HTTP2Connection>.fromOpaque(ud).takeUnretainedValue().onFrameReceived(frame)
        }
        nghttp2_session_callbacks_set_on_frame_send_callback(callbacks) { _, frame, ud in
            guard let frame, let ud else { return 0 }
            return Unmanaged<HTTP2Connection>.fromOpaque(ud).takeUnretainedValue().onFrameSent(frame)
        }
        nghttp2_session_callbacks_set_on_frame_not_send_callback(callbacks) { session, frame, error, ud in
            guard let session, let frame, let ud else { return 0 }
            return Unmanaged<HTTP2Connection>.fromOpaque(ud).takeUnretainedValue().onFrameNotSent(session, frame, error: error)
        }
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks) { _, _, streamID, data, len, ud in
            guard let ud else { return 0 }
            return Unmanaged<HTTP2Connection>.fromOpaque(ud).takeUnretainedValue().onDataChunk(
                streamID: streamID, UnsafeBufferPointer(start: data, count: len))
        }
        nghttp2_session_callbacks_set_on_stream_close_callback(callbacks) { _, streamID, errorCode, ud in
            guard let ud else { return 0 }
            return Unmanaged<HTTP2Connection>.fromOpaque(ud).takeUnretainedValue().onStreamClose(streamID: streamID, errorCode: errorCode)
        }
        return callbacks
    }
}
