import CNGHTTP2
import Glibc

/// The server side of one HTTP/2 connection: collects request heads, routes them, runs handlers in tasks
/// and frames their responses. Loop-confined, like its base class.
final class ServerConnection: HTTP2Connection, AcceptedConnection, DeferredResponseTarget, @unchecked Sendable {
    /// Per-stream state on the loop.
    fileprivate final class Stream {
        let id: Int32
        var method = ""
        var path = ""
        var authority: String?
        var scheme: String?
        var headers = RawHeaderBlock()
        var headerBytes = 0
        var headersTooLarge = false
        var dispatched = false
        var body: HTTP2InboundBody?
        /// The request body bytes this stream holds against the connection's budget.
        let charge: BodyCharge
        var outbound: OutboundBody?
        var responseSubmitted = false
        var task: Task<Void, Never>?
        var received = 0
        var consumedReported = 0
        var bodyTooLarge = false
        /// The handler returned: request bytes still arriving are discarded.
        var handlerDone = false
        /// The client's END_STREAM has arrived.
        var requestEnded = false
        /// A fixed response waiting for the request to end (its body is read and discarded first, as
        /// static-file servers do, so that uploading clients are not cut off).
        var pendingFixed: HTTP2FixedResponse?
        /// The body of a fixed response being sent, and how much of it has gone.
        var fixedBody: [UInt8] = []
        var fixedOffset = 0
        /// An inline or deferred route: the request body gathered so far, and the response's trailers once
        /// answered.
        var inline: WholeRequestRoute?
        /// A deferred route's answer, once its handler has started: told if the stream ends first.
        var responder: HTTP2DeferredResponder?
        var inlineHeaders = RawHeaderBlock()
        /// The body's DATA chunks as they came (joined once, at the end: an array grown by appends would
        /// hold up to twice what the budget charged).
        var inlineChunks: [[UInt8]] = []
        var inlineBodyCount = 0
        var inlineBodyTooLarge = false
        var trailers: HTTP2Headers?
        init(id: Int32, charge: BodyCharge) {
            self.id = id
            self.charge = charge
        }
    }

    private let config: HTTP2ServerConfiguration
    private let router: HTTP2Router
    private let remoteAddress: String
    private var streams: [Int32: Stream] = [:]
    /// The verified client certificate's subject, read once the handshake is done (first request).
    private lazy var peerIdentity: String? = channel.peerSubject

    /// Request body bytes this connection holds (`maxBufferedRequestBytes`, within the server's total).
    private let requestBudget: RequestBufferBudget
    private let serverBudget: RequestBufferBudget
    /// Called when the peer turned out to speak HTTP/1.1: the server's registry takes the replacement.
    var onHandOff: ((ServerConnection, HTTP1Connection) -> Void)?
    /// The closing callback the server's registry sees (the base class's, typed for it).
    var onClosed: ((AcceptedConnection) -> Void)? {
        didSet { onClose = onClosed.map { closed in { closed($0 as! ServerConnection) } } }
    }

    init(loop: EventLoop, fd: Int32, channel: ByteChannel, remoteAddress: String, config: HTTP2ServerConfiguration, router: HTTP2Router,
         requestBudget serverBudget: RequestBufferBudget) {
        requestBudget = RequestBufferBudget(limit: config.maxBufferedRequestBytes, parent: serverBudget)
        self.serverBudget = serverBudget
        self.config = config
        self.router = router
        self.remoteAddress = remoteAddress
        super.init(loop: loop, fd: fd, channel: channel, isServer: true, timeouts: config.timeouts,
                   tickInterval: nanos(config.timerGranularity))
    }

    override var openStreamCount: Int { streams.count }

