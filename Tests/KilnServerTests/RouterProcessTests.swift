import Foundation
import KilnTestSupport
import XCTest

/// `kiln route` in front of three `kiln serve` workers on a tiny random-weight model, driven through grpcio
/// (router_client.py): relaying, keys, sessions, deadlines, cancels, health and failover after `kill -9`.
final class RouterProcessTests: XCTestCase {
    private var schemas: String { repositoryRoot.appendingPathComponent("Schemas").path }

    func testRouterRelaysKeepsSessionsAndSurvivesAWorkerKilled() throws {
        let model = try temporaryDirectory().appendingPathComponent("tiny.gguf").path
        let made = try runTool(kilnReleaseBinary, ["make-test-model", "--context", "8192", model])
        XCTAssertEqual(made.status, 0, made.stderr)
        let workers = try (0..<3).map { _ in try KilnServeProcess(model: model, ["--kv-blocks", "1024", "--backend", "cpu", "--max-batch", "4"]) }
        let router = try KilnServeProcess(routeTo: workers.map(\.h2cPort), ["--health-interval", "0.5"])
        let victim = workers[2]
        let state = try temporaryDirectory().appendingPathComponent("owners.json").path
        let ports = workers.map { "\($0.h2cPort)" }.joined(separator: ",")
        try KilnServeProcess.runScript("router_client.py", [schemas, "\(router.h2cPort)", ports, "\(victim.process.processIdentifier)", state],
                                       timeout: 300, servers: workers + [router])
        XCTAssertTrue(router.process.isRunning, router.log())
        XCTAssertTrue(router.log().contains("h2c://127.0.0.1:\(victim.h2cPort) is down"), router.log())
        // Not gRPC at all: HTTP 415, as from a worker.
        let plain = try runTool("curl", ["-sS", "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
                                         "-H", "content-type: text/plain", "--data", "hi",
                                         "http://127.0.0.1:\(router.h2cPort)/kiln.v1.Inference/Tokenize"], timeout: 30)
        XCTAssertEqual(plain.stdout, "415", plain.stderr)
        // The killed worker comes back on its port: the router takes it back, and its keys return to it.
        victim.process.waitUntilExit()
        let back = try KilnServeProcess(model: model, ["--kv-blocks", "1024", "--backend", "cpu", "--max-batch", "4"], port: victim.h2cPort)
        try KilnServeProcess.runScript("router_client.py", [schemas, "\(router.h2cPort)", ports, "0", state, "restarted"],
                                       timeout: 120, servers: [workers[0], workers[1], back, router])
        XCTAssertTrue(router.log().contains("h2c://127.0.0.1:\(victim.h2cPort) is up"), router.log())
    }
}

/// Session affinity on the real model: 30 sessions × 5 turns resending their history, through `kiln route`
/// with x-session-id, against one worker serving them all (the ideal) and round robin (affinity_client.py).
final class RouterAffinityTests: XCTestCase {
    func testAffinityReachesTheSingleWorkerIdeal() throws {
        let schemas = repositoryRoot.appendingPathComponent("Schemas").path
        let workers = try (0..<3).map { _ in try KilnServeProcess(["--kv-blocks", "512", "--result-cache-mb", "0"]) }
        let router = try KilnServeProcess(routeTo: workers.map(\.h2cPort))
        let roundRobin = try KilnServeProcess(routeTo: workers.map(\.h2cPort), ["--keyless-policy", "round_robin"])
        try KilnServeProcess.runScript("affinity_client.py", [schemas, "\(workers[0].h2cPort)", "\(router.h2cPort)", "\(roundRobin.h2cPort)"],
                                       timeout: 900, servers: workers + [router, roundRobin])
    }
}
