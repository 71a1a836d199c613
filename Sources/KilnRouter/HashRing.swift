/// A backend as the ring and the policies see it: a stable name (its address) and a weight.
public struct RingMember: Sendable, Hashable {
    /// What the member's virtual nodes are hashed from; the same name lands on the same points in every process.
    public var name: String
    /// Relative share of keys and of load; a member with weight 2 gets twice the virtual nodes and twice the
    /// bounded-load capacity of one with weight 1.
    public var weight: Int

    public init(name: String, weight: Int = 1) {
        self.name = name
        self.weight = weight
    }
}

/// A consistent-hash ring: each member owns the arcs that end at its virtual nodes.
///
/// An immutable value built once per member set (sorting and vnode placement happen here) and read without
/// locks. Virtual node `i` of a member is `StableHash(name, seed: i)`, so a member's points do not depend on
/// the other members.
///
/// A key is looked up with `probes` hashes of it (multi-probe consistent hashing, Appleton and O'Reilly 2015):
/// each probe finds the first point at or after it, and the point nearest its probe wins. With 150 virtual
/// nodes per member, one probe leaves a member's share about ±8% off its weight's (one standard deviation);
/// four probes halve that, at the cost of four lookups, each a table index and a search of about two entries.
/// Keys still move only to a member that joins and only from one that leaves: a new point can only shorten
/// some probe's distance to itself, and removing a member's points lengthens only the probes that ended on it.
public struct HashRing: Sendable {
    /// Virtual nodes per unit of weight unless told otherwise (`kiln route --vnodes`).
    public static let defaultVirtualNodes = 150
    /// Most virtual nodes one member may have, whatever its weight: bounds the ring's memory and build time.
    public static let maxPointsPerMember = 150 * 1024

    public let members: [RingMember]
    public let virtualNodesPerWeight: Int
    /// Hashes of a key compared per lookup.
    public let probes: Int
    /// Sorted virtual-node hashes, and beside each the index of the member that owns it.
    @usableFromInline let points: [UInt64]
    @usableFromInline let owners: [Int32]
    /// `firstPoint[b]`: index of the first point whose top `indexBits` bits are ≥ b; one more entry at the end.
    @usableFromInline let firstPoint: [Int32]
    @usableFromInline let indexBits: Int

    /// Lookups per key unless told otherwise.
    public static let defaultProbes = 4

    /// Builds the ring. Weights below 1 count as 1; `virtualNodes` and `probes` below 1 count as 1.
    public init(members: [RingMember], virtualNodes: Int = HashRing.defaultVirtualNodes, probes: Int = HashRing.defaultProbes) {
        self.members = members
        self.virtualNodesPerWeight = max(1, virtualNodes)
        self.probes = max(1, min(probes, 64))
        var placed: [(hash: UInt64, owner: Int32)] = []
        for (index, member) in members.enumerated() {
            let (product, overflow) = virtualNodesPerWeight.multipliedReportingOverflow(by: max(1, member.weight))
            let count = overflow ? HashRing.maxPointsPerMember : min(product, HashRing.maxPointsPerMember)
            placed.reserveCapacity(placed.count + count)
            for vnode in 0..<count {
                placed.append((StableHash.hash(member.name, seed: UInt64(vnode)), Int32(index)))
            }
        }
        // Ties (two members on one point) go to the lower member index, the same in every process.
        placed.sort { $0.hash != $1.hash ? $0.hash < $1.hash : $0.owner < $1.owner }
        points = placed.map(\.hash)
        owners = placed.map(\.owner)
        // About two index entries per point, so that a lookup searches a couple of points at most.
        let bits = max(1, min(24, (Int.bitWidth - max(1, points.count).leadingZeroBitCount) + 1))
        indexBits = bits
        var table = [Int32](repeating: Int32(points.count), count: (1 << bits) + 1)
        var p = 0
        for bucket in 0..<(1 << bits) {
            while p < points.count && Int(points[p] >> UInt64(64 - bits)) < bucket { p += 1 }
            table[bucket] = Int32(p)
        }
        firstPoint = table
    }

    /// Whether the ring has no members.
    public var isEmpty: Bool { points.isEmpty }

    /// Index of the first point at or after `hash`, wrapping to 0 past the top.
    @inlinable
    func successor(of hash: UInt64) -> Int {
        let bucket = Int(hash >> UInt64(64 - indexBits))
        var low = Int(firstPoint[bucket])
        var high = Int(firstPoint[bucket + 1])
        while low < high {
            let mid = (low &+ high) >> 1
            if points[mid] < hash { low = mid + 1 } else { high = mid }
        }
        return low == points.count ? 0 : low
    }

    /// The member that owns `keyHash`: of the points that follow each of the key's probes, the nearest to its
    /// probe (ties to the earlier probe). Nil only on an empty ring.
    @inlinable
    public func owner(ofHash keyHash: UInt64) -> Int? {
        guard !points.isEmpty else { return nil }
        var best = successor(of: keyHash)
        var bestDistance = points[best] &- keyHash
        var probe = 1
        while probe < probes {
            let h = StableHash.hash(keyHash, seed: UInt64(probe))
            let i = successor(of: h)
            let distance = points[i] &- h
            if distance < bestDistance { best = i; bestDistance = distance }
            probe += 1
        }
        return Int(owners[best])
    }

    /// The member that owns a key.
    public func owner(of key: String) -> Int? {
        owner(ofHash: StableHash.hash(key))
    }
}