    override var initialSettings: [nghttp2_settings_entry] {
        [nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS.rawValue), value: config.maxConcurrentStreams),
         nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE.rawValue), value: config.initialWindowSize),
         nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE.rawValue), value: UInt32(config.maxHeaderListSize))]
    }

    override var connectionWindowSize: Int32 { config.connectionWindowSize }

    // MARK: Protocol

    /// ALPN decides on TLS; without it (cleartext, or a TLS client that offers none) the first bytes do:
    /// HTTP/2's preface begins `PRI `, a method no HTTP/1.1 request may use.
    override func negotiatedProtocol() -> NegotiatedProtocol {
        switch channel.alpn {
        case "h2": return .h2
        case "http/1.1": return .http1
        case nil:
            guard readSniffedBytes() else { return .undecided }
            return ProtocolSniffer.classify(sniffed)
        case let other?: return .refused("ALPN \(other) is neither h2 nor http/1.1")
        }
    }

    override func handOffToHTTP1() {
        let http1 = HTTP1Connection(loop: loop, fd: fd, channel: channel, remoteAddress: remoteAddress, tls: channel is TLSChannel,
                                    config: config, router: router, requestBudget: serverBudget)
        let bytes = sniffed
        detach()
        onHandOff?(self, http1)
        onHandOff = nil
        do {
            try http1.start(initialBytes: bytes)
        } catch {
            http1.close(reason: "register: \(error)")
        }
    }

    override func connectionDidClose() {
        for stream in streams.values {
            stream.task?.cancel()
            stream.body?.finish(error: .connectionClosed)
            stream.outbound?.fail(.connectionClosed)
            stream.responder?.cancel()
        }
        streams.removeAll()
    }

    // MARK: nghttp2 events

    override func onBeginHeaders(_ frame: UnsafePointer<nghttp2_frame>) -> Int32 {
        let hd = frame.pointee.hd
        guard hd.type == UInt8(NGHTTP2_HEADERS.rawValue), frame.pointee.headers.cat == NGHTTP2_HCAT_REQUEST else { return 0 }
        let stream = Stream(id: hd.stream_id, charge: BodyCharge(budget: requestBudget))
        streams[hd.stream_id] = stream
        // nghttp2 keeps a pointer too, so that per-header callbacks skip the dictionary; `streams` retains it.
        if let session { _ = nghttp2_session_set_stream_user_data(session, hd.stream_id, Unmanaged.passUnretained(stream).toOpaque()) }
        return 0
    }

    override func onHeader(_ frame: UnsafePointer<nghttp2_frame>, name: UnsafeBufferPointer<UInt8>, value: UnsafeBufferPointer<UInt8>) -> Int32 {
        guard frame.pointee.hd.type == UInt8(NGHTTP2_HEADERS.rawValue), let stream = stream(frame.pointee.hd.stream_id) else { return 0 }
        // The size rule of RFC 9113 §6.5.2: name + value + 32 per field.
        stream.headerBytes += name.count + value.count + 32
        if stream.headerBytes > config.maxHeaderListSize {
            stream.headersTooLarge = true
            return 0
        }
        if stream.dispatched || name.first != UInt8(ascii: ":") {
            // Regular fields, or request trailers once dispatched: strings only if a handler wants them.
            stream.headers.append(name: name, value: value)
            return 0
        }
        let v = String(decoding: value, as: UTF8.self)
        switch name.count {
        case 5 where name[1] == UInt8(ascii: "p"): stream.path = v
        case 7 where name[1] == UInt8(ascii: "m"): stream.method = v
        case 7 where name[1] == UInt8(ascii: "s"): stream.scheme = v
        case 10 where name[1] == UInt8(ascii: "a"): stream.authority = v
        default: break
        }
        return 0
    }

    /// The stream's state, through nghttp2's stream user data (cheaper than hashing on every header).
    private func stream(_ id: Int32) -> Stream? {
        guard let session, let ptr = nghttp2_session_get_stream_user_data(session, id) else { return nil }
        return Unmanaged<Stream>.fromOpaque(ptr).takeUnretainedValue()
    }

    override func onFrameReceived(_ frame: UnsafePointer<nghttp2_frame>) -> Int32 {
        let hd = frame.pointee.hd
        let endStream = hd.flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) != 0
        switch UInt32(hd.type) {
        case NGHTTP2_HEADERS.rawValue:
            guard let stream = stream(hd.stream_id) else { return 0 }
            if endStream { stream.requestEnded = true }
            if !stream.dispatched {
                dispatch(stream, endStream: endStream)
            } else if endStream {
                stream.body?.finish(trailers: stream.headers.materialize())
                submitPendingFixed(stream)
                respondInline(stream)
            }
        case NGHTTP2_DATA.rawValue:
            if endStream, let stream = stream(hd.stream_id) {
                stream.requestEnded = true
                if !stream.bodyTooLarge { stream.body?.finish() }
                submitPendingFixed(stream)
                respondInline(stream)
            }
        case NGHTTP2_PING.rawValue:
            if hd.flags & UInt8(NGHTTP2_FLAG_ACK.rawValue) != 0 { lifecycle.pingAcknowledged() }
        default:
            break
        }
        return 0
    }

    override func onFrameSent(_ frame: UnsafePointer<nghttp2_frame>) -> Int32 {
        let hd = frame.pointee.hd
        // The response is complete while the request is still arriving: tell the client to stop sending
        // (RFC 9113 §8.1), or some clients wait forever for a window to finish an upload nobody reads.
        guard hd.flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) != 0,
              hd.type == UInt8(NGHTTP2_DATA.rawValue) || hd.type == UInt8(NGHTTP2_HEADERS.rawValue),
              let stream = stream(hd.stream_id), !stream.requestEnded, let session else { return 0 }
        _ = nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), hd.stream_id, NGHTTP2_NO_ERROR.rawValue)
        return 0
    }

    override func onDataChunk(streamID: Int32, _ data: UnsafeBufferPointer<UInt8>) -> Int32 {
        guard let stream = streams[streamID] else {
            // Nobody will read it: give the window back now.
            if let session { _ = nghttp2_session_consume_connection(session, data.count) }
            return 0
        }
        stream.received += data.count
        if stream.bodyTooLarge {
            consumeUnread(stream)
            return 0
        }
        if stream.received > config.maxRequestBodySize {
            stream.bodyTooLarge = true
            stream.body?.finish(error: .bodyTooLarge)
            stream.task?.cancel()
            if !stream.responseSubmitted {
                submitFixed(stream, HTTP2FixedResponse(status: 413, headers: ["content-type": "text/plain"], body: Array("request body too large\n".utf8)))
            } else if let session {
                _ = nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), streamID, NGHTTP2_CANCEL.rawValue)
            }
            consumeUnread(stream)
            return 0
        }
        if let route = stream.inline {
            // Buffered here and answered at END_STREAM; the window reopens at once, since nothing else
            // reads: the connection's budget bounds what its inline streams hold together.
            if stream.inlineBodyCount + data.count <= route.maxRequestBodySize {
                guard stream.charge.charge(data.count) else { return refuse(stream) }
                stream.inlineChunks.append(Array(data))
                stream.inlineBodyCount += data.count
            } else {
                stream.inlineBodyTooLarge = true
            }
            discard(stream)
            return 0
        }
        guard let body = stream.body, !stream.handlerDone, !stream.charge.isClosed else {
            // Nobody will read this body (a fixed route, or a handler that has returned): discard it and
            // reopen the window, so that a client still uploading is not stalled.
            discard(stream)
            return 0
        }
        guard stream.charge.charge(data.count) else { return refuse(stream) }
        body.append(Array(data))
        return 0
    }

    /// Resets a stream whose body bytes would pass the connection's (or the server's) buffer budget, and
    /// drops what it held. ENHANCE_YOUR_CALM: gRPC clients read RESOURCE_EXHAUSTED and may retry.
    private func refuse(_ stream: Stream) -> Int32 {
        stream.bodyTooLarge = true   // later DATA of this stream is discarded
        stream.inline = nil
        stream.inlineChunks = []
        // A handler's reader may still hold taken bytes: its charge goes when it returns.
        if stream.task == nil { stream.charge.close() }
        stream.body?.finish(error: .streamReset(NGHTTP2_ENHANCE_YOUR_CALM.rawValue))
        stream.task?.cancel()
        if let session {
            _ = nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), stream.id, NGHTTP2_ENHANCE_YOUR_CALM.rawValue)
        }
        consumeUnread(stream)
        FreedMemory.giveBack()
        return 0
    }

    override func onStreamClose(streamID: Int32, errorCode: UInt32) -> Int32 {
        guard let stream = streams.removeValue(forKey: streamID) else { return 0 }
        // A handler still running closes its stream's charge when it returns.
        if stream.task == nil { stream.charge.close() }
        lifecycle.streamClosed(now: MonotonicClock.nanos())
        consumeUnread(stream)
        let error: HTTP2Error = errorCode == NGHTTP2_NO_ERROR.rawValue ? .connectionClosed : .streamReset(errorCode)
        stream.body?.finish(error: error)
        if let outbound = stream.outbound, !outbound.isFinished || errorCode != NGHTTP2_NO_ERROR.rawValue {
            stream.task?.cancel()
        }
        stream.outbound?.fail(error)
        stream.responder?.cancel()
        stream.responder = nil
        return 0
    }

    /// Reopens both windows for bytes of a live stream that no reader will take.
    private func discard(_ stream: Stream) {
        let unread = stream.received - stream.consumedReported
        if unread > 0, let session {
            stream.consumedReported = stream.received
            _ = nghttp2_session_consume(session, stream.id, unread)
            requestFlush()
        }
    }

    /// Returns the connection window for bytes received on a stream that no reader will take.
    private func consumeUnread(_ stream: Stream) {
        let unread = stream.received - stream.consumedReported
        if unread > 0, let session {
            stream.consumedReported = stream.received
            _ = nghttp2_session_consume_connection(session, unread)
            requestFlush()
        }
    }

    // MARK: Dispatch

    private func dispatch(_ stream: Stream, endStream: Bool) {
        stream.dispatched = true
        if stream.headersTooLarge {
            stream.headers.removeAll()
            submitFixed(stream, HTTP2FixedResponse(status: 431, headers: ["content-type": "text/plain"], body: Array("request header fields too large\n".utf8)))
            return
        }
        let route = router.route(for: stripQuery(stream.path))
        let rawHeaders = stream.headers
        stream.headers.removeAll()  // from here on, collects request trailers
        switch route {
        case .fixed(let response):
            if endStream {
                submitFixed(stream, response)
            } else {
                stream.pendingFixed = response
            }
        case .inline(let handler):
            stream.inline = .inline(handler)
            stream.inlineHeaders = rawHeaders
            if endStream { respondInline(stream) }
        case .deferred(let handler):
            stream.inline = .deferred(handler)
            stream.inlineHeaders = rawHeaders
            if endStream { respondInline(stream) }
        case .handler(let handler):
            let id = stream.id
            let loop = self.loop
            // These closures hold the connection until the stream is gone; the cycle through `streams` is
            // broken when the stream closes or the connection does.
            let connection = self
            let body = HTTP2InboundBody(charge: stream.charge) {
                loop.execute { connection.reportConsumed(streamID: id) }
            }
            if endStream { body.finish() }
            let outbound = OutboundBody(highWatermark: config.responseBufferSize, lowWatermark: config.responseBufferSize / 4) {
                loop.execute { connection.resumeData(streamID: id) }
            }
            stream.body = body
            stream.outbound = outbound
            let writer = HTTP2ResponseWriter(outbound: outbound) { status, headers, endStream in
                loop.execute { connection.submitResponse(streamID: id, status: status, headers: headers, endStream: endStream) }
            }
            let request = HTTP2Request(method: stream.method, path: stream.path, authority: stream.authority,
                                       scheme: stream.scheme, headers: rawHeaders.materialize(), body: body, remoteAddress: remoteAddress,
                                       peerIdentity: peerIdentity)
            // The handler runs on this connection's loop: its writes and reads reach the connection without
            // crossing threads. Work that blocks belongs on other executors (the engine's), not here.
            let charge = stream.charge
            stream.task = Task(executorPreference: loop) {
                defer {
                    // What the handler took from the body is freed now that it has returned: only then
                    // does the body's charge go (a stream reset earlier still held it until here).
                    charge.close()
                    loop.execute { connection.handlerReturned(streamID: id) }
                }
                await handler.respond(to: request, with: writer) {
                    loop.execute { connection.resetStream(id, code: NGHTTP2_INTERNAL_ERROR.rawValue) }
                }
            }
        }
    }

    private func submitPendingFixed(_ stream: Stream) {
        guard let response = stream.pendingFixed else { return }
        stream.pendingFixed = nil
        submitFixed(stream, response)
    }

    private func submitFixed(_ stream: Stream, _ response: HTTP2FixedResponse) {
        guard let session, !stream.responseSubmitted else { return }
        stream.responseSubmitted = true
        let block = response.prepared
        if response.body.isEmpty {
            _ = nghttp2_submit_response(session, stream.id, block.pairs, block.count, nil)
        } else {
            stream.fixedBody = response.body
            var provider = nghttp2_data_provider()
            provider.source.ptr = Unmanaged.passUnretained(stream).toOpaque()
            provider.read_callback = fixedBodyReadCallback
            _ = nghttp2_submit_response(session, stream.id, block.pairs, block.count, &provider)
        }
        requestFlush()
    }

    /// `chunks` as one array of exactly `count` bytes.
    private static func joined(_ chunks: [[UInt8]], count: Int) -> [UInt8] {
        if chunks.count == 1 { return chunks[0] }
        var body: [UInt8] = []
        body.reserveCapacity(count)
        for chunk in chunks { body += chunk }
        return body
    }

    /// Calls the stream's inline handler (once its request has ended) and submits the whole response; the
    /// trailers, if any, follow the body from the data callback. A deferred handler is started instead, and
    /// answers through its responder.
    private func respondInline(_ stream: Stream) {
        guard let route = stream.inline, !stream.responseSubmitted else { return }
        stream.inline = nil
        let request = HTTP2InlineRequest(method: stream.method, path: stream.path, headers: stream.inlineHeaders.materialize(),
                                         body: Self.joined(stream.inlineChunks, count: stream.inlineBodyCount), bodyTooLarge: stream.inlineBodyTooLarge, remoteAddress: remoteAddress)
        stream.inlineHeaders.removeAll()
        stream.inlineChunks = []
        stream.charge.close()
        switch route {
        case .inline(let handler):
            submitWhole(stream, handler.respond(to: request))
        case .deferred(let handler):
            let responder = HTTP2DeferredResponder(target: self, streamID: stream.id)
            stream.responder = responder
            handler.start(request, responder)
        }
    }

    /// `:status` for a response head; 200's is made once.
    private static func statusPseudoHeader(_ status: Int) -> [(String, String)] {
        status == 200 ? status200 : [(":status", String(status))]
    }
    private static let status200 = [(":status", "200")]

    /// A deferred handler's answer, on the loop; dropped if its stream has gone.
    func submitDeferredResponse(streamID: Int32, _ response: HTTP2InlineResponse) {
        guard let stream = streams[streamID] else { return }
        stream.responder = nil
        submitWhole(stream, response)
    }

    /// Submits a whole response: the head, the body from memory, then the trailers if any.
    private func submitWhole(_ stream: Stream, _ response: HTTP2InlineResponse) {
        guard let session, !stream.responseSubmitted else { return }
        stream.responseSubmitted = true
        let pseudo = Self.statusPseudoHeader(response.status)
        if response.body.isEmpty && response.trailers.isEmpty {
            _ = withNameValuePairs(pseudo, response.headers) { nva, n in nghttp2_submit_response(session, stream.id, nva, n, nil) }
        } else {
            stream.fixedBody = response.body
            stream.trailers = response.trailers.isEmpty ? nil : response.trailers
            var provider = nghttp2_data_provider()
            provider.source.ptr = Unmanaged.passUnretained(stream).toOpaque()
            provider.read_callback = fixedBodyReadCallback
            _ = withNameValuePairs(pseudo, response.headers) { nva, n in nghttp2_submit_response(session, stream.id, nva, n, &provider) }
        }
        requestFlush()
    }

    private func submitResponse(streamID: Int32, status: Int, headers: HTTP2Headers, endStream: Bool) {
        guard let session, let stream = streams[streamID], !stream.responseSubmitted else { return }
        stream.responseSubmitted = true
        let pseudo = Self.statusPseudoHeader(status)
        if endStream {
            _ = withNameValuePairs(pseudo, headers) { nva, n in nghttp2_submit_response(session, streamID, nva, n, nil) }
        } else if let outbound = stream.outbound {
            var provider = Self.dataProvider(for: outbound)
            _ = withNameValuePairs(pseudo, headers) { nva, n in nghttp2_submit_response(session, streamID, nva, n, &provider) }
        }
        requestFlush()
    }

    private func handlerReturned(streamID: Int32) {
        guard let stream = streams[streamID] else { return }
        stream.handlerDone = true
        discard(stream)
    }

    private func reportConsumed(streamID: Int32) {
        guard let session, let stream = streams[streamID], let body = stream.body else { return }
        let n = min(body.takeConsumedBytes(), stream.received - stream.consumedReported)
        guard n > 0 else { return }
        stream.consumedReported += n
        _ = nghttp2_session_consume(session, streamID, n)
        requestFlush()
    }

    private func resetStream(_ id: Int32, code: UInt32) {
        guard let session, stream(id) != nil else { return }
        _ = nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), id, code)
        requestFlush()
    }
}

