import Foundation
import KilnModel
import KilnTestSupport
import XCTest

/// The client commands against `kiln serve` (TLS and h2c): `kiln generate --server` and `kiln chat`.
final class ClientCommandTests: XCTestCase {
    /// Greedy `kiln generate --server` (h2c and TLS on the development CA) prints what the local decoder does.
    func testGenerateOnTheServerEqualsLocal() throws {
        let server = try KilnServeProcess(tls: true, ["--kv-blocks", "256"])
        let args = ["generate", "--prompt", "The three primary colours are", "--max-tokens", "24"]
        let local = try runTool(kilnReleaseBinary, args, timeout: 300)
        XCTAssertEqual(local.status, 0, local.stderr)
        let h2c = try runTool(kilnReleaseBinary, args + ["--server", "h2c://127.0.0.1:\(server.h2cPort)"], timeout: 300)
        XCTAssertEqual(h2c.status, 0, h2c.stderr + server.log())
        let tls = try runTool(kilnReleaseBinary, args + ["--server", "https://127.0.0.1:\(server.tlsPort)", "--ca", certPath("ca.pem")], timeout: 300)
        XCTAssertEqual(tls.status, 0, tls.stderr + server.log())
        XCTAssertGreaterThan(local.stdout.count, 20)
        XCTAssertEqual(h2c.stdout, local.stdout)
        XCTAssertEqual(tls.stdout, local.stdout)
        // Sampled with a seed: one sampler, so the same text here and on the server.
        let seeded = args + ["--temperature", "0.9", "--seed", "7"]
        let localSeeded = try runTool(kilnReleaseBinary, seeded, timeout: 300)
        XCTAssertEqual(localSeeded.status, 0, localSeeded.stderr)
        let remoteSeeded = try runTool(kilnReleaseBinary, seeded + ["--server", "h2c://127.0.0.1:\(server.h2cPort)"], timeout: 300)
        XCTAssertEqual(remoteSeeded.status, 0, remoteSeeded.stderr + server.log())
        XCTAssertNotEqual(localSeeded.stdout, local.stdout, "temperature 0.9 should not give the greedy text")
        XCTAssertEqual(remoteSeeded.stdout, localSeeded.stdout)
    }

    /// `kiln chat --session`: two turns typed on stdin; the second is answered in context and reuses the
    /// cached history; `/end` ends the session.
    func testChatWithASession() throws {
        let server = try KilnServeProcess(["--kv-blocks", "256"])
        let input = Data("What is the capital of Germany?\nWhat is its population?\n/end\n".utf8)
        let r = try runTool(kilnReleaseBinary, ["chat", "--server", "h2c://127.0.0.1:\(server.h2cPort)", "--session", "new",
                                               "--temperature", "0", "--max-tokens", "32", "--verbose"], timeout: 300, stdin: input)
        XCTAssertEqual(r.status, 0, r.stderr + server.log())
        XCTAssertTrue(r.stdout.contains("Berlin"), r.stdout)
        XCTAssertEqual(r.stdout.split(separator: "\n").filter { !$0.isEmpty }.count >= 2, true, r.stdout)
        let usage = r.stderr.split(separator: "\n").filter { $0.contains("prompt tokens") }
        XCTAssertEqual(usage.count, 2, r.stderr)
        // The second turn's prompt starts with the first turn's history, from the prefix cache.
        let cached = usage.last.flatMap { line in line.split(separator: ",").first(where: { $0.contains("cached") }) }
            .flatMap { Int($0.trimmingCharacters(in: .whitespaces).split(separator: " ").first ?? "") } ?? 0
        XCTAssertGreaterThanOrEqual(cached, 32, r.stderr)
        // The server issued the id ("new"): 128 random bits as 32 hex digits, sent back in x-session-id.
        // (The first turn's prompt "> " stands before the note on the same line.)
        var issued = ""
        for line in r.stderr.split(separator: "\n") {
            if let found = line.range(of: "session ") { issued = String(line[found.upperBound...]); break }
        }
        XCTAssertEqual(issued.count, 32, r.stderr)
        XCTAssertTrue(issued.allSatisfy { $0.isHexDigit }, r.stderr)
    }

    /// `kiln generate` on a qwen2 model (QKV biases, which the Vulkan kernels lack) with the default backend
    /// runs on the native CPU backend, says so, and prints what `--backend cpu` prints.
    func testGenerateOnQwen2WithTheDefaultBackend() throws {
        let model = try temporaryDirectory().appendingPathComponent("qwen2.gguf").path
        let made = try runTool(kilnReleaseBinary, ["make-test-model", "--architecture", "qwen2", model])
        XCTAssertEqual(made.status, 0, made.stderr)
        let args = ["generate", "--model", model, "--prompt", "a b c", "--max-tokens", "8", "--temperature", "0"]
        let auto = try runTool(kilnReleaseBinary, args, timeout: 120)
        XCTAssertEqual(auto.status, 0, auto.stderr)
        XCTAssertTrue(auto.stderr.contains("backend auto: the CPU backend ("), auto.stderr)
        let cpu = try runTool(kilnReleaseBinary, args + ["--backend", "cpu"], timeout: 120)
        XCTAssertEqual(cpu.status, 0, cpu.stderr)
        XCTAssertEqual(auto.stdout, cpu.stdout)
        XCTAssertFalse(auto.stdout.isEmpty)
    }
}

/// Server reflection on `kiln serve`, driven by grpcio-reflection's client (grpcurl's protocol).
final class ReflectionTests: XCTestCase {
    func testGrpcioReflectionClient() throws {
        let dir = try temporaryDirectory()
        let model = dir.appendingPathComponent("tiny.gguf").path
        let made = try runTool(kilnReleaseBinary, ["make-test-model", model])
        XCTAssertEqual(made.status, 0, made.stderr)
        let server = try KilnServeProcess(model: model, ["--kv-blocks", "64"])
        let passed = try KilnServeProcess.runScript("reflection_client.py", ["\(server.h2cPort)", repositoryRoot.appendingPathComponent("Schemas").path],
                                                    servers: [server])
        XCTAssertEqual(passed, 10)   // every check ran
    }
}
