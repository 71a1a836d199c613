import Foundation
import KilnAPI
import KilnHTTP2
import KilnRPC
import KilnServer
import KilnTestSupport
import XCTest

/// `kiln.interop.v1.Interop` (Schemas/kiln/interop/v1/interop.proto) in both directions: Python grpcio's
/// client (stubs from grpcio-tools) against `kiln serve --interop`, and Kiln's generated client against a
/// grpcio server implementing the same service — the same cases each way.
final class InteropTests: XCTestCase {
    private var schemas: String { repositoryRoot.appendingPathComponent("Schemas").path }

    func testGrpcioClientAgainstKiln() throws {
        let server = try KilnServeProcess(model: "default", ["--no-model", "--interop"])
        let passed = try KilnServeProcess.runScript("interop_client.py", ["\(server.h2cPort)", schemas], servers: [server])
        XCTAssertEqual(passed, 16)   // every check ran
    }

    func testKilnClientAgainstGrpcioServer() async throws {
        let script = repositoryRoot.appendingPathComponent("Tests/KilnServerTests/interop_server.py").path
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", script, schemas]
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
        try await Self.runMatrix(port: port)
    }

    /// The same cases against Kiln's own server, in process.
    func testKilnClientAgainstKiln() async throws {
        let group = try EventLoopGroup(threads: 2)
        defer { group.shutdown() }
        var rpc = RPCServer()
        InteropService().register(on: &rpc)
        HealthService().register(on: &rpc)
        let server = try rpc.startHTTP2Server(group: group)
        try await Self.runMatrix(port: try XCTUnwrap(server.h2cAddress?.port))
        await server.shutdown()
    }

