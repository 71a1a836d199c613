import CLinux
import CNGHTTP2
import Glibc
import Synchronization

/// The client side of one HTTP/2 connection: connects, handshakes, and carries many calls at once.
/// Loop-confined like its base class; ``isAvailable`` may be read from any thread.
final class ClientConnection: HTTP2Connection, @unchecked Sendable {
    private final class Stream {
        let call: HTTP2ClientCall
        var headers = HTTP2Headers()
        var status = 0
        var headDelivered = false
        var received = 0
        var consumedReported = 0
        init(call: HTTP2ClientCall) { self.call = call }
    }

    private var connecting = true
    private var pending: [HTTP2ClientCall] = []
    private var streams: [Int32: Stream] = [:]
    private let available = Atomic<Bool>(true)
    private let ready = Atomic<Bool>(false)
    /// Calls given to this connection and not yet ended, counted from any thread (`HTTP2Client` reserves one
    /// before it submits a call, and this connection gives it back when the call ends).
    private let reserved = Atomic<Int>(0)
    /// The server's SETTINGS_MAX_CONCURRENT_STREAMS; until its SETTINGS arrive, what the client's other
    /// connections learned, else 100 (RFC 9113 §6.5.2 asks servers for at least that).
    private let peerMaxStreams: Atomic<Int>
    private let windowSize: UInt32

    /// False once the connection closed or the server sent GOAWAY: new calls need a new connection.
    var isAvailable: Bool { available.load(ordering: .relaxed) }
    /// Whether the handshake ever completed (a connection that closes before it counts as a failed connect).
    var becameReady: Bool { ready.load(ordering: .relaxed) }
    /// Whether another call fits under the server's stream limit now.
    var hasRoom: Bool { reserved.load(ordering: .relaxed) < peerMaxStreams.load(ordering: .relaxed) }
    var reservedCalls: Int { reserved.load(ordering: .relaxed) }
    var peerMaxConcurrentStreams: Int { peerMaxStreams.load(ordering: .relaxed) }

    /// Counts a call that is about to be submitted here.
    func reserve() { reserved.add(1, ordering: .relaxed) }
    private func release(_ n: Int) { if n > 0 { reserved.subtract(n, ordering: .relaxed) } }

    init(loop: EventLoop, fd: Int32, channel: ByteChannel, timeouts: ConnectionLifecycle.Timeouts, windowSize: UInt32,
         expectedMaxStreams: Int = 100) {
        self.windowSize = windowSize
        self.peerMaxStreams = Atomic(max(1, expectedMaxStreams))
        super.init(loop: loop, fd: fd, channel: channel, isServer: false, timeouts: timeouts, tickInterval: 100_000_000)
    }

    override var openStreamCount: Int { streams.count + pending.count }

    override func handleEvents(_ events: UInt32) {
        if connecting {
            if isClosed { return }
            let err = Socket.pendingError(fd)
            if err != 0 {
                close(reason: "connect: \(String(cString: strerror(err)))")
                return
            }
            guard events & (EPOLLOUT.rawValue | EPOLLERR.rawValue | EPOLLHUP.rawValue) != 0 else { return }
            connecting = false
            advanceHandshake()
            return
        }
        super.handleEvents(events)
    }

