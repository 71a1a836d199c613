import Foundation
import KilnRPC

/// An error in the OpenAI API's shape, `{"error": {"message", "type", "param", "code"}}`, with its HTTP status.
struct OpenAIError: Error {
    var status: Int
    var message: String
    var type: String
    var param: String?
    var code: String?
    /// Seconds to wait before retrying (429, 503).
    var retryAfter: Int?

    static func invalid(_ message: String, param: String?) -> OpenAIError {
        OpenAIError(status: 400, message: message, type: "invalid_request_error", param: param, code: nil)
    }

    static func notFound(_ message: String, code: String) -> OpenAIError {
        OpenAIError(status: 404, message: message, type: "invalid_request_error", param: nil, code: code)
    }

    static func unavailable(_ message: String) -> OpenAIError {
        OpenAIError(status: 503, message: message, type: "server_error", param: nil, code: "unavailable", retryAfter: 1)
    }

    /// A body that did not decode: the path of the field at fault becomes `param` (`messages[0].content`).
    static func decoding(_ error: DecodingError) -> OpenAIError {
        func path(_ keys: [CodingKey]) -> String? {
            var text = ""
            for key in keys {
                if let i = key.intValue { text += "[\(i)]" } else { text += text.isEmpty ? key.stringValue : ".\(key.stringValue)" }
            }
            return text.isEmpty ? nil : text
        }
        switch error {
        case .typeMismatch(let type, let context):
            let p = path(context.codingPath)
            return .invalid("\(p ?? "the body") must be \(describe(type))", param: p)
        case .valueNotFound(let type, let context):
            let p = path(context.codingPath)
            return .invalid("\(p ?? "the body") must be \(describe(type)), not null", param: p)
        case .keyNotFound(let key, let context):
            let p = path(context.codingPath + [key])
            return .invalid("\(p ?? key.stringValue) is required", param: p)
        case .dataCorrupted(let context):
            let p = path(context.codingPath)
            if p == nil { return .invalid("the body is not valid JSON", param: nil) }
            return .invalid("\(p ?? "the body"): \(context.debugDescription)", param: p)
        @unknown default:
            return .invalid("the body could not be read", param: nil)
        }
    }

    private static func describe(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: return "a string"
        case is Bool.Type: return "a boolean"
        case is Int.Type, is UInt64.Type, is UInt32.Type: return "an integer"
        case is Double.Type, is Float.Type: return "a number"
        case is [Any].Type: return "a list"
        default: return "an object of the right shape"
        }
    }

    /// What the gRPC service's refusal means in HTTP. Its messages begin with the field at fault
    /// (`sampling.temperature must be ...`), which names the OpenAI parameter.
    static func from(_ error: RPCError) -> OpenAIError {
        var param: String?
        if let first = error.message.split(whereSeparator: { $0 == " " || $0 == ":" }).first {
            let field = first.hasPrefix("sampling.") ? String(first.dropFirst("sampling.".count)) : String(first)
            if field.allSatisfy({ $0.isLetter || $0 == "_" || $0 == "." }) && !field.isEmpty { param = field }
        }
        switch error.code {
        case .invalidArgument, .outOfRange, .failedPrecondition:
            return OpenAIError(status: 400, message: error.message, type: "invalid_request_error", param: param, code: nil)
        case .notFound:
            return OpenAIError(status: 404, message: error.message, type: "invalid_request_error", param: param, code: "not_found")
        case .resourceExhausted:
            return OpenAIError(status: 429, message: error.message, type: "rate_limit_error", param: nil, code: "rate_limit_exceeded", retryAfter: 1)
        case .aborted, .alreadyExists:
            return OpenAIError(status: 409, message: error.message, type: "invalid_request_error", param: param, code: "conflict")
        case .unavailable:
            return OpenAIError(status: 503, message: error.message, type: "server_error", param: nil, code: "unavailable", retryAfter: 1)
        case .deadlineExceeded:
            return OpenAIError(status: 504, message: error.message, type: "server_error", param: nil, code: "timeout")
        case .permissionDenied, .unauthenticated:
            return OpenAIError(status: 403, message: error.message, type: "permission_error", param: nil, code: nil)
        default:
            return OpenAIError(status: 500, message: error.message, type: "server_error", param: nil, code: nil)
        }
    }

    /// The JSON body.
    var body: [UInt8] {
        var inner: [String: Any] = ["message": message, "type": type]
        inner["param"] = param ?? NSNull()
        inner["code"] = code ?? NSNull()
        let data = (try? JSONSerialization.data(withJSONObject: ["error": inner], options: [.sortedKeys])) ?? Data("{}".utf8)
        return Array(data)
    }
}
