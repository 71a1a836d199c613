/// Plain round robin over the eligible members, in member order.
public struct RoundRobin: Sendable {
    var next = 0
    public init() {}

    /// The next eligible member after the last one picked; nil when none is eligible.
    public mutating func pick(memberCount: Int, eligible: (Int) -> Bool) -> Int? {
        guard memberCount > 0 else { return nil }
        for step in 0..<memberCount {
            let m = (next + step) % memberCount
            if eligible(m) {
                next = (m + 1) % memberCount
                return m
            }
        }
        return nil
    }
}

/// Smooth weighted round robin (nginx's): each pick adds every eligible member's weight to its running score,
/// takes the highest, and subtracts the total from the winner. Weights 5:1:1 give a,a,b,a,c,a,a — spread out,
/// not five a's in a row — and over any W consecutive picks each member is picked exactly its weight's times.
public struct SmoothWeightedRoundRobin: Sendable {
    var current: [Int]

    public init(memberCount: Int) {
        current = [Int](repeating: 0, count: max(0, memberCount))
    }

    public mutating func pick(weights: [Int], eligible: (Int) -> Bool) -> Int? {
        if current.count != weights.count { current = [Int](repeating: 0, count: weights.count) }
        var total = 0
        var best: Int?
        for m in weights.indices where eligible(m) {
            let w = max(1, weights[m])
            current[m] += w
            total += w
            if best.map({ current[m] > current[$0] }) ?? true { best = m }
        }
        if let best { current[best] -= total }
        return best
    }
}
