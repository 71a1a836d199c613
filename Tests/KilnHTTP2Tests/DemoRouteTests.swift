import Foundation
import XCTest

/// `kiln serve` mounts the demo routes only with `--demo-routes`, and each demo route answers a bad query
/// value with HTTP 400 instead of trapping (`/stream?chunks=-1` used to end the whole process).
final class DemoRouteTests: XCTestCase {
    private func curl(_ url: String) throws -> (code: String, body: String) {
        let r = try runTool("curl", ["-sS", "--http2-prior-knowledge", "--max-time", "20", "-w", "\n%{http_code}", url], timeout: 30)
        XCTAssertEqual(r.status, 0, "curl \(url): \(r.stderr)")
        let parts = r.stdout.split(separator: "\n", omittingEmptySubsequences: false)
        return (String(parts.last ?? ""), parts.dropLast().joined(separator: "\n").trimmingCharacters(in: .newlines))
    }

    func testDemoRoutesAreMountedOnlyWhenAsked() throws {
        let plain = try KilnProcess(withDemoRoutes: false)
        defer { plain.stop() }
        let base = "http://127.0.0.1:\(plain.h2cPort)"
        for path in ["/", "/echo", "/stream?chunks=1", "/bytes?n=1", "/sleep?ms=0"] {
            XCTAssertEqual(try curl(base + path).code, "404", path)
        }
        // gRPC health is a production route and stays.
        let health = try runTool("curl", ["-sS", "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
                                          "-H", "content-type: application/grpc", "-H", "te: trailers",
                                          "--data-binary", "@-", base + "/grpc.health.v1.Health/Check"],
                                 stdin: Data([0, 0, 0, 0, 0]))
        XCTAssertEqual(health.stdout, "200", health.stderr)
        // The benchmark echo service is a demo route too: an unknown service is HTTP 404 (gRPC reads UNIMPLEMENTED).
        let echo = try runTool("curl", ["-sS", "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
                                        "-H", "content-type: application/grpc", "-H", "te: trailers",
                                        "--data-binary", "@-", base + "/pkg.Service/Echo"], stdin: Data([0, 0, 0, 0, 1, 7]))
        XCTAssertEqual(echo.stdout, "404", echo.stderr)
    }

    func testBadQueryValuesGet400AndTheServerStaysUp() throws {
        let server = try KilnProcess()
        defer { server.stop() }
        let base = "http://127.0.0.1:\(server.h2cPort)"
        let huge = String(repeating: "9", count: 40)
        let cases = [
            "/stream?chunks=-1", "/stream?chunks=abc", "/stream?chunks=\(huge)", "/stream?chunks=\(Int.max)",
            "/stream?chunks=10000001", "/stream?chunks=", "/stream?chunks=1&delay_ms=-5", "/stream?chunks=1&delay_ms=NaN",
            "/stream?chunks=%2D1", "/stream?chunks=1.5", "/bytes?n=-1", "/bytes?n=\(UInt64.max)", "/bytes?n=inf",
            "/sleep?ms=-1", "/sleep?ms=\(Int.min)", "/sleep?ms=1e3",
        ]
        for path in cases {
            let r = try curl(base + path)
            XCTAssertEqual(r.code, "400", "\(path): \(r.body)")
            XCTAssertTrue(r.body.contains("must be a whole number in"), "\(path): \(r.body)")
        }
        // Boundary values that are in range still work, and the process is the same one.
        XCTAssertEqual(try curl(base + "/stream?chunks=0").code, "200")
        XCTAssertEqual(try curl(base + "/stream?chunks=2").body, "chunk 00000000\nchunk 00000001")
        XCTAssertEqual(try curl(base + "/bytes?n=0").code, "200")
        XCTAssertEqual(try curl(base + "/sleep?ms=0").body, "slept")
        // The README's raw gRPC example, through grpcio: pkg.Service/Echo hands the message back.
        let script = """
        import grpc, sys
        ch = grpc.insecure_channel("127.0.0.1:%d" % int(sys.argv[1]))
        print(ch.unary_unary("/pkg.Service/Echo")(b"hello", timeout=20))
        """
        let echo = try runTool("/usr/bin/env", ["python3", "-c", script, String(server.h2cPort)], timeout: 60)
        XCTAssertEqual(echo.stdout.trimmingCharacters(in: .newlines), "b'hello'", echo.stderr)
        XCTAssertTrue(server.process.isRunning)
    }
}
