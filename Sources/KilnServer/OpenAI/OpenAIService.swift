import Foundation
import KilnAPI
import KilnHTTP2
import KilnRPC
import Logging
import Synchronization

/// The OpenAI-compatible API (`/v1/chat/completions`, `/v1/completions`, `/v1/models`), over HTTP/1.1 and
/// HTTP/2 alike, on `kiln serve` and `kiln route`.
///
/// Each request becomes the `kiln.v1.Inference` call the gRPC service takes (Chat or Generate), made over
/// this server's own cleartext port: on `kiln serve` that reaches its inference service, on `kiln route` its
/// relay (so the API gets the router's affinity, retries and mid-stream failover). One implementation of each
/// request's meaning, then: templates, validation and sampling are the service's, and this layer only
/// translates JSON and SSE. An `x-session-id` header binds a chat to a server-side session as `session_id`
/// does in gRPC. (Over the loopback hop the caller's TLS identity is not carried: sessions made here belong
/// to no client certificate.)
public final class OpenAIService: HTTP2Handler {
    private let health: HealthService
    private let logger: Logger
    private struct Target {
        var client: Kiln_V1_InferenceClient
        var channel: RPCChannel
        var models: [String] = []
    }
    private let target = Mutex<Target?>(nil)
    /// Request bodies larger than this are refused (413) before they are decoded.
    static let maxBodyBytes = 8 << 20

    public init(health: HealthService, logger: Logger = Logger(label: "kiln.openai")) {
        self.health = health
        self.logger = logger
    }

    /// Mounts the API's routes.
    public func mount(on router: inout HTTP2Router) {
        router.add(prefix: "/v1/", .handler(self))
    }

    /// Points the API at this server's own cleartext port, once it listens.
    public func connect(port: Int, group: EventLoopGroup) throws {
        let channel = try RPCChannel(host: "127.0.0.1", port: port, group: group)
        target.withLock { $0 = Target(client: Kiln_V1_InferenceClient(channel: channel), channel: channel) }
    }

    public func close() {
        target.withLock { $0?.channel.close(); $0 = nil }
    }

    public func handle(_ request: HTTP2Request, _ response: HTTP2ResponseWriter) async throws {
        do {
            try await route(request, response)
        } catch is CancellationError {
            return
        } catch {
            let e: OpenAIError
            switch error {
            case let openAI as OpenAIError: e = openAI
            case let rpc as RPCError: e = .from(rpc)
            default:
                logger.warning("openai: \(request.method) \(request.path): \(error)")
                e = OpenAIError(status: 500, message: "\(error)", type: "server_error", param: nil, code: nil)
            }
            if e.status >= 500 || e.status == 429 { logger.info("openai: \(request.method) \(request.path): \(e.status) \(e.message)") }
            if !response.headSent { try? await send(e, response) } else { try? await sendStreamError(e, response) }
        }
    }

    private func route(_ request: HTTP2Request, _ response: HTTP2ResponseWriter) async throws {
        let path = request.pathWithoutQuery
        switch (request.method, path) {
        case ("POST", "/v1/chat/completions"):
            try await chat(request, response)
        case ("POST", "/v1/completions"):
            try await completion(request, response)
        case ("GET", "/v1/models"):
            let models = try await servedModels()
            try await reply(200, ["object": "list", "data": models.map(OpenAIResponses.model)], response)
        case ("GET", _) where path.hasPrefix("/v1/models/"):
            let id = String(path.dropFirst("/v1/models/".count)).removingPercentEncoding ?? ""
            guard try await servedModels().contains(id) else { throw OpenAIError.notFound("the model \(id.prefix(64).debugDescription) does not exist", code: "model_not_found") }
            try await reply(200, OpenAIResponses.model(id), response)
        case (_, "/v1/chat/completions"), (_, "/v1/completions"), (_, "/v1/models"):
            throw OpenAIError(status: 405, message: "\(request.method) is not allowed on \(path)", type: "invalid_request_error", param: nil, code: "method_not_allowed")
        default:
            throw OpenAIError.notFound("no route \(request.method) \(path.prefix(128))", code: "unknown_route")
        }
    }

