/// When to eject a backend that keeps failing the calls sent to it (passive health).
public struct OutlierPolicy: Sendable, Equatable {
    /// Consecutive failed calls that eject a backend.
    public var consecutiveFailures = 5
    /// An ejection lasts this long times the number of ejections the backend has had (the count decays by one
    /// for each such period it then stays healthy).
    public var baseEjectionSeconds = 30.0
    /// At most this share of the backends is ejected at once; at least one may always be.
    public var maxEjectionPercent = 10
    public init() {}
}

/// Passive outlier ejection over a fixed set of backends, pure (time is passed in, monotonic nanoseconds),
/// after gRPC's gRFC A50 and Envoy's consecutive-5xx detector.
///
/// active --(N failures in a row, room under the cap)--> ejected(until) --(time passes)--> trial available
/// --(one trial call admitted)--> half-open --(it succeeds)--> active
///                                            --(it fails)--> ejected again, for longer
/// An ejection that would pass the cap does not happen: the backend stays in, its failures still counted, and
/// is ejected on its next failure once there is room.
public struct OutlierDetector: Sendable, Equatable {
    public enum State: Sendable, Equatable {
        case active(consecutiveFailures: Int)
        case ejected(until: UInt64)
        /// One trial call is out; nothing else is sent until it ends.
        case halfOpen
    }

    public let policy: OutlierPolicy
    public private(set) var states: [State]
    /// Ejections so far per backend (after decay), the multiplier of the next ejection's length.
    public private(set) var ejectionCounts: [Int]
    /// Total ejections per backend since the detector was made, for GetStats.
    public private(set) var totalEjections: [Int]
    var returnedAt: [UInt64]

    public init(backendCount: Int, policy: OutlierPolicy = OutlierPolicy()) {
        self.policy = policy
        let n = max(0, backendCount)
        states = [State](repeating: .active(consecutiveFailures: 0), count: n)
        ejectionCounts = [Int](repeating: 0, count: n)
        totalEjections = [Int](repeating: 0, count: n)
        returnedAt = [UInt64](repeating: 0, count: n)
    }

    /// Takes over one backend's state from another detector (the same backend at another index, after the
    /// backend set changed), so that a reconfiguration neither forgives nor repeats an ejection.
    public mutating func adopt(_ old: OutlierDetector, backend oldIndex: Int, as newIndex: Int) {
        guard old.states.indices.contains(oldIndex), states.indices.contains(newIndex) else { return }
        states[newIndex] = old.states[oldIndex]
        ejectionCounts[newIndex] = old.ejectionCounts[oldIndex]
        totalEjections[newIndex] = old.totalEjections[oldIndex]
        returnedAt[newIndex] = old.returnedAt[oldIndex]
    }

    /// Backends out now: ejected (whether or not their time is up) or on trial.
    public var ejectedCount: Int {
        states.reduce(0) { count, state in
            if case .active = state { return count } else { return count + 1 }
        }
    }

    /// How many backends may be out at once.
    public var maxEjected: Int { max(1, states.count * max(0, policy.maxEjectionPercent) / 100) }

    /// Whether a call may be sent to `backend` now (a backend whose ejection has run out offers one trial).
    public func isAvailable(_ backend: Int, now: UInt64) -> Bool {
        guard states.indices.contains(backend) else { return false }
        switch states[backend] {
        case .active: return true
        case .ejected(let until): return now >= until
        case .halfOpen: return false
        }
    }

    /// Records that a call was sent to `backend`: for a backend whose ejection has run out, this call is its trial.
    public mutating func admit(_ backend: Int, now: UInt64) {
        guard states.indices.contains(backend), case .ejected(let until) = states[backend], now >= until else { return }
        states[backend] = .halfOpen
    }

    /// Takes `backend` back at once: its active health checks saw it come back (a worker that restarted after
    /// failing its calls should not sit out the rest of an ejection it earned by being dead; Envoy does the same
    /// by default). Its ejection count stays, to lengthen its next ejection.
    public mutating func uneject(_ backend: Int, now: UInt64) {
        guard states.indices.contains(backend) else { return }
        switch states[backend] {
        case .active:
            states[backend] = .active(consecutiveFailures: 0)
        case .ejected, .halfOpen:
            states[backend] = .active(consecutiveFailures: 0)
            returnedAt[backend] = now
        }
    }

    /// A call to `backend` succeeded.
    public mutating func recordSuccess(_ backend: Int, now: UInt64) {
        guard states.indices.contains(backend) else { return }
        switch states[backend] {
        case .active:
            states[backend] = .active(consecutiveFailures: 0)
        case .halfOpen:
            states[backend] = .active(consecutiveFailures: 0)
            returnedAt[backend] = now
        case .ejected:
            break  // a call sent before the ejection; the ejection stands
        }
    }

    /// A call to `backend` failed; returns true when this failure ejected it.
    @discardableResult
    public mutating func recordFailure(_ backend: Int, now: UInt64) -> Bool {
        guard states.indices.contains(backend) else { return false }
        switch states[backend] {
        case .active(let failures):
            let failures = failures + 1
            if failures >= max(1, policy.consecutiveFailures) && ejectedCount < maxEjected {
                eject(backend, now: now)
                return true
            }
            states[backend] = .active(consecutiveFailures: failures)
            return false
        case .halfOpen:
            eject(backend, now: now)  // already counted as out, so the cap is unchanged
            return true
        case .ejected:
            return false
        }
    }

    mutating func eject(_ backend: Int, now: UInt64) {
        // At most a year, so that no policy value can trap the conversion.
        let base = UInt64(min(max(0, policy.baseEjectionSeconds.isFinite ? policy.baseEjectionSeconds : 0), 31_536_000) * 1e9)
        if base > 0, ejectionCounts[backend] > 0, returnedAt[backend] > 0, now > returnedAt[backend] {
            let healthyPeriods = Int(min(UInt64(Int.max), (now - returnedAt[backend]) / base))
            ejectionCounts[backend] = max(0, ejectionCounts[backend] - healthyPeriods)
        }
        ejectionCounts[backend] += 1
        totalEjections[backend] += 1
        let (length, overflow) = base.multipliedReportingOverflow(by: UInt64(ejectionCounts[backend]))
        let (until, late) = now.addingReportingOverflow(overflow ? UInt64.max : length)
        states[backend] = .ejected(until: late ? UInt64.max : until)
    }
}
