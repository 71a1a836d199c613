import Foundation
import KilnAPI
import KilnHTTP2
import KilnRPC
import KilnRouter
@testable import KilnServer
import KilnTestSupport
import Logging
import Synchronization
import XCTest
@testable import KilnServer

/// `kiln route`'s parts in one process: backend discovery (file, reload, DNS), load reports, and the
/// deadline the relay passes on and enforces, in front of a stand-in worker that records what it receives.
final class RouterInProcessTests: XCTestCase {
    let logger = Logger(label: "router-test")

    func address(_ port: Int, weight: Int = 1) -> BackendAddress { BackendAddress(host: "127.0.0.1", port: port, weight: weight) }

    func testBackendListsParseWithLineNumbersForMistakes() throws {
        let list = try BackendDiscovery.parseList("""
            # workers
            h2c://10.0.0.1:8080
              https://worker-2.example:8443?weight=3   # the big one

            h2c://[fd00::7]:9000
            """, source: "f")
        XCTAssertEqual(list.map(\.description), ["h2c://10.0.0.1:8080", "https://worker-2.example:8443?weight=3", "h2c://[fd00::7]:9000"])
        XCTAssertThrowsError(try BackendDiscovery.parseList("h2c://a:1\nhttp://b:2\n", source: "f")) { error in
            XCTAssertTrue("\(error)".hasPrefix("f:2: "), "\(error)")
        }
        XCTAssertEqual(try BackendDiscovery.DNSName.parse("workers.kiln.svc:8080").get(),
                       BackendDiscovery.DNSName(name: "workers.kiln.svc", port: 8080, tls: false, weight: 1))
        XCTAssertNotNil(try? BackendDiscovery.DNSName.parse("https://w:8443?weight=2").get())
        XCTAssertNil(try? BackendDiscovery.DNSName.parse("no-port").get())
    }

    func testABackendsFileIsFollowedOnChangeAndOnReloadAndABrokenOneIsIgnored() throws {
        let group = try EventLoopGroup(threads: 1)
        defer { group.shutdown() }
        let file = try temporaryDirectory().appendingPathComponent("backends.txt")
        try "h2c://127.0.0.1:1001\n# a comment\nh2c://127.0.0.1:1002?weight=2\n".write(to: file, atomically: true, encoding: .utf8)
        let set = try BackendSet(addresses: [], group: group, tls: nil, health: HealthService(), logger: logger)
        defer { set.close() }
        let reloads = Atomic<Int>(0)
        let discovery = BackendDiscovery(fixed: [address(1000)], file: file.path, dnsNames: [], backends: set, prober: nil,
                                         reloadRequests: { reloads.load(ordering: .relaxed) }, logger: logger)
        try set.update(addresses: try discovery.loadInitial())
        XCTAssertEqual(set.addresses, [address(1000), address(1001), address(1002, weight: 2)])
        let kept = set.backends[1]

        // Replaced (as an editor or a ConfigMap does): taken at the next poll; backends that stay are the same objects.
        try "h2c://127.0.0.1:1001\nh2c://127.0.0.1:1003\n".write(to: file, atomically: true, encoding: .utf8)
        discovery.poll(now: BackendSet.now())
        XCTAssertEqual(set.addresses, [address(1000), address(1001), address(1003)])
        XCTAssertTrue(set.backends[1] === kept, "a backend that stays keeps its connections and state")

        // Wrong (a typo, a scheme we do not speak): the last good list stays.
        try "h2c://127.0.0.1:1004\nftp://nope\n".write(to: file, atomically: true, encoding: .utf8)
        discovery.poll(now: BackendSet.now())
        XCTAssertEqual(set.addresses, [address(1000), address(1001), address(1003)])

        // Changed in place with its size and time put back: nothing tells the poll, only a reload (SIGHUP) does.
        try "h2c://127.0.0.1:1005\n".write(to: file, atomically: true, encoding: .utf8)
        discovery.poll(now: BackendSet.now())
        XCTAssertEqual(set.addresses, [address(1000), address(1005)])
        var st = stat()
        XCTAssertEqual(stat(file.path, &st), 0)
        let handle = try FileHandle(forWritingTo: file)  // same inode, same length
        try handle.write(contentsOf: Data("h2c://127.0.0.1:1006\n".utf8))
        try handle.close()
        var times = [st.st_atim, st.st_mtim]
        XCTAssertEqual(utimensat(AT_FDCWD, file.path, &times, 0), 0)
        discovery.poll(now: BackendSet.now())
        XCTAssertEqual(set.addresses, [address(1000), address(1005)], "a file whose stamp did not change is not re-read")
        reloads.add(1, ordering: .relaxed)
        discovery.poll(now: BackendSet.now())
        XCTAssertEqual(set.addresses, [address(1000), address(1006)], "a reload reads the file whatever its stamp")
    }

