/// A least-recently-used map with a cost budget and a time-to-live. Not thread-safe: its owner locks.
///
/// Entries sit on a doubly linked list threaded through a dictionary (most recent at the head), so a hit,
/// an insert and an eviction are all O(1).
struct LRUCache<Key: Hashable, Value> {
    private struct Node {
        var value: Value
        var cost: Int
        var expires: Double
        var newer: Key?
        var older: Key?
    }

    /// Largest total cost kept; inserting past it evicts the least recently used entries.
    let budget: Int
    /// Most entries kept.
    let maxCount: Int
    /// Seconds an entry lives after it is inserted.
    let timeToLive: Double
    private var nodes: [Key: Node] = [:]
    private var newest: Key?
    private var oldest: Key?
    private(set) var totalCost = 0

    init(budget: Int, maxCount: Int = .max, timeToLive: Double) {
        self.budget = budget
        self.maxCount = maxCount
        self.timeToLive = timeToLive
    }

    var count: Int { nodes.count }

    /// The value for `key` if present and not expired at `now`; it becomes the most recently used.
    mutating func value(for key: Key, now: Double) -> Value? {
        guard let node = nodes[key] else { return nil }
        guard node.expires > now else { remove(key); return nil }
        unlink(key)
        pushNewest(key)
        return node.value
    }

    /// Stores `value`, evicting least recently used entries until the budget holds. A value costing more
    /// than the whole budget is not stored.
    mutating func insert(_ value: Value, for key: Key, cost: Int, now: Double) {
        remove(key)
        guard cost <= budget, maxCount > 0 else { return }
        while totalCost + cost > budget || nodes.count >= maxCount, let victim = oldest { remove(victim) }
        nodes[key] = Node(value: value, cost: cost, expires: now + timeToLive)
        totalCost += cost
        pushNewest(key)
    }

    @discardableResult
    mutating func remove(_ key: Key) -> Value? {
        guard nodes[key] != nil else { return nil }
        unlink(key)
        let node = nodes.removeValue(forKey: key)
        totalCost -= node?.cost ?? 0
        return node?.value
    }

    /// Drops every entry expired at `now`.
    mutating func removeExpired(now: Double) {
        var cursor = oldest
        while let key = cursor {
            cursor = nodes[key]?.newer
            if let node = nodes[key], node.expires <= now { remove(key) }
        }
    }

    /// The least recently used key, if any.
    var leastRecentlyUsed: Key? { oldest }

    private mutating func unlink(_ key: Key) {
        guard let node = nodes[key] else { return }
        if let newer = node.newer { nodes[newer]?.older = node.older } else { newest = node.older }
        if let older = node.older { nodes[older]?.newer = node.newer } else { oldest = node.newer }
        nodes[key]?.newer = nil
        nodes[key]?.older = nil
    }

    private mutating func pushNewest(_ key: Key) {
        nodes[key]?.older = newest
        nodes[key]?.newer = nil
        if let head = newest { nodes[head]?.newer = key }
        newest = key
        if oldest == nil { oldest = key }
    }
}
