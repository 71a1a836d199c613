import Foundation
import XCTest
@testable import KilnHTTP2

/// HTTP/1.1 on the same listeners as HTTP/2: real clients (curl, grpcio) and raw sockets (http1_client.py)
/// against a `kiln serve` process.
final class HTTP1Tests: XCTestCase {
    private static let script = repositoryRoot.appendingPathComponent("Tests/KilnHTTP2Tests/http1_client.py").path

    private func runScript(_ arguments: [String], timeout: Double = 120, file: StaticString = #filePath, line: UInt = #line) throws {
        let r = try runTool("/usr/bin/env", ["python3", Self.script] + arguments, timeout: timeout)
        print(r.stdout)
        XCTAssertEqual(r.status, 0, r.stdout + r.stderr, file: file, line: line)
        XCTAssertTrue(r.stdout.contains("PASS "), "the script checked something", file: file, line: line)
        XCTAssertFalse(r.stdout.contains("FAIL "), r.stdout, file: file, line: line)
    }

    func testCurlSpeaksBothProtocolsToTheSameEndpoints() throws {
        let kiln = try KilnProcess()
        defer { kiln.stop() }
        let body = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-http1-body").path
        try Data((0..<3_000_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }).write(to: URL(fileURLWithPath: body))
        let ca = certPath("ca.pem")
        let h2c = "http://127.0.0.1:\(kiln.h2cPort)", tls = "https://localhost:\(kiln.tlsPort)"
        // The same endpoint over HTTP/1.1 and HTTP/2, cleartext (sniffed) and TLS (ALPN).
        for (flags, base, version) in [(["--http1.1"], h2c, "1.1"), (["--http2-prior-knowledge"], h2c, "2"),
                                       (["--http1.1", "--cacert", ca], tls, "1.1"), (["--cacert", ca], tls, "2")] {
            let r = try runTool("curl", ["-sS", "-N"] + flags + ["-w", "|%{http_version}", "\(base)/"])
            XCTAssertEqual(r.stdout, "kiln\n|\(version)", "\(flags) \(base): \(r.stderr)")
            // A 3 MB upload, echoed: with Expect: 100-continue (curl waits for it), and chunked.
            for extra in [["-H", "Expect: 100-continue"], ["-H", "Transfer-Encoding: chunked"]] {
                let echo = try runTool("/bin/sh", ["-c", "curl -sS \((flags + extra).map { "'\($0)'" }.joined(separator: " ")) --data-binary @\(body) \(base)/echo | cmp - \(body) && echo same"])
                XCTAssertEqual(echo.stdout, "same\n", "\(flags) \(extra) \(base): \(echo.stderr)")
            }
        }
        // A streamed response over HTTP/1.1 comes chunked, whole; two requests share one connection.
        let stream = try runTool("curl", ["-sS", "-N", "--http1.1", "-D", "-", "\(h2c)/stream?chunks=3"])
        XCTAssertTrue(stream.stdout.contains("transfer-encoding: chunked"), stream.stdout)
        XCTAssertTrue(stream.stdout.contains("\r\n\r\nchunk 00000000\nchunk 00000001\nchunk 00000002\nx-chunks: 3"), "the body, then its trailer: \(stream.stdout)")
        let reuse = try runTool("curl", ["-sS", "-v", "--http1.1", "\(h2c)/", "\(h2c)/"])
        XCTAssertTrue(reuse.stderr.contains("Re-using existing connection"), reuse.stderr)
        XCTAssertTrue(kiln.process.isRunning)
    }

    func testBadInputIsRefusedWhileAGoodClientIsServed() throws {
        let kiln = try KilnProcess()
        defer { kiln.stop() }
        try runScript(["bad-input", "\(kiln.h2cPort)"])
        XCTAssertTrue(kiln.process.isRunning)
    }

    func testPipelinedRequestsAreAnsweredInOrder() throws {
        let kiln = try KilnProcess()
        defer { kiln.stop() }
        try runScript(["pipeline", "\(kiln.h2cPort)"])
    }

    func testHundredStreamedResponsesOverKeepAliveConnections() throws {
        let kiln = try KilnProcess()
        defer { kiln.stop() }
        try runScript(["concurrent", "\(kiln.h2cPort)"])
    }

    func testSlowHeadIsCutOffByTheTimeout() throws {
        let kiln = try KilnProcess(extraArguments: ["--handshake-timeout", "2"])
        defer { kiln.stop() }
        try runScript(["slow-head", "\(kiln.h2cPort)", "2"])
    }

    func testGrpcioOnTheSamePortBesideHTTP1Connections() throws {
        let kiln = try KilnProcess()
        defer { kiln.stop() }
        try runScript(["grpc-beside", "\(kiln.h2cPort)"])
    }

