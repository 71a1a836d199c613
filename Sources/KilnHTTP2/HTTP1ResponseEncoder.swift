import CHTTPParser

/// How an HTTP/1.1 response body is delimited on the wire.
enum HTTP1BodyFraming: Equatable {
    /// `content-length: n` (a fixed or whole response, or a handler that named its length).
    case length(Int)
    /// `transfer-encoding: chunked`: a streamed response to an HTTP/1.1 client.
    case chunked
    /// Ended by closing the connection: a streamed response to an HTTP/1.0 client.
    case untilClose
}

/// Writes HTTP/1.1 response heads and chunked body framing.
enum HTTP1ResponseEncoder {
    /// Fields that belong to one hop (RFC 9110 §7.6.1) or that the framing decides: a handler's are dropped.
    static let connectionFields: Set<String> = ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer"]

    /// The framing for a streamed response: the handler's `content-length` when it gave one, else chunked
    /// (or, for HTTP/1.0, until close).
    static func framing(for headers: HTTP2Headers, versionMinor: Int) -> HTTP1BodyFraming {
        if let text = headers["content-length"], let n = Int(text), n >= 0 { return .length(n) }
        return versionMinor >= 1 ? .chunked : .untilClose
    }

    /// The status line and fields, through the blank line.
    static func head(status: Int, headers: HTTP2Headers, framing: HTTP1BodyFraming, close: Bool) -> [UInt8] {
        var text = "HTTP/1.1 \(status) \(reason(status))\r\n"
        for field in headers where !connectionFields.contains(field.name) && field.name != "content-length" {
            // A value with CR or LF would split the head: a handler's mistake must not become a response split.
            guard !field.value.utf8.contains(where: { $0 == 13 || $0 == 10 }),
                  !field.name.utf8.contains(where: { $0 == 13 || $0 == 10 || $0 == 58 }) else { continue }
            text += "\(field.name): \(field.value)\r\n"
        }
        switch framing {
        case .length(let n): text += "content-length: \(n)\r\n"
        case .chunked: text += "transfer-encoding: chunked\r\n"
        case .untilClose: break
        }
        if close { text += "connection: close\r\n" }
        text += "\r\n"
        return Array(text.utf8)
    }

    /// `100 Continue`, for a client that waits for it before sending its body.
    static let continueLine = Array("HTTP/1.1 100 Continue\r\n\r\n".utf8)

    /// Appends one chunk's framing and bytes.
    static func appendChunk(_ bytes: UnsafeRawBufferPointer, to out: inout [UInt8]) {
        guard !bytes.isEmpty else { return }
        out += Array(String(bytes.count, radix: 16).utf8)
        out += [13, 10]
        out += bytes
        out += [13, 10]
    }

    /// The last chunk, with trailer fields if any (a handler's gRPC trailers, say).
    static func lastChunk(trailers: HTTP2Headers) -> [UInt8] {
        var text = "0\r\n"
        for field in trailers where !connectionFields.contains(field.name) {
            guard !field.value.utf8.contains(where: { $0 == 13 || $0 == 10 }) else { continue }
            text += "\(field.name): \(field.value)\r\n"
        }
        text += "\r\n"
        return Array(text.utf8)
    }

    /// A short plain-text response for a request refused before any handler saw it.
    static func refusal(status: Int, message: String, close: Bool) -> [UInt8] {
        let body = Array((message + "\n").utf8)
        var headers: HTTP2Headers = ["content-type": "text/plain"]
        if status == 503 { headers.add("retry-after", "1") }
        return head(status: status, headers: headers, framing: .length(body.count), close: close) + body
    }

    static func reason(_ status: Int) -> String {
        guard let code = UInt32(exactly: status) else { return "Unknown" }
        let text = String(cString: http_status_str(http_status(rawValue: code)))
        return text == "<unknown>" ? "Unknown" : text
    }
}
