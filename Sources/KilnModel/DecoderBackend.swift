import Foundation

/// One step of work for a decoder backend: tokens of one or more sequences (any mix of prefill chunks and
/// single decode tokens), where each token's key and value go in the paged KV cache, and which tokens'
/// logits are wanted.
public struct DecodeBatch: Sendable {
    /// Token ids of the step.
    public var tokens: [Int]
    /// Position of each token in its sequence.
    public var positions: [Int]
    /// For each token, the index of its sequence's row in `blockTables`.
    public var sequences: [Int]
    /// Per sequence: the KV blocks holding positions 0..<blockSize, blockSize..<2·blockSize, …
    public var blockTables: [[Int]]
    /// Indices into `tokens` whose logits are wanted, in the order they are returned.
    public var logitRows: [Int]

    public init(tokens: [Int], positions: [Int], sequences: [Int], blockTables: [[Int]], logitRows: [Int]) {
        self.tokens = tokens
        self.positions = positions
        self.sequences = sequences
        self.blockTables = blockTables
        self.logitRows = logitRows
    }

    /// A single sequence's tokens at positions start..<start+count, its logits wanted for the last `wanted`.
    public static func sequence(_ tokens: [Int], startingAt start: Int, blockTable: [Int], wanted: Int = 1) -> DecodeBatch {
        DecodeBatch(tokens: tokens, positions: Array(start..<start + tokens.count),
                    sequences: Array(repeating: 0, count: tokens.count), blockTables: [blockTable],
                    logitRows: Array(tokens.count - wanted..<tokens.count))
    }
}

/// A decoder that runs batches over a paged KV cache: the Vulkan backend, and the CPU reference behind the
/// same interface. The engine owns the block bookkeeping; the backend only stores and reads through tables.
public protocol DecoderBackend: AnyObject {
    var config: ModelConfig { get }
    /// Tokens per KV block.
    var blockSize: Int { get }
    /// Blocks in the KV pool.
    var blockCount: Int { get }
    /// Runs the step and returns the logits of `batch.logitRows`.
    func logits(_ batch: DecodeBatch) throws -> [[Float]]
    /// Runs the step and returns the argmax token of each of `batch.logitRows`.
    func greedy(_ batch: DecodeBatch) throws -> [Int]
    /// Copies one KV block's contents to another (copy-on-write when a shared block must be written).
    func copyBlock(from source: Int, to destination: Int) throws
    /// How many candidates `candidates` returns per row.
    var topCandidateCount: Int { get }
    /// Runs the step and returns the `topCandidateCount` most likely tokens of each of `batch.logitRows`, and
    /// their full logits too when `alsoLogits` (else an empty array).
    func candidates(_ batch: DecodeBatch, alsoLogits: Bool) throws -> (candidates: [TopCandidates], logits: [[Float]])
}

/// The most likely tokens of one logit row, in descending order (ties: lower id first), with what turns a
/// logit into a log-probability. Sampling that looks only at these (greedy, or top-k within them, with no
/// penalties) needs nothing else, so a device backend returns 2·count + 2 numbers instead of the vocabulary.
public struct TopCandidates: Sendable, Equatable {
    /// Token ids, most likely first.
    public var ids: [Int]
    /// Their logits.
    public var scores: [Float]
    /// log Σ exp(logit) over the whole vocabulary: a token's log-probability is its logit minus this.
    public var logNormalizer: Double

    public init(ids: [Int], scores: [Float], logNormalizer: Double) {
        self.ids = ids
        self.scores = scores
        self.logNormalizer = logNormalizer
    }

    /// The `count` most likely of a full row of logits, found on the host (NaN logits never count).
    public init(logits: [Float], count: Int) {
        // One pass keeping the best `count` sorted: a token enters only if it beats the last kept one, which
        // after the first few hundred tokens is rare, so this costs little more than reading the row.
        var ids: [Int] = [], scores: [Float] = []
        ids.reserveCapacity(count + 1); scores.reserveCapacity(count + 1)
        for (i, v) in logits.enumerated() where !v.isNaN && count > 0 {
            if ids.count == count, let last = scores.last, v <= last { continue }   // ties keep the lower id
            var at = ids.count
            while at > 0 && v > scores[at - 1] { at -= 1 }
            ids.insert(i, at: at); scores.insert(v, at: at)
            if ids.count > count { ids.removeLast(); scores.removeLast() }
        }
        self.ids = ids
        self.scores = scores
        let maximum = Double(scores.first ?? 0)
        var total = 0.0
        for v in logits where !v.isNaN { total += Foundation.exp(Double(v) - maximum) }
        logNormalizer = Foundation.log(total) + maximum
    }

    /// The log-probability of candidate `index`.
    public func logprob(_ index: Int) -> Double { Double(scores[index]) - logNormalizer }
}

extension DecoderBackend {
    /// Candidates per row that the host finds in the full logits: backends without a device top-k.
    public var topCandidateCount: Int { 64 }

    public func candidates(_ batch: DecodeBatch, alsoLogits: Bool) throws -> (candidates: [TopCandidates], logits: [[Float]]) {
        let rows = try logits(batch)
        return (rows.map { TopCandidates(logits: $0, count: topCandidateCount) }, alsoLogits ? rows : [])
    }
}
