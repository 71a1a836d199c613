import Foundation
import Glibc
import Synchronization
import XCTest
@testable import KilnHTTP2

/// Streaming bodies both ways, many streams at once, and bounded memory under a slow reader.
final class StreamingTests: XCTestCase {
    func testTenThousandSmallChunksArriveInOrder() async throws {
        let server = try TestServer()
        let group = try EventLoopGroup(threads: 1)
        let client = try HTTP2Client(host: "127.0.0.1", port: server.h2cPort, group: group)
        let call = try client.makeCall(method: "GET", path: "/stream?chunks=10000", endStream: true)
        let head = try await call.response()
        XCTAssertEqual(head.status, 200)
        let text = String(decoding: try await call.body.collect(), as: UTF8.self)
        let lines = text.split(separator: "\n")
        XCTAssertEqual(lines.count, 10_000)
        for (i, line) in lines.enumerated() {
            let n = String(i)
            guard line == "chunk " + String(repeating: "0", count: 8 - n.count) + n else {
                XCTFail("chunk \(i) out of order: \(line)")
                break
            }
        }
        XCTAssertEqual(call.body.trailers["x-chunks"], "10000")

        // And the other way: 10,000 separate request writes, echoed back complete and in order.
        let echo = try client.makeCall(path: "/echo")
        let writer = Task {
            for i in 0..<10_000 { try await echo.write(Array("w\(i);".utf8)) }
            echo.finish()
        }
        let echoed = String(decoding: try await echo.body.collect(), as: UTF8.self)
        try await writer.value
        XCTAssertEqual(echoed, (0..<10_000).map { "w\($0);" }.joined())
        XCTAssertEqual(echo.body.trailers["x-echo-bytes"], String(echoed.utf8.count))
        client.close()
        await server.stop()
        group.shutdown()
    }

    func testThousandConcurrentStreamsOverTenConnections() async throws {
        let server = try TestServer()
        let group = try EventLoopGroup(threads: 2)
        let clients = try (0..<10).map { _ in try HTTP2Client(host: "127.0.0.1", port: server.h2cPort, group: group) }
        // Each stream stays open for ~300 ms (3 chunks, 100 ms apart), so all 1,000 overlap: done one by
        // one they would take five minutes.
        let start = Date()
        let completed = try await withThrowingTaskGroup(of: Bool.self) { tasks -> Int in
            for i in 0..<1000 {
                let client = clients[i % 10]
                tasks.addTask {
                    let r = try await client.request(path: "/stream?chunks=3&delay_ms=100")
                    return r.status == 200 && r.body == Array("chunk 00000000\nchunk 00000001\nchunk 00000002\n".utf8)
                        && r.trailers["x-chunks"] == "3"
                }
            }
            var ok = 0
            for try await good in tasks where good { ok += 1 }
            return ok
        }
        XCTAssertLessThan(Date().timeIntervalSince(start), 20, "the streams ran concurrently")
        XCTAssertEqual(completed, 1000)
        XCTAssertEqual(server.server.connectionCount, 10, "one connection per client")
        for c in clients { c.close() }
        await server.stop()
        group.shutdown()
    }

    /// A client reading 64 MiB slowly: the server must wait for it rather than buffer the stream.
    func testSlowReaderKeepsServerMemoryBounded() async throws {
        let kiln = try KilnProcess(extraArguments: ["--no-tls"])
        defer { kiln.stop() }
        let group = try EventLoopGroup(threads: 1)
        // A small window, so that flow control, not the client's appetite, paces the server.
        let client = try HTTP2Client(host: "127.0.0.1", port: kiln.h2cPort, group: group, windowSize: 256 * 1024)
        // Warm up (first-request allocations), then measure from here.
        _ = try await client.request(path: "/bytes?n=1000000")
        let baseline = kiln.residentBytes
        let total = 64 << 20
        let call = try client.makeCall(method: "GET", path: "/bytes?n=\(total)", endStream: true)
        _ = try await call.response()
        var received = 0
        var peak = baseline
        var mismatch = false
        let period = (0..<(251 + 65536)).map { UInt8($0 % 251) }
        var nextPause = 1 << 20
        while let chunk = try await call.body.next() {
            if !mismatch && chunk.count <= 65536 {
                let start = received % 251
                mismatch = chunk.withUnsafeBytes { a in
                    period.withUnsafeBytes { b in memcmp(a.baseAddress!, b.baseAddress! + start, a.count) != 0 }
                }
            } else if chunk.count > 65536 {
                mismatch = true
            }
            received += chunk.count
            if received >= nextPause {
                // Slow: 30 ms per MiB, so 64 MiB take about two seconds at least.
                nextPause += 1 << 20
                try await Task.sleep(for: .milliseconds(30))
                peak = max(peak, kiln.residentBytes)
            }
        }
        XCTAssertEqual(received, total, "every byte arrived")
        XCTAssertFalse(mismatch, "bytes arrived intact and in order")
        let growth = peak - baseline
        print("slow reader: server RSS grew by \(growth >> 10) KiB")
        XCTAssertLessThan(growth, 16 << 20, "server RSS grew by \(growth >> 10) KiB")
        client.close()
        group.shutdown()
    }

