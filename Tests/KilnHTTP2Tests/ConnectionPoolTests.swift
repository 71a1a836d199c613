import Foundation
import XCTest
@testable import KilnHTTP2

/// `HTTP2Client`'s pool: a further connection when one is at the server's SETTINGS_MAX_CONCURRENT_STREAMS,
/// no more than `maxConnections`, and backoff between failed connects.
final class ConnectionPoolTests: XCTestCase {
    /// A server that allows 2 streams per connection and answers `/hold` only when the request ends.
    private func holdingServer() throws -> TestServer {
        var router = HTTP2Router()
        router.add("/hold", .handler(HTTP2ClosureHandler { request, response in
            var n = 0
            for try await chunk in request.body { n += chunk.count }
            response.sendHead(headers: ["x-bytes": "\(n)"])
            response.finish()
        }))
        router.add("/ping", .fixed(HTTP2FixedResponse(body: Array("pong".utf8))))
        return try TestServer(router: router, tls: false) { $0.maxConcurrentStreams = 2 }
    }

    func testASecondConnectionOpensAtTheServersStreamLimit() async throws {
        let server = try holdingServer()
        let group = try EventLoopGroup(threads: 1)
        let client = try HTTP2Client(host: "127.0.0.1", port: server.h2cPort, group: group, maxConnections: 3)
        // One whole exchange first, so that the server's SETTINGS (2 streams) have arrived.
        let pong = try await client.request(path: "/ping")
        XCTAssertEqual(pong.body, Array("pong".utf8))
        XCTAssertEqual(client.connectionCount, 1)

        // Seven calls held open: 2 + 2 + 2 streams on three connections, the seventh waits in one of them.
        var calls: [HTTP2ClientCall] = []
        for i in 0..<7 {
            let call = try client.makeCall(method: "POST", path: "/hold")
            try await call.write([UInt8](repeating: UInt8(i), count: i + 1))
            calls.append(call)
        }
        XCTAssertEqual(client.connectionCount, 3, "a connection per two held calls, capped at maxConnections")
        for (i, call) in calls.enumerated() {
            call.finish()
            let head = try await call.response()
            XCTAssertEqual(head.status, 200)
            XCTAssertEqual(head.headers["x-bytes"], "\(i + 1)", "call \(i) reached the server whole")
        }
        client.close()
        await server.stop()
        group.shutdown()
    }

    func testOneConnectionQueuesCallsPastTheLimit() async throws {
        let server = try holdingServer()
        let group = try EventLoopGroup(threads: 1)
        let client = try HTTP2Client(host: "127.0.0.1", port: server.h2cPort, group: group, maxConnections: 1)
        _ = try await client.request(path: "/ping")
        var calls: [HTTP2ClientCall] = []
        for _ in 0..<4 {
            let call = try client.makeCall(method: "POST", path: "/hold")
            try await call.write([1])
            calls.append(call)
        }
        XCTAssertEqual(client.connectionCount, 1)
        for call in calls {
            call.finish()
            let head = try await call.response()
            XCTAssertEqual(head.status, 200)
        }
        client.close()
        await server.stop()
        group.shutdown()
    }

    func testReconnectBackoffDoublesWithJitterAndResets() {
        var b = ReconnectBackoff()
        XCTAssertTrue(b.mayConnect(now: 0))
        var waits: [UInt64] = []
        var now: UInt64 = 1_000_000_000
        for _ in 0..<8 {
            b.failed(now: now)
            XCTAssertFalse(b.mayConnect(now: now))
            waits.append(b.retryAt - now)
            now = b.retryAt
            XCTAssertTrue(b.mayConnect(now: now))
        }
        let bases: [UInt64] = [100, 200, 400, 800, 1600, 3000, 3000, 3000].map { $0 * 1_000_000 }
        for (wait, base) in zip(waits, bases) {
            XCTAssertGreaterThanOrEqual(Double(wait), Double(base) * 0.8 - 1, "\(waits)")
            XCTAssertLessThanOrEqual(Double(wait), Double(base) * 1.2 + 1, "\(waits)")
        }
        b.succeeded()
        XCTAssertTrue(b.mayConnect(now: now))
        b.failed(now: now)
        XCTAssertLessThanOrEqual(b.retryAt - now, 120_000_000, "a success starts the backoff over")
    }

    func testCallsFailFastWhileBackingOffFromARefusedConnect() async throws {
        let group = try EventLoopGroup(threads: 1)
        let client = try HTTP2Client(host: "127.0.0.1", port: freePort(), group: group)
        // The first call connects, and fails when the connect is refused.
        let first = try client.makeCall(method: "GET", path: "/", endStream: true)
        do {
            _ = try await first.response()
            XCTFail("nothing listens there")
        } catch {}
        // The next one is refused at once, without a connect: the pool is backing off.
        XCTAssertThrowsError(try client.makeCall(method: "GET", path: "/", endStream: true)) { error in
            XCTAssertEqual(error as? HTTP2Error, .connectionClosed)
        }
        XCTAssertEqual(client.connectionCount, 0)
        client.close()
        group.shutdown()
    }
}
