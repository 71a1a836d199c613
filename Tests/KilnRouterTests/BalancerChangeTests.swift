import KilnRPC
import KilnRouter
import XCTest

/// The balancer across a change of its backend set, its circuit breakers, and the load workers report, on a
/// simulated clock.
final class BalancerChangeTests: XCTestCase {
    let second: UInt64 = 1_000_000_000

    private func members(_ names: [String]) -> [RingMember] { names.map { RingMember(name: $0) } }

    private func owners(_ b: Balancer, keys: Int) -> [String] {
        var copy = b
        return (0..<keys).map { k in
            let p = copy.pick(keyHash: StableHash.hash("session-\(k)"), now: 0)!
            copy.finish(member: p.member, result: .abandoned, seconds: nil, now: 0)
            return copy.members[p.member].name
        }
    }

    func testAChangedSetMovesOnlyTheKeysOfBackendsThatCameOrWentAndKeepsTheOthersState() {
        let four = Balancer(members: members(["a:1", "b:1", "c:1", "d:1"]))
        let before = owners(four, keys: 20_000)
        // One backend joins: keys move only to it.
        let five = four.reconfigured(members: members(["a:1", "b:1", "c:1", "d:1", "e:1"]))
        let after = owners(five, keys: 20_000)
        let moved = zip(before, after).filter { $0 != $1 }
        XCTAssertTrue(moved.allSatisfy { $0.1 == "e:1" }, "a key moved between two backends that both stayed")
        XCTAssertEqual(Double(moved.count) / 20_000, 0.2, accuracy: 0.03)
        // One leaves: only its keys move.
        let three = four.reconfigured(members: members(["a:1", "c:1", "d:1"]))
        let left = owners(three, keys: 20_000)
        for (old, new) in zip(before, left) where old != "b:1" { XCTAssertEqual(old, new) }

        // State follows the name, not the index.
        var b = Balancer(members: members(["a:1", "b:1", "c:1"]))
        let now = 100 * second
        for _ in 0..<5 { XCTAssertEqual(b.pick(keyHash: nil, keyless: .roundRobin, excluding: [0, 2], now: now)?.member, 1) }
        for _ in 0..<5 { b.finish(member: 1, result: .failed, seconds: nil, now: now) }
        XCTAssertFalse(b.isEligible(1, now: now), "b is ejected")
        let held = b.pick(keyHash: nil, keyless: .roundRobin, excluding: [1, 2], now: now)
        XCTAssertEqual(held?.member, 0)
        let grown = b.reconfigured(members: members(["z:1", "b:1", "a:1", "c:1"]))
        XCTAssertEqual(grown.index(of: "b:1"), 1)
        XCTAssertFalse(grown.isEligible(1, now: now), "b stays ejected across the change")
        XCTAssertEqual(grown.inFlight[2], 1, "a keeps its call in flight")
        XCTAssertEqual(grown.stats[1].failures, 5)
        XCTAssertEqual(grown.outliers.totalEjections[1], 1)
        XCTAssertTrue(grown.isEligible(0, now: now), "a new backend starts up")
        XCTAssertNil(grown.index(of: "gone:1"))
    }

    func testTheBreakerStopsABackendThatEjectionsCapKeepsIn() {
        // Three backends: the 10% cap allows one ejection at a time.
        var b = Balancer(members: members(["a:1", "b:1", "c:1"]))
        var now = 100 * second
        for _ in 0..<5 { b.finish(member: 0, result: .failed, seconds: nil, now: now) }
        XCTAssertFalse(b.isEligible(0, now: now), "a is ejected")
        for i in 0..<9 {
            b.finish(member: 1, result: .failed, seconds: nil, now: now)
            XCTAssertTrue(b.isEligible(1, now: now), "failure \(i + 1): the cap keeps b in, the breaker is still closed")
        }
        b.finish(member: 1, result: .failed, seconds: nil, now: now)
        XCTAssertFalse(b.isEligible(1, now: now), "the tenth failure in a row opens b's breaker")
        XCTAssertEqual(b.stats[1].breakerOpenings, 1)
        for _ in 0..<20 { XCTAssertEqual(b.pick(keyHash: StableHash.hash("k"), now: now)?.member, 2) }
        // Ten seconds on, one trial call goes to b; no other until it ends.
        now += 10 * second
        XCTAssertTrue(b.isEligible(1, now: now))
        XCTAssertEqual(b.pick(keyHash: nil, keyless: .roundRobin, excluding: [0, 2], now: now)?.member, 1)
        XCTAssertFalse(b.isEligible(1, now: now), "one trial at a time")
        b.finish(member: 1, result: .succeeded, seconds: 0.01, now: now)
        XCTAssertTrue(b.isEligible(1, now: now), "the trial succeeded: closed")
        // Open again; an abandoned trial gives its slot back; health coming back closes it at once.
        for _ in 0..<10 { b.finish(member: 1, result: .failed, seconds: nil, now: now) }
        XCTAssertFalse(b.isEligible(1, now: now))
        now += 10 * second
        XCTAssertEqual(b.pick(keyHash: nil, keyless: .roundRobin, excluding: [0, 2], now: now)?.member, 1)
        b.finish(member: 1, result: .abandoned, seconds: nil, now: now)
        XCTAssertTrue(b.isEligible(1, now: now), "an abandoned trial proves nothing; the next call may try")
        XCTAssertEqual(b.pick(keyHash: nil, keyless: .roundRobin, excluding: [0, 2], now: now)?.member, 1)
        b.finish(member: 1, result: .failed, seconds: nil, now: now)
        XCTAssertFalse(b.isEligible(1, now: now), "a failed trial opens it again")
        b.applyHealth(.probed(serving: false), to: 1, now: now)
        b.applyHealth(.probed(serving: false), to: 1, now: now)
        b.applyHealth(.watched(serving: true), to: 1, now: now)
        XCTAssertTrue(b.isEligible(1, now: now), "health back up closes the breaker")
    }

    func testAFreshWorkerReportSteersKeylessCallsAndAStaleOneDoesNot() {
        var b = Balancer(members: members(["a:1", "b:1"]))
        let now = 50 * second
        // Another router keeps a busy: 40 running, 10 waiting, as a reports with a call this router sent.
        b.applyLoadReport(WorkerLoad(running: 40, waiting: 10, freeBlocks: 3, receivedAt: now), to: 0)
        XCTAssertEqual(b.effectiveLoad(0, now: now), 50)
        var picks = [0, 0]
        for _ in 0..<20 {
            let p = b.pick(keyHash: nil, keyless: .leastRequest, now: now)!
            picks[p.member] += 1
        }
        XCTAssertEqual(picks, [0, 20], "with two backends P2C compares both: b's 20 calls stay below a's reported 50")
        // Keyed calls keep to the ring's bound over the router's own calls, reports or not.
        let keyOfA = (0...).lazy.map { "key-\($0)" }.first { b.hashing.probeOrder.ring.owner(of: $0) == 0 }!
        let keyed = b.pick(keyHash: StableHash.hash(keyOfA), now: now)
        XCTAssertEqual(keyed?.member, 0)
        XCTAssertEqual(keyed?.hashOutcome, .owner, "a's report does not make a's own keys spill")
        // Two seconds later the report is stale: only in-flight counts (a has 1, b 20).
        let later = now + 2 * second
        XCTAssertEqual(b.effectiveLoad(0, now: later), b.inFlight[0])
        XCTAssertEqual(b.pick(keyHash: nil, keyless: .leastRequest, now: later)?.member, 0)
    }
}
