import Glibc
import Synchronization

/// A fixed set of ``EventLoop`` threads; connections are spread over them round-robin.
public final class EventLoopGroup: Sendable {
    /// The loops, each with its own thread.
    public let loops: [EventLoop]
    private let next = Atomic<Int>(0)

    /// Starts `threads` loops (default: one per core).
    public init(threads: Int = EventLoopGroup.coreCount) throws {
        // A peer that closes while we write must not kill the process: writes report EPIPE instead.
        signal(SIGPIPE, SIG_IGN)
        var loops: [EventLoop] = []
        for i in 0..<max(1, threads) {
            let loop = try EventLoop(index: i)
            try loop.start()
            loops.append(loop)
        }
        self.loops = loops
    }

    /// The number of cores this process may run on.
    public static var coreCount: Int {
        max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
    }

    /// The loop that should own the next connection.
    public func nextLoop() -> EventLoop {
        let i = next.wrappingAdd(1, ordering: .relaxed).oldValue
        return loops[i % loops.count]
    }

    /// Stops every loop and waits for their threads. Connections still open are abandoned.
    public func shutdown() {
        for loop in loops { loop.stop() }
        for loop in loops { loop.join() }
    }
}
