import CHTTPParser

/// HTTP/1.1 request parsing over Node's http_parser (Debian's libhttp-parser-dev), with the limits and
/// strictness a server facing the internet needs on top of it.
///
/// The connection feeds it bytes as they arrive; it answers with events. It stops (pauses the C parser) after
/// each request head and after each request's end, so that the connection acts on one request at a time and
/// pipelined requests wait, unparsed, for the responses before them.
///
/// On top of http_parser's own checks (a `Content-Length` beside `Transfer-Encoding: chunked`, duplicate or
/// malformed lengths, a transfer coding that does not end in `chunked`, bad chunk sizes: request smuggling's
/// usual routes), it refuses a head with a bare LF line ending, a target longer than the header limit (414),
/// and a head larger than it (431).
final class HTTP1RequestParser {
    struct Head {
        var method = ""
        var target = ""
        var versionMinor = 1
        /// Fields as they came, names lowercased.
        var fields: [(name: String, value: String)] = []
        var keepAlive = true
        var expectsContinue = false
        /// The declared body length; nil for a chunked body or none.
        var contentLength: UInt64?
        var chunked = false

        /// The first value of a field (name in lowercase).
        func field(_ name: String) -> String? { fields.first { $0.name == name }?.value }
        /// Whether a body may follow the head.
        var hasBody: Bool { chunked || (contentLength ?? 0) > 0 }
    }

    enum Event {
        /// A request head, complete. The parser waits for ``resume()`` before reading its body.
        case head(Head)
        case body([UInt8])
        /// The request (its body included) is complete. The parser waits for ``resume()``.
        case end
    }

    /// Why input was refused: the status to answer (then close), and a reason for the log.
    struct Refusal: Error, Equatable {
        var status: Int
        var reason: String
    }

    private var parser = http_parser()
    /// Bytes a head may hold (request line and fields together).
    let maxHeadBytes: Int
    private var head = Head()
    private var headBytes = 0
    private var fieldName: [UInt8] = []
    private var fieldValue: [UInt8] = []
    private var readingValue = false
    private var target: [UInt8] = []
    private var events: [Event] = []
    private var refusal: Refusal?
    /// Between a message's first byte and its head's end: the bytes fed are head bytes.
    private var inHead = true
    private var previousHeadByte: UInt8 = 0

    init(maxHeadBytes: Int) {
        self.maxHeadBytes = maxHeadBytes
        http_parser_init(&parser, HTTP_REQUEST)
    }

    /// Whether the parser is paused after a head or a request's end, waiting for ``resume()``.
    private(set) var isPaused = false

    /// Whether no byte of a next request has arrived since the last one ended.
    var isBetweenRequests: Bool { inHead && headBytes == 0 && target.isEmpty && fieldName.isEmpty }

    /// Lets the parser go on past the head or the end it stopped at.
    func resume() {
        isPaused = false
        http_parser_pause(&parser, 0)
    }

    /// Parses as much of `bytes` as it can; returns how many bytes it took and what they held. Stops early
    /// when it pauses; the caller feeds the rest after ``resume()``. Throws when the input is refused (the
    /// connection answers the status and closes).
    func feed(_ bytes: UnsafeRawBufferPointer) throws(Refusal) -> (consumed: Int, events: [Event]) {
        guard !isPaused, let base = bytes.baseAddress, !bytes.isEmpty else { return (0, []) }
        let wasInHead = inHead
        events = []
        let consumed = withUnsafeMutablePointer(to: &parser) { p -> Int in
            p.pointee.data = Unmanaged.passUnretained(self).toOpaque()
            return withUnsafePointer(to: HTTP1RequestParser.settings) { s in
                http_parser_execute(p, s, base.assumingMemoryBound(to: CChar.self), bytes.count)
            }
        }
        if let refusal { throw refusal }
        let errno = http_errno(rawValue: parser.http_errno)
        if errno != HPE_OK && errno != HPE_PAUSED {
            throw Refusal(status: 400, reason: "bad request: \(String(cString: http_errno_description(errno)))")
        }
        if wasInHead {
            // http_parser takes a bare LF as a line end; a server that does while a proxy in front does not
            // can be smuggled a request, so a head must use CRLF throughout.
            let scanned = UnsafeRawBufferPointer(rebasing: bytes[..<consumed])
            for byte in scanned {
                if byte == 10 && previousHeadByte != 13 { throw Refusal(status: 400, reason: "bad request: bare LF in the head") }
                previousHeadByte = byte
            }
        }
        return (consumed, events)
    }