    // MARK: Endpoints

    private func chat(_ request: HTTP2Request, _ response: HTTP2ResponseWriter) async throws {
        let body = try await readBody(request)
        let req = try OpenAIRequests.decode(OpenAIRequests.Chat.self, from: body)
        let (client, model) = try await client(for: req.model)
        var grpc = Kiln_V1_ChatRequest()
        grpc.model = model
        grpc.messages = req.messages.map { m in
            var message = Kiln_V1_ChatMessage()
            message.role = m.role
            message.content = m.content.text
            return message
        }
        let wantLogprobs = req.logprobs ?? false
        grpc.sampling = try req.sampling.parameters(maxTokens: req.max_completion_tokens ?? req.max_tokens, logprobs: wantLogprobs,
                                                    topLogprobs: wantLogprobs ? req.top_logprobs : nil)
        var options = RPCCallOptions()
        if let session = request.headers["x-session-id"], !session.isEmpty {
            grpc.sessionId = session
            options.metadata.add("x-session-id", session)
        }
        let call = try client.channel.makeTypedCall(path: "/kiln.v1.Inference/Chat", options: options, request: Kiln_V1_ChatRequest.self,
                                                    response: Kiln_V1_GenerateResponse.self)
        try await call.send(grpc)
        call.finish()
        // A session asked for as "new" is named by the server (or the router in front): the id goes back in
        // the response's `x-session-id`, for the next turn.
        var headers = HTTP2Headers()
        if grpc.sessionId == "new", let issued = try await call.raw.initialMetadata()["x-session-id"] { headers.add("x-session-id", issued) }
        try await answer(call.responses, OpenAIResponses(endpoint: .chat, model: model), stream: req.stream ?? false,
                         includeUsage: req.stream_options?.include_usage ?? false, wantLogprobs: wantLogprobs, headers: headers, response)
    }

    private func completion(_ request: HTTP2Request, _ response: HTTP2ResponseWriter) async throws {
        let body = try await readBody(request)
        let req = try OpenAIRequests.decode(OpenAIRequests.Completion.self, from: body)
        if req.echo == true { throw OpenAIError.invalid("echo is not supported", param: "echo") }
        let (client, model) = try await client(for: req.model)
        var grpc = Kiln_V1_GenerateRequest()
        grpc.model = model
        grpc.prompt = req.prompt
        let wantLogprobs = req.logprobs != nil
        grpc.sampling = try req.sampling.parameters(maxTokens: req.max_tokens, logprobs: wantLogprobs, topLogprobs: req.logprobs)
        let stream = try await client.generate(grpc)
        try await answer(stream, OpenAIResponses(endpoint: .completion, model: model), stream: req.stream ?? false,
                         includeUsage: req.stream_options?.include_usage ?? false, wantLogprobs: wantLogprobs, headers: HTTP2Headers(), response)
    }

    /// Streams the call's messages as SSE chunks, or gathers them into one response.
    private func answer(_ messages: AsyncThrowingStream<Kiln_V1_GenerateResponse, Error>, _ shape: OpenAIResponses, stream: Bool,
                        includeUsage: Bool, wantLogprobs: Bool, headers: HTTP2Headers, _ response: HTTP2ResponseWriter) async throws {
        guard stream else {
            var all: [Kiln_V1_GenerateResponse] = []
            for try await m in messages { all.append(m) }
            try await reply(200, shape.whole(all, wantLogprobs: wantLogprobs), headers: headers, response)
            return
        }
        var first = true
        var offset = 0
        var usage: Kiln_V1_Usage?
        for try await m in messages {
            if first {
                // The head goes with the first message, so that a refusal before it is still an HTTP error.
                var head: HTTP2Headers = ["content-type": "text/event-stream", "cache-control": "no-cache"]
                for field in headers { head.add(field.name, field.value) }
                response.sendHead(status: 200, headers: head)
            }
            if !first && m.finishReason == .unspecified && !(wantLogprobs && m.logprob != nil) {
                try await response.write(shape.plainTokenEvent(m.text, includeUsageField: includeUsage))
            } else {
                try await response.write(Self.event(shape.chunk(m, first: first, wantLogprobs: wantLogprobs, includeUsageField: includeUsage, textOffset: offset)))
            }
            first = false
            offset += m.text.utf8.count
            if let u = m.usage { usage = u }
        }
        if includeUsage, let usage { try await response.write(Self.event(shape.usageChunk(usage))) }
        try await response.write(Array("data: [DONE]\n\n".utf8))
        response.finish()
    }

