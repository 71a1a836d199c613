import XCTest
import KilnRouter
import KilnTestSupport

/// Consistent hashing with bounded loads under a skewed simulated workload: the bound holds at every pick,
/// the hottest owner's overflow spreads over several members, and two routers fed the same events agree.
final class BoundedLoadTests: XCTestCase {
    /// Zipf(s) over `count` items by inverse transform on the cumulative weights.
    struct Zipf {
        let cumulative: [Double]
        init(count: Int, exponent: Double) {
            var total = 0.0
            cumulative = (1...count).map { total += 1 / pow(Double($0), exponent); return total }
        }
        func draw(_ rng: inout TestRandom) -> Int {
            let u = Double.random(in: 0..<cumulative[cumulative.count - 1], using: &rng)
            var low = 0, high = cumulative.count - 1
            while low < high {
                let mid = (low + high) / 2
                if cumulative[mid] <= u { low = mid + 1 } else { high = mid }
            }
            return low
        }
    }

    func testZipfWorkloadStaysWithinTheBoundAndSpillsWidely() {
        var rng = TestRandom()   // prints its seed; KILN_TEST_SEED replays it
        let members = (0..<8).map { RingMember(name: "10.1.0.\($0):8080") }
        let c = 1.25
        var first = Balancer(members: members, balanceFactor: c)
        var second = Balancer(members: members, balanceFactor: c)
        let zipf = Zipf(count: 10_000, exponent: 1.1)
        let sessions = (0..<10_000).map { StableHash.hash("chat-\($0)") }
        var open: [(session: Int, member: Int)] = []
        var spillDestinations: [Int: Set<Int>] = [:]   // by owner: where its overflow went
        var picksByOwner = [Int](repeating: 0, count: members.count)
        var spills = 0
        let now: UInt64 = 1_000_000_000
        for _ in 0..<200_000 {
            // Calls arrive while fewer than 256 are open, and otherwise one of the open calls ends.
            if open.count < 64 || (open.count < 256 && Bool.random(using: &rng)) {
                let session = zipf.draw(&rng)
                let inFlightBefore = first.inFlight
                let total = inFlightBefore.reduce(0, +)
                guard let pick = first.pick(keyHash: sessions[session], now: now) else { return XCTFail("no pick") }
                XCTAssertEqual(second.pick(keyHash: sessions[session], now: now), pick, "the two routers disagree")
                let bound = Int((c * Double(total + 1) / Double(members.count)).rounded(.up))
                XCTAssertLessThanOrEqual(first.inFlight[pick.member], bound, "member \(pick.member) over ⌈c(A+1)/n⌉ = \(bound)")
                let owner = first.hashing.probeOrder.ring.owner(ofHash: sessions[session])!
                picksByOwner[owner] += 1
                if pick.hashOutcome == .spilled {
                    spills += 1
                    spillDestinations[owner, default: []].insert(pick.member)
                }
                open.append((session, pick.member))
            } else {
                let i = Int.random(in: 0..<open.count, using: &rng)
                let call = open.remove(at: i)
                first.finish(member: call.member, result: .succeeded, seconds: nil, now: now)
                second.finish(member: call.member, result: .succeeded, seconds: nil, now: now)
            }
        }
        let hottest = picksByOwner.indices.max { picksByOwner[$0] < picksByOwner[$1] }!
        let destinations = spillDestinations[hottest] ?? []
        print("bounded loads: \(spills) spills; the hottest owner, member \(hottest), owned \(picksByOwner[hottest]) calls and spilled to members \(destinations.sorted())")
        XCTAssertGreaterThan(spills, 0, "a Zipf(1.1) workload should fill its hottest owner")
        XCTAssertGreaterThanOrEqual(destinations.count, 3, "the hottest member's overflow should spread over at least 3 others")
        XCTAssertFalse(destinations.contains(hottest))
    }

    /// The probe order is a permutation of every member with the owner first, and does not depend on the
    /// process (it is the same from two rings built separately).
    func testProbeOrderIsAKeySeededPermutation() {
        let members = (0..<6).map { RingMember(name: "w\($0):1") }
        let a = ProbeOrder(ring: HashRing(members: members)), b = ProbeOrder(ring: HashRing(members: members))
        var seconds = Set<Int>()
        for k in 0..<500 {
            let h = StableHash.hash("k\(k)")
            let order = a.order(forHash: h)
            XCTAssertEqual(order, b.order(forHash: h))
            XCTAssertEqual(Set(order), Set(0..<6))
            XCTAssertEqual(order.first, a.ring.owner(ofHash: h))
            seconds.insert(order[1])
        }
        XCTAssertEqual(seconds, Set(0..<6), "every member is some key's second choice")
    }

    /// Whole calls: the owner takes its keys until its bound, then the next one goes elsewhere; an owner that is
    /// down sends its keys to their second choice, and they come back when it is up again.
    func testOwnerDownMovesOnlyItsKeysAndTheyReturn() {
        let members = (0..<4).map { RingMember(name: "w\($0):1") }
        var balancer = Balancer(members: members)
        let keys = (0..<2_000).map { StableHash.hash("s\($0)") }
        let owners = keys.map { balancer.hashing.probeOrder.ring.owner(ofHash: $0)! }
        func route() -> [Int] {
            keys.map { k in
                let m = balancer.pick(keyHash: k, now: 1)!.member
                balancer.finish(member: m, result: .succeeded, seconds: nil, now: 1)
                return m
            }
        }
        XCTAssertEqual(route(), owners)
        balancer.applyHealth(.watched(serving: false), to: 2)
        let failedOver = route()
        for (i, k) in keys.enumerated() {
            if owners[i] == 2 {
                XCTAssertEqual(failedOver[i], balancer.hashing.probeOrder.successors(ofOwner: 2, keyHash: k)[0])
            } else {
                XCTAssertEqual(failedOver[i], owners[i], "a key whose owner is up must not move")
            }
        }
        XCTAssertGreaterThanOrEqual(Set(zip(owners, failedOver).filter { $0.0 == 2 }.map(\.1)).count, 3, "member 2's keys spread")
        balancer.applyHealth(.watched(serving: true), to: 2)
        XCTAssertEqual(route(), owners)
    }
}
