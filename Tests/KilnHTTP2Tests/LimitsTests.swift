import Foundation
import Glibc
import Synchronization
import XCTest
@testable import KilnHTTP2

/// The server's limits: stream concurrency, header and body sizes, connection cap, idle timeout.
final class LimitsTests: XCTestCase {
    func testConcurrentStreamLimitIsHonoured() async throws {
        let active = Atomic<Int>(0)
        let peak = Atomic<Int>(0)
        var router = HTTP2Router()
        router.add("/hold", .handler(HTTP2ClosureHandler { _, response in
            let now = active.add(1, ordering: .relaxed).newValue
            var seen = peak.load(ordering: .relaxed)
            while now > seen, !peak.compareExchange(expected: seen, desired: now, ordering: .relaxed).exchanged {
                seen = peak.load(ordering: .relaxed)
            }
            try await Task.sleep(for: .milliseconds(50))
            active.subtract(1, ordering: .relaxed)
            try await response.write(Array("ok".utf8))
        }))
        let server = try TestServer(router: router, tls: false) { $0.maxConcurrentStreams = 8 }
        let group = try EventLoopGroup(threads: 1)
        let client = try HTTP2Client(host: "127.0.0.1", port: server.h2cPort, group: group)
        // Let SETTINGS arrive before the burst, as any long-lived connection would have.
        _ = try await client.request(path: "/hold")
        let ok = try await withThrowingTaskGroup(of: Bool.self) { tasks -> Int in
            for _ in 0..<60 {
                tasks.addTask { try await client.request(path: "/hold").body == Array("ok".utf8) }
            }
            var n = 0
            for try await good in tasks where good { n += 1 }
            return n
        }
        XCTAssertEqual(ok, 60, "streams beyond the limit wait their turn, none fails")
        XCTAssertLessThanOrEqual(peak.load(ordering: .relaxed), 8)
        XCTAssertGreaterThan(peak.load(ordering: .relaxed), 1)
        client.close()
        await server.stop()
        group.shutdown()
    }

    func testOversizedHeadersGet431() async throws {
        let server = try TestServer(tls: false) { $0.maxHeaderListSize = 4096 }
        let big = String(repeating: "a", count: 8000)
        let r = try runTool("curl", ["-sS", "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_code}",
                                    "-H", "x-big: \(big)", "http://127.0.0.1:\(server.h2cPort)/"])
        XCTAssertEqual(r.stdout, "431", r.stderr)
        let fine = try runTool("curl", ["-sS", "--http2-prior-knowledge", "-H", "x-small: 1", "http://127.0.0.1:\(server.h2cPort)/"])
        XCTAssertEqual(fine.stdout, "kiln\n")
        await server.stop()
    }

    func testOversizedBodyGets413() async throws {
        let server = try TestServer(tls: false) { $0.maxRequestBodySize = 100_000 }
        let group = try EventLoopGroup(threads: 1)
        let client = try HTTP2Client(host: "127.0.0.1", port: server.h2cPort, group: group)
        let r = try await client.request(method: "POST", path: "/echo", body: [UInt8](repeating: 1, count: 50_000))
        XCTAssertEqual(r.body.count, 50_000, "a body under the limit passes")
        // Over the limit: 413 if the head has not gone yet, else a reset; either way the call fails or says 413.
        var rejected = false
        do {
            let big = try await client.request(method: "POST", path: "/echo", body: [UInt8](repeating: 1, count: 300_000))
            rejected = big.status == 413
        } catch {
            rejected = true
        }
        XCTAssertTrue(rejected)
        let after = try await client.request(path: "/")
        XCTAssertEqual(after.status, 200, "the connection survives")
        client.close()
        await server.stop()
        group.shutdown()
    }

    /// Trailers (or a response head) too large for nghttp2 to send reset the stream: the client gets an
    /// error at once instead of waiting for an end that never comes; the connection serves on.
    func testUnsendableTrailersResetTheStream() async throws {
        var router = HTTP2Router()
        router.add("/huge-trailers", .handler(HTTP2ClosureHandler { _, response in
            try await response.write(Array("body".utf8))
            response.finish(trailers: ["x-huge": String(repeating: "t", count: 100 * 1024)])
        }))
        router.add("/ok", .fixed(HTTP2FixedResponse(body: Array("ok".utf8))))
        let server = try TestServer(router: router, tls: false)
        let group = try EventLoopGroup(threads: 1)
        let client = try HTTP2Client(host: "127.0.0.1", port: server.h2cPort, group: group)
        let outcome = try await withThrowingTaskGroup(of: String.self) { tasks in
            tasks.addTask {
                do {
                    _ = try await client.request(path: "/huge-trailers")
                    return "completed"
                } catch {
                    return "failed: \(error)"
                }
            }
            tasks.addTask {
                try await Task.sleep(for: .seconds(10))
                return "hung"
            }
            defer { tasks.cancelAll() }
            return try await tasks.next() ?? "none"
        }
        XCTAssertTrue(outcome.hasPrefix("failed"), outcome)
        let after = try await client.request(path: "/ok")
        XCTAssertEqual(after.body, Array("ok".utf8), "the connection serves on")
        client.close()
        await server.stop()
        group.shutdown()
    }

    func testConnectionCapClosesExtraConnections() async throws {
        let server = try TestServer(tls: false) { $0.maxConnections = 2 }
        let a = try RawConnection(port: server.h2cPort)
        let b = try RawConnection(port: server.h2cPort)
        a.send(Frames.preface + Frames.emptySettings)
        b.send(Frames.preface + Frames.emptySettings)
        let by = Date().addingTimeInterval(5)
        while server.server.connectionCount < 2 && Date() < by { try await Task.sleep(for: .milliseconds(10)) }
        XCTAssertEqual(server.server.connectionCount, 2)
        let c = try RawConnection(port: server.h2cPort)
        c.send(Frames.preface + Frames.emptySettings)
        let (_, closed) = c.readUntilClosed(timeout: 2)
        XCTAssertTrue(closed, "the third connection is closed at once")
        a.close(); b.close(); c.close()
        await server.stop()
    }

    func testIdleConnectionGetsGoAwayAndClose() async throws {
        let server = try TestServer(tls: false) { $0.idleTimeout = 0.5 }
        let c = try RawConnection(port: server.h2cPort)
        c.send(Frames.preface + Frames.emptySettings)
        let start = Date()
        let (reply, closed) = c.readUntilClosed(timeout: 3)
        XCTAssertTrue(closed)
        XCTAssertGreaterThan(Date().timeIntervalSince(start), 0.4)
        XCTAssertEqual(Frames.goAwayErrorCodes(in: reply), [0], "GOAWAY NO_ERROR before closing")
        c.close()
        await server.stop()
    }
}
