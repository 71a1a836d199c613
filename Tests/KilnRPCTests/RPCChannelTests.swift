import Foundation
import KilnHTTP2
import Synchronization
import KilnTestSupport
import XCTest
@testable import KilnRPC

/// Kiln's client channel against its own server and against Python grpcio's server, plus retries and
/// the circuit breaker.
final class RPCChannelTests: XCTestCase {
    var group: EventLoopGroup!

    override func setUp() async throws { group = try EventLoopGroup(threads: 1) }
    override func tearDown() async throws { group.shutdown() }

    private func startKilnServer(_ rpc: RPCServer) throws -> HTTP2Server {
        try rpc.startHTTP2Server(group: group)
    }

    /// Every call kind, errors, metadata and deadlines; run against both servers.
    private func exerciseEchoService(port: Int, slowTimeout: Double) async throws {
        let channel = try RPCChannel(host: "127.0.0.1", port: port, group: group)
        defer { channel.close() }
        let unary = try await channel.unary(path: "/kiln.test.Echo/Unary", request: Array("hi".utf8))
        XCTAssertEqual(unary.message, Array("hi".utf8))
        let big = [UInt8](repeating: 7, count: 200_000)
        let compressed = try await channel.unary(path: "/kiln.test.Echo/Unary", request: big, options: RPCCallOptions(compressRequests: true))
        XCTAssertEqual(compressed.message, big, "gzip-compressed request")
        let expanded = try await channel.serverStreaming(path: "/kiln.test.Echo/Expand", request: Array("4".utf8))
        XCTAssertEqual(expanded.map { String(decoding: $0, as: UTF8.self) }, ["m0", "m1", "m2", "m3"])

        let collect = try channel.makeCall(path: "/kiln.test.Echo/Collect")
        for part in ["ab", "", "cd"] { try await collect.send(Array(part.utf8)) }
        collect.finish()
        var collected: [[UInt8]] = []
        for try await m in collect.responses { collected.append(m) }
        XCTAssertEqual(collected, [Array("abcd".utf8)])

        let chat = try channel.makeCall(path: "/kiln.test.Echo/Chat")
        var replies: [String] = []
        var it = chat.responses.makeAsyncIterator()
        for word in ["x", "y", "z"] {
            try await chat.send(Array(word.utf8))
            if let r = try await it.next() { replies.append(String(decoding: r, as: UTF8.self)) }  // one at a time: truly bidirectional
        }
        chat.finish()
        while try await it.next() != nil {}
        XCTAssertEqual(replies, ["echo:x", "echo:y", "echo:z"])

        do {
            _ = try await channel.unary(path: "/kiln.test.Echo/Fail", request: [])
            XCTFail("Fail succeeded")
        } catch let e as RPCError {
            XCTAssertTrue([.notFound, .invalidArgument].contains(e.code), "\(e)")
            XCTAssertFalse(e.message.isEmpty)
        }
        do {
            _ = try await channel.unary(path: "/kiln.test.Echo/Nope", request: [])
            XCTFail("unknown method succeeded")
        } catch let e as RPCError {
            XCTAssertEqual(e.code, .unimplemented)
        }
        let start = Date()
        do {
            _ = try await channel.unary(path: "/kiln.test.Echo/Slow", request: [], options: RPCCallOptions(timeout: slowTimeout))
            XCTFail("Slow finished inside its deadline")
        } catch let e as RPCError {
            XCTAssertEqual(e.code, .deadlineExceeded)
        }
        XCTAssertLessThan(Date().timeIntervalSince(start), slowTimeout + 1.5)
    }

    func testAgainstKilnServer() async throws {
        let server = try startKilnServer(GRPCInteropTests.echoService())
        try await exerciseEchoService(port: server.h2cAddress!.port, slowTimeout: 0.3)
        // Metadata both ways.
        let channel = try RPCChannel(host: "127.0.0.1", port: server.h2cAddress!.port, group: group)
        let call = try channel.makeCall(path: "/kiln.test.Echo/Meta", options: RPCCallOptions(metadata: ["x-key": "k1", "x-blob-bin": "AAH+"]))
        try await call.send([])
        call.finish()
        for try await _ in call.responses {}
        let initial = try await call.initialMetadata()
        XCTAssertEqual(initial["x-key"], "k1")
        XCTAssertEqual(call.trailingMetadata["x-blob-bin"], "AAH+")
        // Cancelling a stream reaches the server's handler.
        let before = GRPCInteropTests.cancelled.load(ordering: .relaxed)
        let forever = try channel.makeCall(path: "/kiln.test.Echo/Forever")
        try await forever.send([])
        forever.finish()
        var it = forever.responses.makeAsyncIterator()
        _ = try await it.next()
        forever.cancel()
        for _ in 0..<100 where GRPCInteropTests.cancelled.load(ordering: .relaxed) == before { try await Task.sleep(for: .milliseconds(10)) }
        XCTAssertGreaterThan(GRPCInteropTests.cancelled.load(ordering: .relaxed), before)
        channel.close()
        await server.shutdown()
    }

