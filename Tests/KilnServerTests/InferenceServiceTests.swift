import Foundation
import KilnModel
import KilnTestSupport
import XCTest

/// `kiln serve` on the real model (the backend `auto` picks: the CPU backend without a GPU) driven by Python grpcio with stubs made from Schemas/
/// by grpcio-tools: the API's behaviour, then the serving engine's acceptance scenarios.
final class InferenceServiceTests: XCTestCase {
    private var schemas: String { repositoryRoot.appendingPathComponent("Schemas").path }

    /// Chat, streaming, tokenization, models, concurrency, prefix cache, stop strings, seeds, logprobs,
    /// ignore_eos, cancellation, deadlines, each bad request, sessions ending, blocks free afterwards.
    func testAPIBehaviour() throws {
        let server = try KilnServeProcess(["--kv-blocks", "512", "--result-cache-mb", "0"])
        let passed = try KilnServeProcess.runScript("inference_client.py", ["\(server.h2cPort)", schemas], servers: [server])
        XCTAssertEqual(passed, 34)   // every check ran
    }

    /// 32 concurrent greedy Generate streams with different prompts equal the same requests alone. With the
    /// engine's pipelined steps forced on (lavapipe's default is off, a GPU's on), as in the next two tests:
    /// the other tests cover the synchronous path.
    func testThirtyTwoConcurrentStreamsEqualAlone() throws {
        let server = try KilnServeProcess(["--kv-blocks", "512", "--result-cache-mb", "0"], environment: ["KILN_ENGINE_PIPELINE": "1"])
        try KilnServeProcess.runScript("engine_acceptance.py", [schemas, "concurrent", "\(server.h2cPort)"], servers: [server])
    }

    /// A 10-turn chat session: turn 10 takes ≥ 90% of its prompt from the prefix cache and its first token
    /// comes in under half the time of the same prompt on a server with prefix caching off.
    func testTenTurnSessionReusesItsHistory() throws {
        let server = try KilnServeProcess(["--kv-blocks", "512", "--result-cache-mb", "0"])
        let uncached = try KilnServeProcess(["--kv-blocks", "512", "--result-cache-mb", "0", "--no-prefix-cache"])
        try KilnServeProcess.runScript("engine_acceptance.py", [schemas, "session", "\(server.h2cPort)", "\(uncached.h2cPort)"],
                                       servers: [server, uncached])
    }

    /// 16 concurrent requests of 200 prompt + 100 new tokens on a pool of 64 blocks complete with the tokens
    /// they produce unpressured, through preemption and queueing.
    func testKVPressure() throws {
        let server = try KilnServeProcess(["--kv-blocks", "1024", "--result-cache-mb", "0"])
        let pressed = try KilnServeProcess(["--kv-blocks", "64", "--result-cache-mb", "0"])
        try KilnServeProcess.runScript("engine_acceptance.py", [schemas, "pressure", "\(server.h2cPort)", "\(pressed.h2cPort)"],
                                       servers: [server, pressed])
    }

    /// A device lost mid-stream (VK_ERROR_DEVICE_LOST, injected after 5 submissions on a small model): the
    /// stream ends with UNAVAILABLE naming the loss, later generations fail at once, and the process keeps
    /// serving other RPCs.
    func testLostDeviceFailsRequestsNotTheProcess() throws {
        let dir = try temporaryDirectory()
        let model = dir.appendingPathComponent("tiny.gguf").path
        let made = try runTool(kilnReleaseBinary, ["make-test-model", "--layers", "2", "--dim", "64", model])
        XCTAssertEqual(made.status, 0, made.stderr)
        let server = try KilnServeProcess(model: model, ["--kv-blocks", "64", "--backend", "vulkan"], environment: ["KILN_VULKAN_FAULT_DEVICE_LOST_AFTER": "5", "KILN_ENGINE_PIPELINE": "1"])
        try KilnServeProcess.runScript("engine_acceptance.py", [schemas, "device-lost", "\(server.h2cPort)"], servers: [server])
    }