    /// The request body window opens only as the handler reads.
    func testRequestBodyFlowControlFollowsTheHandler() async throws {
        let release = Mutex<CheckedContinuation<Void, Never>?>(nil)
        let started = Mutex(false)
        var router = HTTP2Router()
        router.add("/late-reader", .handler(HTTP2ClosureHandler { request, response in
            started.withLock { $0 = true }
            await withCheckedContinuation { c in release.withLock { $0 = c } }
            let bytes = try await request.body.collect()
            try await response.write(Array(String(bytes.count).utf8))
        }))
        let server = try TestServer(router: router, tls: false)
        let group = try EventLoopGroup(threads: 1)
        let client = try HTTP2Client(host: "127.0.0.1", port: server.h2cPort, group: group)
        let call = try client.makeCall(path: "/late-reader")
        let written = Atomic<Int>(0)
        let total = 8 << 20
        let writer = Task {
            let chunk = [UInt8](repeating: 1, count: 16 * 1024)
            for _ in 0..<(total / chunk.count) {
                try await call.write(chunk)
                written.add(chunk.count, ordering: .relaxed)
            }
            call.finish()
        }
        // Wait until the writer stalls: no progress for 200 ms (at most 10 s).
        var before = written.load(ordering: .relaxed)
        let by = Date().addingTimeInterval(10)
        while Date() < by {
            try await Task.sleep(for: .milliseconds(200))
            let now = written.load(ordering: .relaxed)
            if now == before && now > 0 { break }
            before = now
        }
        XCTAssertTrue(started.withLock { $0 })
        // Server stream window (256 KiB) + client send buffer (256 KiB) + one chunk: far below 8 MiB.
        XCTAssertLessThan(before, 1 << 20, "the client was held back while the handler did not read (\(before) bytes)")
        release.withLock { $0?.resume(); $0 = nil }
        try await writer.value
        let answer = String(decoding: try await call.body.collect(), as: UTF8.self)
        XCTAssertEqual(answer, String(total))
        client.close()
        await server.stop()
        group.shutdown()
    }

    /// A client that resets its stream cancels the handler's task.
    func testResetCancelsHandler() async throws {
        let outcome = Mutex<String?>(nil)
        let entered = Mutex(false)
        var router = HTTP2Router()
        router.add("/wait", .handler(HTTP2ClosureHandler { _, _ in
            entered.withLock { $0 = true }
            do {
                try await Task.sleep(for: .seconds(30))
                outcome.withLock { $0 = "finished" }
            } catch is CancellationError {
                outcome.withLock { $0 = "cancelled" }
            }
        }))
        let server = try TestServer(router: router, tls: false)
        let group = try EventLoopGroup(threads: 1)
        let client = try HTTP2Client(host: "127.0.0.1", port: server.h2cPort, group: group)
        let call = try client.makeCall(method: "GET", path: "/wait", endStream: true)
        for _ in 0..<100 where !entered.withLock({ $0 }) { try await Task.sleep(for: .milliseconds(10)) }
        XCTAssertTrue(entered.withLock { $0 })
        call.cancel()
        for _ in 0..<100 where outcome.withLock({ $0 }) == nil { try await Task.sleep(for: .milliseconds(10)) }
        XCTAssertEqual(outcome.withLock { $0 }, "cancelled")
        client.close()
        await server.stop()
        group.shutdown()
    }

    /// A relay's read: the chunks that have arrived leave together, up to the limit, and all count as
    /// consumed (so the peer's window reopens for them).
    func testNextBatchJoinsWhatHasArrivedUpToItsLimit() async throws {
        let reports = Atomic<Int>(0)
        let body = HTTP2InboundBody { reports.add(1, ordering: .relaxed) }
        for chunk in [[1, 2], [3], [4, 5, 6], [7, 8]] as [[UInt8]] { body.append(chunk) }
        let first = try await body.nextBatch(maxBytes: 6)
        XCTAssertEqual(first, [1, 2, 3, 4, 5, 6], "joined up to 6 bytes; [7, 8] would pass it")
        XCTAssertEqual(body.takeConsumedBytes(), 6)
        let second = try await body.nextBatch(maxBytes: 1)
        XCTAssertEqual(second, [7, 8], "one chunk may pass the limit")
        body.finish()
        let end = try await body.nextBatch(maxBytes: 100)
        XCTAssertNil(end)
        XCTAssertGreaterThan(reports.load(ordering: .relaxed), 0)
    }
}
