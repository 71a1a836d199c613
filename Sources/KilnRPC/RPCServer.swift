import KilnHTTP2
import Logging

/// A server method on raw messages: reads request payloads, writes response payloads. Generated service
/// code adapts typed methods to this.
public typealias RPCMethodHandler = @Sendable (RPCRequestMessages, RPCResponseWriter, RPCServerContext) async throws -> Void

/// gRPC over HTTP/2 (grpc `doc/PROTOCOL-HTTP2.md`) on top of ``HTTP2Server``: routes `/Service/Method`
/// paths to handlers, enforces content-type, message encoding, message size and deadlines, and ends
/// every call with a `grpc-status` — Trailers-Only when no message was sent.
public struct RPCServer: HTTP2Handler {
    private var methods: [String: RPCMethodHandler] = [:]
    private var inlineMethods: [String: RPCInlineUnaryHandler] = [:]
    /// Largest request message accepted (RESOURCE_EXHAUSTED above it).
    public var maxReceiveMessageSize = 4 * 1024 * 1024
    /// Where a call that failed for a reason the peer must not read (an unexpected error) is logged.
    public var logger = Logger(label: "kiln.rpc")

    public init() {}

    /// Registers a handler for `/service/method`.
    public mutating func register(service: String, method: String, _ handler: @escaping RPCMethodHandler) {
        methods["/\(service)/\(method)"] = handler
    }

    /// Registers a unary method.
    public mutating func registerUnary(service: String, method: String,
                                       _ body: @escaping @Sendable ([UInt8], RPCServerContext) async throws -> [UInt8]) {
        register(service: service, method: method) { requests, writer, context in
            let reply = try await body(try await requests.single(), context)
            try await writer.write(reply)
        }
    }

    /// Registers a unary method answered on the event loop, without a task (see ``RPCInlineUnaryHandler``).
    /// No deadline applies: it runs to completion at once.
    public mutating func registerInlineUnary(service: String, method: String, _ body: @escaping RPCInlineUnaryHandler) {
        inlineMethods["/\(service)/\(method)"] = body
    }

    /// The paths served, for reflection and tests.
    public var paths: [String] { (Array(methods.keys) + Array(inlineMethods.keys)).sorted() }

    /// Mounts this server on every path of `router` that looks like a gRPC method.
    public func install(into router: inout HTTP2Router) {
        for path in methods.keys { router.add(path, .handler(self)) }
        for (path, body) in inlineMethods { router.add(path, .inline(RPCInlineUnary(handler: body, maxReceiveMessageSize: maxReceiveMessageSize, logger: logger))) }
        // Unknown methods of a known service get a gRPC UNIMPLEMENTED; unknown services fall through to
        // the router's 404, which gRPC clients also read as UNIMPLEMENTED.
        let services = Set(paths.compactMap { p in p.lastIndex(of: "/").map { String(p[...$0]) } })
        for prefix in services { router.add(prefix: prefix, .handler(self)) }
    }

    public func handle(_ request: HTTP2Request, _ response: HTTP2ResponseWriter) async throws {
        if try await GRPCRequestHead.refusesNonGRPC(request, response) { return }
        let writer = RPCResponseWriter(response: response)
        var handler: RPCMethodHandler?
        let head: GRPCRequestHead
        do {
            head = try GRPCRequestHead(method: request.method, headers: request.headers) {
                handler = methods[request.path]
                guard handler != nil else { throw RPCError(.unimplemented, "unknown method \(request.path)") }
            }
        } catch {
            let error = RPCError(wrapping: error)
            for f in GRPCRequestHead.acceptEncoding { writer.addTrailingMetadata(f.name, f.value) }
            writer.finish(error)
            return
        }
        guard let handler else { return }
        let encoding = head.encoding, timeout = head.timeout
        let context = RPCServerContext(path: request.path, metadata: request.headers, timeoutNanoseconds: timeout,
                                       remoteAddress: request.remoteAddress, peerIdentity: request.peerIdentity, responses: writer)
        let messages = RPCRequestMessages(body: request.body, maxMessageSize: maxReceiveMessageSize, gzip: encoding == "gzip")
        do {
            try await Self.run(timeout: timeout) {
                try await handler(messages, writer, context)
            }
            writer.finish(nil)
        } catch {
            writer.finish(Self.status(for: error, path: request.path, logger: logger))
        }
    }

    /// The status a failed call ends with. An `RPCError` was written for the peer; an error of unknown
    /// cause is logged and the peer gets a fixed message, never the error's own text.
    static func status(for error: any Error, path: String, logger: Logger) -> RPCError {
        if let e = error as? RPCError {
            if let cause = e.cause { logger.info("\(path): \(e.code): \(e.message) (cause: \(cause))") }
            return e
        }
        let wrapped = RPCError(wrapping: error)
        guard wrapped.code == .unknown else { return wrapped }
        logger.error("\(path) failed: \(String(reflecting: error))")
        return RPCError(.unknown, "internal error", cause: error)
    }

    /// Runs `body`, cancelling it with DEADLINE_EXCEEDED when `timeout` passes first.
    static func run(timeout: UInt64?, _ body: @escaping @Sendable () async throws -> Void) async throws {
        guard let timeout else { return try await body() }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await body() }
            group.addTask {
                try await Task.sleep(nanoseconds: timeout)
                throw RPCError(.deadlineExceeded, "deadline exceeded")
            }
            defer { group.cancelAll() }
            try await group.next()
        }
    }
}

extension RPCServer {
    /// An HTTP/2 server carrying only this RPC server, started: h2c on `host:port` (0 picks a port).
    public func startHTTP2Server(host: String = "127.0.0.1", h2cPort: Int = 0, group: EventLoopGroup) throws -> HTTP2Server {
        var router = HTTP2Router()
        install(into: &router)
        var config = HTTP2ServerConfiguration()
        config.host = host
        config.h2cPort = h2cPort
        config.tlsPort = nil
        let server = try HTTP2Server(configuration: config, router: router, group: group)
        try server.start()
        return server
    }
}
