import Foundation
import KilnAPI

/// The OpenAI API's response bodies, built from the gRPC service's messages: whole responses, SSE chunks
/// (`chat.completion.chunk`, `text_completion`), usage and log-probabilities in each endpoint's form.
struct OpenAIResponses {
    enum Endpoint { case chat, completion }

    let endpoint: Endpoint
    let id: String
    let model: String
    let created = Int(Date().timeIntervalSince1970)
    private let tail: [UInt8]

    init(endpoint: Endpoint, model: String) {
        self.endpoint = endpoint
        self.model = model
        let suffix = (0..<24).map { _ in "abcdefghijklmnopqrstuvwxyz0123456789".randomElement() ?? "x" }
        id = (endpoint == .chat ? "chatcmpl-" : "cmpl-") + String(suffix)
        tail = Self.tail(endpoint: endpoint, id: id, model: model, created: created)
    }

    static func finishReason(_ reason: Kiln_V1_FinishReason) -> Any {
        switch reason {
        case .stop: return "stop"
        case .length: return "length"
        case .cancelled: return "cancelled"
        case .error: return "error"
        default: return NSNull()
        }
    }

    static func usage(_ u: Kiln_V1_Usage) -> [String: Any] {
        ["prompt_tokens": Int(u.promptTokens), "completion_tokens": Int(u.completionTokens),
         "total_tokens": Int(u.promptTokens) + Int(u.completionTokens),
         "prompt_tokens_details": ["cached_tokens": Int(u.cachedPromptTokens)]]
    }

    /// One token's log-probabilities in the chat form (`logprobs.content[]`).
    static func chatLogprob(_ m: Kiln_V1_GenerateResponse) -> [String: Any] {
        ["token": m.text, "logprob": Double(m.logprob ?? 0), "bytes": Array(m.text.utf8).map(Int.init),
         "top_logprobs": m.topLogprobs.map { ["token": $0.text, "logprob": Double($0.logprob), "bytes": Array($0.text.utf8).map(Int.init)] as [String: Any] }]
    }

    /// Tokens' log-probabilities in the completions form, with each token's offset in the text so far.
    static func completionLogprobs(_ messages: [Kiln_V1_GenerateResponse], offset start: Int) -> [String: Any] {
        var offsets: [Int] = []
        var offset = start
        for m in messages {
            offsets.append(offset)
            offset += m.text.utf8.count
        }
        return ["tokens": messages.map(\.text), "token_logprobs": messages.map { Double($0.logprob ?? 0) },
                "top_logprobs": messages.map { m in Dictionary(m.topLogprobs.map { ($0.text, Double($0.logprob)) }, uniquingKeysWith: max) },
                "text_offset": offsets]
    }

    /// One SSE chunk for one message of the gRPC stream (`first` adds the chat's `role`).
    func chunk(_ m: Kiln_V1_GenerateResponse, first: Bool, wantLogprobs: Bool, includeUsageField: Bool, textOffset: Int) -> [String: Any] {
        var choice: [String: Any] = ["index": 0, "finish_reason": Self.finishReason(m.finishReason)]
        switch endpoint {
        case .chat:
            var delta: [String: Any] = ["content": m.text]
            if first { delta["role"] = "assistant" }
            choice["delta"] = delta
            choice["logprobs"] = wantLogprobs && (m.logprob != nil) ? ["content": [Self.chatLogprob(m)]] : NSNull()
        case .completion:
            choice["text"] = m.text
            choice["logprobs"] = wantLogprobs && (m.logprob != nil) ? Self.completionLogprobs([m], offset: textOffset) : NSNull()
        }
        var out = envelope(object: endpoint == .chat ? "chat.completion.chunk" : "text_completion")
        out["choices"] = [choice]
        if includeUsageField { out["usage"] = NSNull() }
        return out
    }

    /// The SSE event of a plain token (no log-probabilities, not the first, not the last), written without a
    /// dictionary: the same bytes `chunk` would give (keys sorted), at a fraction of the cost per token.
    func plainTokenEvent(_ text: String, includeUsageField: Bool) -> [UInt8] {
        var out = Array("data: {\"choices\":[{".utf8)
        switch endpoint {
        case .chat:
            out += Array("\"delta\":{\"content\":".utf8)
            Self.appendJSONString(text, to: &out)
            out += Array("},\"finish_reason\":null,\"index\":0,\"logprobs\":null}],".utf8)
        case .completion:
            out += Array("\"finish_reason\":null,\"index\":0,\"logprobs\":null,\"text\":".utf8)
            Self.appendJSONString(text, to: &out)
            out += Array("}],".utf8)
        }
        out += tail
        if includeUsageField { out += Array(",\"usage\":null".utf8) }
        out += Array("}\n\n".utf8)
        return out
    }

    /// The envelope's fields after `choices`, keys sorted, made once per stream.
    private static func tail(endpoint: Endpoint, id: String, model: String, created: Int) -> [UInt8] {
        var out = Array("\"created\":\(created),\"id\":".utf8)
        Self.appendJSONString(id, to: &out)
        out += Array(",\"model\":".utf8)
        Self.appendJSONString(model, to: &out)
        out += Array(",\"object\":\"\(endpoint == .chat ? "chat.completion.chunk" : "text_completion")\",\"system_fingerprint\":null".utf8)
        return out
    }

    /// `text` as a JSON string literal (RFC 8259 escapes).
    static func appendJSONString(_ text: String, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""): out += [92, 34]
            case 92: out += [92, 92]
            case 10: out += [92, 110]
            case 13: out += [92, 114]
            case 9: out += [92, 116]
            case 0..<32:
                let hex = Array("0123456789abcdef".utf8)
                out += [92, 117, 48, 48, hex[Int(byte >> 4)], hex[Int(byte & 15)]]
            default: out.append(byte)
            }
        }
        out.append(UInt8(ascii: "\""))
    }

    /// The usage chunk `stream_options.include_usage` asks for: no choices.
    func usageChunk(_ u: Kiln_V1_Usage) -> [String: Any] {
        var out = envelope(object: endpoint == .chat ? "chat.completion.chunk" : "text_completion")
        out["choices"] = [Any]()
        out["usage"] = Self.usage(u)
        return out
    }

    /// The whole response of a `stream: false` call.
    func whole(_ messages: [Kiln_V1_GenerateResponse], wantLogprobs: Bool) -> [String: Any] {
        let text = messages.map(\.text).joined()
        let last = messages.last
        var choice: [String: Any] = ["index": 0, "finish_reason": last.map { Self.finishReason($0.finishReason) } ?? NSNull()]
        let scored = messages.filter { $0.logprob != nil }
        switch endpoint {
        case .chat:
            choice["message"] = ["role": "assistant", "content": text]
            choice["logprobs"] = wantLogprobs ? ["content": scored.map(Self.chatLogprob)] : NSNull()
        case .completion:
            choice["text"] = text
            choice["logprobs"] = wantLogprobs ? Self.completionLogprobs(scored, offset: 0) : NSNull()
        }
        var out = envelope(object: endpoint == .chat ? "chat.completion" : "text_completion")
        out["choices"] = [choice]
        out["usage"] = last?.usage.map(Self.usage) ?? NSNull()
        return out
    }

    private func envelope(object: String) -> [String: Any] {
        ["id": id, "object": object, "created": created, "model": model, "system_fingerprint": NSNull()]
    }

    /// `GET /v1/models` entry.
    static func model(_ name: String) -> [String: Any] {
        ["id": name, "object": "model", "created": 0, "owned_by": "kiln"]
    }

    static func json(_ object: Any) -> [UInt8] {
        Array((try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8))
    }
}
