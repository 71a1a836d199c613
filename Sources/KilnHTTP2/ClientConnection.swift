import CLinux
import CNGHTTP2
import Glibc
import Synchronization

/// The client side of one HTTP/2 connection: connects, handshakes, and carries many calls at once.
/// Loop-confined like its base class; ``isAvailable`` may be read from any thread.
final class ClientConnection: HTTP2Connection, @unchecked Sendable {
    fileprivate final class Stream {
        /// What the stream answers: a streaming call, or an exchange collected whole (exactly one is set).
        let call: HTTP2ClientCall?
        let exchange: HTTP2Exchange?
        var headers = HTTP2Headers()
        var status = 0
        var headDelivered = false
        var received = 0
        var consumedReported = 0
        // An exchange's request body as it goes out, and its response as it comes in.
        var requestOffset = 0
        var responseHead = HTTP2Headers()
        var responseBody: [UInt8] = []
        init(call: HTTP2ClientCall) { self.call = call; exchange = nil }
        init(exchange: HTTP2Exchange) { self.exchange = exchange; call = nil }

        func fail(_ error: HTTP2Error) {
            call?.fail(error)
            exchange?.complete(.failure(error))
        }
    }

    private var connecting = true
    private var pending: [Stream] = []
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
        for stream in pending { stream.fail(.connectionClosed) }
        release(pending.count)
        pending = []
        for stream in streams.values { stream.fail(.connectionClosed) }
        release(streams.count)
        streams.removeAll()
    }

    /// Sends a call's request head (or queues it until the handshake is done).
    func submit(_ call: HTTP2ClientCall) {
        submit(Stream(call: call))
    }

    /// Sends an exchange's request (or queues it until the handshake is done).
    func submit(_ exchange: HTTP2Exchange) {
        submit(Stream(exchange: exchange))
    }

    private func submit(_ stream: Stream) {
        if isClosed {
            stream.fail(.connectionClosed)
            release(1)
        } else if session == nil {
            pending.append(stream)
        } else {
            submitNow(stream)
        }
    }

    private func submitNow(_ stream: Stream) {
        guard let session else {
            release(1)
            return stream.fail(.connectionClosed)
        }
        let (method, authority, path, headers) = stream.call.map { ($0.method, $0.authority, $0.path, $0.headers) }
            ?? stream.exchange.map { ($0.method, $0.authority, $0.path, $0.headers) } ?? ("", "", "", HTTP2Headers())
        let pseudo = [(":method", method), (":scheme", channel is TLSChannel ? "https" : "http"),
                      (":authority", authority), (":path", path)]
        let id: Int32
        if let outbound = stream.call?.outbound {
            var provider = Self.dataProvider(for: outbound)
            id = withNameValuePairs(pseudo, headers) { nva, n in nghttp2_submit_request(session, nil, nva, n, &provider, nil) }
        } else if let exchange = stream.exchange, !exchange.body.isEmpty {
            // Framed straight from the exchange's bytes; the stream table keeps `stream` alive while nghttp2
            // may call back.
            var provider = nghttp2_data_provider()
            provider.source.ptr = Unmanaged.passUnretained(stream).toOpaque()
            provider.read_callback = exchangeBodyReadCallback
            id = withNameValuePairs(pseudo, headers) { nva, n in nghttp2_submit_request(session, nil, nva, n, &provider, nil) }
        } else {
            id = withNameValuePairs(pseudo, headers) { nva, n in nghttp2_submit_request(session, nil, nva, n, nil, nil) }
        }
        guard id > 0 else {
            available.store(false, ordering: .relaxed)
            release(1)
            stream.fail(id == NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE.rawValue ? .goingAway : .nghttp2("submit_request", String(cString: nghttp2_strerror(id))))
            return
        }
        streams[id] = stream
        if let call = stream.call {
            call.bind(connection: self, streamID: id)
        } else if let exchange = stream.exchange, !exchange.bind(connection: self, streamID: id) {
            cancelStream(id)
        }
        requestFlush()
    }

    func cancelStream(_ id: Int32) {
        guard let session, streams[id] != nil else { return }
        _ = nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), id, NGHTTP2_CANCEL.rawValue)
        requestFlush()
    }

    func reportConsumed(streamID: Int32) {
        guard let session, let stream = streams[streamID], let call = stream.call else { return }
        let n = min(call.body.takeConsumedBytes(), stream.received - stream.consumedReported)
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
        if name.first == UInt8(ascii: ":") {
            // `:status` is the only pseudo-header a response may carry (nghttp2 rejects others): three digits.
            if name.count == 7 {
                var status = 0
                for digit in value {
                    guard digit >= UInt8(ascii: "0") && digit <= UInt8(ascii: "9"), status < 1000 else { status = 0; break }
                    status = status * 10 + Int(digit - UInt8(ascii: "0"))
                }
                stream.status = status
            }
            return 0
        }
        stream.headers.appendRaw(String(decoding: name, as: UTF8.self), String(decoding: value, as: UTF8.self))
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
                if let call = stream.call {
                    call.deliverHead(.success(HTTP2ResponseHead(status: stream.status, headers: stream.headers, endStream: endStream)))
                    if endStream { call.body.finish() }
                } else if endStream {
                    completeExchange(stream, trailers: stream.headers, trailersOnly: true)
                } else {
                    stream.responseHead = stream.headers
                }
                stream.headers = HTTP2Headers()
            } else if endStream {
                stream.call?.body.finish(trailers: stream.headers)
                completeExchange(stream, trailers: stream.headers, trailersOnly: false)
            }
        case NGHTTP2_DATA.rawValue:
            if endStream, let stream = streams[hd.stream_id] {
                stream.call?.body.finish()
                completeExchange(stream, trailers: HTTP2Headers(), trailersOnly: false)
            }
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
        if let call = stream.call {
            call.body.append(Array(data))
        } else if let exchange = stream.exchange {
            // Taken in at once: the window reopens now, the size limit bounds what is held.
            if let session {
                stream.consumedReported += data.count
                _ = nghttp2_session_consume(session, streamID, data.count)
            }
            if stream.responseBody.count + data.count > exchange.maxResponseBytes {
                exchange.complete(.failure(.bodyTooLarge))
                cancelStream(streamID)
            } else {
                stream.responseBody.append(contentsOf: data)
            }
        }
        return 0
    }

    /// An exchange's response has ended: hand it over whole.
    private func completeExchange(_ stream: Stream, trailers: HTTP2Headers, trailersOnly: Bool) {
        guard let exchange = stream.exchange else { return }
        exchange.complete(.success(HTTP2Exchange.Response(
            status: stream.status, headers: trailersOnly ? trailers : stream.responseHead, body: stream.responseBody,
            trailers: trailersOnly ? HTTP2Headers() : trailers, trailersOnly: trailersOnly)))
        stream.responseBody = []
    }

    override func onStreamClose(streamID: Int32, errorCode: UInt32) -> Int32 {
        guard let stream = streams.removeValue(forKey: streamID) else { return 0 }
        release(1)
        let unread = stream.received - stream.consumedReported
        if unread > 0, let session { _ = nghttp2_session_consume_connection(session, unread) }
        guard let call = stream.call else {
            // An exchange already complete ignores this; otherwise it ended early.
            let error: HTTP2Error = errorCode == NGHTTP2_NO_ERROR.rawValue ? .connectionClosed
                : errorCode == NGHTTP2_REFUSED_STREAM.rawValue ? .goingAway : .streamReset(errorCode)
            stream.fail(error)
            return 0
        }
        if errorCode == NGHTTP2_NO_ERROR.rawValue && stream.headDelivered && call.body.finishedCleanly {
            // The response is complete and the server asks us to stop sending (RFC 9113 §8.1): not an error.
            call.outbound?.discardFurtherWrites()
        } else if errorCode == NGHTTP2_NO_ERROR.rawValue {
            // A clean close: anything not yet ended ended early.
            call.deliverHead(.failure(HTTP2Error.connectionClosed))
            call.body.finish(error: .connectionClosed)
            call.outbound?.fail(.connectionClosed)
        } else if errorCode == NGHTTP2_REFUSED_STREAM.rawValue {
            call.fail(.goingAway)
        } else {
            call.fail(.streamReset(errorCode))
        }
        return 0
    }
}

/// Frames an exchange's request body straight from its bytes, then ends the stream.
private let exchangeBodyReadCallback: nghttp2_data_source_read_callback = { _, _, buf, length, flags, source, _ in
    guard let buf, let flags, let ptr = source?.pointee.ptr else { return Int(NGHTTP2_ERR_CALLBACK_FAILURE.rawValue) }
    let stream = Unmanaged<ClientConnection.Stream>.fromOpaque(ptr).takeUnretainedValue()
    guard let body = stream.exchange?.body else { return Int(NGHTTP2_ERR_CALLBACK_FAILURE.rawValue) }
    let n = min(length, body.count - stream.requestOffset)
    if n > 0 {
        body.withUnsafeBufferPointer { src in
            if let base = src.baseAddress { buf.update(from: base + stream.requestOffset, count: n) }
        }
    }
    stream.requestOffset += n
    if stream.requestOffset == body.count { flags.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue }
    return n
}
