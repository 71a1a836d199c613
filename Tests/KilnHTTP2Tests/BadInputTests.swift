import Foundation
import Glibc
import Synchronization
import XCTest
@testable import KilnHTTP2

/// Garbage, the wrong protocol, and peers that stop mid-frame: each is closed promptly, with the right
/// HTTP/2 error code where there is one, while a well-behaved client on the same server notices nothing.
final class BadInputTests: XCTestCase {
    var server: TestServer!
    var group: EventLoopGroup!
    var goodClient: HTTP2Client!
    var background: Task<(ok: Int, failed: Int), Never>!
    let stop = StopFlag()

    override func setUp() async throws {
        server = try TestServer { c in
            c.handshakeTimeout = 1
            c.idleTimeout = 1
            c.keepaliveInterval = 0.5
            c.keepaliveTimeout = 0.5
        }
        group = try EventLoopGroup(threads: 1)
        // The well-behaved client keeps a stream busy so that idle and keepalive never touch it; its
        // event loop answers PINGs.
        goodClient = try HTTP2Client(host: "127.0.0.1", port: server.h2cPort, group: group)
        let client = goodClient!
        let stop = self.stop
        background = Task {
            var ok = 0, failed = 0
            while !stop.value.load(ordering: .relaxed) {
                do {
                    let r = try await client.request(method: "POST", path: "/echo", body: Array("ping".utf8))
                    if r.body == Array("ping".utf8) { ok += 1 } else { failed += 1 }
                } catch {
                    failed += 1
                }
            }
            return (ok, failed)
        }
    }

    override func tearDown() async throws {
        // One more request after the bad peer is done: the server still serves the good client.
        let after = try await goodClient.request(method: "POST", path: "/echo", body: Array("after".utf8))
        XCTAssertEqual(after.body, Array("after".utf8))
        stop.value.store(true, ordering: .relaxed)
        let result = await background.value
        XCTAssertGreaterThan(result.ok, 0, "the well-behaved client kept being served")
        XCTAssertEqual(result.failed, 0, "the well-behaved client saw no failure")
        goodClient.close()
        await server.stop()
        group.shutdown()
    }

    /// Sends `bytes`, then returns what the server sent and how long until it closed.
    private func exchange(_ bytes: [UInt8], port: Int? = nil, within timeout: Double = 5) throws -> (reply: [UInt8], seconds: Double) {
        let c = try RawConnection(port: port ?? server.h2cPort)
        defer { c.close() }
        let start = Date()
        c.send(bytes)
        let (reply, closed) = c.readUntilClosed(timeout: timeout)
        XCTAssertTrue(closed, "server closed the connection")
        return (reply, Date().timeIntervalSince(start))
    }

    func testGarbageIsClosedAtOnce() throws {
        var rng = TestRandom()
        let garbage = (0..<4096).map { _ in UInt8.random(in: 0...255, using: &rng) }
        let (_, seconds) = try exchange(garbage)
        XCTAssertLessThan(seconds, 1)
    }

    /// HTTP/1.1 is served on the same port (`HTTP1Tests`); asked to close, it answers and closes at once.
    func testHTTP11TextIsAnsweredAndClosedAtOnce() throws {
        let (reply, seconds) = try exchange(Array("GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".utf8))
        XCTAssertTrue(String(decoding: reply, as: UTF8.self).hasPrefix("HTTP/1.1 200 OK\r\n"))
        XCTAssertLessThan(seconds, 1)
    }

