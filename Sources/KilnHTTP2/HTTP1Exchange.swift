/// The request an ``HTTP1Connection`` is answering, from its head to the end of its response. Loop-confined.
final class HTTP1Exchange {
    let serial: Int32
    let head: HTTP1RequestParser.Head
    let charge: BodyCharge
    var requestEnded = false
    var received = 0
    /// Handler route: its body, response buffer and task.
    var body: HTTP2InboundBody?
    var outbound: OutboundBody?
    var task: Task<Void, Never>?
    /// Body bytes handed to the handler's body and not yet taken.
    var unread = 0
    /// Inline or deferred route: the body gathered so far.
    var whole: WholeRequestRoute?
    var wholeChunks: [[UInt8]] = []
    var wholeCount = 0
    var wholeTooLarge = false
    var responder: HTTP2DeferredResponder?
    /// A fixed route: answered once the request has ended.
    var pendingFixed: HTTP2FixedResponse?
    /// The response: head written, how its body is framed, whether it has ended.
    var headWritten = false
    var framing: HTTP1BodyFraming = .length(0)
    var responseEnded = false
    var bodyWritten = 0
    /// The head said `connection: close`.
    var closeAnnounced = false
    /// What follows the response's last byte has been set going (the next request, or the close).
    var followedUp = false
    /// Bytes of the body still to arrive are read and dropped (the response went first).
    var discarding = false
    init(serial: Int32, head: HTTP1RequestParser.Head, charge: BodyCharge) {
        self.serial = serial
        self.head = head
        self.charge = charge
    }
    var isHead: Bool { head.method == "HEAD" }
}
