import CLinux
import Glibc

/// The server side of one HTTP/1.1 connection, on the same listeners, routes and handler API as HTTP/2:
/// a route does not know which protocol carried its request.
///
/// One request is answered at a time. Pipelined requests wait, unparsed (up to a bound, past which reading
/// stops), until the response before them is complete, so they are answered in order. A handler's request
/// body is read only as fast as the handler takes it (past `initialWindowSize` unread bytes, reading stops),
/// and its response is pulled from its bounded ``OutboundBody`` only as fast as the socket takes it, so a slow
/// peer on either side holds a bounded amount of memory. Responses the handler streams without a length go
/// chunked. The same limits as HTTP/2 apply (head size → 431 or 414, body size → 413, the buffer budget, the
/// handshake timeout for each request head, the idle timeout); a drain sends `connection: close` on the next
/// response. Loop-confined.
final class HTTP1Connection: EventLoopSource, EventLoopFlushable, AcceptedConnection, DeferredResponseTarget, @unchecked Sendable {
    let loop: EventLoop
    let fd: Int32
    private let channel: ByteChannel
    private let config: HTTP2ServerConfiguration
    private let router: HTTP2Router
    private let remoteAddress: String
    private let scheme: String
    private let requestBudget: RequestBufferBudget
    private let parser: HTTP1RequestParser
    private(set) var isClosed = false
    private(set) var closeReason: String?
    var onClose: ((AcceptedConnection) -> Void)?

    /// Received bytes not yet parsed (pipelined requests waiting their turn).
    private var input: [UInt8] = []
    private var inputStart = 0
    private var out: [UInt8] = []
    private var outStart = 0
    private var exchange: HTTP1Exchange?
    private var serial: Int32 = 0
    private var interest: UInt32 = EPOLLIN.rawValue
    private var flushQueued = false
    /// Scratch space a streamed response is copied through (allocated while one streams).
    private var scratch: UnsafeMutableRawBufferPointer?
    private var timerID: UInt64?
    /// When the current request head began arriving (or the connection opened), for the head timeout.
    private var headStartedAt: UInt64?
    private var lastActivity: UInt64
    /// Draining: the next response says `connection: close`; the connection closes by `deadline`.
    private var drainDeadline: UInt64?
    /// After the last response is written: close (lingering on reads for a moment, so that a client still
    /// sending does not get a reset that destroys the response it has not read yet).
    private var closing = false
    private var lingerUntil: UInt64?

    /// Unparsed pipelined bytes held at most before reading stops.
    private static let maxPipelined = 64 * 1024
    private static let scratchSize = 16 * 1024

    init(loop: EventLoop, fd: Int32, channel: ByteChannel, remoteAddress: String, tls: Bool, config: HTTP2ServerConfiguration,
         router: HTTP2Router, requestBudget serverBudget: RequestBufferBudget) {
        self.loop = loop
        self.fd = fd
        self.channel = channel
        self.config = config
        self.router = router
        self.remoteAddress = remoteAddress
        self.scheme = tls ? "https" : "http"
        requestBudget = RequestBufferBudget(limit: config.maxBufferedRequestBytes, parent: serverBudget)
        parser = HTTP1RequestParser(maxHeadBytes: config.maxHeaderListSize)
        let now = MonotonicClock.nanos()
        lastActivity = now
        headStartedAt = now
    }

    /// Takes the socket over (already registered on `loop` for another source) with the bytes already read.
    func start(initialBytes: [UInt8]) throws {
        try loop.register(fd: fd, source: self, events: interest)
        scheduleTick()
        input = initialBytes
        processInput()
        if !isClosed { readAvailable() }
    }

    // MARK: Events

    func handleEvents(_ events: UInt32) {
        if isClosed { return }
        // Hang-ups are reported even while reading waits: the peer is gone.
        if events & (EPOLLHUP.rawValue | EPOLLERR.rawValue) != 0 && readingPaused { return close(reason: "peer hung up") }
        if events & (EPOLLIN.rawValue | EPOLLHUP.rawValue | EPOLLERR.rawValue) != 0 { readAvailable() }
        if !isClosed && events & EPOLLOUT.rawValue != 0 { flushNow() }
    }

    /// Whether reading waits: for the handler to take its body, or for responses before pipelined requests.
    private var readingPaused: Bool {
        if let e = exchange, e.unread > Int(config.initialWindowSize) { return true }
        return input.count - inputStart > Self.maxPipelined
    }

