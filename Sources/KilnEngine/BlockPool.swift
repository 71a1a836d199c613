/// The hash of a prefix of full blocks, which the next block's key chains from: 128 bits of SipHash keyed
/// with this process's random seed (Swift's `Hasher`), so nobody outside the process can craft two prefixes
/// that hash alike — as they could under the unkeyed 64-bit FNV-1a this replaced, and so make one
/// request's prompt take another's KV blocks.
public struct ChainHash: Hashable, Sendable {
    let low: UInt64, high: UInt64
}

/// Identity of a full block's contents for prefix caching: the hash of everything before it (a chain
/// over the parent block's hash) plus its own token ids, kept exactly, so two blocks match only when
/// their parent hashes and their tokens are equal.
public struct BlockKey: Hashable, Sendable {
    public let parent: ChainHash
    public let tokens: [Int32]

    /// The hash the next block chains from: two keyed SipHash outputs over the parent hash and the tokens,
    /// each with its own domain byte.
    public var chainHash: ChainHash {
        func half(_ domain: UInt8) -> UInt64 {
            var hasher = Hasher()
            hasher.combine(domain)
            hasher.combine(parent.low)
            hasher.combine(parent.high)
            hasher.combine(tokens.count)
            for t in tokens { hasher.combine(t) }
            return UInt64(UInt(bitPattern: hasher.finalize()))
        }
        return ChainHash(low: half(1), high: half(2))
    }

    public init(parent: ChainHash, tokens: [Int32]) {
        self.parent = parent
        self.tokens = tokens
    }

    /// The hash a sequence's first block chains from.
    public static let root = ChainHash(low: 0, high: 0)
}

/// The pool of KV blocks: reference counts, the free queue in eviction order, and the prefix cache
/// mapping full blocks' keys to blocks.
///
/// Invariants (checked by `checkInvariants`): a block is free (in the queue) exactly when its reference
/// count is 0; a cached block's key maps back to it; a free block may stay cached until it is reused, and
/// only then is its key dropped (eviction is lazy and least-recently-freed first).
public struct BlockPool: Sendable {
    public let count: Int
    private(set) var referenceCounts: [Int]
    private var free: FreeBlockQueue
    private var keyOfBlock: [BlockKey?]
    private var blockOfKey: [BlockKey: Int] = [:]
    public private(set) var evictions = 0

    public init(count: Int) {
        precondition(count > 0)
        self.count = count
        referenceCounts = Array(repeating: 0, count: count)
        free = FreeBlockQueue(capacity: count)
        keyOfBlock = Array(repeating: nil, count: count)
    }

    /// Blocks not referenced by any sequence (some may still hold cached prefixes).
    public var freeCount: Int { free.count }
    /// Full blocks currently findable by their key.
    public var cachedCount: Int { blockOfKey.count }

    public func referenceCount(_ block: Int) -> Int { referenceCounts[block] }

    /// Takes a free block for writing, evicting the cached prefix it held, if any. Nil when none is free.
    public mutating func allocate() -> Int? {
        guard let block = free.popFirst() else { return nil }
        if let key = keyOfBlock[block] {
            blockOfKey[key] = nil
            keyOfBlock[block] = nil
            evictions += 1
        }
        referenceCounts[block] = 1
        return block
    }

    /// The cached block holding `key`, now referenced once more (taken out of the free queue if it was there).
    public mutating func takeCached(_ key: BlockKey) -> Int? {
        guard let block = blockOfKey[key] else { return nil }
        if referenceCounts[block] == 0 { free.remove(block) }
        referenceCounts[block] += 1
        return block
    }

    /// True when `key` is cached (without taking it).
    public func isCached(_ key: BlockKey) -> Bool { blockOfKey[key] != nil }

    /// Adds a reference to a block already referenced (a forked sequence sharing it).
    public mutating func retain(_ block: Int) {
        precondition(referenceCounts[block] > 0, "retain of free block \(block)")
        referenceCounts[block] += 1
    }

    /// Drops a reference; at zero the block joins the back of the free queue (still cached if it was).
    public mutating func release(_ block: Int) {
        precondition(referenceCounts[block] > 0, "release of free block \(block)")
        referenceCounts[block] -= 1
        if referenceCounts[block] == 0 { free.append(block) }
    }

    /// Records that `block` (full, referenced) holds `key`, so later prompts starting the same way reuse it.
    /// When another block already holds that key, the existing one stays the cached copy.
    public mutating func cache(_ block: Int, as key: BlockKey) {
        precondition(referenceCounts[block] > 0)
        guard blockOfKey[key] == nil, keyOfBlock[block] == nil else { return }
        blockOfKey[key] = block
        keyOfBlock[block] = key
    }

    /// Verifies the pool's invariants; returns a description of the first violation, nil when all hold.
    public func checkInvariants() -> String? {
        let queued = free.ordered
        guard queued.count == free.count, Set(queued).count == queued.count else { return "free queue is inconsistent" }
        for b in 0..<count {
            if (referenceCounts[b] == 0) != free.contains(b) {
                return "block \(b): reference count \(referenceCounts[b]) but \(free.contains(b) ? "" : "not ")free"
            }
            if referenceCounts[b] < 0 { return "block \(b) has a negative reference count" }
            if let key = keyOfBlock[b], blockOfKey[key] != b { return "block \(b)'s key does not map back to it" }
        }
        for (key, b) in blockOfKey where keyOfBlock[b] != key { return "cache entry for block \(b) is stale" }
        return nil
    }
}
