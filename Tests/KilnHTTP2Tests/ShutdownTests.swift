import Foundation
import Glibc
import XCTest
@testable import KilnHTTP2

/// SIGTERM to `kiln serve` with streams in flight: they finish, new connections are refused, exit 0.
final class ShutdownTests: XCTestCase {
    func testSigtermDrainsInFlightStreams() async throws {
        let kiln = try KilnProcess(extraArguments: ["--no-tls", "--drain-seconds", "20"])
        defer { kiln.stop() }
        let group = try EventLoopGroup(threads: 2)
        let clients = try (0..<4).map { _ in try HTTP2Client(host: "127.0.0.1", port: kiln.h2cPort, group: group) }
        // 100 streams, each 20 chunks 100 ms apart: about 2 s of streaming once SIGTERM lands.
        var calls: [HTTP2ClientCall] = []
        for i in 0..<100 {
            calls.append(try clients[i % 4].makeCall(method: "GET", path: "/stream?chunks=20&delay_ms=100", endStream: true))
        }
        for call in calls {
            let head = try await call.response()
            XCTAssertEqual(head.status, 200)
        }
        kiln.signal(SIGTERM)
        // The listener goes as soon as the signal is handled: wait for a refused connect (at most 5 s).
        var refused = false
        let by = Date().addingTimeInterval(5)
        while !refused && Date() < by {
            if let c = try? RawConnection(port: kiln.h2cPort) { c.close(); try await Task.sleep(for: .milliseconds(20)) } else { refused = true }
        }
        XCTAssertTrue(refused, "new connections are refused while draining")

        var complete = 0
        for call in calls {
            let text = String(decoding: try await call.body.collect(), as: UTF8.self)
            if text.split(separator: "\n").count == 20 && call.body.trailers["x-chunks"] == "20" { complete += 1 }
        }
        XCTAssertEqual(complete, 100, "every in-flight stream completed")
        XCTAssertEqual(kiln.waitForExit(timeout: 10), 0, "exit status 0")
        group.shutdown()
    }
}