    func testDNSNamesAreReResolvedOnTheirIntervalAndAFailedLookupKeepsTheLastAnswer() throws {
        let group = try EventLoopGroup(threads: 1)
        defer { group.shutdown() }
        let answer = Mutex<Result<[String], BackendAddressError>>(.success(["10.0.0.2", "10.0.0.1"]))
        let set = try BackendSet(addresses: [], group: group, tls: nil, health: HealthService(), logger: logger)
        defer { set.close() }
        let name = try BackendDiscovery.DNSName.parse("https://workers.kiln.svc:8443").get()
        let discovery = BackendDiscovery(fixed: [], file: nil, dnsNames: [name], backends: set, prober: nil, dnsInterval: 10,
                                         resolve: { _ in try answer.withLock { try $0.get() } }, logger: logger)
        let start = BackendSet.now()
        try set.update(addresses: try discovery.loadInitial())
        XCTAssertEqual(set.addresses.map(\.ringName), ["10.0.0.2:8443", "10.0.0.1:8443"])
        XCTAssertEqual(set.addresses.first?.serverName, "workers.kiln.svc", "TLS checks the name, not the address")
        answer.withLock { $0 = .success(["10.0.0.1", "10.0.0.3"]) }
        discovery.poll(now: start + 5_000_000_000)
        XCTAssertEqual(set.addresses.count, 2)
        XCTAssertEqual(set.addresses.first?.ringName, "10.0.0.2:8443", "not due yet")
        discovery.poll(now: start + 11_000_000_000)
        XCTAssertEqual(set.addresses.map(\.ringName), ["10.0.0.1:8443", "10.0.0.3:8443"])
        answer.withLock { $0 = .failure(BackendAddressError("SERVFAIL")) }
        discovery.poll(now: start + 22_000_000_000)
        XCTAssertEqual(set.addresses.map(\.ringName), ["10.0.0.1:8443", "10.0.0.3:8443"], "a failed lookup changes nothing")
        // The system resolver finds localhost.
        XCTAssertTrue(try BackendDiscovery.systemResolve("localhost").contains("127.0.0.1"))
    }

    func testLoadReportsRoundTripAndMalformedOnesAreIgnored() {
        let value = LoadReport.encode(running: 7, waiting: 3, freeBlocks: 120)
        XCTAssertTrue(LoadReport.decode(value)! == (7, 3, 120))
        XCTAssertTrue(LoadReport.decode(value.replacingOccurrences(of: "=", with: ""))! == (7, 3, 120), "unpadded base64, as some gRPC stacks send")
        XCTAssertNil(LoadReport.decode("not base64 at all!"))
        XCTAssertNil(LoadReport.decode(Data([0xff, 0xff, 0xff]).base64EncodedString()), "not a protobuf")
        var partial = Xds_Data_Orca_V3_OrcaLoadReport()
        partial.namedMetrics = ["running": 1, "waiting": -5, "kv_free_blocks": 3]
        XCTAssertNil(LoadReport.decode(Data(partial.serializedBytes()).base64EncodedString()), "a negative count is refused")
        partial.namedMetrics = ["running": 1]
        XCTAssertNil(LoadReport.decode(Data(partial.serializedBytes()).base64EncodedString()), "all three or nothing")
        XCTAssertNil(LoadReport.decode(String(repeating: "A", count: 8192)))
    }

    /// An in-process server on a loopback port with `routes`.
    private func server(_ routes: HTTP2Router, group: EventLoopGroup) throws -> HTTP2Server {
        var config = HTTP2ServerConfiguration()
        config.host = "127.0.0.1"
        config.h2cPort = 0
        config.tlsPort = nil
        let s = try HTTP2Server(configuration: config, router: routes, group: group, logger: logger)
        try s.start()
        return s
    }

    /// `kiln route`'s relay in front of `backendPorts`, and a client of it.
    private final class StandInRouter {
        let backends: BackendSet
        let server: HTTP2Server
        let client: HTTP2Client

