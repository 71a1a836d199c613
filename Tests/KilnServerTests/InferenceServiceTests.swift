import Foundation
import KilnModel
import KilnTestSupport
import XCTest

/// `kiln serve --model` (release build, Vulkan on lavapipe) driven by Python grpcio with stubs made from
/// Schemas/ by grpcio-tools: Chat, Generate streaming, Tokenize/Detokenize, ListModels, concurrency equal to
/// running alone, the prefix cache, stop sequences, cancellation and bad requests.
final class InferenceServiceTests: XCTestCase {
    func testGrpcioAgainstKilnServe() throws {
        let port = 21000 + Int(getpid() % 5000)
        let server = Process()
        server.executableURL = URL(fileURLWithPath: kilnReleaseBinary)
        server.arguments = ["serve", "--no-tls", "--h2c-port", "\(port)", "--model", DefaultModel.path, "--kv-blocks", "512"]
        let log = Pipe()
        server.standardOutput = log
        server.standardError = log
        try server.run()
        defer { kill(server.processIdentifier, SIGKILL); server.waitUntilExit() }
        // Wait for the listener (loading the model onto the device takes a moment).
        var ready = false
        for _ in 0..<300 where !ready {
            usleep(100_000)
            ready = (try? runTool("/usr/bin/env", ["python3", "-c", "import socket; socket.create_connection(('127.0.0.1', \(port)), 1)"], timeout: 5).status) == 0
        }
        XCTAssertTrue(ready, "kiln serve did not start")
        let script = repositoryRoot.appendingPathComponent("Tests/KilnServerTests/inference_client.py").path
        let r = try runTool("/usr/bin/env", ["python3", script, "\(port)", repositoryRoot.appendingPathComponent("Schemas").path], timeout: 600)
        print(r.stdout)
        XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
        XCTAssertFalse(r.stdout.contains("FAIL"))
        XCTAssertGreaterThanOrEqual(r.stdout.components(separatedBy: "PASS").count - 1, 10)
    }
}
