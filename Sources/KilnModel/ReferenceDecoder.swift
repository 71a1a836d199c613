/// One sequence on the CPU reference backend, fed token by token or in chunks: its KV blocks are simply
/// 0, 1, 2, … of a pool that grows as the sequence does.
public final class ReferenceDecoder {
    public let backend: ReferenceBackend
    public var config: ModelConfig { backend.config }
    /// Tokens already in the KV cache.
    public private(set) var position = 0

    public init(weights: ReferenceWeights) {
        let blockSize = 16
        backend = ReferenceBackend(weights: weights, blockCount: (weights.config.contextLength + blockSize - 1) / blockSize, blockSize: blockSize)
    }

    /// Forgets the sequence (the pool's memory is kept for the next one).
    public func reset() { position = 0 }

    /// Runs `tokens` at positions `position ..< position + tokens.count`, appending their keys and values to
    /// the cache, and returns the logits of the last `logitCount` of them.
    public func forward(_ tokens: [Int], logitCount: Int = 1) throws -> [[Float]] {
        guard !tokens.isEmpty, logitCount <= tokens.count else {
            throw DecodeBatchError("\(tokens.count) tokens, \(logitCount) logit rows")
        }
        let blocks = (position + tokens.count + backend.blockSize - 1) / backend.blockSize
        let batch = DecodeBatch.sequence(tokens, startingAt: position, blockTable: Array(0..<blocks), wanted: logitCount)
        let logits = try backend.logits(batch)
        position += tokens.count
        return logits
    }
}
