import Foundation
import HeapModule
import KilnModel

/// One sampled token with its log-probability under the model (log-softmax of the raw logits) and, when
/// asked, the most likely alternatives.
public struct SampledToken: Sendable, Equatable {
    public let id: Int
    public let logprob: Double
    public let top: [TokenLogprob]
}

public struct TokenLogprob: Sendable, Equatable {
    public let id: Int
    public let logprob: Double
}

/// Chooses tokens from logits, in llama.cpp's order: penalties, then top-k, top-p, min-p, temperature and
/// the random draw. The draw for the i-th generated token depends only on the seed and i (a counter-based
/// generator), so a generation continued elsewhere from its first i tokens reproduces the rest.
public struct Sampler: Sendable {
    public let parameters: SamplingParameters

    public init(_ parameters: SamplingParameters) { self.parameters = parameters }

    /// The uniform draw in [0, 1) for generated token `index`.
    public static func draw(seed: UInt64, index: Int) -> Double {
        var g = SplitMix64(seed: seed ^ (UInt64(truncatingIfNeeded: index) &* 0xD1B5_4A32_D192_ED03))
        _ = g.next()
        return Double(g.next() >> 11) * 0x1.0p-53
    }

    /// Samples generated token number `index` given the logits and the context so far (prompt + generated).
    public func sample(_ logits: [Float], context: [Int], index: Int) -> SampledToken {
        let p = parameters
        let raw = logSoftmax(logits)
        var scores = logits
        applyPenalties(&scores, context: context)

        let chosen: Int
        if p.temperature == 0 {
            chosen = argmax(scores)
        } else {
            chosen = sampleFiltered(scores, draw: Float(Self.draw(seed: p.seed, index: index)))
        }
        var top: [TokenLogprob] = []
        if p.logprobs > 0 {
            top = raw.indices.sorted { raw[$0] != raw[$1] ? raw[$0] > raw[$1] : $0 < $1 }.prefix(p.logprobs).map { TokenLogprob(id: $0, logprob: raw[$0]) }
        }
        return SampledToken(id: chosen, logprob: raw[chosen], top: top)
    }

    /// Samples generated token number `index` from a row's most likely tokens alone: for parameters where
    /// `SamplingParameters.needsOnly(topCandidates:)` holds, the same token, log-probability and alternatives
    /// that `sample(_:context:index:)` gives from the full logits (the filters keep a prefix of the same order,
    /// and the draw is the same). The caller checks that predicate for the count it asked the backend for;
    /// fewer candidates come back only when the vocabulary holds fewer (non-NaN) tokens, all of them then.
    public func sample(_ candidates: TopCandidates, index: Int) -> SampledToken {
        let p = parameters
        // Every logit NaN (a broken model): token 0, as the host's argmax over such a row picks.
        guard !candidates.ids.isEmpty else { return SampledToken(id: 0, logprob: .nan, top: []) }
        let chosen = p.temperature == 0 ? 0 : sampleFiltered(candidates.scores, draw: Float(Self.draw(seed: p.seed, index: index)))
        let top = (0..<min(p.logprobs, candidates.ids.count)).map { TokenLogprob(id: candidates.ids[$0], logprob: candidates.logprob($0)) }
        return SampledToken(id: candidates.ids[chosen], logprob: candidates.logprob(chosen), top: top)
    }

