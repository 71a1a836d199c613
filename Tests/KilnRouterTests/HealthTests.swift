import XCTest
import KilnRouter

/// Active health (Watch and Check with rise/fall) and passive ejection, on a simulated clock.
final class HealthTests: XCTestCase {
    let second: UInt64 = 1_000_000_000

    func testProbesNeedRiseAndFallStreaksWatchIsTakenAtOnce() {
        var h = BackendHealth(thresholds: .init(rise: 2, fall: 3))
        XCTAssertTrue(h.isUp)
        XCTAssertFalse(h.apply(.probed(serving: false)))
        XCTAssertFalse(h.apply(.probed(serving: false)))
        XCTAssertFalse(h.apply(.probed(serving: true)), "a success breaks the failure streak")
        XCTAssertFalse(h.apply(.probed(serving: false)))
        XCTAssertFalse(h.apply(.probed(serving: false)))
        XCTAssertTrue(h.apply(.probed(serving: false)), "the third failure in a row takes it down")
        XCTAssertFalse(h.isUp)
        XCTAssertFalse(h.apply(.probed(serving: true)))
        XCTAssertTrue(h.apply(.probed(serving: true)), "two successes bring it up")
        XCTAssertTrue(h.apply(.watched(serving: false)), "Watch is the worker's own word")
        XCTAssertTrue(h.apply(.watched(serving: true)))
    }

    func testFiveFailuresEjectForLongerEachTime() {
        var d = OutlierDetector(backendCount: 10)
        var now = 100 * second
        for i in 0..<4 { XCTAssertFalse(d.recordFailure(3, now: now), "failure \(i + 1)") }
        d.recordSuccess(3, now: now)   // the streak starts over
        for _ in 0..<4 { XCTAssertFalse(d.recordFailure(3, now: now)) }
        XCTAssertTrue(d.recordFailure(3, now: now))
        XCTAssertEqual(d.states[3], .ejected(until: now + 30 * second))
        XCTAssertFalse(d.isAvailable(3, now: now + 29 * second))
        // Its time is up: one trial call, and nothing else while it is out.
        now += 30 * second
        XCTAssertTrue(d.isAvailable(3, now: now))
        d.admit(3, now: now)
        XCTAssertEqual(d.states[3], .halfOpen)
        XCTAssertFalse(d.isAvailable(3, now: now))
        // The trial fails: ejected again, for 2 × 30 s.
        XCTAssertTrue(d.recordFailure(3, now: now))
        XCTAssertEqual(d.states[3], .ejected(until: now + 60 * second))
        now += 60 * second
        d.admit(3, now: now)
        d.recordSuccess(3, now: now)
        XCTAssertEqual(d.states[3], .active(consecutiveFailures: 0))
        XCTAssertEqual(d.totalEjections[3], 2)
        // Healthy for two base periods: the multiplier decays by two, so the next ejection lasts 30 s again.
        now += 60 * second
        for _ in 0..<5 { d.recordFailure(3, now: now) }
        XCTAssertEqual(d.states[3], .ejected(until: now + 30 * second))
    }

    func testAtMostTenPercentAreEjectedButAlwaysOne() {
        var small = OutlierDetector(backendCount: 3)
        for _ in 0..<5 { small.recordFailure(0, now: second) }
        for _ in 0..<5 { small.recordFailure(1, now: second) }
        XCTAssertEqual(small.ejectedCount, 1, "3 backends: 10% rounds down to 0, but one may always go")
        XCTAssertEqual(small.states[1], .active(consecutiveFailures: 5))
        XCTAssertTrue(small.recordFailure(1, now: 20 * second) == false)
        // Once the first is back, the second goes on its next failure.
        small.admit(0, now: 31 * second)
        small.recordSuccess(0, now: 31 * second)
        XCTAssertTrue(small.recordFailure(1, now: 32 * second))

        var large = OutlierDetector(backendCount: 20)
        for b in 0..<5 { for _ in 0..<5 { large.recordFailure(b, now: second) } }
        XCTAssertEqual(large.ejectedCount, 2, "10% of 20")
    }

    func testTheBalancerRoutesAroundAnEjectedBackendAndTakesItBack() {
        var b = Balancer(members: (0..<10).map { RingMember(name: "m\($0):1") })
        let now = 5 * second
        let key = StableHash.hash("sticky")
        let owner = b.pick(keyHash: key, now: now)!.member
        XCTAssertTrue(b.finish(member: owner, result: .failed, seconds: nil, now: now) == false)
        for _ in 0..<4 {
            XCTAssertEqual(b.pick(keyHash: key, now: now)!.member, owner)
            b.finish(member: owner, result: .failed, seconds: nil, now: now)
        }
        let away = b.pick(keyHash: key, now: now)!
        XCTAssertEqual(away.hashOutcome, .ownerUnavailable)
        XCTAssertNotEqual(away.member, owner)
        b.finish(member: away.member, result: .succeeded, seconds: 0.01, now: now)
        // After the ejection: the owner's trial, then its keys are its own again.
        let later = now + 30 * second
        XCTAssertEqual(b.pick(keyHash: key, now: later)!.member, owner)
        XCTAssertNotEqual(b.pick(keyHash: key, now: later)!.member, owner, "only one trial while half-open")
        b.finish(member: owner, result: .succeeded, seconds: 0.01, now: later)
        XCTAssertEqual(b.pick(keyHash: key, now: later)!.hashOutcome, .owner)
    }

    /// A backend ejected for failing (it had died) is taken back as soon as its health checks see it return.
    func testABackendThatComesBackUpIsUnejected() {
        var b = Balancer(members: (0..<10).map { RingMember(name: "m\($0):1") })
        for _ in 0..<5 {
            let m = b.pick(keyHash: nil, keyless: .roundRobin, excluding: Set(1..<10), now: second)!.member
            b.finish(member: m, result: .failed, seconds: nil, now: second)
        }
        XCTAssertFalse(b.isEligible(0, now: 2 * second), "ejected for 30 s")
        b.applyHealth(.watched(serving: false), to: 0, now: 2 * second)
        b.applyHealth(.watched(serving: true), to: 0, now: 3 * second)
        XCTAssertTrue(b.isEligible(0, now: 3 * second), "back up: ejection lifted")
        XCTAssertEqual(b.outliers.ejectionCounts[0], 1, "the count stays, to lengthen a next ejection")
    }
}
