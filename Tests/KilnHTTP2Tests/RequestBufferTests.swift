import Foundation
import Synchronization
import XCTest
@testable import KilnHTTP2
import KilnRPC

/// Request bodies the server buffers are bounded per connection (`--max-buffered-request-mb`, 16 MiB by
/// default): 256 streams each uploading a 4 MiB gRPC message that never ends, on one connection, to the
/// task path (the deframer assembling a message) and the inline path (the whole body held until it ends).
final class RequestBufferTests: XCTestCase {
    private let grpcHeaders: HTTP2Headers = ["content-type": "application/grpc", "te": "trailers"]
    private let small = GRPCMessageFramer.frame(Array("ping".utf8))

    func testTwoHundredFiftySixFourMiBUploadsStayWithinTheBound() async throws {
        // Up to 512 streams, so that a marker call fits beside the 256 uploads; the default 16 MiB bound.
        let server = try KilnProcess(extraArguments: ["--max-streams", "512"])
        defer { server.stop() }
        let group = try EventLoopGroup(threads: 2)
        defer { group.shutdown() }
        // A well-behaved client on another connection.
        let good = try HTTP2Client(host: "127.0.0.1", port: server.h2cPort, group: group)
        for _ in 0..<20 {
            let r = try await good.request(method: "POST", path: "/pkg.Service/Echo", headers: grpcHeaders, body: small)
            XCTAssertEqual(r.trailers["grpc-status"], "0")
        }
        // The first round starts what any first burst does (the runtime's threads, the allocator's arenas, code
        // run for the first time); the second is measured.
        _ = try await attack(server, good: good, group: group)
        let (refused, growth, served) = try await attack(server, good: good, group: group)
        print("anonymous RSS growth \(growth >> 10) KiB; \(refused) of 256 uploads reset (ENHANCE_YOUR_CALM); \(served) of 50 calls served beside them")
        // The bound counts bytes held for streams alive; the RSS also holds, for a moment, the bytes of streams
        // just reset (released from the budget at the reset, freed once their handler tasks run) and what the
        // allocator rounds up. One message's size (4 MiB) is allowed for that: a server without the bound holds
        // 1 GiB here. (CI once measured 16.9 MiB; 8 MiB is usual.)
        XCTAssertLessThan(growth, (16 + 4) << 20, "the server held more than the 16 MiB bound and one message")
        XCTAssertGreaterThanOrEqual(refused, 240, "past the bound, uploads are reset rather than buffered")
        XCTAssertEqual(served, 50, "the other connection kept being served")
        XCTAssertTrue(server.process.isRunning)
        good.close()
    }

    /// One round: 256 uploads on a new connection while `good` makes 50 small calls. Returns the uploads reset
    /// with ENHANCE_YOUR_CALM, the peak growth of the server's anonymous memory, and the good calls answered.
    private func attack(_ server: KilnProcess, good: HTTP2Client, group: EventLoopGroup) async throws -> (Int, Int, Int) {
        // 4 MiB messages (the largest a method takes), announced in full, never ended. Every stream is opened
        // first with the message's first bytes, so that the baseline holds what 256 open streams cost anyway
        // (their state, their handlers' tasks): the growth after it is what the server buffers.
        let message = GRPCMessageFramer.frame([UInt8](repeating: 7, count: 4 * 1024 * 1024 - 64))
        let attacker = try HTTP2Client(host: "127.0.0.1", port: server.h2cPort, group: group)
        defer { attacker.close() }
        let paths = ["/pkg.Service/Stream", "/pkg.Service/Echo"]   // the task path, the inline path
        let calls = try (0..<256).map { i in try attacker.makeCall(path: paths[i % paths.count], headers: grpcHeaders) }
        for call in calls { try await call.write(Array(message[..<16])) }
        // Frames on one connection are handled in order: once a call made after them is answered, the
        // server has every stream open.
        let marker = try await attacker.request(method: "POST", path: "/pkg.Service/Echo", headers: grpcHeaders, body: small)
        XCTAssertEqual(marker.trailers["grpc-status"], "0")
        // Anonymous memory (heap, stacks): code pages run for the first time count in the whole RSS, though
        // nothing is buffered in them.
        let pid = server.pid
        let baseline = KilnProcess.anonymousBytes(of: pid); print("round baseline \(baseline >> 10) KiB")
        let peak = Atomic<Int>(baseline)
        let sampling = Atomic<Bool>(true)
        let sampler = Thread {
            while sampling.load(ordering: .relaxed) {
                let bytes = KilnProcess.anonymousBytes(of: pid)
                if bytes > peak.load(ordering: .relaxed) { peak.store(bytes, ordering: .relaxed) }
                usleep(2_000)
            }
        }
        sampler.start()
        let goodCalls = Atomic<Int>(0)
        let headers = grpcHeaders, ping = small
        async let served: Void = {
            for _ in 0..<50 {
                let r = try await good.request(method: "POST", path: "/pkg.Service/Echo", headers: headers, body: ping)
                if r.trailers["grpc-status"] == "0" && r.body == ping { goodCalls.add(1, ordering: .relaxed) }
            }
        }()
        let refused = try await withThrowingTaskGroup(of: Bool.self) { tasks -> Int in
            for call in calls {
                tasks.addTask {
                    do {
                        try await call.write(Array(message[16...]))
                        return false
                    } catch HTTP2Error.streamReset(let code) {
                        return code == 11   // ENHANCE_YOUR_CALM
                    } catch {
                        return false
                    }
                }
            }
            return try await tasks.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        try await served
        sampling.store(false, ordering: .relaxed)
        while !sampler.isFinished { usleep(1_000) }
        for call in calls { call.cancel() }
        return (refused, peak.load(ordering: .relaxed) - baseline, goodCalls.load(ordering: .relaxed))
    }
}