    override var initialSettings: [nghttp2_settings_entry] {
        [nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_ENABLE_PUSH.rawValue), value: 0),
         nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE.rawValue), value: windowSize)]
    }

    override var connectionWindowSize: Int32 { Int32(min(UInt32(Int32.max), windowSize * 4)) }

    override func sessionReady() {
        ready.store(true, ordering: .relaxed)
        let waiting = pending
        pending = []
        for call in waiting { submitNow(call) }
    }

    override func connectionDidClose() {
        available.store(false, ordering: .relaxed)
        for call in pending { call.fail(.connectionClosed) }
        release(pending.count)
        pending = []
        for stream in streams.values { stream.call.fail(.connectionClosed) }
        release(streams.count)
        streams.removeAll()
    }

    /// Sends a call's request head (or queues it until the handshake is done).
    func submit(_ call: HTTP2ClientCall) {
        if isClosed {
            call.fail(.connectionClosed)
            release(1)
        } else if session == nil {
            pending.append(call)
        } else {
            submitNow(call)
        }
    }

    private func submitNow(_ call: HTTP2ClientCall) {
        guard let session else {
            release(1)
            return call.fail(.connectionClosed)
        }
        let pseudo = [(":method", call.method), (":scheme", channel is TLSChannel ? "https" : "http"),
                      (":authority", call.authority), (":path", call.path)]
        let id: Int32
        if let outbound = call.outbound {
            var provider = Self.dataProvider(for: outbound)
            id = withNameValuePairs(pseudo, call.headers) { nva, n in nghttp2_submit_request(session, nil, nva, n, &provider, nil) }
        } else {
            id = withNameValuePairs(pseudo, call.headers) { nva, n in nghttp2_submit_request(session, nil, nva, n, nil, nil) }
        }
        guard id > 0 else {
            available.store(false, ordering: .relaxed)
            release(1)
            call.fail(id == NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE.rawValue ? .goingAway : .nghttp2("submit_request", String(cString: nghttp2_strerror(id))))
            return
        }
        streams[id] = Stream(call: call)
        call.bind(connection: self, streamID: id)
        requestFlush()
    }

    func cancelStream(_ id: Int32) {
        guard let session, streams[id] != nil else { return }
        _ = nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), id, NGHTTP2_CANCEL.rawValue)
        requestFlush()
    }

    func reportConsumed(streamID: Int32) {
        guard let session, let stream = streams[streamID] else { return }
        let n = min(stream.call.body.takeConsumedBytes(), stream.received - stream.consumedReported)
        guard n > 0 else { return }
        stream.consumedReported += n
        _ = nghttp2_session_consume(session, streamID, n)
        requestFlush()
    }

    /// Graceful close from our side: GOAWAY, let calls finish.
    func closeGracefully() {
        available.store(false, ordering: .relaxed)
        beginShutdown(deadline: MonotonicClock.nanos() + 5_000_000_000)
    }

    // MARK: nghttp2 events

    override func onHeader(_ frame: UnsafePointer<nghttp2_frame>, name: UnsafeBufferPointer<UInt8>, value: UnsafeBufferPointer<UInt8>) -> Int32 {
        guard frame.pointee.hd.type == UInt8(NGHTTP2_HEADERS.rawValue), let stream = streams[frame.pointee.hd.stream_id] else { return 0 }
        let v = String(decoding: value, as: UTF8.self)
        if name.count == 7 && name.first == UInt8(ascii: ":") {
            if String(decoding: name, as: UTF8.self) == ":status" { stream.status = Int(v) ?? 0 }
            return 0
        }
        stream.headers.appendRaw(String(decoding: name, as: UTF8.self), v)
        return 0
    }

    override func onFrameReceived(_ frame: UnsafePointer<nghttp2_frame>) -> Int32 {
        let hd = frame.pointee.hd
        let endStream = hd.flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) != 0
        switch UInt32(hd.type) {
        case NGHTTP2_HEADERS.rawValue:
            guard let stream = streams[hd.stream_id] else { return 0 }
            if !stream.headDelivered {
                if stream.status >= 100 && stream.status < 200 {
                    // Informational head: the real one follows.
                    stream.headers = HTTP2Headers()
                    return 0
                }
                stream.headDelivered = true
                stream.call.deliverHead(.success(HTTP2ResponseHead(status: stream.status, headers: stream.headers, endStream: endStream)))
                stream.headers = HTTP2Headers()
                if endStream { stream.call.body.finish() }
            } else if endStream {
                stream.call.body.finish(trailers: stream.headers)
            }
        case NGHTTP2_DATA.rawValue:
            if endStream, let stream = streams[hd.stream_id] { stream.call.body.finish() }
        case NGHTTP2_GOAWAY.rawValue:
            available.store(false, ordering: .relaxed)
        case NGHTTP2_SETTINGS.rawValue:
            if hd.flags & UInt8(NGHTTP2_FLAG_ACK.rawValue) == 0, let session {
                let limit = nghttp2_session_get_remote_settings(session, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS)
                peerMaxStreams.store(Int(min(limit, UInt32(Int32.max))), ordering: .relaxed)
            }
        case NGHTTP2_PING.rawValue:
            if hd.flags & UInt8(NGHTTP2_FLAG_ACK.rawValue) != 0 { lifecycle.pingAcknowledged() }
        default:
            break
        }
        return 0
    }

    override func onDataChunk(streamID: Int32, _ data: UnsafeBufferPointer<UInt8>) -> Int32 {
        guard let stream = streams[streamID] else {
            if let session { _ = nghttp2_session_consume_connection(session, data.count) }
            return 0
        }
        stream.received += data.count
        stream.call.body.append(Array(data))
        return 0
    }

    override func onStreamClose(streamID: Int32, errorCode: UInt32) -> Int32 {
        guard let stream = streams.removeValue(forKey: streamID) else { return 0 }
        release(1)
        let unread = stream.received - stream.consumedReported
        if unread > 0, let session { _ = nghttp2_session_consume_connection(session, unread) }
        if errorCode == NGHTTP2_NO_ERROR.rawValue && stream.headDelivered && stream.call.body.finishedCleanly {
            // The response is complete and the server asks us to stop sending (RFC 9113 §8.1): not an error.
            stream.call.outbound?.discardFurtherWrites()
        } else if errorCode == NGHTTP2_NO_ERROR.rawValue {
            // A clean close: anything not yet ended ended early.
            stream.call.deliverHead(.failure(HTTP2Error.connectionClosed))
            stream.call.body.finish(error: .connectionClosed)
            stream.call.outbound?.fail(.connectionClosed)
        } else if errorCode == NGHTTP2_REFUSED_STREAM.rawValue {
            stream.call.fail(.goingAway)
        } else {
            stream.call.fail(.streamReset(errorCode))
        }
        return 0
    }
}
