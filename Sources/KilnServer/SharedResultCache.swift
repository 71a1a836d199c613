import Foundation
import KilnAPI
import KilnRPC
import Logging

/// The result cache's second level, shared by every worker through Redis (`kiln serve --result-cache-store
/// redis://...`): the in-process cache (`ResultCache`) stays the first level; a miss there looks here, so an
/// identical deterministic request is answered once across all the workers.
///
/// An entry's Redis key is `kiln:result:` followed by the whole `ResultCache.Key` written out (model name,
/// prompt token ids, every sampling parameter, limits, stop strings and stop tokens): no digest, so no two
/// requests can share an entry. It expires after the result cache's time-to-live. Redis down or slow counts
/// as a miss and is counted (`RedisConnection.failures`); an entry that does not read back whole is ignored.
final class SharedResultCache: Sendable {
    let redis: RedisConnection
    let timeToLive: Double
    let vocabularySize: Int
    let logger: Logger

    init(redis: RedisConnection, timeToLive: Double, vocabularySize: Int, logger: Logger) {
        self.redis = redis
        self.timeToLive = timeToLive
        self.vocabularySize = vocabularySize
        self.logger = logger
    }

    /// The stored answer for `key`, or nil (a miss, or Redis unavailable).
    func answer(for key: ResultCache.Key) async -> ResultCache.Answer? {
        guard case .string(let bytes)? = await redis.command([Array("GET".utf8), Self.redisKey(key)]) else { return nil }
        return decode(bytes)
    }

    /// Stores a completed answer (before the call ends, so that the next identical request anywhere finds it).
    func store(_ answer: ResultCache.Answer, for key: ResultCache.Key) async {
        guard case .status? = await redis.command([Array("SET".utf8), Self.redisKey(key), Self.encode(answer), Array("EX".utf8),
                                                   RedisConnection.expirySeconds(timeToLive)]) else {
            logger.warning("result cache store \(redis.address) did not take an answer")
            return
        }
    }

    // MARK: Encoding

    static func redisKey(_ k: ResultCache.Key) -> [UInt8] {
        var out = Array("kiln:result:".utf8)
        func u32(_ v: Int) { withUnsafeBytes(of: UInt32(truncatingIfNeeded: v).littleEndian) { out += $0 } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
        func f32(_ v: Float) { u32(Int(v.bitPattern)) }
        func text(_ s: String) { u32(s.utf8.count); out += s.utf8 }
        text(k.model)
        u32(k.prompt.count); for t in k.prompt { u32(t) }
        f32(k.temperature); u32(k.topK); f32(k.topP); f32(k.minP)
        f32(k.repetitionPenalty); f32(k.frequencyPenalty); f32(k.presencePenalty)
        u64(k.seed); u32(k.logprobs); u32(k.wantLogprob ? 1 : 0); u32(k.maxTokens)
        u32(k.stops.count); for s in k.stops { text(s) }
        u32(k.stopTokens.count); for t in k.stopTokens { u32(t) }
        return out
    }

    static func encode(_ a: ResultCache.Answer) -> [UInt8] {
        var out: [UInt8] = []
        func u32(_ v: Int) { withUnsafeBytes(of: UInt32(truncatingIfNeeded: v).littleEndian) { out += $0 } }
        u32(a.messages.count)
        for m in a.messages {
            let bytes = m.serializedBytes()
            u32(bytes.count)
            out += bytes
        }
        u32(a.tokens.count); for t in a.tokens { u32(t) }
        out += a.seenText.utf8
        return out
    }

    /// Reads an entry back; nil for anything that is not a whole answer of this model's vocabulary.
    func decode(_ bytes: [UInt8]) -> ResultCache.Answer? {
        var at = 0
        func u32() -> Int? {
            guard at + 4 <= bytes.count else { return nil }
            defer { at += 4 }
            var v: UInt32 = 0
            for k in 0..<4 { v |= UInt32(bytes[at + k]) << (8 * k) }
            return Int(v)
        }
        guard let count = u32(), count >= 1, count <= bytes.count / 4 else { return nil }
        var messages: [Kiln_V1_GenerateResponse] = []
        for _ in 0..<count {
            guard let n = u32(), at + n <= bytes.count, let m = try? Kiln_V1_GenerateResponse(serializedBytes: Array(bytes[at ..< at + n])) else { return nil }
            at += n
            messages.append(m)
        }
        guard messages.last?.usage != nil, let n = u32(), n <= (bytes.count - at) / 4 else { return nil }
        var tokens: [Int] = []
        for _ in 0..<n {
            guard let t = u32(), t < vocabularySize else { return nil }
            tokens.append(t)
        }
        return ResultCache.Answer(messages: messages, tokens: tokens, seenText: String(decoding: bytes[at...], as: UTF8.self))
    }
}
