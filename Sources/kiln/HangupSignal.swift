import Glibc
import Synchronization

/// SIGHUP, the operator's "reload": counted, so that whoever reloads (`kiln route`'s backends file) can see
/// that a new one arrived since it last looked. The handler only adds to a lock-free atomic, which is
/// async-signal-safe.
enum HangupSignal {
    private static let received = Atomic<Int>(0)

    /// Installs the handler. Call before threads start.
    static func install() {
        _ = received.load(ordering: .relaxed)  // initialize the static here, never inside the handler
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGHUP)
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
        signal(SIGHUP) { _ in HangupSignal.received.add(1, ordering: .relaxed) }
    }

    /// SIGHUPs received so far.
    static var count: Int { received.load(ordering: .relaxed) }
}
