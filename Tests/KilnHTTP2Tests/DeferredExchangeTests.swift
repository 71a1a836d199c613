import Foundation
import Synchronization
import XCTest
@testable import KilnHTTP2

/// The task-free paths: a deferred route answered later from another thread, a client exchange collected
/// whole with a completion handler, and the loop's cancellable timers they use.
final class DeferredExchangeTests: XCTestCase {
    /// Answers each request with its body reversed, from a timer on the loop (`delayNanos`) or at once.
    private struct ReversingHandler: HTTP2DeferredHandler {
        let maxRequestBodySize = 1024
        let delayNanos: UInt64
        func start(_ request: HTTP2InlineRequest, _ responder: HTTP2DeferredResponder) {
            let answer = HTTP2InlineResponse(headers: ["content-type": "text/plain"], body: request.body.reversed(),
                                             trailers: ["x-done": request.bodyTooLarge ? "truncated" : "yes"])
            if delayNanos == 0 {
                responder.respond(answer)
            } else {
                // From another thread than the connection's, after a while.
                DispatchQueue.global().asyncAfter(deadline: .now() + .nanoseconds(Int(delayNanos))) { responder.respond(answer) }
            }
        }
    }

    /// Never answers; records its responders and whether the client's reset reached them.
    private final class SilentHandler: HTTP2DeferredHandler, @unchecked Sendable {
        let maxRequestBodySize = 1024
        let responders = Mutex<[HTTP2DeferredResponder]>([])
        let cancels = Atomic<Int>(0)
        func start(_ request: HTTP2InlineRequest, _ responder: HTTP2DeferredResponder) {
            responders.withLock { $0.append(responder) }
            responder.onCancel { [self] in cancels.add(1, ordering: .relaxed) }
        }
    }