    private func readAvailable() {
        let buffer = loop.readBuffer
        while !isClosed && !readingPaused {
            switch channel.read(into: buffer) {
            case .done(let n):
                lastActivity = MonotonicClock.nanos()
                if lingerUntil != nil { continue }   // closing: what still comes is dropped
                if headStartedAt == nil && exchange == nil { headStartedAt = lastActivity }
                input.append(contentsOf: UnsafeRawBufferPointer(rebasing: buffer[..<n]))
                processInput()
                if n < buffer.count && !channel.hasBufferedInput { updateInterest(); return }
            case .wantRead:
                updateInterest()
                return
            case .wantWrite:
                return
            case .eof:
                close(reason: exchange == nil ? "peer closed" : "peer closed during a request")
                return
            case .failed(let why):
                close(reason: "read: \(why)")
                return
            }
        }
        updateInterest()
    }

    /// Parses what has arrived, acting on each request head, body chunk and end in turn.
    private func processInput() {
        while !isClosed && !closing && inputStart < input.count && !parser.isPaused {
            let result: (consumed: Int, events: [HTTP1RequestParser.Event])
            do {
                result = try input.withUnsafeBytes { raw in try parser.feed(UnsafeRawBufferPointer(rebasing: raw[inputStart...])) }
            } catch let refusal as HTTP1RequestParser.Refusal {
                refuse(status: refusal.status, reason: refusal.reason)
                return
            } catch {
                refuse(status: 400, reason: "\(error)")
                return
            }
            inputStart += result.consumed
            for event in result.events {
                switch event {
                case .head(let head): begin(head)
                case .body(let bytes): received(bytes)
                case .end: requestEnded()
                }
                if isClosed || closing { return }
            }
            if result.consumed == 0 && !parser.isPaused { break }
        }
        if inputStart == input.count {
            input.removeAll(keepingCapacity: input.capacity <= 64 * 1024)
            inputStart = 0
        } else if inputStart > 16 * 1024 {
            input.removeFirst(inputStart)
            inputStart = 0
        }
    }

    // MARK: Requests

    private func begin(_ head: HTTP1RequestParser.Head) {
        headStartedAt = nil
        serial &+= 1
        let exchange = HTTP1Exchange(serial: serial, head: head, charge: BodyCharge(budget: requestBudget))
        self.exchange = exchange
        if let length = head.contentLength, length > UInt64(config.maxRequestBodySize) {
            refuse(status: 413, reason: "request body of \(length) bytes is over the limit")
            return
        }
        if head.expectsContinue && head.hasBody { out += HTTP1ResponseEncoder.continueLine; requestFlush() }
        parser.resume()
        switch router.route(for: stripQuery(head.target)) {
        case .fixed(let response):
            exchange.pendingFixed = response
        case .inline(let handler):
            exchange.whole = .inline(handler)
        case .deferred(let handler):
            exchange.whole = .deferred(handler)
        case .handler(let handler):
            startHandler(handler, exchange)
        }
    }

    private func received(_ bytes: [UInt8]) {
        guard let e = exchange else { return }
        e.received += bytes.count
        if e.discarding { return }
        if e.received > config.maxRequestBodySize {
            e.body?.finish(error: .bodyTooLarge)
            e.task?.cancel()
            refuse(status: 413, reason: "request body over \(config.maxRequestBodySize) bytes")
            return
        }
        if let whole = e.whole {
            if e.wholeCount + bytes.count <= whole.maxRequestBodySize {
                guard e.charge.charge(bytes.count) else { return refuse(status: 413, reason: "request buffer budget spent") }
                e.wholeChunks.append(bytes)
                e.wholeCount += bytes.count
            } else {
                e.wholeTooLarge = true
            }
            return
        }
        guard let body = e.body, e.task != nil else { return }   // a fixed route: dropped
        guard e.charge.charge(bytes.count) else {
            e.body?.finish(error: .streamReset(11))
            e.task?.cancel()
            return refuse(status: 413, reason: "request buffer budget spent")
        }
        e.unread += bytes.count
        body.append(bytes)
    }

