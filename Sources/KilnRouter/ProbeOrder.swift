import Glibc

/// The order in which a key tries the ring's members: its ring owner first, then every other member ranked by
/// weighted rendezvous hashing on the key.
///
/// The second and later choices are a permutation seeded by the key's hash (as Envoy's bounded-load hashing
/// does), not the owner's clockwise neighbours: when a hot owner is full or down, its keys spread over all the
/// other members in proportion to their weights instead of piling onto the next arc, and every router replica
/// computes the same order from the same key. A member's rank for a key depends only on the two of them, so
/// adding or removing a member never reorders the others.
public struct ProbeOrder: Sendable {
    /// The ring the order is drawn from.
    public let ring: HashRing
    /// Each member's name hashed once, the seed of its rendezvous scores.
    let memberSeeds: [UInt64]

    public init(ring: HashRing) {
        self.ring = ring
        self.memberSeeds = ring.members.map { StableHash.hash($0.name, seed: 0x6b69_6c6e_7072_6f62) }
    }

    /// Every member, best first, for a key's hash.
    public func order(forHash keyHash: UInt64) -> [Int] {
        guard let owner = ring.owner(ofHash: keyHash) else { return [] }
        return [owner] + successors(ofOwner: owner, keyHash: keyHash)
    }

    /// The members after the owner, best first.
    public func successors(ofOwner owner: Int, keyHash: UInt64) -> [Int] {
        var ranked: [(score: Double, member: Int)] = []
        ranked.reserveCapacity(ring.members.count)
        for member in ring.members.indices where member != owner {
            ranked.append((score(member: member, keyHash: keyHash), member))
        }
        ranked.sort { $0.score != $1.score ? $0.score > $1.score : $0.member < $1.member }
        return ranked.map(\.member)
    }

    /// Weighted rendezvous score: −w / ln(u), u uniform in (0, 1) from the key and the member. The member with
    /// the highest score wins with probability proportional to its weight.
    func score(member: Int, keyHash: UInt64) -> Double {
        let mixed = StableHash.hash(keyHash, seed: memberSeeds[member])
        let unit = (Double(mixed >> 11) + 0.5) / 9_007_199_254_740_992.0  // 2^53: strictly inside (0, 1)
        return -Double(max(1, ring.members[member].weight)) / log(unit)
    }
}

