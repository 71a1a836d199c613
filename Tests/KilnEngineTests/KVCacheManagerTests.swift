@testable import KilnEngine
import KilnModel
import KilnTestSupport
import XCTest

final class KVCacheManagerTests: XCTestCase {
    func testPrefixCachingReusesFullBlocksOnly() {
        let m = KVCacheManager(blockCount: 16, blockSize: 4)
        let prompt = Array(100..<110)  // 10 tokens: 2 full blocks + 2
        XCTAssertEqual(m.admit(1, tokens: prompt), 0)
        XCTAssertEqual(m.blockTable(1).count, 3)
        m.markComputed(1, upTo: 10)
        // Same first 8 tokens, different tail: both full blocks come from the cache.
        XCTAssertEqual(m.admit(2, tokens: Array(100..<108) + [7, 7, 7]), 8)
        XCTAssertEqual(Array(m.blockTable(2).prefix(2)), Array(m.blockTable(1).prefix(2)))
        XCTAssertEqual(m.pool.referenceCount(m.blockTable(1)[0]), 2)
        // Exactly the cached prefix: the last block is recomputed so the step has a token to produce logits from.
        XCTAssertEqual(m.admit(3, tokens: Array(100..<108)), 4)
        // A different first block shares nothing, even with an equal second block.
        XCTAssertEqual(m.admit(4, tokens: [1, 2, 3, 4] + Array(104..<110)), 0)
        XCTAssertNil(m.checkInvariants())
        XCTAssertEqual(m.cachedPromptTokens, 12)
    }

    /// Two first blocks whose chain hashes collided under the unkeyed 64-bit FNV-1a chain this cache used
    /// to key blocks by (found by Brent's cycle search over the last two tokens). A request whose own first
    /// block is cached (`attackerFirst`) could then take a victim's second block, computed after another
    /// prefix, as its own. With the keyed 128-bit chain the blocks stay apart.
    func testCraftedChainHashCollisionsDoNotShareBlocks() {
        let victimFirst = Array(0..<14) + [1_951_276_684, 309_768_633]
        let attackerFirst = Array(0..<14) + [653_870_307, 2_666_288_089]
        XCTAssertEqual(Self.oldChainHash(victimFirst), Self.oldChainHash(attackerFirst), "the crafted blocks collide under the old hash")
        XCTAssertNotEqual(BlockKey(parent: BlockKey.root, tokens: victimFirst.map { Int32(truncatingIfNeeded: $0) }).chainHash,
                          BlockKey(parent: BlockKey.root, tokens: attackerFirst.map { Int32(truncatingIfNeeded: $0) }).chainHash)
        let secret = Array(500..<516)
        let m = KVCacheManager(blockCount: 16, blockSize: 16)
        XCTAssertEqual(m.admit(1, tokens: victimFirst + secret + [1]), 0)
        m.markComputed(1, upTo: 33)
        XCTAssertEqual(m.admit(2, tokens: attackerFirst + Array(900..<916) + [1]), 0)
        m.markComputed(2, upTo: 33)
        // The attacker's first block is its own; the second must not be the victim's.
        XCTAssertEqual(m.admit(3, tokens: attackerFirst + secret + [1]), 16)
        XCTAssertEqual(m.blockTable(3)[0], m.blockTable(2)[0])
        XCTAssertNotEqual(m.blockTable(3)[1], m.blockTable(1)[1])
        XCTAssertNil(m.checkInvariants())
    }

