import KilnHTTP2
import Logging

/// A unary method answered synchronously on the event loop (no task): request payload and metadata in,
/// response payload out, or an ``RPCError``. For methods cheap enough that a task would cost more than
/// the work: health checks, echoes, lookups. Must not block.
public typealias RPCInlineUnaryHandler = @Sendable ([UInt8], HTTP2Headers) throws -> [UInt8]

/// One inline unary method as an ``HTTP2InlineHandler``: the same checks and statuses as the task path
/// (content-type, POST, `te: trailers`, message encoding, exactly one message, size limit), the response
/// framed with its status in trailers, or Trailers-Only for an error.
struct RPCInlineUnary: HTTP2InlineHandler {
    let handler: RPCInlineUnaryHandler
    let maxReceiveMessageSize: Int
    let logger: Logger

    var maxRequestBodySize: Int { maxReceiveMessageSize + 5 }

    func respond(to request: HTTP2InlineRequest) -> HTTP2InlineResponse {
        guard GRPCRequestHead.isGRPC(contentType: request.headers["content-type"]) else {
            return HTTP2InlineResponse(status: 415, headers: ["content-type": "text/plain"], body: GRPCRequestHead.wrongContentType)
        }
        do {
            let encoding: String
            do {
                encoding = try GRPCRequestHead(method: request.method, headers: request.headers).encoding
            } catch {
                return Self.failure(RPCError(wrapping: error), extra: GRPCRequestHead.acceptEncoding)
            }
            guard !request.bodyTooLarge else {
                throw RPCError(.resourceExhausted, "message exceeds the limit of \(maxReceiveMessageSize) bytes")
            }
            let payload = try RequestMessageRules.onlyMessage(in: request.body, gzip: encoding == "gzip", limit: maxReceiveMessageSize)
            let reply = try handler(payload, request.headers)
            return HTTP2InlineResponse(headers: ["content-type": "application/grpc", "grpc-accept-encoding": "gzip, identity"],
                                       body: GRPCMessageFramer.frame(reply), trailers: ["grpc-status": "0"])
        } catch {
            return Self.failure(RPCServer.status(for: error, path: request.path, logger: logger))
        }
    }

    /// Trailers-Only: the status in the response head, which ends the stream.
    static func failure(_ error: RPCError, extra: HTTP2Headers = HTTP2Headers()) -> HTTP2InlineResponse {
        var headers: HTTP2Headers = ["content-type": "application/grpc", "grpc-status": String(error.code.rawValue)]
        if !error.message.isEmpty { headers.add("grpc-message", StatusMessageCoding.encode(error.message)) }
        for f in extra { headers.add(f.name, f.value) }
        return HTTP2InlineResponse(headers: headers)
    }
}
