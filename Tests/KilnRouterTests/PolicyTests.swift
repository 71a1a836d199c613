import XCTest
import KilnRouter

/// The keyless policies: round robin, smooth weighted round robin, power of two choices on load and on
/// response time.
final class PolicyTests: XCTestCase {
    func testRoundRobinSkipsIneligibleMembers() {
        var rr = RoundRobin()
        let picks = (0..<6).map { _ in rr.pick(memberCount: 4, eligible: { $0 != 2 })! }
        XCTAssertEqual(picks, [0, 1, 3, 0, 1, 3])
        XCTAssertNil(rr.pick(memberCount: 4, eligible: { _ in false }))
    }

    func testSmoothWeightedRoundRobinInterleavesByWeight() {
        var swrr = SmoothWeightedRoundRobin(memberCount: 3)
        let picks = (0..<7).map { _ in swrr.pick(weights: [5, 1, 1], eligible: { _ in true })! }
        XCTAssertEqual(picks, [0, 0, 1, 0, 2, 0, 0], "nginx's sequence for 5:1:1")
        var counts = [0, 0, 0]
        for _ in 0..<700 { counts[swrr.pick(weights: [5, 1, 1], eligible: { _ in true })!] += 1 }
        XCTAssertEqual(counts, [500, 100, 100])
    }

    func testLeastRequestPrefersTheLessLoadedOfTwo() {
        let members = (0..<2).map { RingMember(name: "m\($0):1") }
        var b = Balancer(members: members, seed: 7)
        // Two members: P2C always compares both, so calls alternate towards the lower load.
        var picks: [Int] = []
        for _ in 0..<10 { picks.append(b.pick(keyHash: nil, keyless: .leastRequest, now: 1)!.member) }
        XCTAssertEqual(b.inFlight, [5, 5], "picks \(picks)")
    }

    func testLeastResponseTimeAvoidsTheSlowMember() {
        let members = (0..<3).map { RingMember(name: "m\($0):1") }
        var b = Balancer(members: members, seed: 3)
        var now: UInt64 = 1
        // Teach it: member 1 answers in 500 ms, the others in 5 ms.
        for m in 0..<3 {
            for _ in 0..<5 {
                let pick = b.pick(keyHash: nil, keyless: .roundRobin, now: now)!
                b.finish(member: pick.member, result: .succeeded, seconds: pick.member == 1 ? 0.5 : 0.005, now: now)
                now += 1_000_000
            }
            _ = m
        }
        var counts = [0, 0, 0]
        for _ in 0..<300 {
            let pick = b.pick(keyHash: nil, keyless: .leastResponseTime, now: now)!
            counts[pick.member] += 1
            b.finish(member: pick.member, result: .succeeded, seconds: pick.member == 1 ? 0.5 : 0.005, now: now)
            now += 1_000_000
        }
        // Member 1 loses every comparison it is in (its average is 100 times the others').
        XCTAssertEqual(counts[1], 0, "counts \(counts)")
        XCTAssertGreaterThan(counts[0], 100)
        XCTAssertGreaterThan(counts[2], 100)
        // Left alone for a minute (six time constants), its old average has faded below the others' fresh
        // ones, and it is tried again.
        now += 60_000_000_000
        for others in [Set([1, 2]), Set([0, 1])] {   // a fresh 5 ms answer from member 0, then from member 2
            let pick = b.pick(keyHash: nil, keyless: .leastRequest, excluding: others, now: now)!
            b.finish(member: pick.member, result: .succeeded, seconds: 0.005, now: now)
        }
        var retried = false
        for _ in 0..<20 where !retried {
            let pick = b.pick(keyHash: nil, keyless: .leastResponseTime, now: now)!
            retried = pick.member == 1
            b.finish(member: pick.member, result: .succeeded, seconds: 0.005, now: now)
        }
        XCTAssertTrue(retried, "a faded average should win a comparison again")
    }

    func testLatencyAverageDecaysWithTime() {
        var ewma = LatencyEWMA(decaySeconds: 10)
        ewma.record(1.0, now: 0)
        XCTAssertEqual(ewma.seconds, 1.0)
        ewma.record(0.0, now: 10_000_000_000)     // one time constant later: 1/e of the old value remains
        XCTAssertEqual(ewma.seconds!, exp(-1.0), accuracy: 1e-12)
        ewma.record(.nan, now: 20_000_000_000)    // ignored
        XCTAssertEqual(ewma.seconds!, exp(-1.0), accuracy: 1e-12)
        // Read later without new samples, it fades: one more time constant, one more factor of e.
        XCTAssertEqual(ewma.value(now: 20_000_000_000), exp(-2.0), accuracy: 1e-12)
    }
}
