import KilnAPI
import KilnHTTP2
import KilnRPC

/// A Generate or Chat call that `kiln route` can continue on another backend when its backend fails or hands
/// it over mid-stream: the request, and the tokens of the answer the client has received.
///
/// The worker's response passes through it message by message: the client only ever gets whole messages,
/// and the router knows exactly which tokens the client has. On a failure the next backend gets the same
/// request with those tokens as its `continuation` and goes on from there token for token (the engine's
/// kernels are batch-invariant and its sampler counter-based), so the client's stream simply continues.
struct MigratableStream {
    enum Request {
        case generate(Kiln_V1_GenerateRequest)
        case chat(Kiln_V1_ChatRequest)
    }

    let request: Request
    /// Token ids of the messages forwarded to the client, in order.
    private(set) var tokens: [UInt32] = []
    /// Whether the last message (finish reason and usage) reached the client: nothing is left to continue.
    private(set) var answered = false
    private let maxMessageBytes: Int
    private var deframer: GRPCMessageDeframer

    /// The call as a migratable stream; nil for one that cannot move: another method, or a compressed or
    /// unreadable request.
    init?(path: Substring, body: [UInt8], maxMessageBytes: Int) {
        var deframer = GRPCMessageDeframer(maxMessageSize: maxMessageBytes)
        deframer.append(body)
        guard let message = try? deframer.next(), !message.compressed else { return nil }
        switch path {
        case "/kiln.v1.Inference/Generate":
            guard let r = try? Kiln_V1_GenerateRequest(serializedBytes: message.payload) else { return nil }
            request = .generate(r)
        case "/kiln.v1.Inference/Chat":
            // A session's turn moves too: a worker with the shared session store (`--session-store`) loads the
            // history and goes on; one without it refuses (FAILED_PRECONDITION), and the client gets that.
            guard let r = try? Kiln_V1_ChatRequest(serializedBytes: message.payload) else { return nil }
            request = .chat(r)
        default:
            return nil
        }
        self.maxMessageBytes = maxMessageBytes
        self.deframer = GRPCMessageDeframer(maxMessageSize: maxMessageBytes)
    }

    /// The request for the next backend, framed: the original with the tokens streamed so far appended to
    /// its continuation.
    func continuedBody() -> [UInt8] {
        switch request {
        case .generate(var r):
            r.continuation += tokens
            return GRPCMessageFramer.frame(r.serializedBytes())
        case .chat(var r):
            r.continuation += tokens
            return GRPCMessageFramer.frame(r.serializedBytes())
        }
    }

    /// Starts reading a new backend's response (any part-message of the failed one is dropped: the client
    /// never saw it).
    mutating func beginResponse() {
        deframer = GRPCMessageDeframer(maxMessageSize: maxMessageBytes)
    }

    /// The whole messages in the bytes so far, framed for the client, their tokens noted; the bytes of a
    /// message not yet whole are kept for the next chunk. Throws when the bytes are not uncompressed
    /// `kiln.v1.GenerateResponse` messages (the backend is then treated as failed).
    mutating func forward(_ chunk: [UInt8]) throws -> [UInt8] {
        deframer.append(chunk)
        var out: [UInt8] = []
        while let message = try deframer.next() {
            guard !message.compressed else { throw RPCError(.internal, "a compressed response message") }
            let response = try Kiln_V1_GenerateResponse(serializedBytes: message.payload)
            if response.usage != nil { answered = true } else { tokens.append(response.tokenId) }
            out += GRPCMessageFramer.frame(message.payload)
        }
        return out
    }
}

extension InferenceRelay {
    /// Sends a migratable call to one backend and relays its answer message by message. Before any message
    /// has reached the client a failure is a `.retry`, as for any call; after one (`committed`: an earlier
    /// backend already streamed part of the answer) it is a `.migrate`, and the caller continues the call on
    /// the next backend with `stream.continuedBody()`. A backend that answers the continuation with a final
    /// status (INVALID_ARGUMENT, say) ends the client's stream with it.
    /// `migrations`: times the call has moved so far, told to the client in the `kiln-migrations` trailer.
    func relayMigrating(to backend: Backend, path: String, headers: HTTP2Headers, body: [UInt8], stream: inout MigratableStream,
                        committed: Bool, migrations: Int, extraHeaders: HTTP2Headers, response: HTTP2ResponseWriter) async -> Outcome {
        let call: HTTP2ClientCall
        do {
            call = try backend.client.makeCall(path: path, headers: headers)
        } catch {
            return committed ? .migrate("connect: \(error)") : .retry("connect: \(error)", pushbackMs: nil)
        }
        var current = stream
        let outcome = await withTaskCancellationHandler {
            await relayMigrating(call, body: body, stream: &current, committed: committed, migrations: migrations,
                                 extraHeaders: extraHeaders, response: response)
        } onCancel: {
            call.cancel()  // the client went away: so does the worker's call, and its KV blocks with it
        }
        stream = current
        return outcome
    }

