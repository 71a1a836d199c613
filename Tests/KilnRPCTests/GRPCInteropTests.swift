import Foundation
import KilnHTTP2
import Synchronization
import XCTest
@testable import KilnRPC
import KilnServer

/// Python grpcio against Kiln's RPC server: all four call kinds, errors, deadlines, metadata, limits
/// and cancellation.
final class GRPCInteropTests: XCTestCase {
    static let cancelled = Atomic<Int>(0)

    static func echoService() -> RPCServer {
        var rpc = RPCServer()
        let s = "kiln.test.Echo"
        rpc.registerUnary(service: s, method: "Unary") { request, _ in request }
        // The same on the event loop (inline unary methods): no task.
        rpc.registerInlineUnary(service: s, method: "InlineUnary") { request, _ in request }
        rpc.registerInlineUnary(service: s, method: "InlineMetadata") { _, headers in Array((headers["x-key"] ?? "missing").utf8) }
        rpc.registerInlineUnary(service: s, method: "InlineStatus") { request, _ in
            let code = RPCStatusCode(rawValue: Int(request.first ?? 2)) ?? .unknown
            throw RPCError(code, "inline ü 50%\n\(code.rawValue)")
        }
        rpc.register(service: s, method: "Expand") { requests, writer, _ in
            let n = Int(String(decoding: try await requests.single(), as: UTF8.self)) ?? 0
            for i in 0..<n { try await writer.write(Array("m\(i)".utf8)) }
        }
        rpc.register(service: s, method: "Collect") { requests, writer, _ in
            var all: [UInt8] = []
            for try await m in requests { all += m }
            try await writer.write(all)
        }
        rpc.register(service: s, method: "Chat") { requests, writer, _ in
            for try await m in requests { try await writer.write(Array("echo:".utf8) + m) }
        }
        rpc.registerUnary(service: s, method: "Fail") { _, _ in
            throw RPCError(.invalidArgument, "bad 50% ünïcode\nline")
        }
        rpc.registerUnary(service: s, method: "Status") { request, _ in
            let code = RPCStatusCode(rawValue: Int(request.first ?? 2)) ?? .unknown
            throw RPCError(code, "status \(code.rawValue)")
        }
        rpc.registerUnary(service: s, method: "Slow") { _, _ in
            do {
                try await Task.sleep(for: .seconds(10))
            } catch {
                GRPCInteropTests.cancelled.add(1, ordering: .relaxed)
                throw error
            }
            return []
        }
        rpc.register(service: s, method: "Meta") { requests, writer, context in
            _ = try await requests.single()
            writer.addInitialMetadata("x-key", context.metadata["x-key"] ?? "missing")
            writer.addTrailingMetadata("x-blob-bin", context.metadata["x-blob-bin"] ?? "")
            try await writer.write([])
        }
        rpc.register(service: s, method: "Forever") { _, writer, _ in
            do {
                while true {
                    try await writer.write(Array("tick".utf8))
                    try await Task.sleep(for: .milliseconds(20))
                }
            } catch {
                GRPCInteropTests.cancelled.add(1, ordering: .relaxed)
                throw error
            }
        }
        let health = HealthService()
        health.setStatus(.serving, service: s)
        health.register(on: &rpc)
        return rpc
    }