    func testAReaderThatStopsReadingDoesNotGrowTheServer() throws {
        let kiln = try KilnProcess()
        defer { kiln.stop() }
        try runScript(["slow-reader", "\(kiln.h2cPort)", "\(kiln.pid)"])
    }

    /// SIGTERM: the response in flight completes, the next one says `connection: close`, and the connection
    /// and then the server end.
    func testDrainEndsKeepAliveWithConnectionClose() throws {
        let kiln = try KilnProcess(extraArguments: ["--drain-seconds", "10"])
        defer { kiln.stop() }
        let conn = try RawConnection(port: kiln.h2cPort)
        defer { conn.close() }
        conn.send(Array("GET / HTTP/1.1\r\nHost: t\r\n\r\nGET /stream?chunks=10&delay_ms=100 HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n".utf8))
        var text = ""
        while !text.contains("chunk 00000000"), let bytes = conn.receive() { text += String(decoding: bytes, as: UTF8.self) }
        kiln.signal(SIGTERM)
        while let bytes = conn.receive() { text += String(decoding: bytes, as: UTF8.self) }
        let responses = Array(text.components(separatedBy: "HTTP/1.1 200 OK\r\n").dropFirst())
        XCTAssertEqual(responses.count, 3, text)
        guard responses.count == 3 else { return }
        XCTAssertFalse(responses[0].contains("connection: close"), "before the drain, the connection is kept")
        XCTAssertTrue(responses[1].contains("chunk 00000009\n\r\n0\r\n"), "the response in flight at the drain completes: \(text)")
        XCTAssertTrue(responses[2].contains("connection: close") && responses[2].hasSuffix("kiln\n"), "the next one closes the connection: \(text)")
        XCTAssertEqual(kiln.waitForExit(timeout: 10), 0)
    }
}

/// The parser alone: heads split anywhere parse the same; a bare LF is found across a split.
final class HTTP1RequestParserTests: XCTestCase {
    private func parse(_ text: String, splitEvery step: Int) throws -> [HTTP1RequestParser.Event] {
        let parser = HTTP1RequestParser(maxHeadBytes: 16 * 1024)
        let bytes = Array(text.utf8)
        var events: [HTTP1RequestParser.Event] = []
        var offset = 0
        while offset < bytes.count {
            let end = min(bytes.count, offset + step)
            var taken = 0
            while offset + taken < end {
                let r = try bytes[(offset + taken)..<end].withUnsafeBytes { try parser.feed($0) }
                events += r.events
                taken += r.consumed
                if parser.isPaused { parser.resume() } else if r.consumed == 0 { break }
            }
            offset = end
        }
        return events
    }

    func testSplitsDoNotChangeWhatIsParsed() throws {
        let request = "POST /a?b=c HTTP/1.1\r\nHost: h\r\nX-Long: \(String(repeating: "v", count: 300))\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        for step in [1, 2, 7, 64, 4096] {
            let events = try parse(request, splitEvery: step)
            guard case .head(let head)? = events.first else { return XCTFail("no head at step \(step)") }
            XCTAssertEqual(head.method, "POST")
            XCTAssertEqual(head.target, "/a?b=c")
            XCTAssertTrue(head.chunked)
            XCTAssertEqual(head.field("x-long")?.count, 300, "step \(step)")
            var body: [UInt8] = []
            var ended = false
            for case let event in events.dropFirst() {
                switch event {
                case .body(let b): body += b
                case .end: ended = true
                case .head: XCTFail("a second head")
                }
            }
            XCTAssertEqual(String(decoding: body, as: UTF8.self), "abcde", "step \(step)")
            XCTAssertTrue(ended, "step \(step)")
        }
    }

    func testABareLFIsRefusedWhereverTheSplitFalls() {
        for step in [1, 3, 4096] {
            XCTAssertThrowsError(try parse("GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n", splitEvery: step), "step \(step)") { error in
                XCTAssertEqual((error as? HTTP1RequestParser.Refusal)?.status, 400)
            }
        }
    }

    func testTheFirstBytesTellTheProtocol() {
        XCTAssertEqual(ProtocolSniffer.classify(Array("PRI * HTTP/2.0\r\n".utf8)), .h2)
        XCTAssertEqual(ProtocolSniffer.classify(Array("PR".utf8)), .undecided)
        XCTAssertEqual(ProtocolSniffer.classify(Array("GET / HTTP/1.1\r\n".utf8)), .http1)
        XCTAssertEqual(ProtocolSniffer.classify(Array("PUT".utf8)), .http1)
    }
}
