import Foundation
import KilnAPI

/// The OpenAI API's request bodies, decoded strictly (a field of the wrong type is a 400 naming it) and
/// translated to the `kiln.v1.Inference` request the gRPC service takes: validation, templates and sampling
/// stay the service's alone.
enum OpenAIRequests {
    /// `POST /v1/chat/completions`.
    struct Chat: Decodable {
        struct Message: Decodable {
            var role: String
            var content: Content
        }
        /// A message's content: a string, or a list of parts of which the text ones count.
        struct Content: Decodable {
            var text: String
            struct Part: Decodable {
                var type: String
                var text: String?
            }
            init(from decoder: Decoder) throws {
                let c = try decoder.singleValueContainer()
                if let s = try? c.decode(String.self) {
                    text = s
                    return
                }
                let parts = try c.decode([Part].self)
                guard parts.allSatisfy({ $0.type == "text" && $0.text != nil }) else {
                    throw DecodingError.dataCorruptedError(in: c, debugDescription: "only text parts are served")
                }
                text = parts.compactMap(\.text).joined()
            }
        }
        var model: String?
        var messages: [Message]
        var max_tokens: Int?
        var max_completion_tokens: Int?
        var sampling: Sampling
        var logprobs: Bool?
        var top_logprobs: Int?
        var stream: Bool?
        var stream_options: StreamOptions?