    func testPythonGrpcioClient() async throws {
        // This test's own cancellations (other tests cancel handlers of the same service too).
        let cancelledBefore = Self.cancelled.load(ordering: .relaxed)
        let group = try EventLoopGroup(threads: 2)
        let server = try Self.echoService().startHTTP2Server(group: group)
        let port = server.h2cAddress!.port
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("grpcio_client.py").path

        let result = try await Task.detached { () -> (Int32, Data, String) in
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            p.arguments = ["python3", script, String(port)]
            let out = Pipe(), err = Pipe()
            p.standardOutput = out
            p.standardError = err
            try p.run()
            let data = out.fileHandleForReading.readDataToEndOfFile()
            let errText = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            p.waitUntilExit()
            return (p.terminationStatus, data, errText)
        }.value
        XCTAssertEqual(result.0, 0, result.2)
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: result.1) as? [String: Any], result.2)

        XCTAssertEqual(json["unary"] as? String, "hello")
        XCTAssertEqual(json["unary_empty"] as? Int, 0)
        XCTAssertEqual(json["unary_large"] as? Int, 3 << 20)
        XCTAssertEqual(json["unary_gzip"] as? Int, 100_000, "gzip-compressed request from grpcio")
        XCTAssertEqual(json["server_streaming"] as? [String], ["m0", "m1", "m2", "m3", "m4"])
        XCTAssertEqual(json["stream_10000_in_order"] as? Bool, true, "a server stream of 10,000 messages")
        XCTAssertEqual(json["statuses"] as? [String], RPCStatusCode.allCases.dropFirst().map(\.description), "every status code")
        XCTAssertEqual(json["client_streaming"] as? String, "abcdef")
        XCTAssertEqual(json["bidi"] as? [String], ["echo:one", "echo:two", "echo:three"])
        XCTAssertEqual(json["unimplemented"] as? String, "UNIMPLEMENTED:unknown method /kiln.test.Echo/Nope")
        XCTAssertEqual((json["unknown_service"] as? String)?.hasPrefix("UNIMPLEMENTED"), true)
        XCTAssertEqual(json["error"] as? String, "INVALID_ARGUMENT:bad 50% ünïcode\nline", "grpc-message percent-encoded and decoded")
        XCTAssertEqual(json["deadline"] as? String, "DEADLINE_EXCEEDED")
        XCTAssertLessThan(json["deadline_seconds"] as? Double ?? 99, 2)
        XCTAssertEqual(json["initial_metadata"] as? [String: String], ["x-key": "value-1"])
        XCTAssertEqual((json["trailing_metadata"] as? [String: [Int]])?["x-blob-bin"], [0, 1, 254], "-bin metadata round-trips")
        XCTAssertEqual(json["too_large"] as? String, "RESOURCE_EXHAUSTED")
        XCTAssertEqual(json["cancel_first"] as? String, "tick")
        XCTAssertEqual(json["after_cancel"] as? String, "still-here")
        XCTAssertEqual(json["inline_unary"] as? String, "hello")
        XCTAssertEqual(json["inline_large"] as? Int, 3 << 20)
        XCTAssertEqual(json["inline_gzip"] as? Int, 100_000)
        XCTAssertEqual(json["inline_too_large"] as? String, "RESOURCE_EXHAUSTED")
        XCTAssertEqual(json["inline_statuses"] as? [String], RPCStatusCode.allCases.dropFirst().map(\.description), "every status, inline")
        XCTAssertEqual(json["inline_error"] as? String, "INVALID_ARGUMENT:inline ü 50%\n3")
        XCTAssertEqual(json["inline_metadata"] as? String, "v", "request metadata reaches an inline method")
        XCTAssertEqual(json["health"] as? String, "SERVING", "grpcio's health stub")
        XCTAssertEqual(json["health_unknown"] as? String, "NOT_FOUND")
        XCTAssertEqual(json["health_watch"] as? String, "SERVING")
        // The deadline (Slow) and the client's cancel (Forever) each cancelled their handler, once.
        let by = Date().addingTimeInterval(5)
        while Self.cancelled.load(ordering: .relaxed) - cancelledBefore < 2 && Date() < by { try await Task.sleep(for: .milliseconds(10)) }
        XCTAssertEqual(Self.cancelled.load(ordering: .relaxed) - cancelledBefore, 2, "deadline and client cancel both cancelled the handler")

        // A non-gRPC content type gets HTTP 415.
        let client = try HTTP2Client(host: "127.0.0.1", port: port, group: group)
        let plain = try await client.request(method: "POST", path: "/kiln.test.Echo/Unary", headers: ["content-type": "text/plain"], body: [1])
        XCTAssertEqual(plain.status, 415)
        client.close()
        await server.shutdown()
        group.shutdown()
    }
}
