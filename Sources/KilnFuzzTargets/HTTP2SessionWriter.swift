import KilnAPI

/// Writes a well-formed HTTP/2 client session from fuzz input, so that the fuzzer gets past the preface and
/// the frame layer into routing, gRPC and the services: the preface, SETTINGS, then a few streams, each a
/// HEADERS frame (HPACK literals, no Huffman) with a path from the server's routes or the input, a query
/// string, gRPC headers and headers from the input, and DATA frames carrying gRPC-framed bodies — random
/// bytes or kiln.v1 requests with extreme field values.
enum HTTP2SessionWriter {
    /// The bytes of one session, decided by `input`.
    static func session(from input: [UInt8]) -> [UInt8] {
        var choices = FuzzChoices(input)
        var out = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
        var settings: [UInt8] = []
        for _ in 0..<choices.int(below: 3) {
            settings += [0, UInt8(choices.int(below: 7) + 1)] + choices.bytes(4)
        }
        out += frame(type: 0x4, flags: 0, stream: 0, settings)
        let streams = choices.int(below: 4) + 1
        for index in 0..<streams {
            let id = UInt32(2 * index + 1)
            let body = self.body(&choices)
            let endStreamOnHeaders = body.isEmpty
            out += frame(type: 0x1, flags: 0x4 | (endStreamOnHeaders ? 0x1 : 0), stream: id, headerBlock(&choices))
            if !body.isEmpty {
                // The body in one or two DATA frames, the last one ending the stream (or not, sometimes).
                let cut = choices.int(below: body.count + 1)
                if cut > 0 && cut < body.count { out += frame(type: 0x0, flags: 0, stream: id, Array(body[..<cut])) }
                let rest = cut > 0 && cut < body.count ? Array(body[cut...]) : body
                out += frame(type: 0x0, flags: choices.int(below: 8) == 0 ? 0 : 0x1, stream: id, rest)
            }
            if choices.int(below: 8) == 0 {
                out += frame(type: 0x3, flags: 0, stream: id, choices.bytes(4))        // RST_STREAM
            }
            if choices.int(below: 8) == 0 {
                out += frame(type: 0x8, flags: 0, stream: choices.int(below: 2) == 0 ? 0 : id, choices.bytes(4))   // WINDOW_UPDATE
            }
        }
        if choices.int(below: 4) == 0 { out += frame(type: 0x6, flags: 0, stream: 0, choices.bytes(8)) }   // PING
        out += choices.rest()   // and whatever the input has left, raw
        return out
    }

    static let paths = [
        "/", "/echo", "/stream", "/bytes", "/sleep", "/kiln.v1.Inference/Generate", "/kiln.v1.Inference/Chat",
        "/kiln.v1.Inference/Tokenize", "/kiln.v1.Inference/Detokenize", "/kiln.v1.Inference/GetStats",
        "/kiln.v1.Inference/EndSession", "/kiln.v1.Inference/ListModels", "/kiln.v1.Inference/GetModel",
        "/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", "/pkg.Service/Echo", "/pkg.Service/EchoAsync",
        "/pkg.Service/Stream", "/kiln.v1.Inference/Nope",
    ]
    static let queryNames = ["chunks", "delay_ms", "n", "ms"]
    static let numbers = ["-1", "0", "1", "3", "100", "9223372036854775807", "18446744073709551615", "NaN", "inf", "", "1e9", "+2", "%30"]

    private static func headerBlock(_ c: inout FuzzChoices) -> [UInt8] {
        var block: [UInt8] = [c.int(below: 4) == 0 ? 0x82 : 0x83, 0x86]   // :method GET or POST, :scheme http
        var path = c.int(below: 8) == 0 ? String(decoding: c.bytes(c.int(below: 40)), as: UTF8.self) : c.pick(paths)
        if c.int(below: 2) == 0 {
            path += "?" + (0..<c.int(below: 3) + 1).map { _ in "\(c.pick(queryNames))=\(c.pick(numbers))" }.joined(separator: "&")
        }
        block += literal(index: 4, Array(path.utf8))                           // :path
        block += literal(index: 1, Array("x".utf8))                            // :authority
        if c.int(below: 6) != 0 {
            block += literal(index: 31, Array(c.pick(["application/grpc", "application/grpc+proto", "text/plain", ""]).utf8))
            block += literal(name: "te", Array("trailers".utf8))
        }
        if c.int(below: 3) == 0 { block += literal(name: "grpc-timeout", Array((c.pick(numbers) + c.pick(["H", "M", "S", "m", "u", "n", "x"])).utf8)) }
        if c.int(below: 4) == 0 { block += literal(name: "grpc-encoding", Array(c.pick(["gzip", "identity", "snappy"]).utf8)) }
        for _ in 0..<c.int(below: 3) {
            block += literal(name: String(decoding: c.bytes(c.int(below: 12) + 1), as: UTF8.self).lowercased(), c.bytes(c.int(below: 64)))
        }
        return block
    }

    private static func body(_ c: inout FuzzChoices) -> [UInt8] {
        switch c.int(below: 4) {
        case 0: return []
        case 1: return c.bytes(c.int(below: 256))                               // anything
        case 2: return frameMessage(c.bytes(c.int(below: 128)), &c)             // a framed random message
        default: return frameMessage(structuredRequest(&c), &c)                 // a framed kiln.v1 request
        }
    }

