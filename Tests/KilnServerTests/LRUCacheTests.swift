@testable import KilnServer
import KilnTestSupport
import XCTest

/// The LRU behind the result cache and the session store: least recently used goes first, the cost
/// budget and the entry cap hold, entries expire.
final class LRUCacheTests: XCTestCase {
    func testEvictsLeastRecentlyUsedToFitTheBudget() {
        var cache = LRUCache<String, Int>(budget: 30, timeToLive: 100)
        cache.insert(1, for: "a", cost: 10, now: 0)
        cache.insert(2, for: "b", cost: 10, now: 0)
        cache.insert(3, for: "c", cost: 10, now: 0)
        XCTAssertEqual(cache.value(for: "a", now: 1), 1)   // "b" is now the least recently used
        cache.insert(4, for: "d", cost: 10, now: 1)
        XCTAssertNil(cache.value(for: "b", now: 1))
        XCTAssertEqual(cache.value(for: "a", now: 1), 1)
        XCTAssertEqual(cache.value(for: "c", now: 1), 3)
        XCTAssertEqual(cache.value(for: "d", now: 1), 4)
        XCTAssertEqual(cache.totalCost, 30)
        cache.insert(5, for: "e", cost: 25, now: 1)          // needs three evictions
        XCTAssertEqual(cache.count, 1)
        XCTAssertEqual(cache.totalCost, 25)
        cache.insert(6, for: "huge", cost: 31, now: 1)       // over the whole budget: not stored
        XCTAssertNil(cache.value(for: "huge", now: 1))
        XCTAssertEqual(cache.value(for: "e", now: 1), 5)
    }

    func testEntriesExpireAndTheCapHolds() {
        var cache = LRUCache<Int, Int>(budget: 1000, maxCount: 3, timeToLive: 10)
        for i in 0..<5 { cache.insert(i, for: i, cost: 1, now: Double(i)) }
        XCTAssertEqual(cache.count, 3)
        XCTAssertNil(cache.value(for: 1, now: 5))
        XCTAssertEqual(cache.value(for: 2, now: 5), 2)
        XCTAssertNil(cache.value(for: 2, now: 12.5))         // inserted at 2, lives 10 s
        cache.removeExpired(now: 13.5)
        XCTAssertEqual(cache.count, 1)
        XCTAssertEqual(cache.value(for: 4, now: 13.5), 4)
        cache.insert(40, for: 4, cost: 1, now: 13.5)         // re-inserting restarts the clock
        XCTAssertEqual(cache.value(for: 4, now: 20), 40)
        XCTAssertEqual(cache.remove(4), 40)
        XCTAssertEqual(cache.count, 0)
        XCTAssertEqual(cache.totalCost, 0)
    }

    func testRandomOperationsKeepCostAndOrderConsistent() {
        var cache = LRUCache<Int, Int>(budget: 50, maxCount: 8, timeToLive: 1e9)
        var model: [(key: Int, cost: Int)] = []   // most recent last
        var rng = TestRandom()
        for _ in 0..<20_000 {
            let key = Int.random(in: 0..<16, using: &rng)
            if Bool.random(using: &rng) {
                let cost = Int.random(in: 1...20, using: &rng)
                cache.insert(key, for: key, cost: cost, now: 0)
                model.removeAll { $0.key == key }
                while model.reduce(0, { $0 + $1.cost }) + cost > 50 || model.count >= 8 { model.removeFirst() }
                model.append((key, cost))
            } else {
                let hit = cache.value(for: key, now: 0)
                if let i = model.firstIndex(where: { $0.key == key }) {
                    XCTAssertEqual(hit, key)
                    model.append(model.remove(at: i))
                } else {
                    XCTAssertNil(hit)
                }
            }
            XCTAssertEqual(cache.count, model.count)
            XCTAssertEqual(cache.totalCost, model.reduce(0) { $0 + $1.cost })
            XCTAssertEqual(cache.leastRecentlyUsed, model.first?.key)
        }
    }
}
