import Foundation
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
            // Candidates by descending score (ties: lower id first, for determinism).
            var order = scores.indices.sorted { scores[$0] != scores[$1] ? scores[$0] > scores[$1] : $0 < $1 }
            if p.topK > 0 { order = Array(order.prefix(p.topK)) }
            var probabilities = softmax(order.map { scores[$0] })
            if p.topP < 1 {
                var total: Float = 0, keep = 0
                while keep < order.count { total += probabilities[keep]; keep += 1; if total >= p.topP { break } }
                order = Array(order.prefix(keep))
                probabilities = softmax(order.map { scores[$0] })
            }
            if p.minP > 0, let best = probabilities.first {
                let keep = probabilities.filter { $0 >= p.minP * best }.count
                order = Array(order.prefix(max(keep, 1)))
            }
            let weights = softmax(order.map { scores[$0] / p.temperature })
            var u = Float(Self.draw(seed: p.seed, index: index))
            var pick = order.count - 1
            for (i, w) in weights.enumerated() {
                u -= w
                if u < 0 { pick = i; break }
            }
            chosen = order[pick]
        }
        var top: [TokenLogprob] = []
        if p.logprobs > 0 {
            top = raw.indices.sorted { raw[$0] != raw[$1] ? raw[$0] > raw[$1] : $0 < $1 }.prefix(p.logprobs).map { TokenLogprob(id: $0, logprob: raw[$0]) }
        }
        return SampledToken(id: chosen, logprob: raw[chosen], top: top)
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

    private func softmax(_ values: [Float]) -> [Float] {
        guard let maximum = values.max() else { return [] }
        let e = values.map { Foundation.exp($0 - maximum) }
        let total = e.reduce(0, +)
        return e.map { $0 / total }
    }
}
