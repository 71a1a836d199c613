import Foundation
import KilnTestSupport
import XCTest

/// The OpenAI-compatible API against real clients: the official `openai` package, curl over HTTP/1.1 and
/// HTTP/2, and raw HTTP/1.1 (openai_client.py), on the real model, straight and through `kiln route`.
final class OpenAIAPITests: XCTestCase {
    private var schemas: String { repositoryRoot.appendingPathComponent("Schemas").path }

    /// Greedy and seeded answers equal gRPC's for the same request; streaming, usage, logprobs, models,
    /// errors in OpenAI's shape, 100 SSE streams over keep-alive connections.
    func testTheOpenAIPackageGetsWhatGRPCGets() throws {
        // No result cache: every answer compared with gRPC's is computed, not replayed.
        let server = try KilnServeProcess(["--backend", "cpu", "--result-cache-mb", "0"])
        let passed = try KilnServeProcess.runScript("openai_client.py", [schemas, "serve", "\(server.h2cPort)"], timeout: 600, servers: [server])
        XCTAssertGreaterThanOrEqual(passed, 30, "every check ran")
        XCTAssertTrue(server.process.isRunning)
    }

    /// A router with no worker up answers 503 with Retry-After, in OpenAI's shape, over either protocol.
    func testNoWorkerIsA503WithRetryAfter() throws {
        let router = try KilnServeProcess(routeTo: [KilnServeProcess.freePort()], ["--health-interval", "0.5"])
        for flag in ["--http1.1", "--http2-prior-knowledge"] {
            let r = try runTool("curl", ["-sS", "-i", flag, "-H", "content-type: application/json", "-d", #"{"messages": [{"role": "user", "content": "hi"}]}"#,
                                         "http://127.0.0.1:\(router.h2cPort)/v1/chat/completions"])
            let head = r.stdout.lowercased()
            XCTAssertTrue(head.hasPrefix("http/1.1 503") || head.hasPrefix("http/2 503"), r.stdout)
            XCTAssertTrue(head.contains("retry-after: 1"), r.stdout)
            XCTAssertTrue(r.stdout.contains(#""type":"server_error""#) && r.stdout.contains(#""error":{"#), r.stdout)
        }
        XCTAssertTrue(router.process.isRunning)
    }

    /// Through the router: a session named by it, its turns streamed to the same worker.
    func testTheOpenAIPackageThroughTheRouter() throws {
        let workers = try (0..<2).map { _ in try KilnServeProcess(["--backend", "cpu", "--decode-threads", "1", "--result-cache-mb", "0"]) }
        let router = try KilnServeProcess(routeTo: workers.map(\.h2cPort), ["--health-interval", "0.5"])
        try KilnServeProcess.runScript("openai_client.py", [schemas, "route", "\(router.h2cPort)"], timeout: 300, servers: workers + [router])
        XCTAssertTrue(router.process.isRunning)
    }
}