    private func requestEnded() {
        guard let e = exchange else { return }
        e.requestEnded = true
        e.body?.finish()
        if e.discarding {
            nextRequest()
            return
        }
        if let fixed = e.pendingFixed {
            e.pendingFixed = nil
            writeWhole(e, status: fixed.status, headers: fixed.headers, body: fixed.body)
        } else if let whole = e.whole {
            e.whole = nil
            let body = e.wholeChunks.count == 1 ? e.wholeChunks[0] : Array(e.wholeChunks.joined())
            e.wholeChunks = []
            e.charge.close()
            let request = HTTP2InlineRequest(method: e.head.method, path: e.head.target, headers: requestHeaders(e.head), body: body,
                                             bodyTooLarge: e.wholeTooLarge, remoteAddress: remoteAddress)
            switch whole {
            case .inline(let handler):
                let r = handler.respond(to: request)
                writeWhole(e, status: r.status, headers: r.headers, body: r.body, trailers: r.trailers)
            case .deferred(let handler):
                let responder = HTTP2DeferredResponder(target: self, streamID: e.serial)
                e.responder = responder
                handler.start(request, responder)
            }
        }
    }

    private func requestHeaders(_ head: HTTP1RequestParser.Head) -> HTTP2Headers {
        var headers = HTTP2Headers()
        // Host becomes the authority; fields about this hop stay here (but `te: trailers`, which gRPC checks).
        for (name, value) in head.fields where name == "te" || (name != "host" && !HTTP1ResponseEncoder.connectionFields.contains(name)) {
            headers.add(name, value)
        }
        return headers
    }

    private func startHandler(_ handler: any HTTP2Handler, _ e: HTTP1Exchange) {
        let serial = e.serial, loop = self.loop
        let connection = self
        let body = HTTP2InboundBody(charge: e.charge) { loop.execute { connection.bodyConsumed(serial) } }
        let outbound = OutboundBody(highWatermark: config.responseBufferSize, lowWatermark: config.responseBufferSize / 4) {
            loop.execute { connection.requestFlush() }
        }
        e.body = body
        e.outbound = outbound
        if !e.head.hasBody { body.finish() }
        let writer = HTTP2ResponseWriter(outbound: outbound) { status, headers, endStream in
            loop.execute { connection.writeHead(serial, status: status, headers: headers, endStream: endStream) }
        }
        let request = HTTP2Request(method: e.head.method, path: e.head.target, authority: e.head.field("host"), scheme: scheme,
                                   headers: requestHeaders(e.head), body: body, remoteAddress: remoteAddress,
                                   peerIdentity: channel.peerSubject)
        let charge = e.charge
        e.task = Task(executorPreference: loop) {
            defer {
                charge.close()
                loop.execute { connection.handlerReturned(serial) }
            }
            // HTTP/1.1 has no stream reset: a response cut short ends the connection.
            await handler.respond(to: request, with: writer) {
                loop.execute { connection.abort(serial, reason: "handler failed mid-response") }
            }
        }
    }

    private func bodyConsumed(_ serial: Int32) {
        guard let e = exchange, e.serial == serial, let body = e.body else { return }
        let wasPaused = readingPaused
        e.unread = max(0, e.unread - body.takeConsumedBytes())
        if wasPaused && !readingPaused { readAvailable() }
    }

    private func handlerReturned(_ serial: Int32) {
        guard let e = exchange, e.serial == serial else { return }
        // Body bytes still coming have no reader now.
        if !e.requestEnded { e.discarding = true; e.unread = 0; readAvailable() }
    }

    private func abort(_ serial: Int32, reason: String) {
        guard let e = exchange, e.serial == serial else { return }
        close(reason: reason)
    }

    // MARK: Responses

    private var closeAfterResponse: Bool {
        guard let e = exchange else { return true }
        return !e.head.keepAlive || drainDeadline != nil
    }

    /// A handler's response head, on the loop.
    private func writeHead(_ serial: Int32, status: Int, headers: HTTP2Headers, endStream: Bool) {
        guard let e = exchange, e.serial == serial, !e.headWritten else { return }
        e.headWritten = true
        e.framing = endStream ? .length(0) : HTTP1ResponseEncoder.framing(for: headers, versionMinor: e.head.versionMinor)
        e.closeAnnounced = closeAfterResponse || e.framing == .untilClose
        out += HTTP1ResponseEncoder.head(status: status, headers: headers, framing: e.framing, close: e.closeAnnounced)
        if endStream || e.isHead {
            e.outbound?.discardFurtherWrites()
            responseEnded(e)
        }
        requestFlush()
    }

