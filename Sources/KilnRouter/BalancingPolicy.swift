/// How a call picks its backend.
public enum BalancingPolicy: String, Sendable, CaseIterable {
    /// Each eligible backend in turn.
    case roundRobin = "round_robin"
    /// Each eligible backend in turn, as often as its weight (nginx's smooth weighted round robin).
    case weightedRoundRobin = "weighted_round_robin"
    /// The fewer in-flight calls (per unit of weight) of two random eligible backends.
    case leastRequest = "least_request"
    /// The lower decaying average response time × (in-flight calls + 1) of two random eligible backends
    /// (power of two choices, on a peak-EWMA-like cost): the default for calls without a session key.
    case leastResponseTime = "least_response_time"
    /// The key's ring owner while it is below the bounded-load bound, else the key's probe order: the
    /// default for calls with a session key.
    case consistentHash = "consistent_hash"
}