    func testTLSClientHelloOnCleartextPortFailsFast() throws {
        let start = Date()
        let r = try runTool("curl", ["-sS", "--max-time", "5", "--cacert", certPath("ca.pem"), "https://localhost:\(server.h2cPort)/"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertLessThan(Date().timeIntervalSince(start), 2, "closed promptly, not by curl's own timeout")
    }

    func testPeerStoppingMidPrefaceIsClosedByHandshakeTimeout() throws {
        let (_, seconds) = try exchange(Array(Frames.preface.prefix(10)))
        XCTAssertLessThan(seconds, 2.5)
    }

    func testPeerStoppingMidFrameIsClosed() throws {
        // A SETTINGS frame header announcing 12 bytes, of which 2 come.
        let partial = Frames.preface + [0, 0, 12, 4, 0, 0, 0, 0, 0, 0, 3]
        let (_, seconds) = try exchange(partial)
        XCTAssertLessThan(seconds, 2.5)
    }

    func testPeerStoppingMidDataFrameWithOpenStreamIsClosedByKeepalive() throws {
        // A request stream is open (so the idle timeout does not apply); then half a DATA frame.
        let headers = Frames.frame(type: 1, flags: 0x4, stream: 1, payload: Frames.postEchoHeaderBlock)
        let partialData = [0, 0, 100, 0, 0, 0, 0, 0, 1] + [UInt8](repeating: 0x61, count: 10)
        let (_, seconds) = try exchange(Frames.preface + Frames.emptySettings + headers + partialData)
        XCTAssertLessThan(seconds, 3, "PING unanswered → closed")
    }

    func testProtocolErrorGetsGoAwayWithProtocolError() throws {
        // DATA on stream 0 is a connection error of type PROTOCOL_ERROR (RFC 9113 §6.1).
        let bad = Frames.frame(type: 0, flags: 0, stream: 0, payload: [1, 2, 3])
        let (reply, seconds) = try exchange(Frames.preface + Frames.emptySettings + bad)
        XCTAssertEqual(Frames.goAwayErrorCodes(in: reply), [1], "GOAWAY PROTOCOL_ERROR")
        XCTAssertLessThan(seconds, 1)
    }

    func testOversizedFrameGetsGoAwayWithFrameSizeError() throws {
        // A SETTINGS frame must be a multiple of 6 bytes: FRAME_SIZE_ERROR (RFC 9113 §6.5).
        let bad = Frames.frame(type: 4, flags: 0, stream: 0, payload: [0, 3, 0, 0])
        let (reply, _) = try exchange(Frames.preface + bad)
        XCTAssertEqual(Frames.goAwayErrorCodes(in: reply), [6], "GOAWAY FRAME_SIZE_ERROR")
    }

    func testGarbageOnTLSPortIsClosedAtOnce() throws {
        let (_, seconds) = try exchange(Array("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".utf8), port: server.tlsPort)
        XCTAssertLessThan(seconds, 1)
    }

    func testPartialTLSHandshakeIsClosedByHandshakeTimeout() throws {
        // The first bytes of a TLS record header, then silence.
        let (_, seconds) = try exchange([0x16, 0x03, 0x01, 0x02, 0x00, 0x01], port: server.tlsPort)
        XCTAssertLessThan(seconds, 2.5)
    }
}

final class StopFlag: Sendable {
    let value = Atomic<Bool>(false)
}

/// Thousands of bad peers against a separate `kiln serve` process: its descriptors return to where they
/// were and its memory does not grow with the number of bad connections.
final class BadInputLeakTests: XCTestCase {
    private func fdCount(_ pid: Int32) -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? -1
    }

    private func hammer(port: Int, count: Int) throws {
        var rng = TestRandom()
        for i in 0..<count {
            let c = try RawConnection(port: port)
            switch i % 4 {
            // HTTP/1.1 is served here: a request smuggling a body (400, close) or a good one asking to close.
            case 0: c.send(Array((i % 8 == 0 ? "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
                                             : "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").utf8))
            case 1: c.send((0..<512).map { _ in UInt8.random(in: 0...255, using: &rng) })
            case 2: c.send(Frames.preface + Frames.emptySettings + Frames.frame(type: 0, flags: 0, stream: 0, payload: [1]))
            default: c.send(Frames.preface + [0, 0, 12, 4])  // stops mid-frame, then goes away
            }
            _ = c.readUntilClosed(timeout: i % 4 == 3 ? 0.01 : 2)
            c.close()
        }
    }

    func testNoDescriptorOrMemoryGrowthUnderBadPeers() throws {
        let kiln = try KilnProcess(extraArguments: ["--no-tls"])
        defer { kiln.stop() }
        try hammer(port: kiln.h2cPort, count: 400)  // warm-up: allocator pools, first-use caches
        // The warm-up's connections are closed once the descriptor count stops falling (at most 5 s).
        var settled = fdCount(kiln.pid)
        let settleBy = Date().addingTimeInterval(5)
        while Date() < settleBy {
            usleep(50_000)
            let now = fdCount(kiln.pid)
            if now >= settled { break }
            settled = now
        }
        let fdsBefore = fdCount(kiln.pid)
        let rssBefore = kiln.residentBytes
        try hammer(port: kiln.h2cPort, count: 2000)
        var fdsAfter = fdCount(kiln.pid)
        let deadline = Date().addingTimeInterval(5)
        while fdsAfter > fdsBefore && Date() < deadline {
            usleep(100_000)
            fdsAfter = fdCount(kiln.pid)
        }
        let growth = kiln.residentBytes - rssBefore
        print("bad peers: fds \(fdsBefore) → \(fdsAfter), RSS growth \(growth >> 10) KiB over 2000 connections")
        XCTAssertLessThanOrEqual(fdsAfter, fdsBefore)
        XCTAssertLessThan(growth, 4 << 20, "RSS grew \(growth >> 10) KiB")
        let ok = try runTool("curl", ["-sS", "--http2-prior-knowledge", "http://127.0.0.1:\(kiln.h2cPort)/"])
        XCTAssertEqual(ok.stdout, "kiln\n", "still serving")
    }
}
