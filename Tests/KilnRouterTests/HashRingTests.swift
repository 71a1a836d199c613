import XCTest
import KilnRouter

/// The ring as a distribution (after Envoy's ring_hash_lb_test): keys moved when a member comes or goes,
/// shares by weight, and the hash itself against XXH64's published values.
final class HashRingTests: XCTestCase {
    static let keys = (0..<100_000).map { "session-\($0)" }

    func testTheHashIsXXH64() {
        // Published XXH64 values (seed 0) from the xxHash reference.
        XCTAssertEqual(StableHash.hash(""), 0xEF46_DB37_51D8_E999)
        XCTAssertEqual(StableHash.hash("a"), 0xD24E_C4F1_A98C_6E5B)
        XCTAssertEqual(StableHash.hash("abc"), 0x44BC_2CF5_AD77_0999)
    }

    func testLookupAgreesWithALinearScan() {
        for probes in [1, 4] {
            let ring = HashRing(members: (0..<7).map { RingMember(name: "10.0.0.\($0):8080") }, virtualNodes: 150, probes: probes)
            var points: [(UInt64, Int)] = []
            for m in 0..<7 { for v in 0..<150 { points.append((StableHash.hash("10.0.0.\(m):8080", seed: UInt64(v)), m)) } }
            points.sort { $0.0 != $1.0 ? $0.0 < $1.0 : $0.1 < $1.1 }
            // Each probe's first point at or after it (wrapping); the nearest of those wins, ties to the earlier probe.
            func expected(_ key: UInt64) -> Int {
                var best: (distance: UInt64, owner: Int)?
                for p in 0..<probes {
                    let h = p == 0 ? key : StableHash.hash(key, seed: UInt64(p))
                    let next = points.first { $0.0 >= h } ?? points[0]
                    if best == nil || next.0 &- h < best!.distance { best = (next.0 &- h, next.1) }
                }
                return best!.owner
            }
            for key in Self.keys.prefix(2_000) {
                XCTAssertEqual(ring.owner(ofHash: StableHash.hash(key)), expected(StableHash.hash(key)), "\(key), \(probes) probes")
            }
            for edge: UInt64 in [0, 1, points[0].0, points[0].0 &+ 1, points.last!.0, UInt64.max] {
                XCTAssertEqual(ring.owner(ofHash: edge), expected(edge), "hash \(edge), \(probes) probes")
            }
        }
        XCTAssertNil(HashRing(members: []).owner(of: "x"))
    }

    func testGoingFromFourToFiveMembersMovesAFifthOfTheKeys() {
        let names = (1...5).map { "worker-\($0).kiln.svc:8080" }
        let four = HashRing(members: names.prefix(4).map { RingMember(name: $0) })
        let five = HashRing(members: names.map { RingMember(name: $0) })
        var moved = 0
        for key in Self.keys {
            let before = four.owner(of: key)!, after = five.owner(of: key)!
            if before != after {
                moved += 1
                XCTAssertEqual(after, 4, "a key may only move to the new member")
            }
        }
        let share = Double(moved) / Double(Self.keys.count)
        print("4 -> 5 members: \(String(format: "%.2f", share * 100))% of \(Self.keys.count) keys moved")
        XCTAssertEqual(share, 0.20, accuracy: 0.03)
    }

    func testRemovingAMemberMovesOnlyItsKeys() {
        let members = (1...5).map { RingMember(name: "worker-\($0):8080") }
        let all = HashRing(members: members)
        let without = HashRing(members: members.enumerated().filter { $0.offset != 2 }.map(\.element))
        for key in Self.keys {
            let before = all.owner(of: key)!
            let after = without.members[without.owner(of: key)!].name
            if before != 2 { XCTAssertEqual(after, members[before].name, "\(key) moved though its owner stayed") }
        }
    }

    func testSharesFollowWeights() {
        let ring = HashRing(members: [RingMember(name: "a:1", weight: 1), RingMember(name: "b:1", weight: 2), RingMember(name: "c:1", weight: 1)])
        var counts = [0, 0, 0]
        for key in Self.keys { counts[ring.owner(of: key)!] += 1 }
        let shares = counts.map { Double($0) / Double(Self.keys.count) * 100 }
        print("weights 1:2:1 -> shares \(shares.map { String(format: "%.1f", $0) })")
        XCTAssertEqual(shares[0], 25, accuracy: 3)
        XCTAssertEqual(shares[1], 50, accuracy: 3)
        XCTAssertEqual(shares[2], 25, accuracy: 3)
    }
}
