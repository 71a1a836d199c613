import Foundation
import XCTest
@testable import KilnHTTP2

/// Clients nobody here wrote — curl, nghttp, h2load — against Kiln's server.
final class RealClientTests: XCTestCase {
    var server: TestServer!

    override func setUp() async throws {
        server = try TestServer()
    }

    override func tearDown() async throws {
        await server.stop()
    }

    func testCurlPriorKnowledgeH2C() throws {
        let r = try runTool("curl", ["-sS", "--http2-prior-knowledge", "-w", "\n%{http_version} %{http_code}", "http://127.0.0.1:\(server.h2cPort)/"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.stdout, "kiln\n\n2 200")
    }

    func testCurlOverTLSVerifiesCertificate() throws {
        let r = try runTool("curl", ["-sS", "--cacert", certPath("ca.pem"), "-w", "\n%{http_version} %{http_code}", "https://localhost:\(server.tlsPort)/"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.stdout, "kiln\n\n2 200")
        // Also by IP address, which the certificate names too.
        let ip = try runTool("curl", ["-sS", "--cacert", certPath("ca.pem"), "https://127.0.0.1:\(server.tlsPort)/"])
        XCTAssertEqual(ip.stdout, "kiln\n", ip.stderr)
        // Without the CA the certificate must be refused.
        let untrusted = try runTool("curl", ["-sS", "https://localhost:\(server.tlsPort)/"])
        XCTAssertNotEqual(untrusted.status, 0)
    }

    func testALPNPrefersH2ThenHTTP11AndRefusesTheRest() throws {
        let openssl = { (alpn: String) in
            try runTool("/bin/sh", ["-c", "echo | openssl s_client -connect 127.0.0.1:\(self.server.tlsPort) -alpn \(alpn) -CAfile \(certPath("ca.pem")) 2>&1"])
        }
        let r = try openssl("http/1.1,h2")
        XCTAssertTrue(r.stdout.contains("ALPN protocol: h2"), r.stdout)
        XCTAssertTrue(r.stdout.contains("TLSv1.3"), "TLS 1.3 by default")
        XCTAssertTrue(try openssl("http/1.1").stdout.contains("ALPN protocol: http/1.1"))
        XCTAssertFalse(try openssl("spdy/3").stdout.contains("ALPN protocol:"), "a client offering neither is refused")
        let http11 = try runTool("curl", ["-sS", "--http1.1", "-w", "|%{http_version}", "--cacert", certPath("ca.pem"), "https://localhost:\(server.tlsPort)/"])
        XCTAssertEqual(http11.stdout, "kiln\n|1.1", http11.stderr)
    }

    func testCurlEchoesLargeBodyOverTLS() throws {
        let dir = FileManager.default.temporaryDirectory.path
        let script = """
        head -c 3145728 /dev/urandom > \(dir)/kiln-echo-in
        curl -sS --cacert \(certPath("ca.pem")) --data-binary @\(dir)/kiln-echo-in https://localhost:\(server.tlsPort)/echo > \(dir)/kiln-echo-out
        cmp \(dir)/kiln-echo-in \(dir)/kiln-echo-out && echo same
        """
        let r = try runTool("/bin/sh", ["-c", script])
        XCTAssertEqual(r.stdout, "same\n", r.stderr)
    }

    func testNghttpStreamsAndTrailers() throws {
        let r = try runTool("nghttp", ["-v", "http://127.0.0.1:\(server.h2cPort)/stream?chunks=50"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let lines = r.stdout.split(separator: "\n").filter { $0.hasPrefix("chunk ") }
        XCTAssertEqual(lines.count, 50)
        XCTAssertEqual(lines.first, "chunk 00000000")
        XCTAssertEqual(lines.last, "chunk 00000049")
        XCTAssertTrue(r.stdout.contains("x-chunks: 50"), "trailers arrive")
        XCTAssertTrue(r.stdout.contains("SETTINGS_MAX_CONCURRENT_STREAMS(0x03):256"), "advertises the stream limit")
        XCTAssertTrue(r.stdout.contains("GOAWAY"), "nghttp ends cleanly")
    }

    func testNghttpOverTLSWithManyURIs() throws {
        let uris = (0..<20).map { "https://localhost:\(server.tlsPort)/stream?chunks=\($0 + 1)" }
        let r = try runTool("nghttp", ["-n", "-s"] + uris)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.stdout.components(separatedBy: "/stream?chunks=").count - 1, 20, r.stdout)
    }

    func testH2loadCleartextNoFailures() throws {
        let r = try runTool("h2load", ["-n", "20000", "-c", "10", "-m", "10", "http://127.0.0.1:\(server.h2cPort)/"], timeout: 120)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("20000 succeeded, 0 failed, 0 errored, 0 timeout"), r.stdout)
    }

    func testH2loadTLSNoFailures() throws {
        let r = try runTool("h2load", ["-n", "20000", "-c", "10", "-m", "10", "https://127.0.0.1:\(server.tlsPort)/"], timeout: 120)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("20000 succeeded, 0 failed, 0 errored, 0 timeout"), r.stdout)
        XCTAssertTrue(r.stdout.contains("TLSv1.3"), "negotiates TLS 1.3")
    }

    func testH2loadEchoWithBodies() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-h2load-body")
        try Data(repeating: 7, count: 10_000).write(to: file)
        let r = try runTool("h2load", ["-n", "2000", "-c", "4", "-m", "16", "-d", file.path, "http://127.0.0.1:\(server.h2cPort)/echo"], timeout: 120)
        XCTAssertTrue(r.stdout.contains("2000 succeeded, 0 failed, 0 errored, 0 timeout"), r.stdout)
    }
}

/// Mutual TLS: the server requires a client certificate signed by the development CA.
final class MutualTLSTests: XCTestCase {
    func testClientCertificateRequired() async throws {
        let server = try TestServer(clientCA: certPath("ca.pem"))
        let port = server.tlsPort
        let withCert = try runTool("curl", ["-sS", "--cacert", certPath("ca.pem"), "--cert", certPath("client.pem"),
                                        "--key", certPath("client.key"), "https://localhost:\(port)/"])
        XCTAssertEqual(withCert.stdout, "kiln\n", withCert.stderr)
        let without = try runTool("curl", ["-sS", "--cacert", certPath("ca.pem"), "https://localhost:\(port)/"])
        XCTAssertNotEqual(without.status, 0, "a client without a certificate is refused")

        // Our own client with and without its certificate.
        let group = try EventLoopGroup(threads: 1)
        let good = try HTTP2Client(host: "localhost", port: port, tls: TLSClientConfiguration(
            caPath: certPath("ca.pem"), certificateChainPath: certPath("client.pem"), privateKeyPath: certPath("client.key")), group: group)
        let ok = try await good.request(path: "/")
        XCTAssertEqual(ok.body, Array("kiln\n".utf8))
        let bad = try HTTP2Client(host: "localhost", port: port, tls: TLSClientConfiguration(caPath: certPath("ca.pem")), group: group)
        do {
            _ = try await bad.request(path: "/")
            XCTFail("request without a client certificate succeeded")
        } catch {}
        good.close()
        bad.close()
        await server.stop()
        group.shutdown()
    }
}
