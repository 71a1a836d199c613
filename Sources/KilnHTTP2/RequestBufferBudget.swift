import CLinux
import Synchronization

/// Request body bytes the server holds (received, not yet handed to a handler as a whole message or
/// chunk), bounded per connection and in total. A connection charges each DATA frame's bytes as they
/// arrive; a stream whose bytes would pass a bound is reset with ENHANCE_YOUR_CALM (gRPC clients read
/// RESOURCE_EXHAUSTED) rather than buffered, so memory stays bounded without any stream waiting on
/// another's bytes (waiting could deadlock streams that each hold part of a message).
public final class RequestBufferBudget: Sendable {
    /// Bytes that may be held at once.
    public let limit: Int
    private let used = Atomic<Int>(0)
    /// The server-wide budget a connection's budget also charges.
    private let parent: RequestBufferBudget?

    public init(limit: Int, parent: RequestBufferBudget? = nil) {
        self.limit = limit
        self.parent = parent
    }

    /// Bytes held now.
    public var inUse: Int { used.load(ordering: .relaxed) }

    /// Takes `bytes` when this budget (and its parent) can hold them; changes nothing when not.
    func take(_ bytes: Int) -> Bool {
        var current = used.load(ordering: .relaxed)
        while true {
            guard current + bytes <= limit else { return false }
            let (exchanged, original) = used.compareExchange(expected: current, desired: current + bytes, ordering: .relaxed)
            if exchanged { break }
            current = original
        }
        if let parent, !parent.take(bytes) {
            used.subtract(bytes, ordering: .relaxed)
            return false
        }
        return true
    }

    /// Gives back bytes taken before.
    func give(_ bytes: Int) {
        guard bytes > 0 else { return }
        used.subtract(bytes, ordering: .relaxed)
        parent?.give(bytes)
    }
}

/// Gives memory the allocator keeps but nobody uses back to the system, at most every 50 ms: called when a
/// stream is refused for want of buffer room, when buffers have just been freed in numbers and the process
/// should hold no more than what its streams hold.
enum FreedMemory {
    private static let lastTrim = Atomic<UInt64>(0)

    static func giveBack() {
        let now = MonotonicClock.nanos()
        let last = lastTrim.load(ordering: .relaxed)
        guard now &- last >= 50_000_000,
              lastTrim.compareExchange(expected: last, desired: now, ordering: .relaxed).exchanged else { return }
        _ = malloc_trim(0)
    }
}

/// The bytes one stream's body holds against its connection's budget: charged on arrival, released as the
/// reader takes them (or, for a reader that holds bytes past the take, such as the gRPC deframer, as it
/// hands whole messages on), and all at once when the stream closes.
final class BodyCharge: Sendable {
    private let budget: RequestBufferBudget
    private let held = Mutex<(bytes: Int, closed: Bool)>((0, false))

    init(budget: RequestBufferBudget) { self.budget = budget }

    /// Charges `bytes`; false (nothing charged) when the budget cannot hold them.
    func charge(_ bytes: Int) -> Bool {
        held.withLock { h in
            guard !h.closed, budget.take(bytes) else { return false }
            h.bytes += bytes
            return true
        }
    }

    /// Whether the charge is closed: the stream's reader (its handler) is done, so nothing more is held.
    var isClosed: Bool { held.withLock { $0.closed } }

    /// Releases up to `bytes` of what is held.
    func release(_ bytes: Int) {
        held.withLock { h in
            let n = min(bytes, h.bytes)
            h.bytes -= n
            budget.give(n)
        }
    }

    /// Releases everything; later charges fail and releases do nothing.
    func close() {
        held.withLock { h in
            budget.give(h.bytes)
            h.bytes = 0
            h.closed = true
        }
    }
}