    /// 1,000 streams reset by the client at random points (a small random-weight model): each reaches the
    /// engine, and afterwards the pool's free blocks, the engine's streams, the sessions, the process's
    /// descriptors and its memory are back where they started. Then the result cache on the same server.
    func testCancelledStreamsLeakNothingAndResultCache() throws {
        let dir = try temporaryDirectory()
        let model = dir.appendingPathComponent("tiny.gguf").path
        let made = try runTool(kilnReleaseBinary, ["make-test-model", "--layers", "2", "--dim", "64", model])
        XCTAssertEqual(made.status, 0, made.stderr)
        let server = try KilnServeProcess(model: model, ["--kv-blocks", "256"], environment: ["KILN_ENGINE_PIPELINE": "1"])
        try KilnServeProcess.runScript("engine_acceptance.py", [schemas, "cancel", "\(server.h2cPort)", "\(server.process.processIdentifier)"],
                                       servers: [server])
        try KilnServeProcess.runScript("engine_acceptance.py", [schemas, "result-cache", "\(server.h2cPort)"], servers: [server])
    }

    /// With the result cache on: a call cut by its deadline is not stored (the same call without one is
    /// computed whole), a chat turn cut by its deadline leaves the session as it was, and GetStats counts a
    /// deadline as a deadline and a stop string as a completion (a small random-weight model).
    func testGenerationsCutShortAreNeitherCachedNorCommitted() throws {
        let model = try temporaryDirectory().appendingPathComponent("small.gguf").path
        // Large enough that 1,500 tokens take seconds: the CPU backend ran a 4-layer, 256-wide model's 1,500
        // tokens inside the 0.3 s deadline once (CI, 2026-12-08), and the cut was not tested.
        let made = try runTool(kilnReleaseBinary, ["make-test-model", "--layers", "8", "--dim", "512", "--ffn-dim", "2048",
                                                   "--heads", "8", "--kv-heads", "4", "--context", "2048", model])
        XCTAssertEqual(made.status, 0, made.stderr)
        let server = try KilnServeProcess(model: model, ["--kv-blocks", "512"])
        try KilnServeProcess.runScript("engine_acceptance.py", [schemas, "cut-short", "\(server.h2cPort)"], servers: [server])
    }
}

/// SIGTERM with 16 streaming Generate calls in flight (the real model): within `--drain-seconds` they all
/// complete; past it each ends with UNAVAILABLE; either way the process exits 0. A second signal exits at once.
final class ShutdownDrainTests: XCTestCase {
    private var schemas: String { repositoryRoot.appendingPathComponent("Schemas").path }

    private func stop(_ mode: String, drainSeconds: Int, expectStatus: Int32, within seconds: Double) throws {
        let server = try KilnServeProcess(["--kv-blocks", "1024", "--drain-seconds", "\(drainSeconds)"])
        try KilnServeProcess.runScript("shutdown_client.py", [schemas, "\(server.h2cPort)", "\(server.process.processIdentifier)", mode],
                                       timeout: 300, servers: [server])
        let deadline = Date().addingTimeInterval(seconds)
        while server.process.isRunning && Date() < deadline { usleep(20_000) }
        XCTAssertFalse(server.process.isRunning, "\(mode): still running \(seconds) s after the streams ended\n\(server.log())")
        if !server.process.isRunning {
            XCTAssertEqual(server.process.terminationStatus, expectStatus, "\(mode)\n\(server.log())")
        }
    }

    func testStreamsInFlightCompleteWithinTheDrain() throws {
        try stop("drain", drainSeconds: 120, expectStatus: 0, within: 10)
    }

    func testStreamsPastTheDrainDeadlineEndUnavailable() throws {
        try stop("deadline", drainSeconds: 2, expectStatus: 0, within: 10)
    }

    func testASecondSignalExitsAtOnce() throws {
        try stop("twice", drainSeconds: 120, expectStatus: 1, within: 2)
    }
}