    func testDeferredAnswersReachTheirOwnStreamsWhetherGivenAtOnceOrLaterFromAnotherThread() async throws {
        var router = HTTP2Router()
        router.add("/now", .deferred(ReversingHandler(delayNanos: 0)))
        router.add("/later", .deferred(ReversingHandler(delayNanos: 20_000_000)))
        let server = try TestServer(router: router, tls: false)
        let group = try EventLoopGroup(threads: 1)
        let client = try HTTP2Client(host: "127.0.0.1", port: server.h2cPort, group: group)
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            for i in 0..<200 {
                tasks.addTask {
                    let path = i % 2 == 0 ? "/now" : "/later"
                    let body = Array("request \(i)".utf8)
                    let reply = try await client.request(method: "POST", path: path, body: body)
                    XCTAssertEqual(reply.status, 200)
                    XCTAssertEqual(reply.body, body.reversed(), "\(path) #\(i)")
                    XCTAssertEqual(reply.trailers["x-done"], "yes")
                }
            }
            try await tasks.waitForAll()
        }
        // A body past the handler's limit is cut (at a chunk boundary) and flagged.
        let big = try await client.request(method: "POST", path: "/now", body: Array(repeating: 7, count: 4000))
        XCTAssertLessThanOrEqual(big.body.count, 1024)
        XCTAssertEqual(big.trailers["x-done"], "truncated")
        client.close()
        await server.stop()
        group.shutdown()
    }

    func testAResetBeforeTheAnswerRunsTheCancelHandlerAndALateAnswerIsDropped() async throws {
        let silent = SilentHandler()
        var router = HTTP2Router()
        router.add("/silent", .deferred(silent))
        router.add("/ping", .deferred(ReversingHandler(delayNanos: 0)))
        // Shutdown waits 1 s for streams, not 30: an unanswered one is then closed with its connection.
        let server = try TestServer(router: router, tls: false) { $0.drainDeadline = 1 }
        let group = try EventLoopGroup(threads: 1)
        let client = try HTTP2Client(host: "127.0.0.1", port: server.h2cPort, group: group)
        let call = try client.makeCall(method: "POST", path: "/silent", endStream: true)
        for _ in 0..<200 where silent.responders.withLock({ $0.isEmpty }) { try await Task.sleep(for: .milliseconds(10)) }
        XCTAssertEqual(silent.responders.withLock { $0.count }, 1)
        call.cancel()
        for _ in 0..<200 where silent.cancels.load(ordering: .relaxed) == 0 { try await Task.sleep(for: .milliseconds(10)) }
        XCTAssertEqual(silent.cancels.load(ordering: .relaxed), 1, "the reset reached the handler")
        let responder = silent.responders.withLock { $0[0] }
        XCTAssertTrue(responder.isCancelled)
        responder.respond(HTTP2InlineResponse(body: [1, 2, 3]))  // too late: dropped, nothing breaks
        // A cancel handler set after the reset runs at once.
        let late = Atomic<Bool>(false)
        responder.onCancel { late.store(true, ordering: .relaxed) }
        XCTAssertTrue(late.load(ordering: .relaxed))
        // The connection still serves.
        let reply = try await client.request(method: "POST", path: "/ping", body: [1, 2])
        XCTAssertEqual(reply.body, [2, 1])
        // A connection that closes with an unanswered request cancels it too.
        let other = try HTTP2Client(host: "127.0.0.1", port: server.h2cPort, group: group)
        _ = try other.makeCall(method: "POST", path: "/silent", endStream: true)
        for _ in 0..<200 where silent.responders.withLock({ $0.count }) < 2 { try await Task.sleep(for: .milliseconds(10)) }
        await server.stop()
        XCTAssertEqual(silent.cancels.load(ordering: .relaxed), 2, "closing the connection cancelled the second request")
        client.close()
        other.close()
        group.shutdown()
    }

    /// Runs one exchange and waits for its completion.
    private func exchange(_ client: HTTP2Client, path: String, body: [UInt8] = [], maxResponseBytes: Int = 1 << 20,
                          cancelAfter: Duration? = nil) async throws -> Result<HTTP2Exchange.Response, HTTP2Error> {
        let result = Mutex<Result<HTTP2Exchange.Response, HTTP2Error>?>(nil)
        let made = try client.exchange(path: path, body: body, maxResponseBytes: maxResponseBytes) { r in
            XCTAssertTrue(result.withLock { old in defer { old = r }; return old == nil }, "the completion runs once")
        }
        if let cancelAfter {
            try await Task.sleep(for: cancelAfter)
            made.cancel()
        }
        for _ in 0..<500 where result.withLock({ $0 }) == nil { try await Task.sleep(for: .milliseconds(10)) }
        return try XCTUnwrap(result.withLock { $0 })
    }

    func testAnExchangeCollectsTheWholeResponseAndEveryWayItCanEnd() async throws {
        let cancelled = Atomic<Int>(0)
        var router = HTTP2Router()
        router.add("/stream", .handler(HTTP2ClosureHandler { request, response in
            let body = try await request.body.collect()
            response.sendHead(headers: ["x-kind": "stream"])
            for chunk in [body, Array(" and".utf8), Array(" more".utf8)] { try await response.write(chunk) }
            response.finish(trailers: ["grpc-status": "0"])
        }))
        router.add("/only", .handler(HTTP2ClosureHandler { _, response in
            response.sendHead(headers: ["grpc-status": "14", "grpc-message": "down"], endStream: true)
        }))
        router.add("/big", .handler(HTTP2ClosureHandler { _, response in
            do {
                for _ in 0..<64 { try await response.write(Array(repeating: 1, count: 16 << 10)) }
                try await Task.sleep(for: .seconds(10))
            } catch {
                cancelled.add(1, ordering: .relaxed)
                throw error
            }
        }))
        router.add("/hang", .handler(HTTP2ClosureHandler { _, _ in
            do { try await Task.sleep(for: .seconds(30)) } catch { cancelled.add(1, ordering: .relaxed); throw error }
        }))
        let server = try TestServer(router: router, tls: false)
        let group = try EventLoopGroup(threads: 1)
        let client = try HTTP2Client(host: "127.0.0.1", port: server.h2cPort, group: group)

        let whole = try await exchange(client, path: "/stream", body: Array("this".utf8)).get()
        XCTAssertEqual(whole.status, 200)
        XCTAssertFalse(whole.trailersOnly)
        XCTAssertEqual(whole.headers["x-kind"], "stream")
        XCTAssertEqual(String(decoding: whole.body, as: UTF8.self), "this and more")
        XCTAssertEqual(whole.trailers["grpc-status"], "0")

        let only = try await exchange(client, path: "/only").get()
        XCTAssertTrue(only.trailersOnly)
        XCTAssertEqual(only.headers["grpc-status"], "14")
        XCTAssertTrue(only.body.isEmpty && only.trailers.isEmpty)

        // Past the limit: the exchange fails and the server's stream is reset.
        guard case .failure(.bodyTooLarge) = try await exchange(client, path: "/big", maxResponseBytes: 100 << 10) else {
            return XCTFail("a response past maxResponseBytes fails with bodyTooLarge")
        }
        // Cancelled by the caller: completes with the reset, and the server's handler is cancelled.
        guard case .failure(.streamReset) = try await exchange(client, path: "/hang", cancelAfter: .milliseconds(100)) else {
            return XCTFail("a cancelled exchange completes with streamReset")
        }
        for _ in 0..<200 where cancelled.load(ordering: .relaxed) < 2 { try await Task.sleep(for: .milliseconds(10)) }
        XCTAssertEqual(cancelled.load(ordering: .relaxed), 2, "both server handlers saw their streams reset")

        // A finished exchange lets go of its completion (and so of whatever the caller captured in it), and
        // is itself freed once its stream is gone: a caller that keeps the exchange to cancel it, and is kept
        // by the completion, must not make a cycle.
        final class Caller: Sendable {
            let exchange = Mutex<HTTP2Exchange?>(nil)
        }
        weak var weakCaller: Caller?
        weak var weakExchange: HTTP2Exchange?
        let finished = Atomic<Bool>(false)
        do {
            let caller = Caller()
            weakCaller = caller
            let exchange = try client.exchange(path: "/stream", body: Array("x".utf8), maxResponseBytes: 1 << 20) { _ in
                withExtendedLifetime(caller) { finished.store(true, ordering: .relaxed) }
            }
            caller.exchange.withLock { $0 = exchange }
            weakExchange = exchange
        }
        for _ in 0..<200 where !finished.load(ordering: .relaxed) || weakCaller != nil || weakExchange != nil {
            try await Task.sleep(for: .milliseconds(10))
        }
        XCTAssertTrue(finished.load(ordering: .relaxed))
        XCTAssertNil(weakCaller, "the completion was released after it ran")
        XCTAssertNil(weakExchange, "the exchange was freed with its stream")

        // Nothing listening: the completion reports it (the call never reaches a server).
        let nowhere = try HTTP2Client(host: "127.0.0.1", port: freePort(), group: group)
        guard case .failure = try await exchange(nowhere, path: "/stream") else { return XCTFail("a refused connection fails the exchange") }
        client.close()
        nowhere.close()
        await server.stop()
        group.shutdown()
    }

    func testLoopTimersFireOnceAndCancelledOnesLeaveTheHeap() async throws {
        let group = try EventLoopGroup(threads: 1)
        defer { group.shutdown() }
        let loop = group.nextLoop()
        let fired = Atomic<Int>(0)
        _ = loop.scheduleTimer(afterNanos: 10_000_000) { fired.add(1, ordering: .relaxed) }
        let stopped = loop.scheduleTimer(afterNanos: 10_000_000) { fired.add(100, ordering: .relaxed) }
        stopped.cancel()
        // Per-call deadline timers, nearly all cancelled long before they are due: the heap must not keep them.
        let many = (0..<20_000).map { _ in loop.scheduleTimer(afterNanos: 600_000_000_000) { fired.add(10_000, ordering: .relaxed) } }
        for timer in many { timer.cancel() }
        for _ in 0..<200 where fired.load(ordering: .relaxed) == 0 { try await Task.sleep(for: .milliseconds(10)) }
        try await Task.sleep(for: .milliseconds(50))
        XCTAssertEqual(fired.load(ordering: .relaxed), 1, "the live timer fired once, the cancelled ones never")
        let counts = await withCheckedContinuation { c in loop.execute { c.resume(returning: loop.timerCounts) } }
        XCTAssertLessThan(counts.heap, 1000, "cancelled timers were dropped from the heap (\(counts))")
        XCTAssertLessThan(counts.live, 10, "\(counts)")
    }
}
