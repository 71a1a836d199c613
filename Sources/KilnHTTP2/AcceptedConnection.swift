/// A connection the server accepted, whichever protocol it speaks: what the server's registry and drain
/// need of it.
protocol AcceptedConnection: AnyObject, Sendable {
    var loop: EventLoop { get }
    /// Why it closed, once it has.
    var closeReason: String? { get }
    /// Starts a graceful drain that must be over by `deadline`.
    func beginShutdown(deadline: UInt64)
    func close(reason: String)
}
