/// A copy the backend must make before a step writes into a block another sequence still shares.
public struct BlockCopy: Equatable, Sendable {
    public let source: Int
    public let destination: Int
}

/// Per-sequence KV bookkeeping over a `BlockPool`: block tables, automatic prefix caching and
/// copy-on-write. The scheduler asks it for room before each step; the backend only ever sees block tables.
///
/// A sequence's tokens are the ones whose keys and values are (or are about to be) in its blocks. A full
/// block becomes findable by later sequences once its tokens are computed (`markComputed`), keyed by a hash
/// chain over everything before it, so a prompt starting with a cached prefix takes those blocks instead of
/// recomputing them.
public final class KVCacheManager {
    public typealias SequenceID = Int

    struct Sequence {
        var blocks: [Int] = []
        var tokens: [Int32] = []
        var computed = 0
        /// Full blocks already offered to the prefix cache, and the chain hash after the last of them.
        var cachedBlocks = 0
        var chain: ChainHash = BlockKey.root
    }

    public let blockSize: Int
    public private(set) var pool: BlockPool
    private var sequences: [SequenceID: Sequence] = [:]
    /// Prompt tokens served from the prefix cache, and prompt tokens admitted, since the start.
    public private(set) var cachedPromptTokens = 0, admittedPromptTokens = 0

    /// Whether full blocks are offered to and looked up in the prefix cache (off: every prompt is computed).
    public let prefixCaching: Bool

    public init(blockCount: Int, blockSize: Int = 16, prefixCaching: Bool = true) {
        precondition(blockSize > 0)
        self.blockSize = blockSize
        self.prefixCaching = prefixCaching
        pool = BlockPool(count: blockCount)
    }

    public var sequenceCount: Int { sequences.count }
    public func contains(_ id: SequenceID) -> Bool { sequences[id] != nil }

    /// The blocks holding sequence `id`'s positions, in order.
    public func blockTable(_ id: SequenceID) -> [Int] { sequences[id]?.blocks ?? [] }
    /// Tokens of `id` (computed or about to be).
    public func tokenCount(_ id: SequenceID) -> Int { sequences[id]?.tokens.count ?? 0 }
    /// Tokens of `id` whose keys and values are already computed.
    public func computedTokens(_ id: SequenceID) -> Int { sequences[id]?.computed ?? 0 }

    /// Blocks needed to hold `tokens` positions.
    public func blocksFor(tokens: Int) -> Int { (tokens + blockSize - 1) / blockSize }

    /// Admits a new sequence whose first tokens are `tokens`, taking the longest cached prefix of full blocks
    /// (always leaving at least the last token to compute, whose logits the step needs) and allocating blocks
    /// for the rest. Returns how many tokens came from the cache, or nil — changing nothing — when the pool
    /// cannot hold the sequence.
    public func admit(_ id: SequenceID, tokens: [Int]) -> Int? {
        precondition(sequences[id] == nil, "sequence \(id) is already admitted")
        precondition(!tokens.isEmpty)
        let ids = tokens.map { Int32(truncatingIfNeeded: $0) }
        // Find the cached prefix first, without taking anything.
        var keys: [BlockKey] = []
        var chain = BlockKey.root
        while prefixCaching, (keys.count + 1) * blockSize < ids.count {
            let start = keys.count * blockSize
            let key = BlockKey(parent: chain, tokens: Array(ids[start..<start + blockSize]))
            guard pool.isCached(key) else { break }
            keys.append(key)
            chain = key.chainHash
        }
        let fresh = blocksFor(tokens: ids.count) - keys.count
        // Cached blocks that are currently free leave the free queue too.
        var pool = self.pool
        let hits = keys.compactMap { pool.takeCached($0) }
        guard hits.count == keys.count, fresh <= pool.freeCount else { return nil }
        var blocks = hits
        for _ in 0..<fresh {
            guard let b = pool.allocate() else { return nil }
            blocks.append(b)
        }
        self.pool = pool
        let cached = hits.count * blockSize
        sequences[id] = Sequence(blocks: blocks, tokens: ids, computed: cached, cachedBlocks: hits.count, chain: chain)
        cachedPromptTokens += cached
        admittedPromptTokens += ids.count
        return cached
    }

