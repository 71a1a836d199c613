import XCTest
@testable import KilnHTTP2

/// The lifecycle state machine without sockets: each timeout fires exactly when it should.
final class ConnectionLifecycleTests: XCTestCase {
    let ms: UInt64 = 1_000_000
    var timeouts: ConnectionLifecycle.Timeouts {
        .init(handshake: 1000 * ms, idle: 5000 * ms, pingInterval: 2000 * ms, pingTimeout: 500 * ms, drainGrace: 100 * ms)
    }

    func testHandshakeTimeout() {
        var m = ConnectionLifecycle(timeouts: timeouts, now: 0)
        XCTAssertEqual(m.tick(now: 999 * ms, openStreams: 0), [])
        XCTAssertEqual(m.tick(now: 1000 * ms, openStreams: 0), [.close(reason: "handshake timeout")])
        XCTAssertEqual(m.tick(now: 2000 * ms, openStreams: 0), [], "a closed connection does nothing more")
    }

    func testIdleTimeoutOnlyWithoutStreams() {
        var m = ConnectionLifecycle(timeouts: .init(handshake: ms, idle: 5000 * ms, pingInterval: 0, pingTimeout: ms, drainGrace: 0), now: 0)
        m.established(now: 0)
        XCTAssertEqual(m.tick(now: 6000 * ms, openStreams: 1), [], "open streams keep a connection")
        XCTAssertEqual(m.tick(now: 6000 * ms, openStreams: 0), [.close(reason: "idle timeout")])
    }

    func testReceivedBytesRestartIdleClock() {
        var m = ConnectionLifecycle(timeouts: .init(handshake: ms, idle: 5000 * ms, pingInterval: 0, pingTimeout: ms, drainGrace: 0), now: 0)
        m.established(now: 0)
        m.received(now: 4000 * ms)
        XCTAssertEqual(m.tick(now: 8999 * ms, openStreams: 0), [])
        XCTAssertEqual(m.tick(now: 9000 * ms, openStreams: 0), [.close(reason: "idle timeout")])
    }

    func testKeepalivePingThenTimeout() {
        var m = ConnectionLifecycle(timeouts: timeouts, now: 0)
        m.established(now: 0)
        XCTAssertEqual(m.tick(now: 1999 * ms, openStreams: 1), [])
        XCTAssertEqual(m.tick(now: 2000 * ms, openStreams: 1), [.sendPing])
        XCTAssertEqual(m.tick(now: 2100 * ms, openStreams: 1), [], "one PING at a time")
        XCTAssertEqual(m.tick(now: 2500 * ms, openStreams: 1), [.close(reason: "keepalive timeout")])
    }

    func testPingAckKeepsConnection() {
        var m = ConnectionLifecycle(timeouts: timeouts, now: 0)
        m.established(now: 0)
        XCTAssertEqual(m.tick(now: 2000 * ms, openStreams: 1), [.sendPing])
        m.received(now: 2010 * ms)
        m.pingAcknowledged()
        XCTAssertEqual(m.tick(now: 2600 * ms, openStreams: 1), [])
        XCTAssertEqual(m.tick(now: 4010 * ms, openStreams: 1), [.sendPing])
    }

    func testServerGracefulShutdownSequence() {
        var m = ConnectionLifecycle(timeouts: .init(handshake: ms, idle: 60_000 * ms, pingInterval: 0, pingTimeout: ms, drainGrace: 100 * ms), now: 0)
        m.established(now: 0)
        XCTAssertEqual(m.beginShutdown(now: 100 * ms, deadline: 10_000 * ms, isServer: true), [.sendShutdownNotice])
        XCTAssertEqual(m.beginShutdown(now: 150 * ms, deadline: 10_000 * ms, isServer: true), [], "idempotent")
        XCTAssertEqual(m.tick(now: 150 * ms, openStreams: 3), [])
        XCTAssertEqual(m.tick(now: 200 * ms, openStreams: 3), [.sendGoAway])
        XCTAssertEqual(m.tick(now: 5000 * ms, openStreams: 3), [], "streams may finish")
        XCTAssertEqual(m.tick(now: 10_000 * ms, openStreams: 3), [.close(reason: "drain deadline")])
    }

    func testClientShutdownSendsGoAwayAtOnce() {
        var m = ConnectionLifecycle(timeouts: timeouts, now: 0)
        m.established(now: 0)
        XCTAssertEqual(m.beginShutdown(now: 0, deadline: 1000 * ms, isServer: false), [.sendGoAway])
    }

    func testShutdownDuringHandshakeCloses() {
        var m = ConnectionLifecycle(timeouts: timeouts, now: 0)
        XCTAssertEqual(m.beginShutdown(now: 0, deadline: 1000 * ms, isServer: true), [.close(reason: "shutdown during handshake")])
    }
}
