import KilnRPC
import Synchronization

/// The streams of this worker that a router can continue on another one, and the drain that hands them over.
///
/// `kiln route` marks the Generate and Chat calls it can move with the metadata `kiln-migratable: 1`. When
/// the worker drains (SIGTERM), after `--handoff-grace` every such stream still running ends with
/// UNAVAILABLE and the trailer `kiln-migrate: 1`; the router sends the call on to the next worker with the
/// tokens already streamed as its `continuation`, and the client's stream goes on there. Calls without the
/// mark (a client straight to the worker) keep running until `--drain-seconds`.
public final class StreamHandoff: Sendable {
    /// Request metadata: the caller can continue the stream elsewhere (set by `kiln route`).
    public static let migratableHeader = "kiln-migratable"
    /// Trailer of a stream ended for handoff: continue it on another worker.
    public static let migrateTrailer = "kiln-migrate"

    /// Thrown by a generation ended by the handoff.
    struct HandedOff: Error {}

    private struct State {
        var handingOff = false
        /// Engine request ids of the migratable streams running now.
        var streams: Set<Int> = []
    }
    private let state = Mutex(State())

    public init() {}

    /// Registers a migratable generation; false when the handoff has already begun (the caller ends it).
    func register(_ id: Int) -> Bool {
        state.withLock { s in
            guard !s.handingOff else { return false }
            s.streams.insert(id)
            return true
        }
    }

    func unregister(_ id: Int) {
        _ = state.withLock { $0.streams.remove(id) }
    }

    /// Whether the handoff has begun: a migratable generation cut short now was cut by it.
    var isHandingOff: Bool { state.withLock { $0.handingOff } }

    /// Ends every migratable stream running now, and any that starts later, for its router to continue on
    /// another worker. Returns how many it ended.
    @discardableResult
    public func handOff(_ engine: EngineLoop) -> Int {
        let ids = state.withLock { s in
            s.handingOff = true
            return s.streams
        }
        for id in ids { engine.end(id, reason: .cancelled) }
        return ids.count
    }

    /// Whether a call's metadata says its caller can continue it elsewhere.
    static func isMigratable(_ context: RPCServerContext) -> Bool {
        context.metadata[migratableHeader] == "1"
    }
}
