/// Limits and caches of the inference service (`kiln serve` flags).
public struct InferenceOptions: Sendable {
    /// Bytes of whole answers the result cache keeps (0: no result cache), and seconds each lives.
    public var resultCacheBytes = 64 << 20
    public var resultCacheTimeToLive = 300.0
    /// Chat sessions kept at most, the bytes of history they may hold together, and seconds an idle one lives.
    public var maxSessions = 1024
    public var sessionMemoryBytes = 256 << 20
    public var sessionIdleTimeToLive = 600.0
    /// Where chat sessions are also kept, so that another worker can continue them (nil: this worker's
    /// memory only).
    public var sessionStore: RedisConnection.Address?
    /// Where whole answers are also kept, for every worker (the result cache's second level; nil: none).
    public var resultCacheStore: RedisConnection.Address?
    /// max_tokens when a request leaves it unset.
    public var defaultMaxTokens = 256

    public init() {}
}
