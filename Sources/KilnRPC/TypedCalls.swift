/// Typed layers over the raw-bytes RPC core, used by generated service code.

/// Request messages of a call, decoded as they arrive.
public struct RPCTypedRequests<Message: ProtobufMessage>: AsyncSequence, Sendable {
    public typealias Element = Message
    let raw: RPCRequestMessages

    public init(_ raw: RPCRequestMessages) { self.raw = raw }

    public struct AsyncIterator: AsyncIteratorProtocol {
        var inner: RPCRequestMessages.AsyncIterator
        public mutating func next() async throws -> Message? {
            guard let bytes = try await inner.next() else { return nil }
            return try Message(serializedBytes: bytes)
        }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(inner: raw.makeAsyncIterator()) }

    /// The one request of a unary or server-streaming call.
    public func single() async throws -> Message {
        try Message(serializedBytes: try await raw.single())
    }
}

/// Writes typed response messages of a server-streaming or bidirectional call.
public struct RPCTypedWriter<Message: ProtobufMessage>: Sendable {
    public let raw: RPCResponseWriter
    public init(_ raw: RPCResponseWriter) { self.raw = raw }
    public func write(_ message: Message) async throws { try await raw.write(message.serializedBytes()) }
}

/// A typed client call: send requests, read responses.
public struct RPCTypedClientCall<Request: ProtobufMessage, Response: ProtobufMessage>: Sendable {
    public let raw: RPCClientCall
    public init(_ raw: RPCClientCall) { self.raw = raw }
    public func send(_ request: Request) async throws { try await raw.send(request.serializedBytes()) }
    public func finish() { raw.finish() }
    public func cancel() { raw.cancel() }
    /// Response messages; the status is thrown at the end when it is not OK.
    public var responses: AsyncThrowingStream<Response, Error> {
        let bytes = raw.responses
        return AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    for try await b in bytes { continuation.yield(try Response(serializedBytes: b)) }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }
}

extension RPCChannel {
    /// A typed unary call.
    public func unary<Request: ProtobufMessage, Response: ProtobufMessage>(
        path: String, request: Request, options: RPCCallOptions = RPCCallOptions(), as: Response.Type = Response.self
    ) async throws -> Response {
        let reply = try await unary(path: path, request: request.serializedBytes(), options: options)
        return try Response(serializedBytes: reply.message)
    }

    /// A typed call of any kind.
    public func makeTypedCall<Request: ProtobufMessage, Response: ProtobufMessage>(
        path: String, options: RPCCallOptions = RPCCallOptions(), request: Request.Type = Request.self, response: Response.Type = Response.self
    ) throws -> RPCTypedClientCall<Request, Response> {
        RPCTypedClientCall(try makeCall(path: path, options: options))
    }
}