    /// The chain hash blocks were keyed by before: FNV-1a, fixed seed, over the root parent and the tokens.
    private static func oldChainHash(_ tokens: [Int]) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        func mix(_ v: UInt64) {
            for i in 0..<8 { h = (h ^ ((v >> (8 * UInt64(i))) & 0xFF)) &* 0x0000_0100_0000_01B3 }
        }
        mix(0)
        for t in tokens { mix(UInt64(UInt32(truncatingIfNeeded: t))) }
        return h
    }

    func testFreedBlocksStayCachedUntilEvictedLeastRecentlyFreedFirst() {
        let m = KVCacheManager(blockCount: 4, blockSize: 2)
        XCTAssertEqual(m.admit(1, tokens: [1, 2, 3, 4, 5]), 0)   // 3 blocks
        m.markComputed(1, upTo: 5)
        m.free(1)
        XCTAssertEqual(m.pool.freeCount, 4)
        XCTAssertEqual(m.pool.cachedCount, 2)
        // Still cached after being freed.
        XCTAssertEqual(m.admit(2, tokens: [1, 2, 3, 4, 9]), 4)
        m.free(2)
        // Needing all 4 blocks evicts the cached ones.
        XCTAssertEqual(m.admit(3, tokens: Array(50..<58)), 0)
        XCTAssertEqual(m.pool.cachedCount, 0)
        XCTAssertGreaterThan(m.pool.evictions, 0)
        XCTAssertNil(m.admit(4, tokens: [1]), "pool is full")
        XCTAssertNil(m.checkInvariants())
    }

    func testRefusalChangesNothing() {
        let m = KVCacheManager(blockCount: 3, blockSize: 4)
        XCTAssertNotNil(m.admit(1, tokens: Array(0..<8)))
        m.markComputed(1, upTo: 8)
        XCTAssertNil(m.admit(2, tokens: Array(0..<4) + Array(20..<30)), "needs 3 fresh blocks, 1 free")
        XCTAssertEqual(m.pool.freeCount, 1)
        XCTAssertEqual(m.pool.referenceCount(m.blockTable(1)[0]), 1)
        XCTAssertNil(m.append(1, tokens: Array(0..<9)), "needs 3 blocks, 1 free")
        XCTAssertEqual(m.blockTable(1).count, 2)
        XCTAssertNil(m.checkInvariants())
    }

    func testForkCopiesOnWrite() {
        let m = KVCacheManager(blockCount: 8, blockSize: 4)
        XCTAssertNotNil(m.admit(1, tokens: [1, 2, 3, 4, 5, 6]))
        m.fork(1, as: 2)
        let shared = m.blockTable(1)[1]
        XCTAssertEqual(m.pool.referenceCount(shared), 2)
        let copies = m.append(2, tokens: [7])
        XCTAssertEqual(copies?.count, 1)
        XCTAssertEqual(copies?.first?.source, shared)
        XCTAssertNotEqual(m.blockTable(2)[1], shared)
        XCTAssertEqual(m.blockTable(2)[0], m.blockTable(1)[0], "full blocks stay shared")
        XCTAssertEqual(m.append(1, tokens: [8]), [], "the original is no longer shared")
        XCTAssertNil(m.checkInvariants())
    }

    /// 100,000 random operations (admit with overlapping prompts, append, compute, fork, free) with the
    /// invariants checked throughout; at the end every block is free again and nothing leaked.
    func testRandomizedOperationsKeepInvariants() {
        var rng = TestRandom(fixed: 42)
        let m = KVCacheManager(blockCount: 64, blockSize: 4)
        var live: [Int] = []
        var nextID = 0
        var refused = 0, hits = 0
        let prefixes = (0..<6).map { p in (0..<12).map { p * 100 + $0 } }
        for op in 0..<100_000 {
            switch rng.next() % 10 {
            case 0, 1, 2:
                let prefix = prefixes[Int(rng.next() % 6)].prefix(Int(rng.next() % 13))
                let prompt = Array(prefix) + (0..<Int(1 + rng.next() % 8)).map { _ in Int(rng.next() % 50) }
                if let cached = m.admit(nextID, tokens: prompt) {
                    hits += cached
                    live.append(nextID)
                    if rng.next() % 2 == 0 { m.markComputed(nextID, upTo: prompt.count) }
                } else {
                    refused += 1
                }
                nextID += 1
            case 3, 4, 5:
                guard let id = live.randomElement(using: &rng) else { break }
                let before = m.blockTable(id).count
                if m.append(id, tokens: (0..<Int(1 + rng.next() % 5)).map { _ in Int(rng.next() % 50) }) == nil {
                    XCTAssertEqual(m.blockTable(id).count, before)
                }
            case 6:
                guard let id = live.randomElement(using: &rng) else { break }
                m.markComputed(id, upTo: m.blockTable(id).isEmpty ? 0 : tokenCount(m, id))
            case 7:
                guard let id = live.randomElement(using: &rng), live.count < 40 else { break }
                m.fork(id, as: nextID)
                live.append(nextID)
                nextID += 1
            default:
                guard !live.isEmpty else { break }
                let index = Int(rng.next() % UInt64(live.count))
                m.free(live.remove(at: index))
            }
            if op % 10 == 0, let problem = m.checkInvariants() {
                XCTFail("after operation \(op): \(problem)")
                return
            }
        }
        for id in live { m.free(id) }
        XCTAssertNil(m.checkInvariants())
        XCTAssertEqual(m.pool.freeCount, 64, "blocks leaked")
        XCTAssertEqual(m.sequenceCount, 0)
        XCTAssertGreaterThan(hits, 0, "prefix hits should occur")
        XCTAssertGreaterThan(refused, 0, "pressure should occur")
    }

    private func tokenCount(_ m: KVCacheManager, _ id: Int) -> Int { m.tokenCount(id) }
}

