/// The free KV blocks in eviction order: a doubly linked list over block ids, so a block can leave from
/// the front (allocation), join at the back (release) or leave from the middle (a prefix-cache hit on a
/// free, still-cached block) in O(1).
struct FreeBlockQueue {
    private var next: [Int]
    private var previous: [Int]
    private var contained: [Bool]
    private var head = -1, tail = -1
    private(set) var count = 0

    /// A queue holding blocks 0..<capacity, in order.
    init(capacity: Int) {
        next = Array(repeating: -1, count: capacity)
        previous = Array(repeating: -1, count: capacity)
        contained = Array(repeating: false, count: capacity)
        for b in 0..<capacity { append(b) }
    }

    func contains(_ block: Int) -> Bool { contained[block] }

    /// The block evicted next (least recently freed), without removing it.
    var first: Int? { head >= 0 ? head : nil }

    mutating func append(_ block: Int) {
        precondition(!contained[block], "block \(block) is already free")
        contained[block] = true
        previous[block] = tail
        next[block] = -1
        if tail >= 0 { next[tail] = block } else { head = block }
        tail = block
        count += 1
    }

    mutating func remove(_ block: Int) {
        precondition(contained[block], "block \(block) is not free")
        contained[block] = false
        let p = previous[block], n = next[block]
        if p >= 0 { next[p] = n } else { head = n }
        if n >= 0 { previous[n] = p } else { tail = p }
        count -= 1
    }

    mutating func popFirst() -> Int? {
        guard head >= 0 else { return nil }
        let b = head
        remove(b)
        return b
    }

    /// Blocks front to back (for invariant checks).
    var ordered: [Int] {
        var out: [Int] = []
        var b = head
        while b >= 0 { out.append(b); b = next[b] }
        return out
    }
}
