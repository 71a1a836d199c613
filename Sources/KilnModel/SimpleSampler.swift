import Foundation

/// Picks the next token from logits: the argmax at temperature 0, else a draw from softmax(logits / T)
/// with a seeded generator. (The serving engine has the full sampler; this is the reference decoder's.)
public struct SimpleSampler {
    public var temperature: Float
    private var rng: SplitMix64

    public init(temperature: Float, seed: UInt64) {
        self.temperature = temperature
        rng = SplitMix64(seed: seed)
    }

    public mutating func sample(_ logits: [Float]) -> Int {
        if temperature <= 0 { return argmax(logits) }
        let maximum = logits.max() ?? 0
        let weights = logits.map { Double(($0 - maximum) / temperature) }.map { exp($0) }
        let total = weights.reduce(0, +)
        var draw = Double.random(in: 0..<total, using: &rng)
        for (i, w) in weights.enumerated() {
            draw -= w
            if draw < 0 { return i }
        }
        return logits.count - 1
    }
}

/// Index of the largest value (the first on ties).
public func argmax(_ values: [Float]) -> Int {
    values.withUnsafeBufferPointer(argmax)
}

/// Index of the largest value (the first on ties), in values where they lie (a backend's mapped logits).
public func argmax(_ values: UnsafeBufferPointer<Float>) -> Int {
    var best = 0
    for i in values.indices where values[i] > values[best] { best = i }
    return best
}