/// Frames a fixed or inline response's body straight from the stream (kept alive by the connection's stream
/// table until nghttp2 closes the stream, after which this is never called). At the end of the body, an
/// inline response's trailers are submitted and the DATA frame leaves the stream open for them.
private let fixedBodyReadCallback: nghttp2_data_source_read_callback = { session, streamID, buf, length, flags, source, _ in
    guard let buf, let flags, let ptr = source?.pointee.ptr else { return Int(NGHTTP2_ERR_CALLBACK_FAILURE.rawValue) }
    let stream = Unmanaged<ServerConnection.Stream>.fromOpaque(ptr).takeUnretainedValue()
    let n = min(length, stream.fixedBody.count - stream.fixedOffset)
    if n > 0 {
        stream.fixedBody.withUnsafeBufferPointer { src in
            if let base = src.baseAddress { buf.update(from: base + stream.fixedOffset, count: n) }
        }
    }
    stream.fixedOffset += n
    if stream.fixedOffset == stream.fixedBody.count {
        flags.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue
        if let trailers = stream.trailers, let session {
            stream.trailers = nil
            flags.pointee |= NGHTTP2_DATA_FLAG_NO_END_STREAM.rawValue
            _ = withNameValuePairs([], trailers) { nva, count in nghttp2_submit_trailer(session, streamID, nva, count) }
        }
    }
    return n
}
