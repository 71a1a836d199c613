import Foundation
import KilnModel

/// Server-side chat sessions: what each conversation's model has seen, so that a follow-up turn sends only
/// its new messages and its prompt starts with exactly the tokens of the history — which the prefix cache
/// then serves instead of recomputing them.
///
/// Bounded three ways: sessions idle longer than the time-to-live expire, and past the session cap or the
/// memory budget the least recently used session goes. A session runs one turn at a time, and belongs to
/// whoever created it: to anyone else it does not exist.
final class SessionStore: @unchecked Sendable {
    /// One conversation as the model saw it.
    struct Session: Sendable {
        /// Who created it (the verified client certificate's subject; nil for clients without one).
        var owner: String?
        /// The messages so far, the assistant's replies as generated.
        var messages: [ChatMessage] = []
        /// Everything the model has seen, as text: the rendered prompts and the completions with special
        /// tokens written out. A next turn whose rendering starts with it only appends.
        var text: String = ""
        /// The same as token ids: the KV prefix the next turn reuses.
        var tokens: [Int] = []

        /// Rough bytes held, for the memory budget.
        var cost: Int { tokens.count * 8 + text.utf8.count + messages.reduce(0) { $0 + $1.content.utf8.count + $1.role.utf8.count + 32 } + 128 }
    }

    enum Failure: Error, Equatable {
        /// Another turn of the session is running.
        case busy
        /// The session belongs to someone else.
        case notFound
    }

    private let lock = NSLock()
    private var sessions: LRUCache<String, Session>
    private var busy: Set<String> = []

    init(maxSessions: Int, memoryBudget: Int, idleTimeToLive: Double) {
        sessions = LRUCache(budget: memoryBudget, maxCount: maxSessions, timeToLive: idleTimeToLive)
    }

    var count: Int {
        lock.lock(); defer { lock.unlock() }
        sessions.removeExpired(now: Self.now())
        return sessions.count
    }

    /// Whether this worker holds session `id` (of anyone) in memory.
    func contains(_ id: String) -> Bool {
        lock.lock(); defer { lock.unlock() }
        return sessions.value(for: id, now: Self.now()) != nil
    }

    /// Takes in a session loaded from the shared store, unless one of that id is already here.
    func adopt(_ id: String, _ session: Session) {
        lock.lock(); defer { lock.unlock() }
        guard sessions.value(for: id, now: Self.now()) == nil else { return }
        sessions.insert(session, for: id, cost: session.cost, now: Self.now())
    }

    /// Starts a turn of session `id` for `owner`: its state (empty, owned by `owner`, for a new or expired
    /// session). Throws `notFound` when someone else owns it, `busy` while another turn of it runs.
    func begin(_ id: String, owner: String?) throws -> Session {
        lock.lock(); defer { lock.unlock() }
        let existing = sessions.value(for: id, now: Self.now())
        if let existing, existing.owner != owner { throw Failure.notFound }
        guard !busy.contains(id) else { throw Failure.busy }
        busy.insert(id)
        return existing ?? Session(owner: owner)
    }

    /// Ends a turn that completed: the session now holds `session`, its idle clock restarted.
    func commit(_ id: String, _ session: Session) {
        lock.lock(); defer { lock.unlock() }
        busy.remove(id)
        sessions.insert(session, for: id, cost: session.cost, now: Self.now())
    }

    /// Ends a turn that did not complete (cancelled, failed): the session keeps its state before the turn.
    func abandon(_ id: String) {
        lock.lock(); defer { lock.unlock() }
        busy.remove(id)
    }

    /// Forgets session `id` of `owner`: whether it existed; `notFound` when someone else owns it (it stays).
    func end(_ id: String, owner: String?) throws -> Bool {
        lock.lock(); defer { lock.unlock() }
        guard let existing = sessions.value(for: id, now: Self.now()) else { return false }
        guard existing.owner == owner else { throw Failure.notFound }
        return sessions.remove(id) != nil
    }

    /// A new session id nobody can guess: 128 random bits as 32 hex digits.
    static func newID() -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<2).map { _ in
            let hex = String(generator.next() as UInt64, radix: 16)
            return String(repeating: "0", count: 16 - hex.count) + hex
        }.joined()
    }

    private static func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }
}