    /// A deferred handler's answer.
    func submitDeferredResponse(streamID: Int32, _ response: HTTP2InlineResponse) {
        guard let e = exchange, e.serial == streamID else { return }
        e.responder = nil
        writeWhole(e, status: response.status, headers: response.headers, body: response.body, trailers: response.trailers)
    }

    private func writeWhole(_ e: HTTP1Exchange, status: Int, headers: HTTP2Headers, body: [UInt8], trailers: HTTP2Headers = HTTP2Headers()) {
        guard !e.headWritten else { return }
        e.headWritten = true
        // Trailers (a gRPC status) need chunked framing; anything else goes with its length.
        if !trailers.isEmpty && e.head.versionMinor >= 1 {
            e.framing = .chunked
            e.closeAnnounced = closeAfterResponse
            out += HTTP1ResponseEncoder.head(status: status, headers: headers, framing: .chunked, close: e.closeAnnounced)
            if !e.isHead {
                body.withUnsafeBytes { HTTP1ResponseEncoder.appendChunk($0, to: &out) }
                out += HTTP1ResponseEncoder.lastChunk(trailers: trailers)
            }
        } else {
            e.framing = .length(body.count)
            e.closeAnnounced = closeAfterResponse
            out += HTTP1ResponseEncoder.head(status: status, headers: headers, framing: .length(body.count), close: e.closeAnnounced)
            if !e.isHead { out += body }
        }
        responseEnded(e)
        requestFlush()
    }

    /// Pulls a streamed response's next bytes into the output; false when it has none now.
    private func refill() -> Bool {
        guard let e = exchange, e.headWritten, !e.responseEnded, let outbound = e.outbound else { return false }
        let buffer = scratch ?? UnsafeMutableRawBufferPointer.allocate(byteCount: Self.scratchSize, alignment: 16)
        scratch = buffer
        guard let base = buffer.baseAddress else { return false }
        switch outbound.read(into: base.assumingMemoryBound(to: UInt8.self), capacity: buffer.count) {
        case .deferred:
            return false
        case .bytes(let n, let end, let trailers):
            let bytes = UnsafeRawBufferPointer(rebasing: buffer[..<n])
            switch e.framing {
            case .chunked:
                HTTP1ResponseEncoder.appendChunk(bytes, to: &out)
                if end { out += HTTP1ResponseEncoder.lastChunk(trailers: trailers) }
            case .length(let total):
                // Bytes past the length the handler announced would be read as a next response: dropped.
                let room = max(0, min(n, total - e.bodyWritten))
                out += UnsafeRawBufferPointer(rebasing: bytes[..<room])
                e.bodyWritten += room
            case .untilClose:
                out += bytes
            }
            if end {
                // A body shorter than its announced length leaves the client waiting for the rest: close.
                if case .length(let total) = e.framing, e.bodyWritten < total { e.closeAnnounced = true }
                responseEnded(e)
            }
            return n > 0 || end
        }
    }

    private func responseEnded(_ e: HTTP1Exchange) {
        e.responseEnded = true
        scratch?.deallocate()
        scratch = nil
    }

    /// The response is on the wire: the next request's turn, or the end of the connection.
    private func responseWritten() {
        guard let e = exchange, e.responseEnded, !e.followedUp else { return }
        e.followedUp = true
        // The client asked to close, or the response said so (a drain decides in `nextRequest`).
        if !e.head.keepAlive || e.framing == .untilClose || e.closeAnnounced {
            startClosing()
            return
        }
        if !e.requestEnded {
            // The answer went before the whole body came (a route that did not read it): read the rest and
            // drop it, so that the connection can carry the next request.
            e.discarding = true
            e.unread = 0
            e.body?.finish(error: .connectionClosed)
            readAvailable()
            return
        }
        nextRequest()
    }

    private func nextRequest() {
        guard let e = exchange, e.responseEnded, e.requestEnded else { return }
        e.charge.close()
        exchange = nil
        lastActivity = MonotonicClock.nanos()
        // Draining: a request already here gets its answer, with `connection: close`; none, and it closes now.
        if drainDeadline != nil && inputStart == input.count { startClosing(); return }
        parser.resume()
        if inputStart < input.count { headStartedAt = lastActivity }
        processInput()
        if !isClosed { readAvailable() }
    }

