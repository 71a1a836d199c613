import Foundation
import Glibc

/// An OpenAI-compatible HTTP/1.1 server streaming server-sent events (llama.cpp's llama-server, or Kiln's
/// own OpenAI endpoint), for
/// `kiln bench serve` to run the same workload against. Each request runs on a thread of its own over a
/// blocking socket (`Connection: close`), so that waiting never holds a cooperative thread.
struct OpenAITarget: LoadTarget {
    let host: String
    let port: Int
    /// The figures' prefix (`llama_server`, `kiln_openai`).
    let label: String
    var name: String { label }
    var keepsSessions: Bool { false }

    func complete(prompt: String, tokens: Int) async -> RequestTimeline {
        let body: [String: Any] = ["prompt": prompt, "max_tokens": tokens, "temperature": 0, "stream": true,
                                   "ignore_eos": true, "cache_prompt": true]
        return await post("/v1/completions", body).1
    }

    func chatTurn(messages: [(role: String, content: String)], sessionID: String, tokens: Int) async -> (String, RequestTimeline) {
        let body: [String: Any] = ["messages": messages.map { ["role": $0.role, "content": $0.content] }, "max_tokens": tokens,
                                   "temperature": 0, "stream": true, "cache_prompt": true]
        return await post("/v1/chat/completions", body)
    }

    private func post(_ path: String, _ body: [String: Any]) async -> (String, RequestTimeline) {
        let json = (try? JSONSerialization.data(withJSONObject: body)) ?? Data()
        let (host, port) = (self.host, self.port)
        return await withCheckedContinuation { continuation in
            let thread = Thread { continuation.resume(returning: Self.stream(host: host, port: port, path: path, json: json)) }
            thread.stackSize = 1 << 20
            thread.start()
        }
    }

    /// Sends the request and reads the event stream: every event before the final one is a token.
    private static func stream(host: String, port: Int, path: String, json: Data) -> (String, RequestTimeline) {
        let start = monotonicSeconds()
        let (text, answered) = exchange(host: host, port: port, path: path, json: json, start: start)
        var timeline = answered
        timeline.end = monotonicSeconds()
        return (text, timeline)
    }

    private static func exchange(host: String, port: Int, path: String, json: Data, start: Double) -> (String, RequestTimeline) {
        var timeline = RequestTimeline(start: start)
        var text = ""
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr(host == "localhost" ? "127.0.0.1" : host)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { timeline.error = "connect: errno \(errno)"; return (text, timeline) }
        var request = Data("POST \(path) HTTP/1.1\r\nHost: \(host):\(port)\r\nContent-Type: application/json\r\nAccept: text/event-stream\r\nContent-Length: \(json.count)\r\nConnection: close\r\n\r\n".utf8)
        request.append(json)
        let sent = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        guard sent == request.count else { timeline.error = "send failed"; return (text, timeline) }

        var raw: [UInt8] = [], body = ChunkedBody(), headerDone = false, events: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = recv(fd, &buffer, buffer.count, 0)
            guard n > 0 else { break }
            let now = monotonicSeconds()
            raw += buffer[0..<n]
            if !headerDone {
                guard let end = raw.firstRange(of: [13, 10, 13, 10]) else { continue }
                let head = String(decoding: raw[..<end.lowerBound], as: UTF8.self).lowercased()
                guard head.hasPrefix("http/1.1 200") else { timeline.error = head.split(separator: "\r\n").first.map(String.init); return (text, timeline) }
                body.chunked = head.contains("transfer-encoding: chunked")
                raw.removeSubrange(..<end.upperBound)
                headerDone = true
            }
            events += body.decode(&raw)
            // Server-sent events end with a blank line.
            while let end = events.firstRange(of: [10, 10]) {
                let event = String(decoding: events[..<end.lowerBound], as: UTF8.self)
                events.removeSubrange(..<end.upperBound)
                for line in event.split(separator: "\n") where line.hasPrefix("data: ") {
                    let payload = line.dropFirst(6)
                    if payload == "[DONE]" { return (text, timeline) }
                    guard let object = try? JSONSerialization.jsonObject(with: Data(payload.utf8)) as? [String: Any],
                          let choice = (object["choices"] as? [[String: Any]])?.first else { continue }
                    let piece = (choice["text"] as? String) ?? ((choice["delta"] as? [String: Any])?["content"] as? String)
                    if choice["finish_reason"] is String && (piece ?? "").isEmpty { continue }
                    if let piece {
                        text += piece
                        timeline.tokenTimes.append(now)
                    }
                }
            }
        }
        if timeline.tokenTimes.isEmpty { timeline.error = "no tokens" }
        return (text, timeline)
    }
}

/// Undoes HTTP/1.1 chunked transfer coding incrementally (or passes a plain body through).
struct ChunkedBody {
    var chunked = false
    private var remaining = 0       // bytes left in the current chunk
    private var skipCRLF = false    // the CRLF after a chunk's data is pending

    /// Consumes what it can of `raw` and returns the body bytes in it.
    mutating func decode(_ raw: inout [UInt8]) -> [UInt8] {
        guard chunked else { defer { raw.removeAll() }; return raw }
        var out: [UInt8] = []
        while true {
            if remaining > 0 {
                let take = min(remaining, raw.count)
                guard take > 0 else { break }
                out += raw[0..<take]
                raw.removeFirst(take)
                remaining -= take
                if remaining == 0 { skipCRLF = true }
                continue
            }
            if skipCRLF {
                guard raw.count >= 2 else { break }
                raw.removeFirst(2)
                skipCRLF = false
            }
            guard let lineEnd = raw.firstRange(of: [13, 10]) else { break }
            let sizeText = String(decoding: raw[..<lineEnd.lowerBound], as: UTF8.self).split(separator: ";").first ?? ""
            raw.removeSubrange(..<lineEnd.upperBound)
            guard let size = Int(sizeText.trimmingCharacters(in: .whitespaces), radix: 16), size > 0 else { break }
            remaining = size
        }
        return out
    }
}