    private func relayMigrating(_ call: HTTP2ClientCall, body: [UInt8], stream: inout MigratableStream, committed: Bool,
                                migrations: Int, extraHeaders: HTTP2Headers, response: HTTP2ResponseWriter) async -> Outcome {
        stream.beginResponse()
        func told(_ trailers: HTTP2Headers) -> HTTP2Headers {
            guard migrations > 0 else { return trailers }
            var out = trailers
            out.replace(Self.migrationsTrailer, String(migrations))
            return out
        }
        // Whether the client has the response head and a message: from then on a failure migrates.
        var forwarded = committed
        func failed(_ reason: String) -> Outcome { forwarded ? .migrate(reason) : .retry(reason, pushbackMs: nil) }
        let head: HTTP2ResponseHead
        do {
            try await call.write(body)
            call.finish()
            head = try await call.response()
        } catch {
            call.cancel()
            if Task.isCancelled { return .done(.abandoned, trailers: nil) }
            return failed("\(error)")
        }
        if head.endStream {
            // Trailers-Only: the call ended before any message.
            if let retry = Self.retryable(head.headers) {
                guard committed, case .retry(let reason, _) = retry else { return retry }
                return .migrate(reason)
            }
            if committed {
                response.finish(trailers: told(Self.statusFields(head.headers)))
            } else {
                response.sendHead(status: head.status, headers: Self.merged(head.headers, extraHeaders), endStream: true)
            }
            return .done(Self.judge(head.headers), trailers: head.headers)
        }
        guard head.status == 200 else {
            if committed || [502, 503, 504].contains(head.status) {
                call.cancel()
                return failed("HTTP \(head.status)")
            }
            response.sendHead(status: head.status, headers: head.headers)
            response.finish()
            return .done(.succeeded, trailers: nil)
        }
        while true {
            let chunk: [UInt8]?
            do {
                chunk = try await call.body.nextBatch(maxBytes: Self.batchBytes)
            } catch {
                if Task.isCancelled { return .done(.abandoned, trailers: nil) }
                guard stream.answered else { return failed("\(error)") }
                // The whole answer reached the client; only the worker's trailers were lost.
                response.finish(trailers: told(["grpc-status": String(RPCStatusCode.ok.rawValue)]))
                return .done(.succeeded, trailers: nil)
            }
            guard let chunk else { break }
            let out: [UInt8]
            do {
                out = try stream.forward(chunk)
            } catch {
                call.cancel()
                return failed("the backend's response is not kiln.v1.GenerateResponse messages: \(error)")
            }
            guard !out.isEmpty else { continue }
            if !forwarded {
                response.sendHead(status: 200, headers: Self.merged(head.headers, extraHeaders))
                forwarded = true
            }
            do {
                try await response.write(out)
            } catch {
                call.cancel()
                return .done(.abandoned, trailers: nil)
            }
        }
        let trailers = call.body.trailers
        if !forwarded {
            if let retry = Self.retryable(trailers) { return retry }
            response.sendHead(status: 200, headers: Self.merged(head.headers, extraHeaders))
        } else if !stream.answered, RPCStatusCode(grpcStatus: trailers["grpc-status"]) == .unavailable {
            // Ended early by a drain's handoff (`kiln-migrate`), a shutdown or a failing decoder.
            return .migrate("UNAVAILABLE: \(StatusMessageCoding.decode(trailers["grpc-message"] ?? ""))\(trailers[StreamHandoff.migrateTrailer] != nil ? " (handed over)" : "")")
        }
        response.finish(trailers: told(trailers))
        return .done(Self.judge(trailers), trailers: trailers)
    }

    /// Trailer of a call that moved to another backend mid-stream: how many times it moved.
    static let migrationsTrailer = "kiln-migrations"

    /// The status and metadata of a Trailers-Only head, as trailers after messages.
    static func statusFields(_ head: HTTP2Headers) -> HTTP2Headers {
        var out = head
        out.removeAll { $0.name == "content-type" || $0.name.hasPrefix(":") }
        return out
    }
}
