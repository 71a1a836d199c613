import Foundation
import KilnAPI
import KilnHTTP2
import KilnRPC
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
        // Not gRPC at all: HTTP 415, from the router as from a worker. curl sends the body after the head, so
        // an answer sent mid-upload would race it (curl 7.88 reported 1 in 20 such answers as a stream error):
        // 40 in a row, from each.
        for port in [router.h2cPort, workers[0].h2cPort] {
            let plain = try runTool("/bin/sh", ["-c", "for i in $(seq 40); do curl -sS --http2-prior-knowledge -o /dev/null -w '%{http_code} ' -X POST "
                                                + "-H 'content-type: text/plain' --data hi http://127.0.0.1:\(port)/kiln.v1.Inference/Tokenize; done"], timeout: 60)
            XCTAssertEqual(plain.stdout, String(repeating: "415 ", count: 40), plain.stderr)
        }
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

/// `kiln route` learning its backends while it runs: a `--backends-file` followed on change and on SIGHUP,
/// and `--backend-dns` (localhost's records).
final class RouterDiscoveryProcessTests: XCTestCase {
    private func backends(_ port: Int, group: EventLoopGroup) async throws -> [String] {
        let channel = try RPCChannel(host: "127.0.0.1", port: port, group: group)
        defer { channel.close() }
        return try await Kiln_V1_InferenceClient(channel: channel).getStats(Kiln_V1_GetStatsRequest(), options: RPCCallOptions(timeout: 5))
            .backends.map(\.address).sorted()
    }

    /// Polls the router's GetStats until its backends are `expected` (the file is checked every second).
    private func waitForBackends(_ expected: [String], router: KilnServeProcess, group: EventLoopGroup,
                                 file: StaticString = #filePath, line: UInt = #line) async throws {
        let until = Date().addingTimeInterval(15)
        var seen: [String] = []
        while Date() < until {
            seen = try await backends(router.h2cPort, group: group)
            if seen == expected.sorted() { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        XCTFail("the router lists \(seen), not \(expected.sorted())\n\(router.log().suffix(3000))", file: file, line: line)
    }

    func testABackendsFileIsFollowedAndSIGHUPRereadsIt() async throws {
        let model = try temporaryDirectory().appendingPathComponent("tiny.gguf").path
        let made = try runTool(kilnReleaseBinary, ["make-test-model", model])
        XCTAssertEqual(made.status, 0, made.stderr)
        let workers = try (0..<2).map { _ in try KilnServeProcess(model: model, ["--kv-blocks", "256", "--backend", "cpu"]) }
        let a = "h2c://127.0.0.1:\(workers[0].h2cPort)", b = "h2c://127.0.0.1:\(workers[1].h2cPort)"
        let file = try temporaryDirectory().appendingPathComponent("backends.txt")
        try "\(a)\n".write(to: file, atomically: true, encoding: .utf8)
        let router = try KilnServeProcess(routeTo: [], ["--backends-file", file.path, "--health-interval", "0.5"])
        let group = try EventLoopGroup(threads: 1)
        defer { group.shutdown() }
        try await waitForBackends([a], router: router, group: group)

        // A new list, renamed into place: followed without a signal, and calls reach the new worker.
        try "# both\n\(a)\n\(b)\n".write(to: file, atomically: true, encoding: .utf8)
        try await waitForBackends([a, b], router: router, group: group)
        let channel = try RPCChannel(host: "127.0.0.1", port: router.h2cPort, group: group)
        defer { channel.close() }
        let client = Kiln_V1_InferenceClient(channel: channel)
        var owners = Set<Int>()
        for i in 0..<24 {
            var request = Kiln_V1_TokenizeRequest()
            request.text = "key \(i)"
            var options = RPCCallOptions(timeout: 10)
            options.metadata.add("x-session-id", "user-\(i)")
            _ = try await client.tokenize(request, options: options)
        }
        let stats = try await client.getStats(Kiln_V1_GetStatsRequest(), options: RPCCallOptions(timeout: 5))
        for backend in stats.backends where backend.keyedPicks > 0 { owners.insert(Int(backend.address.split(separator: ":").last!)!) }
        XCTAssertEqual(owners.count, 2, "keyed calls spread over both backends: \(stats.backends.map(\.keyedPicks))")

        // Changed in place with its size and times put back: only SIGHUP makes the router read it.
        var st = stat()
        XCTAssertEqual(stat(file.path, &st), 0)
        let handle = try FileHandle(forWritingTo: file)
        let onlyB = "# one\n\(b)\n".padding(toLength: Int(st.st_size), withPad: " ", startingAt: 0)
        try handle.write(contentsOf: Data(onlyB.utf8))
        try handle.close()
        var times = [st.st_atim, st.st_mtim]
        XCTAssertEqual(utimensat(AT_FDCWD, file.path, &times, 0), 0)
        kill(router.process.processIdentifier, SIGHUP)
        try await waitForBackends([b], router: router, group: group)
        XCTAssertTrue(router.process.isRunning)
    }

    func testBackendDNSFindsLocalhostsWorker() async throws {
        let model = try temporaryDirectory().appendingPathComponent("tiny.gguf").path
        let made = try runTool(kilnReleaseBinary, ["make-test-model", model])
        XCTAssertEqual(made.status, 0, made.stderr)
        let worker = try KilnServeProcess(model: model, ["--kv-blocks", "256", "--backend", "cpu"])
        let router = try KilnServeProcess(routeTo: [], ["--backend-dns", "localhost:\(worker.h2cPort)", "--health-interval", "0.5"])
        let group = try EventLoopGroup(threads: 1)
        defer { group.shutdown() }
        let listed = try await backends(router.h2cPort, group: group)
        XCTAssertTrue(listed.contains("h2c://127.0.0.1:\(worker.h2cPort)"), "\(listed)")
        let channel = try RPCChannel(host: "127.0.0.1", port: router.h2cPort, group: group)
        defer { channel.close() }
        var request = Kiln_V1_TokenizeRequest()
        request.text = "through a name"
        // Every call lands on 127.0.0.1 (an ::1 record, where nothing listens, fails over within the call).
        for _ in 0..<10 {
            let reply = try await Kiln_V1_InferenceClient(channel: channel).tokenize(request, options: RPCCallOptions(timeout: 10))
            XCTAssertFalse(reply.tokenIds.isEmpty)
        }
    }
}