    /// Extends sequence `id` by `tokens` (to be computed next), allocating blocks as needed. When the block
    /// about to be written is shared with another sequence it is copied first: the copies are returned for
    /// the backend to perform before the step. Nil — changing nothing — when the pool has too few free blocks.
    public func append(_ id: SequenceID, tokens: [Int]) -> [BlockCopy]? {
        guard var s = sequences[id] else { preconditionFailure("unknown sequence \(id)") }
        let total = s.tokens.count + tokens.count
        let last = s.blocks.last
        let needsCopy = s.tokens.count % blockSize != 0 && last.map { pool.referenceCount($0) > 1 } == true
        guard blocksToAppend(id, count: tokens.count) <= pool.freeCount else { return nil }
        var copies: [BlockCopy] = []
        if needsCopy, let shared = last, let copy = pool.allocate() {
            copies.append(BlockCopy(source: shared, destination: copy))
            pool.release(shared)
            s.blocks[s.blocks.count - 1] = copy
        }
        while s.blocks.count < blocksFor(tokens: total) {
            guard let b = pool.allocate() else { preconditionFailure("free count checked above") }
            s.blocks.append(b)
        }
        s.tokens += tokens.map { Int32(truncatingIfNeeded: $0) }
        sequences[id] = s
        return copies
    }

    /// Blocks `append(id, tokens:)` of `count` tokens would take from the pool (new blocks, and a copy of a
    /// shared block about to be written).
    public func blocksToAppend(_ id: SequenceID, count: Int) -> Int {
        guard let s = sequences[id] else { return 0 }
        let writesIntoLast = s.tokens.count % blockSize != 0
        let needsCopy = writesIntoLast && s.blocks.last.map { pool.referenceCount($0) > 1 } == true
        return blocksFor(tokens: s.tokens.count + count) - s.blocks.count + (needsCopy ? 1 : 0)
    }

    /// Sets token `index` of `id`, appended before it was known (a pipelined step's pick, fed on the device)
    /// and not yet computed, so no cached block holds it yet.
    public func setToken(_ id: SequenceID, at index: Int, to token: Int) {
        guard var s = sequences[id] else { preconditionFailure("unknown sequence \(id)") }
        precondition(index >= s.computed && index < s.tokens.count, "token \(index) is computed or missing")
        s.tokens[index] = Int32(truncatingIfNeeded: token)
        sequences[id] = s
    }

    /// Records that the first `count` tokens of `id` are computed; full blocks among them enter the prefix cache.
    public func markComputed(_ id: SequenceID, upTo count: Int) {
        guard var s = sequences[id] else { preconditionFailure("unknown sequence \(id)") }
        precondition(count <= s.tokens.count)
        s.computed = max(s.computed, count)
        while prefixCaching, (s.cachedBlocks + 1) * blockSize <= s.computed {
            let start = s.cachedBlocks * blockSize
            let key = BlockKey(parent: s.chain, tokens: Array(s.tokens[start..<start + blockSize]))
            pool.cache(s.blocks[s.cachedBlocks], as: key)
            s.chain = key.chainHash
            s.cachedBlocks += 1
        }
        sequences[id] = s
    }

    /// A new sequence sharing all of `id`'s blocks (a branch: its first write into a shared block copies it).
    public func fork(_ id: SequenceID, as newID: SequenceID) {
        guard let s = sequences[id] else { preconditionFailure("unknown sequence \(id)") }
        precondition(sequences[newID] == nil)
        for b in s.blocks { pool.retain(b) }
        sequences[newID] = s
    }

    /// Releases every block of `id` (finished, cancelled or preempted). Its tail blocks are released first,
    /// so they are evicted before the prefix blocks other requests are likelier to share.
    public func free(_ id: SequenceID) {
        guard let s = sequences.removeValue(forKey: id) else { return }
        for b in s.blocks.reversed() { pool.release(b) }
    }

    /// The pool's invariants, plus: every reference count equals the number of block tables naming the block.
    public func checkInvariants() -> String? {
        if let problem = pool.checkInvariants() { return problem }
        var counts = [Int](repeating: 0, count: pool.count)
        for s in sequences.values {
            for b in s.blocks { counts[b] += 1 }
            if s.blocks.count != blocksFor(tokens: s.tokens.count) { return "a sequence has \(s.blocks.count) blocks for \(s.tokens.count) tokens" }
        }
        for b in 0..<pool.count where counts[b] != pool.referenceCount(b) {
            return "block \(b): reference count \(pool.referenceCount(b)), named by \(counts[b]) tables"
        }
        return nil
    }
}
