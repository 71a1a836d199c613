import Glibc

/// SIGTERM / SIGINT delivered to async code through a self-pipe.
///
/// A process may start with these signals blocked (its parent's mask is inherited across exec; Swift
/// concurrency threads block signals), so they are unblocked here explicitly and caught by a handler that
/// only writes one byte, the one async-signal-safe thing it needs to do.
enum TerminationSignals {
    nonisolated(unsafe) private static var pipeWrite: Int32 = -1
    nonisolated(unsafe) private static var received: Int32 = 0

    /// Installs the handlers. Call first thing in `main`, before threads start.
    static func install() {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { return }
        pipeRead = fds[0]
        pipeWrite = fds[1]
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGTERM)
        sigaddset(&set, SIGINT)
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
        for sig in [SIGTERM, SIGINT] {
            signal(sig) { _ in
                TerminationSignals.received += 1
                // A second signal means "now".
                if TerminationSignals.received > 1 { _exit(1) }
                var byte: UInt8 = 1
                _ = write(TerminationSignals.pipeWrite, &byte, 1)
            }
        }
    }

    nonisolated(unsafe) private static var pipeRead: Int32 = -1

    /// Returns once a termination signal has arrived.
    static func wait() async {
        let fd = pipeRead
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            // A plain thread blocks on the pipe so that no Swift concurrency thread is held.
            let box = Unmanaged.passRetained(ContinuationBox(c: c, fd: fd))
            var t = pthread_t()
            pthread_create(&t, nil, { arg in
                let box = Unmanaged<ContinuationBox>.fromOpaque(arg!).takeRetainedValue()
                var byte: UInt8 = 0
                while read(box.fd, &byte, 1) < 0 && errno == EINTR {}
                box.c.resume()
                return nil
            }, box.toOpaque())
            pthread_detach(t)
        }
    }

    private final class ContinuationBox {
        let c: CheckedContinuation<Void, Never>
        let fd: Int32
        init(c: CheckedContinuation<Void, Never>, fd: Int32) {
            self.c = c
            self.fd = fd
        }
    }
}
