import Foundation
import KilnRouter
import KilnTestSupport
import XCTest

/// Failover that loses nothing behind `kiln route` (grpcio): a stream whose worker is killed goes on on
/// another one token for token (the real model, migration_client.py), and a draining worker hands its
/// streams over after `--handoff-grace` instead of running them out (drain_client.py).
final class RouterMigrationTests: XCTestCase {
    private var schemas: String { repositoryRoot.appendingPathComponent("Schemas").path }
    /// One decode thread each: three workers share this machine's cores. No result cache, so that every
    /// answer is computed where it runs.
    private let workerArguments = ["--backend", "cpu", "--decode-threads", "1", "--kv-blocks", "2048", "--result-cache-mb", "0"]

    func testStreamsGoOnExactlyWhenTheirWorkerIsKilled() throws {
        let workers = try (0..<3).map { _ in try KilnServeProcess(workerArguments) }
        let router = try KilnServeProcess(routeTo: workers.map(\.h2cPort), ["--health-interval", "0.5"])
        let ports = workers.map { "\($0.h2cPort)" }.joined(separator: ",")
        try KilnServeProcess.runScript("migration_client.py", [schemas, "\(router.h2cPort)", ports, "\(workers[2].process.processIdentifier)"],
                                       timeout: 600, servers: workers + [router])
        XCTAssertTrue(router.process.isRunning, router.log())
        XCTAssertTrue(router.log().contains("moving /kiln.v1.Inference/"), router.log())
    }

    /// On a random-weight model four times the real one's size: slow enough per token that streams needing
    /// a minute more stay short (attention over thousands of positions would slow the run down as it goes).
    func testADrainingWorkerHandsItsStreamsOver() throws {
        let model = try temporaryDirectory().appendingPathComponent("large.gguf").path
        let made = try runTool(kilnReleaseBinary, ["make-test-model", "--dim", "2048", "--ffn-dim", "8192", "--layers", "8", "--heads", "16",
                                                   "--kv-heads", "4", "--context", "8192", "--type", "Q4_0", model])
        XCTAssertEqual(made.status, 0, made.stderr)
        let workers = try (0..<3).map { _ in try KilnServeProcess(model: model, workerArguments + ["--handoff-grace", "2", "--drain-seconds", "300"]) }
        // One key's eight streams all stay on its owner (no bounded-load spill).
        let router = try KilnServeProcess(routeTo: workers.map(\.h2cPort), ["--health-interval", "0.5", "--balance-factor", "100"])
        let ports = workers.map { "\($0.h2cPort)" }.joined(separator: ",")
        let pids = workers.map { "\($0.process.processIdentifier)" }.joined(separator: ",")
        // The key's owner and the successor its streams move to, as the router computes them (every replica
        // does: `ReplicaAgreementTests`); the undisturbed run goes to the third worker at the same time.
        var ring = Balancer(members: workers.map { RingMember(name: "127.0.0.1:\($0.h2cPort)") }, balanceFactor: 100)
        let key = StableHash.hash("drain-key")
        let owner = try XCTUnwrap(ring.pick(keyHash: key, now: 0)).member
        ring.finish(member: owner, result: .abandoned, seconds: nil, now: 0)
        let successor = try XCTUnwrap(ring.pick(keyHash: key, excluding: [owner], isRetry: true, now: 0)).member
        try KilnServeProcess.runScript("drain_client.py", [schemas, "\(router.h2cPort)", ports, pids, "\(owner)", "\(successor)", "2"],
                                       timeout: 600, servers: workers + [router])
        let drained = workers.filter { !$0.process.isRunning }
        XCTAssertEqual(drained.count, 1)
        for worker in drained {
            worker.process.waitUntilExit()
            XCTAssertEqual(worker.process.terminationReason, .exit, worker.log())
            XCTAssertEqual(worker.process.terminationStatus, 0, worker.log())
            // Usually the streams are handed over after the grace ("handed 8 stream(s) over"). In two runs of
            // nine the router's connection to the draining worker closed at once instead, and the streams moved
            // on "connection closed": the client sees the same (the script checks it), but the cause is not
            // found yet. Printed, so that a run shows which way it went.
            print("drain: \(worker.log().contains("handed 8 stream(s) over") ? "handed over after the grace" : "the connection closed at once; moved on that")")
            // Why each of the worker's connections ended during the drain (for the early-close case above).
            for line in worker.log().split(separator: "\n") where line.contains("closed while draining") || line.contains("handed") {
                print("drain, worker: \(line)")
            }
        }
    }

    /// Two routers in front of the same workers agree on every key's worker, before and after one is killed.
    func testTwoRoutersAgreeWithoutCoordination() throws {
        let model = try temporaryDirectory().appendingPathComponent("tiny.gguf").path
        let made = try runTool(kilnReleaseBinary, ["make-test-model", model])
        XCTAssertEqual(made.status, 0, made.stderr)
        let workers = try (0..<3).map { _ in try KilnServeProcess(model: model, ["--backend", "cpu", "--decode-threads", "1", "--kv-blocks", "64"]) }
        // Given their backends in different orders.
        let a = try KilnServeProcess(routeTo: workers.map(\.h2cPort), ["--health-interval", "0.5"])
        let b = try KilnServeProcess(routeTo: [workers[2], workers[0], workers[1]].map(\.h2cPort), ["--health-interval", "0.5"])
        try KilnServeProcess.runScript("replicas_client.py", [schemas, "\(a.h2cPort)", "\(b.h2cPort)", workers.map { "\($0.h2cPort)" }.joined(separator: ","),
                                                             "\(workers[2].process.processIdentifier)"], timeout: 300, servers: workers + [a, b])
    }
}