    func testAgainstPythonGrpcioServer() async throws {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("grpcio_server.py").path
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", script]
        let out = Pipe(), input = Pipe()
        p.standardOutput = out
        p.standardInput = input
        try p.run()
        defer {
            try? input.fileHandleForWriting.close()
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
        }
        var line = Data()
        while !line.contains(UInt8(ascii: "\n")) {
            let d = out.fileHandleForReading.availableData
            if d.isEmpty { break }
            line.append(d)
        }
        let port = try XCTUnwrap(Int(String(decoding: line, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)))
        try await exerciseEchoService(port: port, slowTimeout: 0.3)
        let channel = try RPCChannel(host: "127.0.0.1", port: port, group: group)
        let r = try await channel.unary(path: "/kiln.test.Echo/Unary", request: [1], options: RPCCallOptions(metadata: ["x-key": "v9"]))
        XCTAssertEqual(r.trailingMetadata["x-echo-key"], "v9", "metadata reached grpcio and came back")
        channel.close()
    }

    func testRetriesUnavailableBeforeAnyMessage() async throws {
        let attempts = Atomic<Int>(0)
        var rpc = RPCServer()
        rpc.registerUnary(service: "t.Flaky", method: "Call") { request, _ in
            if attempts.add(1, ordering: .relaxed).newValue < 3 { throw RPCError(.unavailable, "warming up") }
            return request
        }
        let server = try startKilnServer(rpc)
        let port = server.h2cAddress!.port
        let retrying = try RPCChannel(host: "127.0.0.1", port: port, group: group)
        let r = try await retrying.unary(path: "/t.Flaky/Call", request: [9])
        XCTAssertEqual(r.message, [9])
        XCTAssertEqual(attempts.load(ordering: .relaxed), 3, "two retries")

        attempts.store(0, ordering: .relaxed)
        let once = try RPCChannel(host: "127.0.0.1", port: port, group: group, retry: .none)
        do {
            _ = try await once.unary(path: "/t.Flaky/Call", request: [9])
            XCTFail("succeeded without retries")
        } catch let e as RPCError {
            XCTAssertEqual(e.code, .unavailable)
        }
        XCTAssertEqual(attempts.load(ordering: .relaxed), 1)
        retrying.close(); once.close()
        await server.shutdown()
    }

    func testRetriesConnectFailuresWithBackoff() async throws {
        let port = closedPort()
        let channel = try RPCChannel(host: "127.0.0.1", port: port, group: group)
        let start = Date()
        do {
            _ = try await channel.unary(path: "/x.Y/Z", request: [])
            XCTFail("a closed port answered")
        } catch let e as RPCError {
            XCTAssertEqual(e.code, .unavailable)
        }
        // Two pauses: 0.1 s and 0.2 s, each ±20 %.
        XCTAssertGreaterThanOrEqual(Date().timeIntervalSince(start), 0.24)
    }

    func testCircuitOpensAfterConsecutiveFailures() async throws {
        let channel = try RPCChannel(host: "127.0.0.1", port: closedPort(), group: group, retry: .none)
        for _ in 0..<5 {
            do { _ = try await channel.unary(path: "/x.Y/Z", request: []) } catch {}
        }
        do {
            _ = try await channel.unary(path: "/x.Y/Z", request: [])
            XCTFail("no error")
        } catch let e as RPCError {
            XCTAssertEqual(e.code, .unavailable)
            XCTAssertTrue(e.message.contains("circuit open"), e.message)
        }
    }

    private func closedPort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        close(fd)
        return Int(UInt16(bigEndian: addr.sin_port))
    }
}

/// The breaker's state machine on its own, with time passed in.
final class CircuitBreakerStateTests: XCTestCase {
    let s: UInt64 = 1_000_000_000

    func testOpensAfterFiveFailuresAndHalfOpensAfterSixtySeconds() {
        var b = CircuitBreakerState(policy: CircuitBreakerPolicy())
        for _ in 0..<4 { XCTAssertTrue(b.admit(now: 0)); b.recordFailure(now: 0) }
        b.recordSuccess()
        XCTAssertEqual(b.phase, .closed(consecutiveFailures: 0), "a success resets the count")
        for _ in 0..<5 { XCTAssertTrue(b.admit(now: 0)); b.recordFailure(now: 0) }
        XCTAssertEqual(b.phase, .open(until: 60 * s))
        XCTAssertFalse(b.admit(now: 59 * s))
        XCTAssertTrue(b.admit(now: 60 * s))
        XCTAssertTrue(b.admit(now: 60 * s))
        XCTAssertTrue(b.admit(now: 60 * s))
        XCTAssertFalse(b.admit(now: 60 * s), "half-open admits three trials")
        b.recordSuccess(); b.recordSuccess()
        XCTAssertEqual(b.phase, .halfOpen(admitted: 3, succeeded: 2))
        b.recordSuccess()
        XCTAssertEqual(b.phase, .closed(consecutiveFailures: 0))
    }

    func testTrialFailureReopens() {
        var b = CircuitBreakerState(policy: CircuitBreakerPolicy())
        for _ in 0..<5 { b.recordFailure(now: 0) }
        XCTAssertTrue(b.admit(now: 61 * s))
        b.recordFailure(now: 61 * s)
        XCTAssertEqual(b.phase, .open(until: 121 * s))
    }

    func testBackoffGrowsAndIsCapped() {
        let p = RetryPolicy()
        var rng = TestRandom()
        for _ in 0..<1000 {
            let first = p.backoff(beforeAttempt: 2, using: &rng)
            XCTAssertTrue((0.08...0.12).contains(first))
            let second = p.backoff(beforeAttempt: 3, using: &rng)
            XCTAssertTrue((0.16...0.24).contains(second))
            XCTAssertLessThanOrEqual(p.backoff(beforeAttempt: 20, using: &rng), 1.2)
        }
    }
}
