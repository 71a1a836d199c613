import Foundation

/// The most likely tokens of one logit row, in descending order (ties: lower id first), with what turns a
/// logit into a log-probability. Sampling that looks only at these (greedy, or top-k within them, with no
/// penalties) needs nothing else, so a device backend returns 2·count + 2 numbers instead of the vocabulary.
public struct TopCandidates: Sendable, Equatable {
    /// Token ids, most likely first.
    public var ids: [Int]
    /// Their logits.
    public var scores: [Float]
    /// log Σ exp(logit) over the whole vocabulary: a token's log-probability is its logit minus this.
    public var logNormalizer: Double

    public init(ids: [Int], scores: [Float], logNormalizer: Double) {
        self.ids = ids
        self.scores = scores
        self.logNormalizer = logNormalizer
    }

    /// The `count` most likely of a full row of logits, found on the host (NaN logits never count). Takes the
    /// row where it lies (a backend's mapped logits), so finding the candidates copies nothing.
    public init(logits: UnsafeBufferPointer<Float>, count: Int) {
        // One pass keeping the best `count` sorted: a token enters only if it beats the last kept one, which
        // after the first few hundred tokens is rare, so this costs little more than reading the row.
        var ids: [Int] = [], scores: [Float] = []
        ids.reserveCapacity(count + 1); scores.reserveCapacity(count + 1)
        for (i, v) in logits.enumerated() where !v.isNaN && count > 0 {
            if ids.count == count, let last = scores.last, v <= last { continue }   // ties keep the lower id
            var at = ids.count
            while at > 0 && v > scores[at - 1] { at -= 1 }
            ids.insert(i, at: at); scores.insert(v, at: at)
            if ids.count > count { ids.removeLast(); scores.removeLast() }
        }
        self.ids = ids
        self.scores = scores
        let maximum = Double(scores.first ?? 0)
        var total = 0.0
        for v in logits where !v.isNaN { total += Foundation.exp(Double(v) - maximum) }
        logNormalizer = Foundation.log(total) + maximum
    }

    /// The `count` most likely of a row of logits in an array.
    public init(logits: [Float], count: Int) {
        self = logits.withUnsafeBufferPointer { TopCandidates(logits: $0, count: count) }
    }

    /// The log-probability of candidate `index`.
    public func logprob(_ index: Int) -> Double { Double(scores[index]) - logNormalizer }
}
