import Foundation
import KilnModel

/// Server-side chat sessions: what each conversation's model has seen, so that a follow-up turn sends only
/// its new messages and its prompt starts with exactly the tokens of the history — which the prefix cache
/// then serves instead of recomputing them.
///
/// Bounded three ways: sessions idle longer than the time-to-live expire, and past the session cap or the
/// memory budget the least recently used session goes. A session runs one turn at a time.
final class SessionStore: @unchecked Sendable {
    /// One conversation as the model saw it.
    struct Session: Sendable {
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

    enum Failure: Error, Equatable { case busy }

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

    /// Starts a turn of session `id`: its state (empty for a new or expired session). Throws `busy` while
    /// another turn of it runs.
    func begin(_ id: String) throws -> Session {
        lock.lock(); defer { lock.unlock() }
        guard !busy.contains(id) else { throw Failure.busy }
        busy.insert(id)
        return sessions.value(for: id, now: Self.now()) ?? Session()
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

    /// Forgets session `id`; whether it existed.
    func end(_ id: String) -> Bool {
        lock.lock(); defer { lock.unlock() }
        return sessions.remove(id) != nil
    }

    private static func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }
}
