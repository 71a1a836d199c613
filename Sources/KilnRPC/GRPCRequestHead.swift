import KilnHTTP2

/// The checks every gRPC call's request head passes before its method runs, shared by the task path
/// (``RPCServer``) and the inline path (``RPCInlineUnary``) so that both answer bad input the same way.
public struct GRPCRequestHead {
    /// `grpc-encoding` of the request messages: identity or gzip.
    let encoding: String
    /// `grpc-timeout`, in nanoseconds, when the client set one.
    let timeout: UInt64?

    /// The body a non-gRPC content type gets, with HTTP 415.
    public static let wrongContentType = Array("gRPC requires content-type application/grpc\n".utf8)

    /// Answers a request whose content type is not gRPC's (HTTP 415) and returns true; false for a gRPC one.
    /// Shared by every handler that serves gRPC over a stream (the RPC server, `kiln route`'s relay).
    public static func refusesNonGRPC(_ request: HTTP2Request, _ response: HTTP2ResponseWriter) async throws -> Bool {
        guard !isGRPC(contentType: request.headers["content-type"]) else { return false }
        // Let a small upload end first (64 KiB, 1 s at most): answered mid-upload, the stream would end with
        // RST_STREAM NO_ERROR (RFC 9113 §8.1), which some clients (curl 7.88) report as a failure instead of
        // the 415. A request that never ends is answered when the second is up.
        let body = request.body
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                var read = 0
                do {
                    for try await chunk in body {
                        read += chunk.count
                        if read > 64 << 10 { return }
                    }
                } catch {}
            }
            group.addTask { try? await Task.sleep(for: .seconds(1)) }
            await group.next()
            group.cancelAll()
        }
        response.sendHead(status: 415, headers: ["content-type": "text/plain"])
        try await response.write(wrongContentType)
        response.finish()
        return true
    }

    /// `application/grpc`, `application/grpc+proto`, `application/grpc;…`.
    public static func isGRPC(contentType: String?) -> Bool {
        guard let contentType else { return false }
        return contentType == "application/grpc" || contentType.hasPrefix("application/grpc+") || contentType.hasPrefix("application/grpc;")
    }

    /// A refused head says which message encodings this server takes (the answer an unsupported encoding
    /// needs; harmless on the others).
    static let acceptEncoding: HTTP2Headers = ["grpc-accept-encoding": "gzip, identity"]

    /// Checks method, `te`, `grpc-encoding` and `grpc-timeout` (the content type is checked first, by
    /// `isGRPC`, since a non-gRPC peer gets plain HTTP). `lookup` runs between the protocol checks and the
    /// encoding check, so an unknown method is UNIMPLEMENTED whatever its encoding.
    init(method: String, headers: HTTP2Headers, lookup: () throws -> Void = {}) throws {
        guard method == "POST" else { throw RPCError(.internal, "gRPC requires POST, got \(method)") }
        // PROTOCOL-HTTP2.md requires `te: trailers`: a peer (or proxy) that drops it cannot be relied on to
        // deliver the trailers that carry the status.
        guard headers["te"] == "trailers" else { throw RPCError(.internal, "gRPC requires the header te: trailers") }
        try lookup()
        encoding = headers["grpc-encoding"] ?? "identity"
        guard encoding == "identity" || encoding == "gzip" else {
            throw RPCError(.unimplemented, "message encoding \(encoding) is not supported; use gzip or identity")
        }
        if let value = headers["grpc-timeout"] {
            guard let t = GRPCTimeout.parse(value) else { throw RPCError(.internal, "malformed grpc-timeout \(value)") }
            timeout = t
        } else {
            timeout = nil
        }
    }
}