    /// Answers a request refused before or while it was read, then closes.
    private func refuse(status: Int, reason: String) {
        if debugTransport { log("refused (\(status)): \(reason)") }
        if let e = exchange {
            e.task?.cancel()
            e.body?.finish(error: .connectionClosed)
            e.outbound?.fail(.connectionClosed)
            if e.headWritten { close(reason: reason); return }
            e.headWritten = true
            e.responseEnded = true
        }
        out += HTTP1ResponseEncoder.refusal(status: status, message: HTTP1ResponseEncoder.reason(status).lowercased(), close: true)
        startClosing()
    }

    /// Ends the connection once the output is written: half-closes, then drops what the peer still sends
    /// for up to a second before closing.
    private func startClosing() {
        closing = true
        requestFlush()
    }

    // MARK: Output

    func requestFlush() {
        if flushQueued || isClosed { return }
        flushQueued = true
        loop.enqueueFlush(self)
    }

    func flushNow() {
        flushQueued = false
        while !isClosed {
            if outStart == out.count {
                out.removeAll(keepingCapacity: out.capacity <= 128 * 1024)
                outStart = 0
                guard refill() else { break }
                continue
            }
            let result = out.withUnsafeBytes { raw in channel.write(UnsafeRawBufferPointer(rebasing: raw[outStart...])) }
            switch result {
            case .done(let n):
                outStart += n
            case .wantWrite:
                setWriteInterest(true)
                return
            case .wantRead:
                return
            case .eof:
                close(reason: "peer closed")
                return
            case .failed(let why):
                close(reason: "write: \(why)")
                return
            }
        }
        guard !isClosed else { return }
        setWriteInterest(false)
        if exchange?.responseEnded == true && !closing {
            responseWritten()
        }
        if closing && outStart == out.count && lingerUntil == nil {
            lingerUntil = MonotonicClock.nanos() + 1_000_000_000
            Glibc.shutdown(fd, Int32(SHUT_WR))
            readAvailable()
        }
    }

    private func setWriteInterest(_ on: Bool) {
        let wanted = on ? interest | EPOLLOUT.rawValue : interest & ~EPOLLOUT.rawValue
        if wanted != interest { interest = wanted; loop.modify(fd: fd, events: interest) }
    }

    private func updateInterest() {
        guard !isClosed else { return }
        let wanted = readingPaused ? interest & ~EPOLLIN.rawValue : interest | EPOLLIN.rawValue
        if wanted != interest { interest = wanted; loop.modify(fd: fd, events: interest) }
    }

    // MARK: Lifecycle

    /// A drain: the response in flight (if any) is the last, with `connection: close`; an idle connection
    /// closes now.
    func beginShutdown(deadline: UInt64) {
        guard !isClosed, drainDeadline == nil else { return }
        drainDeadline = deadline
        if exchange == nil { close(reason: "drained") }
    }

    private func scheduleTick() {
        timerID = loop.schedule(afterNanos: nanos(config.timerGranularity)) { [self] in
            timerID = nil
            guard !isClosed else { return }
            tick(now: MonotonicClock.nanos())
            if !isClosed { scheduleTick() }
        }
    }

    private func tick(now: UInt64) {
        if let until = lingerUntil, now >= until { return close(reason: "closed after the last response") }
        if let deadline = drainDeadline, now >= deadline { return close(reason: "drain deadline") }
        if let started = headStartedAt, exchange == nil, !closing, now &- started >= nanos(config.handshakeTimeout) {
            // A head that trickles in (slowloris) holds a connection no longer than a TLS handshake may.
            return refuse(status: 408, reason: "request head not complete within \(config.handshakeTimeout) s")
        }
        if exchange == nil && !closing && now &- lastActivity >= nanos(config.idleTimeout) { close(reason: "idle timeout") }
    }

    func close(reason: String) {
        guard !isClosed else { return }
        isClosed = true
        closeReason = reason
        if debugTransport { log("connection \(fd) closed: \(reason)") }
        if let t = timerID { loop.cancelTimer(t) }
        if let e = exchange {
            e.task?.cancel()
            e.body?.finish(error: .connectionClosed)
            e.outbound?.fail(.connectionClosed)
            e.responder?.cancel()
            e.charge.close()
        }
        exchange = nil
        scratch?.deallocate()
        scratch = nil
        loop.deregister(fd: fd)
        channel.close()
        Glibc.close(fd)
        onClose?(self)
        onClose = nil
    }

    private func log(_ line: String) {
        let text = "kiln.http1: \(line)\n"
        _ = text.withCString { Glibc.write(2, $0, strlen($0)) }
    }
}
