import KilnHTTP2
import KilnRPC

/// The transport's demonstration routes (`/`, `/echo`, `/stream`, `/bytes`, `/sleep` and the gRPC benchmark
/// service `pkg.Service`). They are not production routes: `kiln serve` mounts them only with `--demo-routes`
/// (the transport and RPC benchmarks and tests pass it). Tests and `make bench-transport` rely on their exact
/// behaviour. Every query parameter is checked: a value that is not a number in the route's range gets HTTP
/// 400 with a message naming it.
public enum DemoRoutes {
    /// The small fixed response used by the transport benchmark.
    public static let helloBody = Array("kiln\n".utf8)

    /// The production routes (`ServiceRoutes`) with the demo routes mounted as well: what tests and
    /// benchmarks serve in-process.
    public static func router(health: HealthService = HealthService(), services: (inout RPCServer) -> Void = { _ in }) -> HTTP2Router {
        ServiceRoutes.router(health: health, demoRoutes: true, services: services)
    }

    /// Adds the demo HTTP routes to `router` and the benchmark echo service to `rpc`.
    static func mount(on router: inout HTTP2Router, rpc: inout RPCServer) {
        router.add("/", .fixed(HTTP2FixedResponse(headers: ["content-type": "text/plain"], body: helloBody)))
        router.add("/echo", .handler(EchoHandler()))
        router.add("/stream", .handler(ChunkStreamHandler()))
        router.add("/bytes", .handler(ByteStreamHandler()))
        router.add("/sleep", .handler(SleepHandler()))
        BenchmarkEchoService.register(on: &rpc)
    }
}

/// A demo route's query parameter that is not a whole number in its range: answered with HTTP 400.
struct BadQueryParameter: Error, CustomStringConvertible {
    let description: String

    /// The parameter `name` of `request` as an integer in `range`; `fallback` when it is absent.
    static func integer(_ name: String, of request: HTTP2Request, in range: ClosedRange<Int>, default fallback: Int) throws -> Int {
        guard let text = request.queryParameter(name) else { return fallback }
        // Int(String) rejects signs other than a leading '-', spaces, and anything past Int's range.
        guard let value = Int(text), range.contains(value) else {
            throw BadQueryParameter(description: "query parameter \(name)=\(text.prefix(64)) must be a whole number in \(range.lowerBound)...\(range.upperBound)")
        }
        return value
    }
}

extension HTTP2Handler {
    /// The query values `parse` reads, or nil once a bad one was answered with HTTP 400 and its reason.
    func queryValues<T>(_ response: HTTP2ResponseWriter, _ parse: () throws -> T) async throws -> T? {
        do {
            return try parse()
        } catch let bad as BadQueryParameter {
            response.sendHead(status: 400, headers: ["content-type": "text/plain"])
            try await response.write(Array("\(bad.description)\n".utf8))
            response.finish()
            return nil
        }
    }
}

/// `/echo`: streams the request body back as it arrives; trailer `x-echo-bytes` counts it.
struct EchoHandler: HTTP2Handler {
    func handle(_ request: HTTP2Request, _ response: HTTP2ResponseWriter) async throws {
        response.sendHead(headers: ["content-type": request.headers["content-type"] ?? "application/octet-stream"])
        var total = 0
        for try await chunk in request.body {
            total += chunk.count
            try await response.write(chunk)
        }
        response.finish(trailers: ["x-echo-bytes": String(total)])
    }
}

/// `/stream?chunks=N&delay_ms=D`: N (0...10,000,000) separate writes of `chunk 00000000\n` (numbered), D
/// (0...60,000) milliseconds apart, for ordering tests.
struct ChunkStreamHandler: HTTP2Handler {
    func handle(_ request: HTTP2Request, _ response: HTTP2ResponseWriter) async throws {
        guard let (count, delayMs) = try await queryValues(response, {
            (try BadQueryParameter.integer("chunks", of: request, in: 0...10_000_000, default: 100),
             try BadQueryParameter.integer("delay_ms", of: request, in: 0...60_000, default: 0))
        }) else { return }
        response.sendHead(headers: ["content-type": "text/plain"])
        for i in 0..<count {
            var line = String(i)
            line = String(repeating: "0", count: max(0, 8 - line.count)) + line
            try await response.write(Array("chunk \(line)\n".utf8))
            if delayMs > 0 { try await Task.sleep(for: .milliseconds(delayMs)) }
        }
        response.finish(trailers: ["x-chunks": String(count)])
    }
}

/// `/bytes?n=N`: N (0...2^32) bytes of the pattern `i % 251`, written 16 KiB at a time.
struct ByteStreamHandler: HTTP2Handler {
    static func pattern(offset: Int, count: Int) -> [UInt8] {
        (0..<count).map { UInt8((offset + $0) % 251) }
    }

    func handle(_ request: HTTP2Request, _ response: HTTP2ResponseWriter) async throws {
        guard let total = try await queryValues(response, {
            try BadQueryParameter.integer("n", of: request, in: 0...(1 << 32), default: 1024)
        }) else { return }
        response.sendHead(headers: ["content-type": "application/octet-stream", "content-length": String(total)])
        let block = 16 * 1024
        // 16 KiB is a multiple of nothing in 251, so precompute one period-aligned window and slice it.
        let period = Self.pattern(offset: 0, count: 251 + block)
        var sent = 0
        while sent < total {
            let n = min(block, total - sent)
            let start = sent % 251
            try await response.write(Array(period[start..<start + n]))
            sent += n
        }
        response.finish()
    }
}

/// `/sleep?ms=M`: answers `slept` after M (0...600,000) milliseconds (cancelled with the stream).
struct SleepHandler: HTTP2Handler {
    func handle(_ request: HTTP2Request, _ response: HTTP2ResponseWriter) async throws {
        guard let ms = try await queryValues(response, {
            try BadQueryParameter.integer("ms", of: request, in: 0...600_000, default: 100)
        }) else { return }
        try await Task.sleep(for: .milliseconds(ms))
        response.sendHead(headers: ["content-type": "text/plain"])
        try await response.write(Array("slept\n".utf8))
        response.finish()
    }
}

/// `pkg.Service`: the gRPC benchmark service, on the same paths and with the same answers as the bare-C
/// anchor in `../shared/anchors/grpc_echo.c`, so that `make bench-rpc` compares like with like.
public enum BenchmarkEchoService {
    static let token = Array("token-0123456789".utf8)

    /// The echo service alone (health is added by the demo router).
    public static func rpcServer() -> RPCServer {
        var rpc = RPCServer()
        register(on: &rpc)
        return rpc
    }

    static func register(on rpc: inout RPCServer) {
        // Echo is answered on the event loop (an inline unary method); EchoAsync is the same through a task,
        // the path every async handler takes.
        rpc.registerInlineUnary(service: "pkg.Service", method: "Echo") { request, _ in request }
        rpc.registerUnary(service: "pkg.Service", method: "EchoAsync") { request, _ in request }
        rpc.register(service: "pkg.Service", method: "Stream") { requests, writer, _ in
            _ = try await requests.single()
            for _ in 0..<256 { try await writer.write(token) }
        }
    }
}
