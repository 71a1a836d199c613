import KilnHTTP2
import KilnRPC

/// The transport's demonstration routes, served until the model services take over `kiln serve`.
/// Tests and `make bench-transport` rely on their exact behaviour.
public enum DemoRoutes {
    /// The small fixed response used by the transport benchmark.
    public static let helloBody = Array("kiln\n".utf8)

    /// The routes, plus whatever `services` registers on the RPC server (the inference service), gRPC health
    /// (`health`, whose status the caller may change) and server reflection.
    public static func router(health: HealthService = HealthService(), services: (inout RPCServer) -> Void = { _ in }) -> HTTP2Router {
        var router = HTTP2Router()
        router.add("/", .fixed(HTTP2FixedResponse(headers: ["content-type": "text/plain"], body: helloBody)))
        router.add("/echo", .handler(EchoHandler()))
        router.add("/stream", .handler(ChunkStreamHandler()))
        router.add("/bytes", .handler(ByteStreamHandler()))
        router.add("/sleep", .handler(SleepHandler()))
        var rpc = BenchmarkEchoService.rpcServer()
        health.register(on: &rpc)
        services(&rpc)
        // Reflection lists the registered services that have a schema (the benchmark echo has none).
        let files = ReflectionService.kilnFiles
        let described = Set(files.flatMap(\.symbols))
        let registered = Set(rpc.paths.compactMap { $0.split(separator: "/").first.map(String.init) })
        let listed = registered.union(["grpc.reflection.v1.ServerReflection"]).filter(described.contains)
        ReflectionService(services: Array(listed), files: files).registerBoth(on: &rpc)
        rpc.install(into: &router)
        return router
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

/// `/stream?chunks=N`: N separate writes of `chunk 00000000\n` (numbered), for ordering tests.
struct ChunkStreamHandler: HTTP2Handler {
    func handle(_ request: HTTP2Request, _ response: HTTP2ResponseWriter) async throws {
        let count = min(Int(request.queryParameter("chunks") ?? "") ?? 100, 10_000_000)
        let delayMs = Int(request.queryParameter("delay_ms") ?? "") ?? 0
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

/// `/bytes?n=N`: N bytes of the pattern `i % 251`, written 16 KiB at a time.
struct ByteStreamHandler: HTTP2Handler {
    static func pattern(offset: Int, count: Int) -> [UInt8] {
        (0..<count).map { UInt8((offset + $0) % 251) }
    }

    func handle(_ request: HTTP2Request, _ response: HTTP2ResponseWriter) async throws {
        let total = Int(request.queryParameter("n") ?? "") ?? 1024
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

/// `/sleep?ms=M`: answers `slept` after M milliseconds (cancelled with the stream).
struct SleepHandler: HTTP2Handler {
    func handle(_ request: HTTP2Request, _ response: HTTP2ResponseWriter) async throws {
        let ms = Int(request.queryParameter("ms") ?? "") ?? 100
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
        // Echo is answered on the event loop (an inline unary method); EchoAsync is the same through a task,
        // the path every async handler takes.
        rpc.registerInlineUnary(service: "pkg.Service", method: "Echo") { request, _ in request }
        rpc.registerUnary(service: "pkg.Service", method: "EchoAsync") { request, _ in request }
        rpc.register(service: "pkg.Service", method: "Stream") { requests, writer, _ in
            _ = try await requests.single()
            for _ in 0..<256 { try await writer.write(token) }
        }
        return rpc
    }
}
