/// Consistent hashing with bounded loads (Mirrokni, Thorup and Zadimoghaddam, 2018).
///
/// With A calls in flight over the eligible members and a balance factor c ≥ 1, member b may hold at most
/// ⌈c·(A+1)·w_b/W⌉ calls (W: the eligible members' total weight; ⌈c·(A+1)/n⌉ when weights are equal). A key
/// goes to its ring owner while the owner is below that bound, and otherwise to the first member of its
/// `ProbeOrder` that is: the bound's total is at least c·(A+1) > A, so some eligible member always has room.
public struct BoundedLoadHashing: Sendable {
    /// Default balance factor (`kiln route --balance-factor`).
    public static let defaultBalanceFactor = 1.25

    public let probeOrder: ProbeOrder
    /// c: how far above the mean a member's load may go. Values below 1 (or not finite) count as 1.
    public let balanceFactor: Double

    public init(ring: HashRing, balanceFactor: Double = BoundedLoadHashing.defaultBalanceFactor) {
        self.probeOrder = ProbeOrder(ring: ring)
        self.balanceFactor = balanceFactor.isFinite ? max(1, balanceFactor) : 1
    }

    /// How a pick came about.
    public enum Outcome: Sendable, Equatable {
        /// The key's ring owner took it (session affinity held).
        case owner
        /// The owner was eligible but at its bound; the call spilled to a later member of the probe order.
        case spilled
        /// The owner was not eligible (down, ejected, excluded); the call went to a later member.
        case ownerUnavailable
    }

    public struct Pick: Sendable, Equatable {
        public var member: Int
        public var owner: Int
        public var outcome: Outcome
    }

    /// The bound for one member, given the eligible members' total in-flight calls and weight.
    public func capacity(weight: Int, totalInFlight: Int, totalWeight: Int) -> Int {
        guard totalWeight > 0 else { return 0 }
        let share = balanceFactor * Double(totalInFlight + 1) * Double(max(1, weight)) / Double(totalWeight)
        return Int(min(share.rounded(.up), Double(Int32.max)))  // a bound past any real load, never a trap
    }

    /// Picks a member for a key. `inFlight[m]` is member m's calls in flight; `eligible(m)` says whether m may
    /// take calls now (healthy, not ejected, not already tried by this call). Nil when no member is eligible.
    public func pick(keyHash: UInt64, inFlight: [Int], eligible: (Int) -> Bool) -> Pick? {
        let members = probeOrder.ring.members
        guard let owner = probeOrder.ring.owner(ofHash: keyHash), inFlight.count == members.count else { return nil }
        var totalInFlight = 0
        var totalWeight = 0
        var allowed = [Bool](repeating: false, count: members.count)
        for m in members.indices where eligible(m) {
            allowed[m] = true
            totalInFlight += max(0, inFlight[m])
            totalWeight += max(1, members[m].weight)
        }
        guard totalWeight > 0 else { return nil }
        func hasRoom(_ m: Int) -> Bool {
            inFlight[m] < capacity(weight: members[m].weight, totalInFlight: totalInFlight, totalWeight: totalWeight)
        }
        if allowed[owner] && hasRoom(owner) { return Pick(member: owner, owner: owner, outcome: .owner) }
        // The first member of the probe order that may take the call is the best-scored of those that may:
        // one pass, without sorting the order.
        var best: (score: Double, member: Int)?
        for m in members.indices where m != owner && allowed[m] && hasRoom(m) {
            let score = probeOrder.score(member: m, keyHash: keyHash)
            if best.map({ score > $0.score || (score == $0.score && m < $0.member) }) ?? true { best = (score, m) }
        }
        guard let best else { return nil }  // unreachable while the bound holds (its total exceeds the calls in flight)
        return Pick(member: best.member, owner: owner, outcome: allowed[owner] ? .spilled : .ownerUnavailable)
    }
}