    private static func frameMessage(_ payload: [UInt8], _ c: inout FuzzChoices) -> [UInt8] {
        // Usually the true length; sometimes a lie.
        let length = c.int(below: 8) == 0 ? UInt32(truncatingIfNeeded: c.int(below: Int(UInt32.max))) : UInt32(payload.count)
        let flag: UInt8 = c.int(below: 8) == 0 ? 1 : 0
        return [flag, UInt8(length >> 24), UInt8(length >> 16 & 0xFF), UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF)] + payload
    }

    static let floats: [Float] = [0, 1, 0.5, 2, 3, -1, 1e-30, 1e30, .nan, .infinity, -.infinity, 0.001, 10, 11]

    private static func structuredRequest(_ c: inout FuzzChoices) -> [UInt8] {
        var sampling = Kiln_V1_SamplingParameters()
        if c.bool() { sampling.maxTokens = c.pick([0, 1, 4, 255, 256, 100_000, UInt32.max]) }
        if c.bool() { sampling.temperature = c.pick(floats) }
        if c.bool() { sampling.topK = c.pick([0, 1, 40, UInt32.max]) }
        if c.bool() { sampling.topP = c.pick(floats) }
        if c.bool() { sampling.minP = c.pick(floats) }
        if c.bool() { sampling.repetitionPenalty = c.pick(floats) }
        if c.bool() { sampling.frequencyPenalty = c.pick(floats) }
        if c.bool() { sampling.presencePenalty = c.pick(floats) }
        if c.bool() { sampling.seed = c.pick([0, 1, UInt64.max]) }
        if c.bool() { sampling.topLogprobs = c.pick([0, 1, 20, 21, UInt32.max]) }
        if c.bool() { sampling.logprobs = true }
        if c.bool() { sampling.ignoreEos = true }
        for _ in 0..<c.int(below: 3) { sampling.stop.append(c.pick(["", "a", String(repeating: "x", count: 300), "\u{FFFD}"])) }
        let text = c.pick(["", "hi", "the cat", "<|im_start|>user\nhi<|im_end|>", String(decoding: c.bytes(c.int(below: 32)), as: UTF8.self)])
        switch c.int(below: 5) {
        case 0:
            var r = Kiln_V1_GenerateRequest()
            r.prompt = text
            r.sampling = sampling
            r.parseSpecialTokens = c.bool()
            return r.serializedBytes()
        case 1:
            var r = Kiln_V1_ChatRequest()
            var m = Kiln_V1_ChatMessage()
            m.role = c.pick(["user", "system", "assistant", ""])
            m.content = text
            r.messages = c.bool() ? [m] : []
            r.sessionId = c.pick(["", "new", "s1", String(repeating: "s", count: 300)])
            r.sampling = sampling
            return r.serializedBytes()
        case 2:
            var r = Kiln_V1_DetokenizeRequest()
            r.tokenIds = (0..<c.int(below: 8)).map { _ in c.pick([0, 1, 2, 100, 300, 100_000, UInt32.max]) }
            return r.serializedBytes()
        case 3:
            var r = Kiln_V1_TokenizeRequest()
            r.text = text
            r.parseSpecialTokens = c.bool()
            return r.serializedBytes()
        default:
            var r = Kiln_V1_EndSessionRequest()
            r.sessionId = c.pick(["", "s1", "new"])
            return r.serializedBytes()
        }
    }

    private static func frame(type: UInt8, flags: UInt8, stream: UInt32, _ payload: [UInt8]) -> [UInt8] {
        let n = UInt32(payload.count)
        return [UInt8(n >> 16 & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n & 0xFF), type, flags,
                UInt8(stream >> 24 & 0x7F), UInt8(stream >> 16 & 0xFF), UInt8(stream >> 8 & 0xFF), UInt8(stream & 0xFF)] + payload
    }

    /// Literal without indexing, name from the static table (4-bit prefix).
    private static func literal(index: Int, _ value: [UInt8]) -> [UInt8] {
        integer(index, prefixBits: 4, first: 0x00) + integer(value.count, prefixBits: 7, first: 0x00) + value
    }

    /// Literal without indexing, new name.
    private static func literal(name: String, _ value: [UInt8]) -> [UInt8] {
        let n = Array(name.utf8)
        return [0x00] + integer(n.count, prefixBits: 7, first: 0) + n + integer(value.count, prefixBits: 7, first: 0) + value
    }

    /// An HPACK integer (RFC 7541 §5.1).
    private static func integer(_ value: Int, prefixBits: Int, first: UInt8) -> [UInt8] {
        let limit = (1 << prefixBits) - 1
        guard value >= limit else { return [first | UInt8(value)] }
        var out = [first | UInt8(limit)]
        var rest = value - limit
        while rest >= 128 {
            out.append(UInt8(rest & 0x7F | 0x80))
            rest >>= 7
        }
        out.append(UInt8(rest))
        return out
    }
}

/// Choices read off fuzz input, a byte or a few at a time; once it runs out, every choice is the first.
struct FuzzChoices {
    private let input: [UInt8]
    private var position = 0

    init(_ input: [UInt8]) { self.input = input }

    mutating func byte() -> UInt8 {
        guard position < input.count else { return 0 }
        defer { position += 1 }
        return input[position]
    }

    mutating func int(below bound: Int) -> Int {
        guard bound > 1 else { return 0 }
        var value = 0
        var range = 1
        while range < bound && range < 1 << 32 {
            value = value << 8 | Int(byte())
            range <<= 8
        }
        return value % bound
    }

    mutating func bool() -> Bool { byte() & 1 == 1 }

    mutating func pick<T>(_ values: [T]) -> T { values[int(below: values.count)] }

    mutating func bytes(_ count: Int) -> [UInt8] {
        let n = min(count, input.count - position)
        defer { position += n }
        return Array(input[position..<position + n])
    }

    mutating func rest() -> [UInt8] { bytes(input.count - position) }
}
