import CHiredis
import Foundation
import Synchronization

/// One connection to Redis through hiredis, for state workers share (`kiln serve --session-store`).
///
/// hiredis is blocking, so every command runs on the connection's own serial queue, never on the caller's
/// thread, each within `timeout` (50 ms by default), connecting included. A failure or a timeout drops the
/// connection, and it is not tried again for `retryInterval`: a dead or stopped Redis costs the callers at most
/// one timeout per interval, not one per call. Callers get nil for a command that did not complete and go on
/// without Redis; `failures` counts them.
public final class RedisConnection: Sendable {
    /// Where Redis is: `redis://HOST:PORT[/DB]`.
    public struct Address: Sendable, Equatable, CustomStringConvertible {
        public var host: String
        public var port: Int
        public var database: Int

        public static func parse(_ text: String) -> Address? {
            guard text.hasPrefix("redis://") else { return nil }
            var rest = Substring(text.dropFirst("redis://".count))
            var database = 0
            if let slash = rest.firstIndex(of: "/") {
                guard let db = Int(rest[rest.index(after: slash)...]), (0...1 << 16).contains(db) else { return nil }
                database = db
                rest = rest[..<slash]
            }
            guard let colon = rest.lastIndex(of: ":"), let port = Int(rest[rest.index(after: colon)...]), (1...65535).contains(port) else { return nil }
            let host = rest[..<colon]
            guard !host.isEmpty else { return nil }
            return Address(host: String(host), port: port, database: database)
        }

        public var description: String { "redis://\(host):\(port)\(database == 0 ? "" : "/\(database)")" }
    }

    /// A reply, as Redis gave it.
    public enum Reply: Sendable, Equatable {
        case string([UInt8])
        case integer(Int)
        case array([Reply])
        case null
        case status(String)
        case error(String)
    }

    public let address: Address
    let timeout: Duration
    let retryInterval: Duration

    /// The connection, touched only on `queue`.
    private struct State {
        var context: UnsafeMutablePointer<redisContext>?
        var retryAt: ContinuousClock.Instant?
    }
    private let state = Mutex(State())
    private let queue = DispatchQueue(label: "kiln.redis")
    private let failureCount = Atomic<Int>(0)

    public init(address: Address, timeout: Duration = .milliseconds(50), retryInterval: Duration = .seconds(1)) {
        self.address = address
        self.timeout = timeout
        self.retryInterval = retryInterval
    }

    deinit {
        state.withLock { s in
            if let c = s.context { redisFree(c) }
        }
    }

    /// Commands that failed or timed out (or were not tried while the connection was down).
    public var failures: Int { failureCount.load(ordering: .relaxed) }

    /// Runs one command (binary-safe arguments); nil when Redis did not answer in time, or at all.
    public func command(_ arguments: [[UInt8]]) async -> Reply? {
        await withCheckedContinuation { continuation in
            queue.async { continuation.resume(returning: self.run(arguments)) }
        }
    }

    /// A time-to-live as EXPIRE/SET EX take it: whole seconds, at least 1, at most about 30 years (a NaN or
    /// huge value must not trap in the conversion to an integer).
    static func expirySeconds(_ timeToLive: Double) -> [UInt8] {
        let seconds = timeToLive.isFinite ? min(max(timeToLive.rounded(.up), 1), 1e9) : 1e9
        return Array(String(Int(seconds)).utf8)
    }

    public func command(_ arguments: String...) async -> Reply? {
        await command(arguments.map { Array($0.utf8) })
    }

    private var timeoutValue: timeval {
        let (seconds, attoseconds) = timeout.components
        return timeval(tv_sec: Int(seconds), tv_usec: Int(attoseconds / 1_000_000_000_000))
    }

    private func run(_ arguments: [[UInt8]]) -> Reply? {
        let reply = state.withLock { s -> Reply? in
            if s.context == nil {
                if let at = s.retryAt, ContinuousClock.now < at { return nil }
                s.context = connect()
                if s.context == nil {
                    s.retryAt = ContinuousClock.now + retryInterval
                    return nil
                }
            }
            guard let context = s.context, let reply = Self.send(arguments, on: context) else {
                if let c = s.context { redisFree(c) }
                s.context = nil
                s.retryAt = ContinuousClock.now + retryInterval
                return nil
            }
            return reply
        }
        if reply == nil { _ = failureCount.add(1, ordering: .relaxed) }
        return reply
    }

    /// A connected context with the timeout set and the database selected; nil when that failed.
    private func connect() -> UnsafeMutablePointer<redisContext>? {
        guard let context = redisConnectWithTimeout(address.host, Int32(address.port), timeoutValue) else { return nil }
        guard context.pointee.err == 0, redisSetTimeout(context, timeoutValue) == REDIS_OK else {
            redisFree(context)
            return nil
        }
        if address.database != 0 {
            guard case .status? = Self.send([Array("SELECT".utf8), Array(String(address.database).utf8)], on: context) else {
                redisFree(context)
                return nil
            }
        }
        return context
    }

    /// Sends a command and reads its reply; nil on an I/O error or timeout (the context is then unusable).
    private static func send(_ arguments: [[UInt8]], on context: UnsafeMutablePointer<redisContext>) -> Reply? {
        let buffers = arguments.map { bytes -> UnsafeMutablePointer<CChar> in
            let p = UnsafeMutablePointer<CChar>.allocate(capacity: max(1, bytes.count))
            bytes.withUnsafeBytes { raw in
                if let base = raw.baseAddress { UnsafeMutableRawPointer(p).copyMemory(from: base, byteCount: bytes.count) }
            }
            return p
        }
        defer { for b in buffers { b.deallocate() } }
        var pointers = buffers.map { UnsafePointer<CChar>?(UnsafePointer($0)) }
        var lengths = arguments.map(\.count)
        guard let raw = redisCommandArgv(context, Int32(arguments.count), &pointers, &lengths), context.pointee.err == 0 else { return nil }
        let reply = raw.assumingMemoryBound(to: redisReply.self)
        defer { freeReplyObject(raw) }
        return convert(reply)
    }

    private static func convert(_ r: UnsafeMutablePointer<redisReply>) -> Reply {
        let reply = r.pointee
        func bytes() -> [UInt8] {
            guard let str = reply.str, reply.len > 0 else { return [] }
            return Array(UnsafeRawBufferPointer(start: str, count: reply.len))
        }
        switch reply.type {
        case REDIS_REPLY_STRING: return .string(bytes())
        case REDIS_REPLY_INTEGER: return .integer(Int(reply.integer))
        case REDIS_REPLY_NIL: return .null
        case REDIS_REPLY_STATUS: return .status(String(decoding: bytes(), as: UTF8.self))
        case REDIS_REPLY_ERROR: return .error(String(decoding: bytes(), as: UTF8.self))
        case REDIS_REPLY_ARRAY:
            guard let elements = reply.element else { return .array([]) }
            return .array((0..<reply.elements).map { i in elements[i].map(convert) ?? .null })
        default: return .error("reply type \(reply.type)")
        }
    }
}
