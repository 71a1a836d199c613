import Foundation
import KilnModel
import Logging

/// Chat sessions kept in Redis as well as in a worker's memory (`kiln serve --session-store redis://...`),
/// so that a session whose worker died goes on on another one.
///
/// Each committed turn is written, before the call ends, as the hash `kiln:session:<id>` (fields `owner`, when
/// the session has one, `messages`, `text`, `tokens`), which expires after the session TTL. A worker that does
/// not hold a session in memory loads it from there and computes its history once. Redis being down or slow
/// never fails a call: the session then lives in this worker's memory only, with a warning, and the failure is
/// counted (`ServerStats.store_failures`).
final class SharedSessionStore: Sendable {
    let redis: RedisConnection
    let timeToLive: Double
    let logger: Logger

    init(redis: RedisConnection, timeToLive: Double, logger: Logger) {
        self.redis = redis
        self.timeToLive = timeToLive
        self.logger = logger
    }

    enum Loaded {
        case found(SessionStore.Session)
        case missing
        /// Redis did not answer (or answered something that is not a session).
        case unavailable
    }

    private static func key(_ id: String) -> [UInt8] { Array("kiln:session:\(id)".utf8) }

    /// Writes a session's state after a committed turn; false when Redis did not take it.
    func save(_ id: String, _ session: SessionStore.Session) async -> Bool {
        let messages = session.messages.map { [$0.role, $0.content] }
        guard let json = try? JSONSerialization.data(withJSONObject: messages) else { return false }
        var tokens = [UInt8]()
        tokens.reserveCapacity(session.tokens.count * 4)
        for t in session.tokens { withUnsafeBytes(of: UInt32(truncatingIfNeeded: t).littleEndian) { tokens += $0 } }
        var fields: [[UInt8]] = [Array("messages".utf8), Array(json), Array("text".utf8), Array(session.text.utf8), Array("tokens".utf8), tokens]
        if let owner = session.owner { fields += [Array("owner".utf8), Array(owner.utf8)] }
        // Every field is rewritten (a session's owner never changes), so one HSET replaces the state.
        guard case .integer? = await redis.command([Array("HSET".utf8), Self.key(id)] + fields),
              case .integer? = await redis.command([Array("EXPIRE".utf8), Self.key(id), RedisConnection.expirySeconds(timeToLive)]) else {
            logger.warning("session store \(redis.address) did not take session \(id): it lives in this worker's memory only")
            return false
        }
        return true
    }

    /// A session's state from Redis.
    func load(_ id: String) async -> Loaded {
        guard let reply = await redis.command([Array("HGETALL".utf8), Self.key(id)]), case .array(let items) = reply else {
            logger.warning("session store \(redis.address) did not answer for session \(id): it continues from this worker's memory")
            return .unavailable
        }
        guard !items.isEmpty else { return .missing }
        var fields: [String: [UInt8]] = [:]
        var i = 0
        while i + 1 < items.count {
            if case .string(let name) = items[i], case .string(let value) = items[i + 1] { fields[String(decoding: name, as: UTF8.self)] = value }
            i += 2
        }
        guard let messagesJSON = fields["messages"], let text = fields["text"], let tokenBytes = fields["tokens"], tokenBytes.count % 4 == 0,
              let pairs = try? JSONSerialization.jsonObject(with: Data(messagesJSON)) as? [[String]], pairs.allSatisfy({ $0.count == 2 }) else {
            logger.warning("session store \(redis.address) holds something else under session \(id)")
            return .unavailable
        }
        var session = SessionStore.Session(owner: fields["owner"].map { String(decoding: $0, as: UTF8.self) })
        session.messages = pairs.map { ChatMessage(role: $0[0], content: $0[1]) }
        session.text = String(decoding: text, as: UTF8.self)
        session.tokens = stride(from: 0, to: tokenBytes.count, by: 4).map { j -> Int in
            var v: UInt32 = 0
            for k in 0..<4 { v |= UInt32(tokenBytes[j + k]) << (8 * k) }
            return Int(v)
        }
        return .found(session)
    }

    /// Removes a session (EndSession); false when Redis did not answer.
    func remove(_ id: String) async -> Bool {
        guard case .integer? = await redis.command([Array("DEL".utf8), Self.key(id)]) else { return false }
        return true
    }
}
