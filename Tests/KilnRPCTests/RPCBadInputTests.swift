import KilnHTTP2
import Synchronization
import XCTest
@testable import KilnRPC

/// Wrong bytes at the RPC layer get the specified status, and a concurrent good call is unaffected.
final class RPCBadInputTests: XCTestCase {
    func testEachBadRequestGetsItsStatus() async throws {
        var rpc = GRPCInteropTests.echoService()
        rpc.maxReceiveMessageSize = 1024
        let group = try EventLoopGroup(threads: 1)
        let server = try rpc.startHTTP2Server(group: group)
        let port = server.h2cAddress!.port
        let http = try HTTP2Client(host: "127.0.0.1", port: port, group: group)
        let grpcHeaders: HTTP2Headers = ["content-type": "application/grpc", "te": "trailers"]

        // A good streaming call runs across all the bad ones.
        let channel = try RPCChannel(host: "127.0.0.1", port: port, group: group)
        let good = try channel.makeCall(path: "/kiln.test.Echo/Chat")
        var goodReplies = good.responses.makeAsyncIterator()
        try await good.send(Array("before".utf8))
        let first = try await goodReplies.next()
        XCTAssertEqual(first, Array("echo:before".utf8))

        // Each case against the task path (Unary) and the event-loop path (InlineUnary); the same request
        // must get the same status and message on both (one validation).
        var answers: [String: [String]] = [:]
        for method in ["/kiln.test.Echo/Unary", "/kiln.test.Echo/InlineUnary"] {
        for (name, body, encoding) in [("empty body", [UInt8](), nil), ("two messages", [0, 0, 0, 0, 1, 7, 0, 0, 0, 0, 1, 8], nil),
                                       ("one message and a partial one", [0, 0, 0, 0, 1, 7, 0, 0], nil),
                                       ("compressed without an encoding", [1, 0, 0, 0, 1, 0], nil),
                                       ("corrupt gzip", [1, 0, 0, 0, 3, 1, 2, 3], "gzip"), ("truncated", [0, 0, 0, 0, 9, 1], nil)] as [(String, [UInt8], String?)] {
            var headers = grpcHeaders
            if let encoding { headers.add("grpc-encoding", encoding) }
            let r = try await http.request(method: "POST", path: method, headers: headers, body: body)
            let fields = r.trailers.isEmpty ? r.headers : r.trailers
            answers[name, default: []].append("\(fields["grpc-status"] ?? "-") \(fields["grpc-message"].map(StatusMessageCoding.decode) ?? "")")
        }
        func status(path: String = method, headers: HTTP2Headers = grpcHeaders, body: [UInt8]) async throws -> (Int, String?, String?) {
            let r = try await http.request(method: "POST", path: path, headers: headers, body: body)
            let fields = r.trailers.isEmpty ? r.headers : r.trailers
            return (r.status, fields["grpc-status"], fields["grpc-message"].map(StatusMessageCoding.decode))
        }

        let truncated = try await status(body: [0, 0, 0])
        XCTAssertEqual(truncated.1, String(RPCStatusCode.internal.rawValue), "truncated prefix: \(truncated)")
        let partial = try await status(body: [0, 0, 0, 0, 10, 1, 2])
        XCTAssertEqual(partial.1, String(RPCStatusCode.internal.rawValue), "truncated message")
        let huge = try await status(body: [0, 0x7F, 0xFF, 0xFF, 0xFF])
        XCTAssertEqual(huge.1, String(RPCStatusCode.resourceExhausted.rawValue), "declared length over the limit")
        let badFlag = try await status(body: [7, 0, 0, 0, 0])
        XCTAssertEqual(badFlag.1, String(RPCStatusCode.internal.rawValue), "invalid compressed flag")
        let compressed = try await status(body: [1, 0, 0, 0, 1, 0])
        XCTAssertEqual(compressed.1, String(RPCStatusCode.internal.rawValue), "compressed flag without an encoding")
        var snappy = grpcHeaders
        snappy.add("grpc-encoding", "snappy")
        let unsupported = try await status(headers: snappy, body: [1, 0, 0, 0, 1, 0])
        XCTAssertEqual(unsupported.1, String(RPCStatusCode.unimplemented.rawValue), "an encoding not offered")
        var gzip = grpcHeaders
        gzip.add("grpc-encoding", "gzip")
        let corrupt = try await status(headers: gzip, body: [1, 0, 0, 0, 3, 1, 2, 3])
        XCTAssertEqual(corrupt.1, String(RPCStatusCode.internal.rawValue), "corrupt gzip payload")
        let bomb = GRPCMessageFramer.frame(try GzipCodec.compress([UInt8](repeating: 0, count: 8 << 20)), compressed: true)
        let inflated = try await status(headers: gzip, body: bomb)
        XCTAssertEqual(inflated.1, String(RPCStatusCode.resourceExhausted.rawValue), "a small message inflating past the limit")
        let unknown = try await status(path: "/kiln.test.Echo/Nope", body: [0, 0, 0, 0, 0])
        XCTAssertEqual(unknown.1, String(RPCStatusCode.unimplemented.rawValue))
        let unknownService = try await http.request(method: "POST", path: "/no.Such/Thing", headers: grpcHeaders, body: [0, 0, 0, 0, 0])
        XCTAssertEqual(RPCStatusCode(httpStatus: unknownService.status), .unimplemented, "unknown service: 404, read as UNIMPLEMENTED")
        let wrongType = try await status(headers: ["content-type": "application/json"], body: [0, 0, 0, 0, 0])
        XCTAssertEqual(wrongType.0, 415)
        let noTE = try await status(headers: ["content-type": "application/grpc"], body: [0, 0, 0, 0, 0])
        XCTAssertEqual(noTE.1, String(RPCStatusCode.internal.rawValue), "missing te: trailers")
        XCTAssertEqual(noTE.2, "gRPC requires the header te: trailers")
        var badTimeout = grpcHeaders
        badTimeout.add("grpc-timeout", "soon")
        let timeout = try await status(headers: badTimeout, body: [0, 0, 0, 0, 0])
        XCTAssertEqual(timeout.1, String(RPCStatusCode.internal.rawValue), "malformed grpc-timeout")
        let fine = try await status(body: GRPCMessageFramer.frame(Array("ok".utf8)))
        XCTAssertEqual(fine.1, "0", "\(method): a good call")
        let health = try await status(path: "/grpc.health.v1.Health/Check", body: GRPCMessageFramer.frame([0x0A, 0x02, 0xC3, 0x28]))
        XCTAssertEqual(health.1, String(RPCStatusCode.internal.rawValue), "invalid protobuf (bad UTF-8 string): \(health)")
        }

        for (name, both) in answers {
            XCTAssertEqual(both.count, 2, name)
            XCTAssertEqual(both.first, both.last, "\(name): the task path and the inline path answer alike")
            XCTAssertNotEqual(both.first?.hasPrefix("0 "), true, "\(name) is refused")
        }
        try await good.send(Array("after".utf8))
        let second = try await goodReplies.next()
        XCTAssertEqual(second, Array("echo:after".utf8), "the good call was unaffected")
        good.finish()
        while try await goodReplies.next() != nil {}
        http.close()
        channel.close()
        await server.shutdown()
        group.shutdown()
    }