    static func runMatrix(port: Int, file: StaticString = #filePath, line: UInt = #line) async throws {
        let group = try EventLoopGroup(threads: 1)
        defer { group.shutdown() }
        let channel = try RPCChannel(host: "127.0.0.1", port: port, group: group)
        defer { channel.close() }
        let client = Kiln_Interop_V1_InteropClient(channel: channel)
        func echo(_ payload: [UInt8] = [], fail: RPCStatusCode? = nil, message: String = "", delay: UInt32 = 0) -> Kiln_Interop_V1_EchoRequest {
            var r = Kiln_Interop_V1_EchoRequest()
            r.payload = payload
            r.failCode = UInt32(fail?.rawValue ?? 0)
            r.failMessage = message
            r.delayMs = delay
            return r
        }
        func status(_ body: () async throws -> Void) async -> RPCError? {
            do { try await body(); return nil } catch let e as RPCError { return e } catch { return RPCError(.unknown, "\(error)") }
        }
        func cancelledCalls() async throws -> UInt64 { try await client.stats(Kiln_Interop_V1_StatsRequest()).cancelledCalls }
        func waitForCancel(after before: UInt64) async throws -> Bool {
            for _ in 0..<150 {
                if try await cancelledCalls() > before { return true }
                try await Task.sleep(for: .milliseconds(20))
            }
            return false
        }

        // Unary, and an empty message.
        let hello = try await client.unary(echo(Array("hello".utf8)))
        XCTAssertEqual(hello.payload, Array("hello".utf8), file: file, line: line)
        let empty = try await client.unary(echo())
        XCTAssertEqual(empty, Kiln_Interop_V1_EchoResponse(), file: file, line: line)

        // A server stream of 10,000 messages, in order.
        var expand = Kiln_Interop_V1_ExpandRequest()
        expand.count = 10_000
        var indices: [UInt32] = []
        for try await m in try await client.expand(expand) { indices.append(m.index) }
        XCTAssertEqual(indices, Array(0..<10_000), file: file, line: line)

        // Client streaming.
        let collect = try client.collect()
        for p in ["a", "bc", "", "def"] { try await collect.send(echo(Array(p.utf8))) }
        collect.finish()
        var collected: [Kiln_Interop_V1_EchoResponse] = []
        for try await m in collect.responses { collected.append(m) }
        XCTAssertEqual(collected.map(\.payload), [Array("abcdef".utf8)], file: file, line: line)

        // Bidirectional, interleaved: each request goes out after the previous answer came back.
        let converse = try client.converse()
        var replies = converse.responses.makeAsyncIterator()
        for (i, word) in ["one", "two", "three"].enumerated() {
            try await converse.send(echo(Array(word.utf8)))
            let reply = try await replies.next()
            XCTAssertEqual(reply?.payload, Array(word.utf8), file: file, line: line)
            XCTAssertEqual(reply?.index, UInt32(i), file: file, line: line)
        }
        converse.finish()
        let extra = try await replies.next()
        XCTAssertNil(extra, file: file, line: line)

        // A deadline that expires, cancelling the handler.
        var before = try await cancelledCalls()
        let start = Date()
        let deadline = await status { _ = try await client.unary(echo(delay: 5000), options: RPCCallOptions(timeout: 0.3)) }
        XCTAssertEqual(deadline?.code, .deadlineExceeded, file: file, line: line)
        XCTAssertLessThan(Date().timeIntervalSince(start), 2, file: file, line: line)
        let deadlineCancelled = try await waitForCancel(after: before)
        XCTAssertTrue(deadlineCancelled, "the handler saw the deadline", file: file, line: line)

        // Cancellation mid-stream (RST_STREAM from the client).
        before = try await cancelledCalls()
        let endless = try channel.makeTypedCall(path: "/kiln.interop.v1.Interop/Expand", request: Kiln_Interop_V1_ExpandRequest.self,
                                                response: Kiln_Interop_V1_EchoResponse.self)
        var forever = Kiln_Interop_V1_ExpandRequest()
        forever.count = 100_000
        forever.intervalMs = 5
        try await endless.send(forever)
        endless.finish()
        var it = endless.responses.makeAsyncIterator()
        var first: [UInt32] = []
        for _ in 0..<3 { if let m = try await it.next() { first.append(m.index) } }
        endless.cancel()
        XCTAssertEqual(first, [0, 1, 2], file: file, line: line)
        let streamCancelled = try await waitForCancel(after: before)
        XCTAssertTrue(streamCancelled, "the handler saw the reset", file: file, line: line)

        // Every error status, with a message that needs percent-encoding; and an error mid-stream.
        let message = "bad 50% ünïcode\nline"
        for code in RPCStatusCode.allCases where code != .ok {
            let e = await status { _ = try await client.unary(echo(fail: code, message: message)) }
            XCTAssertEqual(e?.code, code, file: file, line: line)
            XCTAssertEqual(e?.message, message, file: file, line: line)
        }
        let midStream = await status {
            let call = try client.converse()
            try await call.send(echo(Array("x".utf8)))
            try await call.send(echo(fail: .failedPrecondition, message: "no"))
            call.finish()
            for try await _ in call.responses {}
        }
        XCTAssertEqual(midStream?.code, .failedPrecondition, file: file, line: line)

        // Request and response metadata, -bin included (bytes 00 01 FE, base64 on the wire).
        var options = RPCCallOptions()
        options.metadata.add("x-key", "value-1")
        options.metadata.add("x-blob-bin", "AAH+")
        let meta = try channel.makeTypedCall(path: "/kiln.interop.v1.Interop/Unary", options: options,
                                             request: Kiln_Interop_V1_EchoRequest.self, response: Kiln_Interop_V1_EchoResponse.self)
        var metaRequest = echo()
        metaRequest.echoMetadata = ["x-key", "x-blob-bin"]
        try await meta.send(metaRequest)
        meta.finish()
        let initial = try await meta.raw.initialMetadata()
        for try await _ in meta.responses {}
        XCTAssertEqual(initial["x-key"], "value-1", file: file, line: line)
        XCTAssertEqual(initial["x-blob-bin"].flatMap { Data(base64Encoded: Self.padded($0)) }.map { [UInt8]($0) }, [0, 1, 254], file: file, line: line)
        XCTAssertEqual(meta.raw.trailingMetadata["x-key"], "value-1", file: file, line: line)
        XCTAssertEqual(meta.raw.trailingMetadata["x-blob-bin"].flatMap { Data(base64Encoded: Self.padded($0)) }.map { [UInt8]($0) }, [0, 1, 254],
                       file: file, line: line)

        // 3 MiB both ways; 5 MiB refused by the server (request) and by this client (response).
        let big = (0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0) }
        let bigReply = try await client.unary(echo(big))
        XCTAssertEqual(bigReply.payload, big, file: file, line: line)
        let tooBig = await status { _ = try await client.unary(echo([UInt8](repeating: 0, count: 5 << 20))) }
        XCTAssertEqual(tooBig?.code, .resourceExhausted, file: file, line: line)
        var huge = Kiln_Interop_V1_ExpandRequest()
        huge.count = 1
        huge.payloadBytes = 5 << 20
        let tooBigResponse = await status { for try await _ in try await client.expand(huge) {} }
        XCTAssertEqual(tooBigResponse?.code, .resourceExhausted, file: file, line: line)

        // Still serving; health SERVING.
        let after = try await client.unary(echo(Array("still-here".utf8)))
        XCTAssertEqual(after.payload, Array("still-here".utf8), file: file, line: line)
        let health = try await Grpc_Health_V1_HealthClient(channel: channel).check(Grpc_Health_V1_HealthCheckRequest())
        XCTAssertEqual(health.status, .serving, file: file, line: line)
    }

    /// grpcio sends base64 without padding.
    static func padded(_ s: String) -> String { s + String(repeating: "=", count: (4 - s.count % 4) % 4) }
}