    static func event(_ object: Any) -> [UInt8] {
        Array("data: ".utf8) + OpenAIResponses.json(object) + Array("\n\n".utf8)
    }

    // MARK: Plumbing

    private func readBody(_ request: HTTP2Request) async throws -> [UInt8] {
        do {
            return try await request.body.collect(upTo: Self.maxBodyBytes)
        } catch HTTP2Error.bodyTooLarge {
            throw OpenAIError(status: 413, message: "the request body is larger than \(Self.maxBodyBytes) bytes", type: "invalid_request_error", param: nil, code: "request_too_large")
        }
    }

    /// The client for a request naming `model` (empty: the default), and the model's name; 404 for one not
    /// served, 503 while the server is not ready or drains.
    private func client(for model: String?) async throws -> (Kiln_V1_InferenceClient, String) {
        guard health.status(of: "") == .serving else { throw OpenAIError.unavailable("the server is draining or not ready") }
        let models = try await servedModels()
        guard let first = models.first, let client = target.withLock({ $0?.client }) else { throw OpenAIError.unavailable("no model is being served") }
        let name = model.flatMap { $0.isEmpty ? nil : $0 } ?? first
        guard models.contains(name) else { throw OpenAIError.notFound("the model \(name.prefix(64).debugDescription) does not exist (served: \(models.joined(separator: ", ")))", code: "model_not_found") }
        return (client, name)
    }

    /// The served models' names (asked once, then kept).
    private func servedModels() async throws -> [String] {
        guard let t = target.withLock({ $0 }) else { throw OpenAIError.unavailable("the server is starting") }
        if !t.models.isEmpty { return t.models }
        let list = try await t.client.listModels(Kiln_V1_ListModelsRequest(), options: RPCCallOptions(timeout: 5))
        let names = list.models.sorted { $0.isDefault && !$1.isDefault }.map(\.name)
        target.withLock { $0?.models = names }
        return names
    }

    private func reply(_ status: Int, _ object: Any, headers extra: HTTP2Headers = HTTP2Headers(), _ response: HTTP2ResponseWriter) async throws {
        let body = OpenAIResponses.json(object)
        var headers: HTTP2Headers = ["content-type": "application/json", "content-length": String(body.count)]
        for field in extra { headers.add(field.name, field.value) }
        response.sendHead(status: status, headers: headers)
        try await response.write(body)
        response.finish()
    }

    private func send(_ error: OpenAIError, _ response: HTTP2ResponseWriter) async throws {
        var headers: HTTP2Headers = ["content-type": "application/json"]
        if let after = error.retryAfter { headers.add("retry-after", String(after)) }
        let body = error.body
        headers.add("content-length", String(body.count))
        response.sendHead(status: error.status, headers: headers)
        try await response.write(body)
        response.finish()
    }

    /// An error after the stream began: one `error` event, then the end.
    private func sendStreamError(_ error: OpenAIError, _ response: HTTP2ResponseWriter) async throws {
        try await response.write(Self.event(["error": ["message": error.message, "type": error.type, "code": error.code ?? NSNull()] as [String: Any]]))
        try await response.write(Array("data: [DONE]\n\n".utf8))
        response.finish()
    }
}
