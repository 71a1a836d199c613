import CLinux
import CLinux
import Glibc

/// One listening socket's presence on one loop. The socket is registered with every loop of the group
/// (`EPOLLEXCLUSIVE`, so one idle loop is woken per connection); whichever loop accepts owns the connection.
final class ListenerSource: EventLoopSource, @unchecked Sendable {
    let fd: Int32
    let loop: EventLoop
    private let accepted: (Int32, String, EventLoop) -> Void

    init(fd: Int32, loop: EventLoop, accepted: @escaping (Int32, String, EventLoop) -> Void) {
        self.fd = fd
        self.loop = loop
        self.accepted = accepted
    }

    func handleEvents(_ events: UInt32) {
        // A bounded batch per wake-up keeps one loop from taking every connection of a burst.
        for _ in 0..<16 {
            var storage = sockaddr_storage()
            var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let client = withUnsafeMutablePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    accept4(fd, $0, &len, Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue))
                }
            }
            if client < 0 {
                // EAGAIN: another loop took it, or the queue is empty. EMFILE and friends: try again later.
                return
            }
            Socket.setNoDelay(client)
            accepted(client, SocketAddress(storage: storage, length: len).description, loop)
        }
    }
}
