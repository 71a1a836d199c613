import KilnHTTP2

/// A client channel to one target: calls multiplexed on one HTTP/2 connection (h2c or TLS/mTLS), with
/// deadlines, metadata, cancellation, transparent retries (``RetryPolicy``) and a circuit breaker.
/// Generated clients sit on top of it.
public final class RPCChannel: Sendable {
    private let http: HTTP2Client
    public let retryPolicy: RetryPolicy
    public let breaker: CircuitBreaker
    public let maxReceiveMessageSize: Int
    private let target: String

    public init(host: String, port: Int, tls: TLSClientConfiguration? = nil, group: EventLoopGroup,
                retry: RetryPolicy = RetryPolicy(), circuitBreaker: CircuitBreakerPolicy = CircuitBreakerPolicy(),
                maxReceiveMessageSize: Int = 4 * 1024 * 1024, connectTimeout: Double = 5) throws {
        http = try HTTP2Client(host: host, port: port, tls: tls, group: group, connectTimeout: connectTimeout)
        retryPolicy = retry
        breaker = CircuitBreaker(policy: circuitBreaker)
        self.maxReceiveMessageSize = maxReceiveMessageSize
        target = "\(host):\(port)"
    }

    /// Starts a call of any kind. Write requests with `send`, end them with `finish`, read `responses`.
    /// Streaming calls are not retried: their requests are the caller's to replay.
    public func makeCall(path: String, options: RPCCallOptions = RPCCallOptions()) throws -> RPCClientCall {
        guard breaker.admit() else { throw RPCError(.unavailable, "circuit open for \(target)") }
        var headers = options.metadata
        headers.replace("content-type", "application/grpc")
        headers.replace("te", "trailers")
        headers.replace("grpc-accept-encoding", "gzip, identity")
        if options.compressRequests { headers.replace("grpc-encoding", "gzip") }
        if let t = options.timeout { headers.replace("grpc-timeout", GRPCTimeout.format(nanoseconds: UInt64(max(0, t) * 1e9))) }
        do {
            let call = try http.makeCall(method: "POST", path: path, headers: headers)
            return RPCClientCall(call: call, timeout: options.timeout, maxReceiveMessageSize: maxReceiveMessageSize,
                                 compressRequests: options.compressRequests)
        } catch {
            breaker.recordFailure()
            throw RPCError(.unavailable, "\(target): \(error)", cause: error)
        }
    }

    /// A unary call: one request, one response message.
    public func unary(path: String, request: [UInt8], options: RPCCallOptions = RPCCallOptions()) async throws -> (message: [UInt8], trailingMetadata: HTTP2Headers) {
        let (messages, trailers) = try await collect(path: path, request: request, options: options, expectOne: true)
        return (messages[0], trailers)
    }

    /// A server-streaming call: one request, a stream of responses, collected. Retried only until the
    /// first response message arrives.
    public func serverStreaming(path: String, request: [UInt8], options: RPCCallOptions = RPCCallOptions()) async throws -> [[UInt8]] {
        try await collect(path: path, request: request, options: options, expectOne: false).messages
    }

    /// Sends one request and collects every response message, with retries and the breaker.
    private func collect(path: String, request: [UInt8], options: RPCCallOptions, expectOne: Bool) async throws -> (messages: [[UInt8]], trailers: HTTP2Headers) {
        try await withRetries {
            // makeCall records its own failures (connect errors) and refuses while the circuit is open.
            let call = try self.makeCall(path: path, options: options)
            var messages: [[UInt8]] = []
            do {
                try await call.send(request)
                call.finish()
                for try await m in call.responses { messages.append(m) }
            } catch let e as RPCError {
                throw Attempt(error: e, retryable: e.code == .unavailable && !call.receivedMessage)
            }
            if expectOne && messages.count != 1 {
                throw Attempt(error: RPCError(.internal, "unary response had \(messages.count) messages"), retryable: false)
            }
            return (messages, call.trailingMetadata)
        }
    }

    /// One attempt's failure, and whether another attempt may follow.
    struct Attempt: Error {
        let error: RPCError
        let retryable: Bool
    }

    private func withRetries<T>(_ body: @Sendable () async throws -> T) async throws -> T {
        var rng = SystemRandomNumberGenerator()
        var attempt = 1
        while true {
            do {
                let result = try await body()
                breaker.recordSuccess()
                return result
            } catch let failure as Attempt {
                if failure.error.code == .unavailable { breaker.recordFailure() } else { breaker.recordSuccess() }
                guard failure.retryable, attempt < retryPolicy.maxAttempts, !Task.isCancelled else { throw failure.error }
            } catch let e as RPCError {
                // makeCall refused (circuit open or connect failed): it never reached the server.
                guard e.code == .unavailable, attempt < retryPolicy.maxAttempts, !Task.isCancelled else { throw e }
            }
            attempt += 1
            let pause = retryPolicy.backoff(beforeAttempt: attempt, using: &rng)
            try await Task.sleep(nanoseconds: UInt64(pause * 1e9))
        }
    }

    /// Closes the connection gracefully.
    public func close() { http.close() }
}