    // MARK: Callbacks (the C parser calls these during `feed`)

    private static func parser(_ p: UnsafeMutablePointer<http_parser>?) -> HTTP1RequestParser? {
        guard let data = p?.pointee.data else { return nil }
        return Unmanaged<HTTP1RequestParser>.fromOpaque(data).takeUnretainedValue()
    }

    private func refuse(_ status: Int, _ reason: String) -> Int32 {
        refusal = Refusal(status: status, reason: reason)
        return 1
    }

    private func countHead(_ n: Int) -> Bool {
        headBytes += n
        return headBytes <= maxHeadBytes
    }

    private func finishField() {
        guard !fieldName.isEmpty else { return }
        head.fields.append((String(decoding: fieldName, as: UTF8.self).lowercased(), String(decoding: fieldValue, as: UTF8.self)))
        fieldName = []
        fieldValue = []
        readingValue = false
    }

    private func headersComplete(_ p: UnsafeMutablePointer<http_parser>) -> Int32 {
        finishField()
        head.method = String(cString: http_method_str(http_method(rawValue: p.pointee.method)))
        head.target = String(decoding: target, as: UTF8.self)
        head.versionMinor = Int(p.pointee.http_minor)
        guard p.pointee.http_major == 1 else { return refuse(505, "HTTP version \(p.pointee.http_major).\(p.pointee.http_minor)") }
        guard head.method != "CONNECT" else { return refuse(405, "CONNECT is not served") }
        head.keepAlive = http_should_keep_alive(p) != 0
        head.chunked = p.pointee.flags & UInt32(F_CHUNKED.rawValue) != 0
        if p.pointee.flags & UInt32(F_CONTENTLENGTH.rawValue) != 0 { head.contentLength = p.pointee.content_length }
        head.expectsContinue = head.field("expect")?.lowercased() == "100-continue"
        if head.versionMinor >= 1 && head.field("host") == nil { return refuse(400, "no Host field") }
        events.append(.head(head))
        head = Head()
        target = []
        headBytes = 0
        inHead = false
        isPaused = true
        http_parser_pause(p, 1)
        return 0
    }

    private static let settings: http_parser_settings = {
        var s = http_parser_settings()
        s.on_message_begin = { p in
            guard let me = parser(p) else { return 1 }
            me.inHead = true
            return 0
        }
        s.on_url = { p, at, n in
            guard let me = parser(p), let at else { return 1 }
            guard me.countHead(n) else { return me.refuse(414, "request target longer than \(me.maxHeadBytes) bytes") }
            me.target.append(contentsOf: UnsafeRawBufferPointer(start: at, count: n))
            return 0
        }
        s.on_header_field = { p, at, n in
            guard let me = parser(p), let at else { return 1 }
            guard me.countHead(n + 4) else { return me.refuse(431, "request head larger than \(me.maxHeadBytes) bytes") }
            if me.readingValue { me.finishField() }
            me.fieldName.append(contentsOf: UnsafeRawBufferPointer(start: at, count: n))
            return 0
        }
        s.on_header_value = { p, at, n in
            guard let me = parser(p), let at else { return 1 }
            guard me.countHead(n) else { return me.refuse(431, "request head larger than \(me.maxHeadBytes) bytes") }
            me.readingValue = true
            me.fieldValue.append(contentsOf: UnsafeRawBufferPointer(start: at, count: n))
            return 0
        }
        s.on_headers_complete = { p in
            guard let me = parser(p), let p else { return 1 }
            return me.headersComplete(p)
        }
        s.on_body = { p, at, n in
            guard let me = parser(p), let at else { return 1 }
            me.events.append(.body(Array(UnsafeRawBufferPointer(start: at, count: n))))
            return 0
        }
        s.on_message_complete = { p in
            guard let me = parser(p), let p else { return 1 }
            me.events.append(.end)
            me.inHead = true
            me.previousHeadByte = 0
            me.isPaused = true
            http_parser_pause(p, 1)
            return 0
        }
        return s
    }()
}