        enum CodingKeys: String, CodingKey {
            case model, messages, max_tokens, max_completion_tokens, logprobs, top_logprobs, stream, stream_options
        }
        init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            model = try c.field(String.self, .model)
            messages = try c.decode([Message].self, forKey: .messages)
            max_tokens = try c.field(Int.self, .max_tokens)
            max_completion_tokens = try c.field(Int.self, .max_completion_tokens)
            logprobs = try c.field(Bool.self, .logprobs)
            top_logprobs = try c.field(Int.self, .top_logprobs)
            stream = try c.field(Bool.self, .stream)
            stream_options = try c.field(StreamOptions.self, .stream_options)
            sampling = try Sampling(from: decoder)
        }
    }

    /// `POST /v1/completions`.
    struct Completion: Decodable {
        var model: String?
        var prompt: String
        var max_tokens: Int?
        var sampling: Sampling
        /// How many top alternatives to return per token (the legacy API's integer form).
        var logprobs: Int?
        var echo: Bool?
        var stream: Bool?
        var stream_options: StreamOptions?

        enum CodingKeys: String, CodingKey { case model, prompt, max_tokens, logprobs, echo, stream, stream_options }
        init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            model = try c.field(String.self, .model)
            // One prompt: a string, or a list holding one.
            if let text = try? c.decode(String.self, forKey: .prompt) {
                prompt = text
            } else {
                let list = try c.decode([String].self, forKey: .prompt)
                guard list.count == 1 else {
                    throw DecodingError.dataCorruptedError(forKey: .prompt, in: c, debugDescription: "one prompt per request is served (got \(list.count))")
                }
                prompt = list[0]
            }
            max_tokens = try c.field(Int.self, .max_tokens)
            logprobs = try c.field(Int.self, .logprobs)
            echo = try c.field(Bool.self, .echo)
            stream = try c.field(Bool.self, .stream)
            stream_options = try c.field(StreamOptions.self, .stream_options)
            sampling = try Sampling(from: decoder)
        }
    }

    struct StreamOptions: Decodable {
        var include_usage: Bool?
    }

    /// The sampling fields both endpoints share.
    struct Sampling: Decodable {
        var temperature: Double?
        var top_p: Double?
        var top_k: Int?
        var min_p: Double?
        var frequency_penalty: Double?
        var presence_penalty: Double?
        var repetition_penalty: Double?
        var seed: UInt64?
        var stop: [String]?
        var n: Int?
        var user: String?
        /// vLLM's and llama-server's extension: keep going past the end-of-sequence token (benchmarks).
        var ignore_eos: Bool?

        enum CodingKeys: String, CodingKey {
            case temperature, top_p, top_k, min_p, frequency_penalty, presence_penalty, repetition_penalty, seed, stop, n, user, ignore_eos
        }
        init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            temperature = try c.field(Double.self, .temperature)
            top_p = try c.field(Double.self, .top_p)
            top_k = try c.field(Int.self, .top_k)
            min_p = try c.field(Double.self, .min_p)
            frequency_penalty = try c.field(Double.self, .frequency_penalty)
            presence_penalty = try c.field(Double.self, .presence_penalty)
            repetition_penalty = try c.field(Double.self, .repetition_penalty)
            if let value = try c.field(Int64.self, .seed) {
                guard let v = UInt64(exactly: value) else {
                    throw DecodingError.dataCorruptedError(forKey: .seed, in: c, debugDescription: "must be 0 or more (got \(value))")
                }
                seed = v
            }
            // `stop`: a string or a list of them.
            if let one = try? c.field(String.self, .stop) {
                stop = [one]
            } else {
                stop = try c.field([String].self, .stop)
            }
            n = try c.field(Int.self, .n)
            user = try c.field(String.self, .user)
            ignore_eos = try c.field(Bool.self, .ignore_eos)
        }

        /// The gRPC service's sampling parameters (it validates the values and names a bad one).
        func parameters(maxTokens: Int?, logprobs: Bool, topLogprobs: Int?) throws(OpenAIError) -> Kiln_V1_SamplingParameters {
            if let n, n != 1 { throw .invalid("n must be 1: one choice per request is served (got \(n))", param: "n") }
            var s = Kiln_V1_SamplingParameters()
            if let maxTokens {
                guard let v = UInt32(exactly: maxTokens), v > 0 else { throw .invalid("max_tokens must be at least 1 (got \(maxTokens))", param: "max_tokens") }
                s.maxTokens = v
            }
            if let temperature { s.temperature = try Self.float(temperature, "temperature") }
            if let top_p { s.topP = try Self.float(top_p, "top_p") }
            // vLLM's convention: a top_k of 0 or -1 turns it off.
            if let top_k {
                guard top_k >= -1, let v = UInt32(exactly: max(0, top_k)) else { throw .invalid("top_k must be -1 (off) or more (got \(top_k))", param: "top_k") }
                s.topK = v
            }
            if let min_p { s.minP = try Self.float(min_p, "min_p") }
            if let frequency_penalty { s.frequencyPenalty = try Self.float(frequency_penalty, "frequency_penalty") }
            if let presence_penalty { s.presencePenalty = try Self.float(presence_penalty, "presence_penalty") }
            if let repetition_penalty { s.repetitionPenalty = try Self.float(repetition_penalty, "repetition_penalty") }
            if let seed { s.seed = seed }
            if let stop { s.stop = stop }
            s.ignoreEos = ignore_eos ?? false
            s.logprobs = logprobs
            if let topLogprobs {
                guard let v = UInt32(exactly: topLogprobs) else { throw .invalid("top_logprobs must be 0 or more (got \(topLogprobs))", param: "top_logprobs") }
                s.topLogprobs = v
            }
            return s
        }

        private static func float(_ value: Double, _ name: String) throws(OpenAIError) -> Float {
            let f = Float(value)
            guard f.isFinite else { throw .invalid("\(name) is out of range (\(value))", param: name) }
            return f
        }
    }

    /// Decodes a body, turning a decoding failure into a 400 that names the field.
    static func decode<T: Decodable>(_ type: T.Type, from body: [UInt8]) throws(OpenAIError) -> T {
        do {
            return try JSONDecoder().decode(type, from: Data(body))
        } catch let error as DecodingError {
            throw OpenAIError.decoding(error)
        } catch {
            throw .invalid("the body is not valid JSON: \(error)", param: nil)
        }
    }
}

extension KeyedDecodingContainer {
    /// An optional field; a value that does not fit its type (a fraction for an integer, a number out of
    /// range) names the field, which Foundation's decoder leaves out.
    func field<T: Decodable>(_ type: T.Type, _ key: Key) throws -> T? {
        do {
            return try decodeIfPresent(type, forKey: key)
        } catch DecodingError.dataCorrupted(let context) where context.codingPath.isEmpty {
            throw DecodingError.dataCorrupted(DecodingError.Context(codingPath: codingPath + [key], debugDescription: "does not fit: \(context.debugDescription)"))
        }
    }
}
