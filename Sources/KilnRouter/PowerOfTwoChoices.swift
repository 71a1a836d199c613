import Glibc

/// SplitMix64: a small seeded generator, so that tests (and two router replicas given one seed) replay a
/// sequence of random choices exactly.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}

/// Power of two choices: draw two distinct eligible members at random and keep the one with the lower cost.
/// Almost as good as scanning every member for the least loaded, without every router sending its next calls
/// to the same momentarily idle member.
public struct PowerOfTwoChoices: Sendable {
    public var generator: SplitMix64

    public init(seed: UInt64) { generator = SplitMix64(seed: seed) }

    /// The cheaper of two random eligible members (ties go to the first drawn); the only one when there is one.
    public mutating func pick(memberCount: Int, eligible: (Int) -> Bool, cost: (Int) -> Double) -> Int? {
        let candidates = (0..<max(0, memberCount)).filter(eligible)
        switch candidates.count {
        case 0: return nil
        case 1: return candidates[0]
        default:
            let first = Int.random(in: 0..<candidates.count, using: &generator)
            var second = Int.random(in: 0..<(candidates.count - 1), using: &generator)
            if second >= first { second += 1 }
            let a = candidates[first], b = candidates[second]
            return cost(b) < cost(a) ? b : a
        }
    }
}

/// An exponentially weighted moving average of a member's response times that decays with wall time (time
/// constant `decaySeconds`), so a member that was slow a minute ago is not judged by it now.
public struct LatencyEWMA: Sendable, Equatable {
    /// The average, in seconds; nil before the first sample.
    public private(set) var seconds: Double?
    var lastNanos: UInt64 = 0
    public let decaySeconds: Double

    public init(decaySeconds: Double = 10) {
        self.decaySeconds = decaySeconds.isFinite && decaySeconds > 0 ? decaySeconds : 10
    }

    /// The average as seen at `now`: it fades towards zero while no sample arrives, so a backend that lost
    /// every comparison once (and so got no calls to measure) is tried again within a few time constants,
    /// instead of being judged forever by its last slow answer (as Finagle's peak EWMA decays).
    public func value(now: UInt64) -> Double {
        guard let seconds else { return 0 }
        let idle = Double(now &- min(now, lastNanos)) / 1e9
        return seconds * exp(-idle / decaySeconds)
    }

    /// Folds in one response time observed at `now` (monotonic nanoseconds).
    public mutating func record(_ sample: Double, now: UInt64) {
        guard sample.isFinite, sample >= 0 else { return }
        if let current = seconds {
            let elapsed = Double(now &- min(now, lastNanos)) / 1e9
            let keep = exp(-elapsed / decaySeconds)
            seconds = current * keep + sample * (1 - keep)
        } else {
            seconds = sample
        }
        lastNanos = now
    }
}