        init(backendPorts: [Int], group: EventLoopGroup, test: RouterInProcessTests) throws {
            backends = try BackendSet(addresses: backendPorts.map { test.address($0) }, group: group, tls: nil,
                                      health: HealthService(), logger: test.logger)
            let relay = InferenceRelay(backends: backends, logger: test.logger)
            server = try test.server(ServiceRoutes.router(relayed: ["kiln.v1.Inference"], routes: { relay.mount(on: &$0) }), group: group)
            client = try HTTP2Client(host: "127.0.0.1", port: server.h2cAddress!.port, group: group)
        }

        /// A Tokenize call through the router, with `headers` added to gRPC's.
        func tokenize(_ headers: HTTP2Headers) async throws -> HTTP2ClientResponse {
            var all: HTTP2Headers = ["content-type": "application/grpc", "te": "trailers"]
            for field in headers { all.add(field.name, field.value) }
            var request = Kiln_V1_TokenizeRequest()
            request.text = "hello"
            return try await client.request(method: "POST", path: "/kiln.v1.Inference/Tokenize", headers: all,
                                            body: GRPCMessageFramer.frame(request.serializedBytes()))
        }

        func stop() async {
            client.close()
            backends.close()
            await server.shutdown()
        }
    }

    func testTheDeadlineGoesOnAsTimeRemainingAndTheRouterEnforcesItOnAWorkerThatIgnoresIt() async throws {
        // A stand-in worker that records the grpc-timeout it gets and then never answers.
        let seen = Mutex<(timeout: String?, cancelled: Bool)>((nil, false))
        var workerRoutes = HTTP2Router()
        workerRoutes.add(prefix: "/kiln.v1.Inference/", .handler(HTTP2ClosureHandler { request, _ in
            seen.withLock { $0.timeout = request.headers["grpc-timeout"] }
            for try await _ in request.body {}
            do {
                try await Task.sleep(for: .seconds(30))
            } catch {
                seen.withLock { $0.cancelled = true }
                throw error
            }
        }))
        let group = try EventLoopGroup(threads: 2)
        defer { group.shutdown() }
        let worker = try server(workerRoutes, group: group)
        let router = try StandInRouter(backendPorts: [worker.h2cAddress!.port], group: group, test: self)

        let started = Date()
        let reply = try await router.tokenize(["grpc-timeout": "2S"])
        let elapsed = Date().timeIntervalSince(started)
        let status = reply.trailers["grpc-status"] ?? reply.headers["grpc-status"]
        XCTAssertEqual(status, String(RPCStatusCode.deadlineExceeded.rawValue), "\(reply.headers) \(reply.trailers)")
        XCTAssertGreaterThanOrEqual(elapsed, 2.0)
        XCTAssertLessThan(elapsed, 5.0, "the router answers soon after the deadline")
        let timeout = seen.withLock { $0.timeout }.flatMap { GRPCTimeout.parse($0) }
        XCTAssertNotNil(timeout)
        XCTAssertLessThanOrEqual(timeout ?? .max, 2_000_000_000, "the worker is given the time remaining, at most 2 s")
        XCTAssertGreaterThan(timeout ?? 0, 1_500_000_000)
        // The worker's call was cancelled (reset), not left running.
        let until = Date().addingTimeInterval(5)
        while !seen.withLock({ $0.cancelled }) && Date() < until { try await Task.sleep(for: .milliseconds(20)) }
        XCTAssertTrue(seen.withLock { $0.cancelled }, "the router reset the worker's call")
        await router.stop()
        await worker.shutdown()
    }

    func testWhenEveryBackendPushesBackTheClientGetsResourceExhaustedWithThePushback() async throws {
        // Two stand-in workers, both full: RESOURCE_EXHAUSTED with grpc-retry-pushback-ms 40 and 25.
        let group = try EventLoopGroup(threads: 2)
        defer { group.shutdown() }
        let calls = Mutex([0, 0])
        var workers: [HTTP2Server] = []
        for (i, pushback) in [40, 25].enumerated() {
            var routes = HTTP2Router()
            routes.add(prefix: "/kiln.v1.Inference/", .handler(HTTP2ClosureHandler { request, response in
                for try await _ in request.body {}
                calls.withLock { $0[i] += 1 }
                response.sendHead(headers: ["content-type": "application/grpc", "grpc-status": "8", "grpc-message": "full",
                                            "grpc-retry-pushback-ms": "\(pushback)"], endStream: true)
            }))
            workers.append(try server(routes, group: group))
        }
        let full = try StandInRouter(backendPorts: workers.map { $0.h2cAddress!.port }, group: group, test: self)
        let reply = try await full.tokenize(["x-session-id": "s"])
        XCTAssertEqual(reply.headers["grpc-status"], String(RPCStatusCode.resourceExhausted.rawValue), "\(reply.headers)")
        XCTAssertEqual(reply.headers["grpc-retry-pushback-ms"], "25", "the shortest pushback of the backends tried")
        XCTAssertEqual(calls.withLock { $0 }, [1, 1], "each backend was tried once")
        // One backend pushing back and one down: UNAVAILABLE, since trying later elsewhere may not help.
        let mixedRouter = try StandInRouter(backendPorts: [workers[0].h2cAddress!.port, KilnServeProcess.freePort()], group: group, test: self)
        let mixed = try await mixedRouter.tokenize(["x-session-id": "s"])
        XCTAssertEqual(mixed.headers["grpc-status"], String(RPCStatusCode.unavailable.rawValue), "\(mixed.headers)")
        await full.stop()
        await mixedRouter.stop()
        for w in workers { await w.shutdown() }
    }

