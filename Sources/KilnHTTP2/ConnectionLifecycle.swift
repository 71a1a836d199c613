/// Timing decisions for one connection — handshake, idle and keepalive timeouts, graceful drain — as a
/// pure state machine. The connection feeds it events and the clock and carries out the actions it
/// returns; it does no I/O itself, so it is tested without sockets.
struct ConnectionLifecycle {
    struct Timeouts: Sendable {
        /// Close a connection whose TLS handshake or preface has not finished by then.
        var handshake: UInt64
        /// Close a connection with no open streams and no bytes received for this long.
        var idle: UInt64
        /// Send a PING after this long without receiving anything (0: never).
        var pingInterval: UInt64
        /// Close when a PING is unanswered for this long.
        var pingTimeout: UInt64
        /// Between the shutdown notice and the final GOAWAY, for requests already in flight to arrive.
        var drainGrace: UInt64
    }

    enum Phase: Equatable {
        case handshaking(since: UInt64)
        case active
        /// Shutdown notice sent; the final GOAWAY follows at `goAwayAt`.
        case noticeSent(goAwayAt: UInt64, deadline: UInt64)
        /// Final GOAWAY sent; streams in flight may finish until `deadline`.
        case goAwaySent(deadline: UInt64)
        case closed
    }

    enum Action: Equatable {
        case sendPing
        case sendShutdownNotice
        case sendGoAway
        case close(reason: String)
    }

    let timeouts: Timeouts
    private(set) var phase: Phase
    private(set) var lastReceived: UInt64
    private(set) var pingSentAt: UInt64?

    init(timeouts: Timeouts, now: UInt64) {
        self.timeouts = timeouts
        phase = .handshaking(since: now)
        lastReceived = now
    }

    mutating func established(now: UInt64) {
        if case .handshaking = phase { phase = .active }
        lastReceived = now
    }

    mutating func received(now: UInt64) {
        lastReceived = now
    }

    /// A stream ended: the idle clock restarts from here.
    mutating func streamClosed(now: UInt64) {
        lastReceived = max(lastReceived, now)
    }

    mutating func pingAcknowledged() {
        pingSentAt = nil
    }

    /// Starts a graceful shutdown that must be over by `deadline`.
    mutating func beginShutdown(now: UInt64, deadline: UInt64, isServer: Bool) -> [Action] {
        switch phase {
        case .handshaking:
            phase = .closed
            return [.close(reason: "shutdown during handshake")]
        case .active:
            if isServer {
                phase = .noticeSent(goAwayAt: now + timeouts.drainGrace, deadline: deadline)
                return [.sendShutdownNotice]
            }
            phase = .goAwaySent(deadline: deadline)
            return [.sendGoAway]
        case .noticeSent, .goAwaySent, .closed:
            return []
        }
    }

    mutating func closed() {
        phase = .closed
    }

    /// What the clock says must happen now.
    mutating func tick(now: UInt64, openStreams: Int) -> [Action] {
        switch phase {
        case .closed:
            return []
        case .handshaking(let since):
            if now &- since >= timeouts.handshake {
                phase = .closed
                return [.close(reason: "handshake timeout")]
            }
            return []
        case .noticeSent(let goAwayAt, let deadline):
            if now >= deadline {
                phase = .closed
                return [.close(reason: "drain deadline")]
            }
            if now >= goAwayAt {
                phase = .goAwaySent(deadline: deadline)
                return [.sendGoAway]
            }
        case .goAwaySent(let deadline):
            if now >= deadline {
                phase = .closed
                return [.close(reason: "drain deadline")]
            }
        case .active:
            break
        }
        if let sent = pingSentAt, now &- sent >= timeouts.pingTimeout {
            phase = .closed
            return [.close(reason: "keepalive timeout")]
        }
        if openStreams == 0 && now &- lastReceived >= timeouts.idle {
            phase = .closed
            return [.close(reason: "idle timeout")]
        }
        if timeouts.pingInterval > 0, pingSentAt == nil, now &- lastReceived >= timeouts.pingInterval {
            pingSentAt = now
            return [.sendPing]
        }
        return []
    }
}
