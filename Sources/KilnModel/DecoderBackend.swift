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

extension DecodeBatch {
    /// Throws unless every token, position, sequence index and block of the batch is one a backend with this
    /// model and pool can run: what every CPU backend checks before touching its pool.
    public func validate(config: ModelConfig, blockSize: Int, blockCount: Int) throws {
        let n = tokens.count
        guard n > 0, positions.count == n, sequences.count == n, logitRows.allSatisfy({ $0 >= 0 && $0 < n }) else {
            throw DecodeBatchError("batch shape: \(n) tokens, \(positions.count) positions, \(sequences.count) sequence indices")
        }
        for t in 0..<n {
            let token = tokens[t], position = positions[t], sequence = sequences[t]
            guard token >= 0, token < config.vocabularySize else { throw DecodeBatchError("token id \(token) is outside the vocabulary") }
            guard position >= 0, position < config.contextLength else { throw DecodeBatchError("position \(position) is outside the context") }
            guard sequence >= 0, sequence < blockTables.count, position / blockSize < blockTables[sequence].count else {
                throw DecodeBatchError("token \(t) has no block for position \(position)")
            }
        }
        guard blockTables.allSatisfy({ $0.allSatisfy { $0 >= 0 && $0 < blockCount } }) else {
            throw DecodeBatchError("a block table names a block outside the pool of \(blockCount)")
        }
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

/// A token of a step that is the previous step's greedy pick for one of its logit rows, taken by the
/// device itself: the host submits the next step without reading the previous one's result first.
public struct TokenFeed: Sendable, Equatable {
    /// Index into the step's `tokens` (whose value there is ignored).
    public var token: Int
    /// The logit row of the step submitted just before whose pick goes there.
    public var previousRow: Int
    public init(token: Int, previousRow: Int) {
        self.token = token
        self.previousRow = previousRow
    }
}

/// A greedy step handed to a `PipelinedDecoderBackend` whose picks are not yet read.
public struct SubmittedStep: Sendable, Hashable {
    /// Steps submitted before this one (0 for the first): the order the device runs them in.
    public let serial: Int
    /// Logit rows, so picks, of the step.
    public let rows: Int
    public init(serial: Int, rows: Int) {
        self.serial = serial
        self.rows = rows
    }
}

/// A backend that can take a greedy step while the one before it still runs, so the host's scheduling of
/// step N + 1 overlaps the device's work on step N. Step N + 1's tokens that are step N's picks are fed
/// on the device (`TokenFeed`); the host reads step N's picks (`waitGreedy`) after submitting N + 1.
/// Steps run in submission order, and a step's results are those `greedy` gives for the same batch with
/// the fed tokens in place, bit for bit.
public protocol PipelinedDecoderBackend: DecoderBackend {
    /// Whether submitting a step before reading the previous one's picks lets the host's work overlap the
    /// device's to advantage: true on a device of its own. False where `submitGreedy` runs the step itself
    /// (the CPU reference) or the device is the host's own CPU (lavapipe), where the pipeline only reorders
    /// the host's work. The scheduler pipelines by default where this is true.
    var overlapsSteps: Bool { get }
    /// Submits a greedy step. `feeds` name tokens that are picks of the step submitted just before, which
    /// must have been a greedy step too.
    func submitGreedy(_ batch: DecodeBatch, feeds: [TokenFeed]) throws -> SubmittedStep
    /// Waits for a submitted step (each is waited for once, in any order) and returns its picks, one per
    /// logit row: the first maximum of each row's logits, as `greedy` returns.
    func waitGreedy(_ step: SubmittedStep) throws -> [Int]
}