    func testUnaryCallsFailOverToALiveBackendAndAClientResetReachesTheWorker() async throws {
        // One stand-in worker that answers Tokenize (and hangs on Detokenize until reset); one port where
        // nothing listens.
        let group = try EventLoopGroup(threads: 2)
        defer { group.shutdown() }
        let served = Atomic<Int>(0)
        let reset = Atomic<Bool>(false)
        var routes = HTTP2Router()
        routes.add("/kiln.v1.Inference/Tokenize", .handler(HTTP2ClosureHandler { request, response in
            for try await _ in request.body {}
            served.add(1, ordering: .relaxed)
            var answer = Kiln_V1_TokenizeResponse()
            answer.tokenIds = [7, 8, 9]
            response.sendHead(headers: ["content-type": "application/grpc"])
            try await response.write(GRPCMessageFramer.frame(answer.serializedBytes()))
            response.finish(trailers: ["grpc-status": "0", "x-worker": "live"])
        }))
        routes.add("/kiln.v1.Inference/Detokenize", .handler(HTTP2ClosureHandler { request, _ in
            for try await _ in request.body {}
            do { try await Task.sleep(for: .seconds(30)) } catch { reset.store(true, ordering: .relaxed); throw error }
        }))
        let live = try server(routes, group: group)
        let router = try StandInRouter(backendPorts: [KilnServeProcess.freePort(), live.h2cAddress!.port], group: group, test: self)
        // Keys spread over both backends: the ones the dead backend owns are retried on the live one.
        for i in 0..<20 {
            let reply = try await router.tokenize(["x-session-id": "key-\(i)"])
            XCTAssertEqual(reply.status, 200)
            XCTAssertEqual(reply.trailers["grpc-status"], "0", "key-\(i): \(reply.headers) \(reply.trailers)")
            XCTAssertEqual(reply.trailers["x-worker"], "live", "the worker's trailers come back unchanged")
            var deframer = GRPCMessageDeframer(maxMessageSize: 1 << 20)
            deframer.append(reply.body)
            let message = try XCTUnwrap(try deframer.next())
            XCTAssertEqual(try Kiln_V1_TokenizeResponse(serializedBytes: message.payload).tokenIds, [7, 8, 9])
        }
        XCTAssertEqual(served.load(ordering: .relaxed), 20)
        let stats = router.backends.stats()
        XCTAssertGreaterThan(stats.map(\.retries).reduce(0, +), 0, "some keys were owned by the dead backend and retried: \(stats)")

        // A client's reset through the router resets the worker's call.
        let call = try router.client.makeCall(path: "/kiln.v1.Inference/Detokenize", headers: ["content-type": "application/grpc", "te": "trailers"])
        try await call.write(GRPCMessageFramer.frame(Kiln_V1_DetokenizeRequest().serializedBytes()))
        call.finish()
        try await Task.sleep(for: .milliseconds(200))
        call.cancel()
        for _ in 0..<300 where !reset.load(ordering: .relaxed) { try await Task.sleep(for: .milliseconds(10)) }
        XCTAssertTrue(reset.load(ordering: .relaxed), "the worker's call was reset with the client's")
        await router.stop()
        await live.shutdown()
        // Every call, answered, retried or reset, is freed (a reference cycle would keep each one, with its
        // request and response).
        for _ in 0..<200 where UnaryRelayCall.live.load(ordering: .relaxed) > 0 { try await Task.sleep(for: .milliseconds(10)) }
        XCTAssertEqual(UnaryRelayCall.live.load(ordering: .relaxed), 0, "unary relay calls still alive after they ended")
    }
}
