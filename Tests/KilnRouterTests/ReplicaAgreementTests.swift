import KilnRouter
import XCTest

/// Two `kiln route` replicas in front of the same workers, with no coordination between them: each key goes
/// to the same worker on both, and a stream moved off a failed worker goes on on the same successor on both.
final class ReplicaAgreementTests: XCTestCase {
    /// The worker each replica picks for `keys` keys (by name), the call ended at once; `tried` excludes the
    /// named backends, as a call moving off them does.
    private func picks(_ balancer: Balancer, keys: Int, excluding tried: Set<String> = []) -> [String] {
        var b = balancer
        let excluded = Set(tried.compactMap { b.index(of: $0) })
        return (0..<keys).map { k in
            guard let p = b.pick(keyHash: StableHash.hash("session-\(k)"), excluding: excluded, isRetry: !excluded.isEmpty, now: 0) else {
                return "none"
            }
            b.finish(member: p.member, result: .abandoned, seconds: nil, now: 0)
            return b.members[p.member].name
        }
    }

    func testTwoReplicasPickAlikeBeforeAndAfterABackendIsKilled() {
        let names = ["h2c://127.0.0.1:7001", "h2c://127.0.0.1:7002", "h2c://127.0.0.1:7003"]
        // The replicas were given their backends in different orders.
        var first = Balancer(members: names.map { RingMember(name: $0) })
        var second = Balancer(members: [names[2], names[0], names[1]].map { RingMember(name: $0) })
        let before = picks(first, keys: 1000)
        XCTAssertEqual(before, picks(second, keys: 1000))
        XCTAssertEqual(Set(before), Set(names), "every worker owns keys")

        // The second worker is killed: both replicas' health checks take it down.
        let killed = names[1]
        for _ in 0..<2 {
            first.applyHealth(.probed(serving: false), to: first.index(of: killed)!)
            second.applyHealth(.probed(serving: false), to: second.index(of: killed)!)
        }
        let after = picks(first, keys: 1000)
        XCTAssertEqual(after, picks(second, keys: 1000))
        XCTAssertFalse(after.contains(killed))
        for (old, new) in zip(before, after) where old != killed { XCTAssertEqual(old, new, "a key moved off a worker that stayed") }

        // A stream moving off the killed worker (excluded as tried) continues on the same successor on both.
        let moved = picks(first, keys: 1000, excluding: [killed])
        XCTAssertEqual(moved, picks(second, keys: 1000, excluding: [killed]))
        XCTAssertEqual(moved, after)
    }
}
