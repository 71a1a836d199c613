import Foundation
import KilnTestSupport
import XCTest

/// Peer input at its boundaries, against `kiln serve` on a tiny random-weight model through grpcio: every
/// sampling field, texts, token ids, protobuf on the wire and session ids (boundary_client.py); and sessions
/// owned by their creator's client certificate (tenant_client.py).
final class BoundaryValueTests: XCTestCase {
    private var schemas: String { repositoryRoot.appendingPathComponent("Schemas").path }

    private func tinyModel() throws -> String {
        let model = try temporaryDirectory().appendingPathComponent("tiny.gguf").path
        let made = try runTool(kilnReleaseBinary, ["make-test-model", model])
        XCTAssertEqual(made.status, 0, made.stderr)
        return model
    }

    func testEachFieldsBoundaryValuesGetTheirStatus() throws {
        let server = try KilnServeProcess(model: try tinyModel(), ["--kv-blocks", "64"])
        let passed = try KilnServeProcess.runScript("boundary_client.py", ["\(server.h2cPort)", schemas], timeout: 300, servers: [server])
        XCTAssertGreaterThan(passed, 90)
        XCTAssertTrue(server.process.isRunning)
    }

    /// Past `--max-waiting` queued requests, new ones get RESOURCE_EXHAUSTED, counted by GetStats.
    func testRequestsPastTheQueueAreRefused() throws {
        let server = try KilnServeProcess(model: try tinyModel(), ["--kv-blocks", "64", "--max-waiting", "1", "--max-batch", "1", "--step-tokens", "1"])
        try KilnServeProcess.runScript("engine_acceptance.py", [schemas, "load-shed", "\(server.h2cPort)"], timeout: 180, servers: [server])
    }

    func testASessionAnswersOnlyItsCreator() throws {
        // A second client, its certificate signed by the same development CA under another name.
        let dir = try temporaryDirectory()
        let key = dir.appendingPathComponent("b.key").path, csr = dir.appendingPathComponent("b.csr").path
        let cert = dir.appendingPathComponent("b.pem").path, ext = dir.appendingPathComponent("b.ext").path
        try "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n".write(toFile: ext, atomically: true, encoding: .utf8)
        let request = try runTool("openssl", ["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                                              "-keyout", key, "-out", csr, "-subj", "/CN=tenant-b"])
        XCTAssertEqual(request.status, 0, request.stderr)
        let sign = try runTool("openssl", ["x509", "-req", "-in", csr, "-CA", certPath("ca.pem"), "-CAkey", certPath("ca.key"),
                                           "-set_serial", "4242", "-days", "2", "-out", cert, "-extfile", ext])
        XCTAssertEqual(sign.status, 0, sign.stderr)
        let server = try KilnServeProcess(model: try tinyModel(), tls: true, ["--kv-blocks", "64", "--client-ca", certPath("ca.pem")])
        try KilnServeProcess.runScript("tenant_client.py", ["\(server.tlsPort)", schemas, certPath("ca.pem"), certPath("client.pem"),
                                                            certPath("client.key"), cert, key], timeout: 120, servers: [server])
    }
}