    /// Top-k, top-p, min-p, temperature and the draw, over candidates in descending score order (ties: lower
    /// id first). Only as long a prefix of that order is sorted as the filters and the draw can reach: the
    /// prefix grows (64, 512, 4096, … tokens) until the kept set ends inside it, or — with no filter cutting
    /// inside it — until the draw lands inside it. Sorting all 49k candidates per token would cost
    /// milliseconds; a peaked distribution needs a few dozen.
    ///
    /// The arithmetic does not depend on how long the prefix is: the final normalizer is fixed by the
    /// parameters (over the kept prefix in score order when top-k or top-p cut the order; else over every
    /// token above the min-p threshold, in id order), so the pick is the one a full sort gives, bit for bit.
    /// `firstPrefix` (tests): the prefix to start from instead of 64 (the vocabulary: a full sort).
    func sampleFiltered(_ scores: [Float], draw: Float, firstPrefix: Int? = nil) -> Int {
        let p = parameters
        let n = scores.count
        var k = min(n, firstPrefix ?? max(64, p.topK))
        while true {
            let order = Self.sortedPrefix(scores, count: k)
            let best = scores[order[0]]
            // `kept`: the kept set's length when `complete` (it ends inside the prefix); otherwise the set
            // runs past the prefix, and `beyond` says which tokens it holds there.
            var kept = order.count
            var complete = k == n
            if p.topK > 0 { kept = min(kept, p.topK); complete = true }   // k ≥ top_k always
            if p.topP < 1 {
                // Top-p at temperature 1, over what top-k left (the whole vocabulary without top-k).
                let total = p.topK > 0 ? nil : Self.expSum(scores, maximum: best, above: -.infinity)
                let probabilities = Self.softmax(order.prefix(kept).map { scores[$0] }, total: total)
                var mass = 0.0, cut = 0
                while cut < probabilities.count { mass += probabilities[cut]; cut += 1; if mass >= Double(p.topP) { break } }
                if mass >= Double(p.topP) || complete {
                    kept = cut
                    complete = true
                } else {
                    k = min(n, k * 8)   // the top-p set runs past the prefix
                    continue
                }
            }
            // Min-p: tokens at least min_p times as likely as the best — a score threshold.
            let threshold = p.minP > 0 ? best + Foundation.log(p.minP) : -Float.infinity
            if let cut = order.prefix(kept).firstIndex(where: { scores[$0] < threshold }) {
                kept = max(1, cut)
                complete = true
            }
            let candidates = order.prefix(kept).map { scores[$0] / p.temperature }
            // Without top-k or top-p the kept set is every token above the min-p threshold: normalize over
            // all of them in id order, whether or not the prefix reaches past them (a sum in another order
            // could round differently and move the pick).
            let cutByFilters = p.topK > 0 || p.topP < 1
            let total = cutByFilters ? nil : Self.expSum(scores.map { $0 / p.temperature }, maximum: candidates[0],
                                                         above: threshold / p.temperature)
            var u = Double(draw)
            for (i, w) in Self.softmax(candidates, total: total).enumerated() {
                u -= w
                if u < 0 { return order[i] }
            }
            if complete { return order[kept - 1] }   // rounding left u just above the last weight
            k = min(n, k * 8)
        }
    }

    /// The `count` highest scores' ids, sorted descending (ties: lower id first): a bounded min-heap pass,
    /// then a sort of what it kept.
    static func sortedPrefix(_ scores: [Float], count: Int) -> [Int] {
        func before(_ a: Int, _ b: Int) -> Bool { scores[a] != scores[b] ? scores[a] > scores[b] : a < b }
        guard count < scores.count else { return scores.indices.sorted(by: before) }
        var heap = Heap<Candidate>()
        for i in scores.indices {
            let c = Candidate(score: scores[i], id: i)
            if heap.count < count {
                heap.insert(c)
            } else if let worst = heap.min, worst < c {
                _ = heap.popMin()
                heap.insert(c)
            }
        }
        return heap.unordered.map(\.id).sorted(by: before)
    }

    /// A candidate ordered so that the heap's minimum is the one to drop first (lowest score; on a tie,
    /// the higher id).
    struct Candidate: Comparable {
        let score: Float
        let id: Int
        static func < (a: Candidate, b: Candidate) -> Bool { a.score != b.score ? a.score < b.score : a.id > b.id }
    }

    /// Σ exp(v - maximum) over the values not below `above` (accumulated in double precision, so that the
    /// order of summation does not move the draw).
    static func expSum(_ values: [Float], maximum: Float, above: Float) -> Double {
        values.reduce(0.0) { $1 < above ? $0 : $0 + Double(Foundation.exp($1 - maximum)) }
    }

    /// Softmax of `values` (the first is the largest), normalized by `total` (Σ exp(v - max) over a larger
    /// set) when given.
    static func softmax(_ values: [Float], total: Double?) -> [Double] {
        guard let maximum = values.first else { return [] }
        let e = values.map { Double(Foundation.exp($0 - maximum)) }
        let sum = total ?? e.reduce(0, +)
        return e.map { $0 / sum }
    }

    /// Repetition (divide positive / multiply negative), frequency and presence penalties over the window.
    func applyPenalties(_ scores: inout [Float], context: [Int]) {
        let p = parameters
        guard p.repetitionPenalty != 1 || p.frequencyPenalty != 0 || p.presencePenalty != 0, p.penaltyWindow > 0 else { return }
        var counts: [Int: Int] = [:]
        for t in context.suffix(p.penaltyWindow) where t >= 0 && t < scores.count { counts[t, default: 0] += 1 }
        for (t, n) in counts {
            var s = scores[t]
            s = s > 0 ? s / p.repetitionPenalty : s * p.repetitionPenalty
            s -= Float(n) * p.frequencyPenalty + p.presencePenalty
            scores[t] = s
        }
    }
}
