/// Transparent retries for calls that never reached the server, or that failed with UNAVAILABLE before
/// any response message arrived (so the server cannot have acted on them in a way the client saw).
public struct RetryPolicy: Sendable {
    /// Attempts in all, the first included (1 turns retries off).
    public var maxAttempts = 3
    public var initialBackoffSeconds = 0.1
    public var maxBackoffSeconds = 1.0
    public var backoffMultiplier = 2.0
    /// Each pause is drawn uniformly from [backoff × (1 − jitter), backoff × (1 + jitter)].
    public var jitter = 0.2

    public init() {}

    /// No retries.
    public static var none: RetryPolicy {
        var p = RetryPolicy()
        p.maxAttempts = 1
        return p
    }

    /// The pause before attempt `attempt` (2 for the first retry), with jitter.
    public func backoff(beforeAttempt attempt: Int, using rng: inout some RandomNumberGenerator) -> Double {
        let exponent = Double(max(0, attempt - 2))
        let base = min(maxBackoffSeconds, initialBackoffSeconds * pow(backoffMultiplier, exponent))
        let j = max(0, min(1, jitter))
        return base * Double.random(in: (1 - j)...(1 + j), using: &rng)
    }
}

import Glibc