    /// A non-gRPC request gets its 415 after a small upload ends (curl reports an answer sent mid-upload as a
    /// stream error), and also when its upload never ends: then after the second the server waits.
    func testANonGRPCRequestThatNeverEndsStillGetsItsAnswer() async throws {
        let rpc = GRPCInteropTests.echoService()
        let group = try EventLoopGroup(threads: 1)
        let server = try rpc.startHTTP2Server(group: group)
        let http = try HTTP2Client(host: "127.0.0.1", port: server.h2cAddress!.port, group: group)
        let ended = try await http.request(method: "POST", path: "/kiln.test.Echo/Unary", headers: ["content-type": "text/plain"],
                                           body: Array("hi".utf8))
        XCTAssertEqual(ended.status, 415)
        let call = try http.makeCall(method: "POST", path: "/kiln.test.Echo/Unary", headers: ["content-type": "text/plain"])
        try await call.write(Array("and never finished".utf8))
        let watchdog = Task {
            try await Task.sleep(for: .seconds(10))
            call.cancel()
        }
        let started = ContinuousClock.now
        let head = try await call.response()
        watchdog.cancel()
        XCTAssertEqual(head.status, 415)
        XCTAssertLessThan(ContinuousClock.now - started, .seconds(5), "answered after the server's one-second wait")
        call.cancel()
        http.close()
        await server.shutdown()
        group.shutdown()
    }

    /// A grpc-timeout far past what any clock holds (99999999H) is cut to the longest honoured, not read as
    /// already passed; an error of unknown cause reaches the peer as a fixed message, its text only the log.
    func testHugeTimeoutsAndUnknownErrors() async throws {
        struct Secret: Error, CustomStringConvertible { var description: String { "secret path /etc/kiln/key" } }
        var rpc = GRPCInteropTests.echoService()
        rpc.registerUnary(service: "kiln.test.Echo", method: "Leak") { _, _ in throw Secret() }
        rpc.registerInlineUnary(service: "kiln.test.Echo", method: "InlineLeak") { _, _ in throw Secret() }
        let group = try EventLoopGroup(threads: 1)
        let server = try rpc.startHTTP2Server(group: group)
        let http = try HTTP2Client(host: "127.0.0.1", port: server.h2cAddress!.port, group: group)
        func call(_ path: String, timeout: String? = nil) async throws -> (String?, String?) {
            var headers: HTTP2Headers = ["content-type": "application/grpc", "te": "trailers"]
            if let timeout { headers.add("grpc-timeout", timeout) }
            let r = try await http.request(method: "POST", path: path, headers: headers, body: GRPCMessageFramer.frame(Array("ok".utf8)))
            let fields = r.trailers.isEmpty ? r.headers : r.trailers
            return (fields["grpc-status"], fields["grpc-message"].map(StatusMessageCoding.decode))
        }
        for timeout in ["99999999H", "99999999M", "18446744S", "99999999n", "1H"] {
            let r = try await call("/kiln.test.Echo/Unary", timeout: timeout)
            XCTAssertEqual(r.0, "0", "grpc-timeout \(timeout): \(r)")
        }
        XCTAssertEqual(GRPCTimeout.parse("99999999H"), GRPCTimeout.longest)
        XCTAssertEqual(GRPCTimeout.format(nanoseconds: UInt64.max), "5124096H", "rounded up without overflowing")
        for path in ["/kiln.test.Echo/Leak", "/kiln.test.Echo/InlineLeak"] {
            let r = try await call(path)
            XCTAssertEqual(r.0, String(RPCStatusCode.unknown.rawValue), path)
            XCTAssertEqual(r.1, "internal error", path)
        }
        http.close()
        await server.shutdown()
        group.shutdown()
    }
}
