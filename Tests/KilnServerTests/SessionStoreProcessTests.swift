import Foundation
import KilnTestSupport
import XCTest

/// Chat sessions shared through Redis (`kiln serve --session-store`), behind `kiln route`, on the real model:
/// a session outlives its worker, and Redis paused or stopped fails no call (session_store_client.py).
final class SessionStoreProcessTests: XCTestCase {
    private var schemas: String { repositoryRoot.appendingPathComponent("Schemas").path }

    /// Debian's redis-server (`make test` installs it) on a loopback port of its own, nothing saved to disk;
    /// killed when the test ends.
    private func startRedis() throws -> (Process, Int) {
        let port = KilnServeProcess.freePort()
        let redis = Process()
        redis.executableURL = URL(fileURLWithPath: "/usr/bin/redis-server")
        redis.arguments = ["--port", "\(port)", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        redis.standardOutput = FileHandle.nullDevice
        try redis.run()
        addTeardownBlock {
            kill(redis.processIdentifier, SIGCONT)
            kill(redis.processIdentifier, SIGKILL)
            redis.waitUntilExit()
        }
        let deadline = Date().addingTimeInterval(10)
        while !KilnServeProcess.accepts(port), Date() < deadline { usleep(20_000) }
        XCTAssertTrue(KilnServeProcess.accepts(port), "redis-server did not listen")
        return (redis, port)
    }

    func testSessionsOutliveTheirWorkerAndRedisFaultsFailNothing() throws {
        let (redis, redisPort) = try startRedis()

        let arguments = ["--backend", "cpu", "--decode-threads", "1", "--kv-blocks", "1024", "--result-cache-mb", "0",
                         "--session-store", "redis://127.0.0.1:\(redisPort)"]
        let workers = try (0..<3).map { _ in try KilnServeProcess(arguments) }
        let router = try KilnServeProcess(routeTo: workers.map(\.h2cPort), ["--health-interval", "0.5"])
        try KilnServeProcess.runScript("session_store_client.py", [schemas, "\(router.h2cPort)", workers.map { "\($0.h2cPort)" }.joined(separator: ","),
                                                                  workers.map { "\($0.process.processIdentifier)" }.joined(separator: ","),
                                                                  "\(redis.processIdentifier)"],
                                       timeout: 300, servers: workers + [router])
        // The fallback is logged where it happened.
        let logs = workers.filter(\.process.isRunning).map { $0.log() }.joined()
        XCTAssertTrue(logs.contains("it continues from this worker's memory"), logs.suffix(4000).description)
        XCTAssertTrue(logs.contains("it lives in this worker's memory only"), logs.suffix(4000).description)
    }

    /// The result cache's second level: an answer computed by one worker is replayed by another.
    func testResultsAreSharedThroughRedis() throws {
        let (redis, redisPort) = try startRedis()
        let model = try temporaryDirectory().appendingPathComponent("tiny.gguf").path
        let made = try runTool(kilnReleaseBinary, ["make-test-model", model])
        XCTAssertEqual(made.status, 0, made.stderr)
        let workers = try (0..<2).map { _ in
            try KilnServeProcess(model: model, ["--backend", "cpu", "--decode-threads", "1", "--kv-blocks", "256",
                                                "--result-cache-store", "redis://127.0.0.1:\(redisPort)"])
        }
        try KilnServeProcess.runScript("result_store_client.py", [schemas, "\(workers[0].h2cPort)", "\(workers[1].h2cPort)", "\(redis.processIdentifier)"],
                                       timeout: 120, servers: workers)
    }
}
