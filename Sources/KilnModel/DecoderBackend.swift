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
    /// Most logit rows one step may ask for.
    var maxLogitRows: Int { get }
    /// How many candidates `candidates` returns per row.
    var topCandidateCount: Int { get }
    /// Runs the step and returns the `topCandidateCount` most likely tokens of each of `batch.logitRows`, and
    /// their full logits too when `alsoLogits` (else an empty array).
    func candidates(_ batch: DecodeBatch, alsoLogits: Bool) throws -> (candidates: [TopCandidates], logits: [[Float]])
}

extension DecoderBackend {
    /// Backends that hold logits in host arrays take any number of rows.
    public var maxLogitRows: Int { Int.max }

    /// Candidates per row that the host finds in the full logits: backends without a device top-k.
    public var topCandidateCount: Int { 64 }

    public func candidates(_ batch: DecodeBatch, alsoLogits: Bool) throws -> (candidates: [TopCandidates], logits: [[Float]]) {
        let rows = try logits(batch)
        return (rows.map { TopCandidates(logits: $0, count: topCandidateCount) }, alsoLogits ? rows : [])
    }
}
