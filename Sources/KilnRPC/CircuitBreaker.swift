import Glibc
import Synchronization

/// When to stop sending calls to a target that keeps failing.
public struct CircuitBreakerPolicy: Sendable {
    /// Consecutive failures that open the circuit.
    public var failureThreshold = 5
    /// Seconds the circuit stays open before trial calls are let through.
    public var openSeconds = 60.0
    /// Trial calls admitted while half-open; all must succeed to close the circuit again.
    public var halfOpenTrials = 3
    public init() {}
}

/// The breaker's state machine, pure (time is passed in) so that it is tested without waiting.
///
/// closed --(N consecutive failures)--> open --(openSeconds)--> half-open --(trials all succeed)--> closed
/// half-open --(any trial fails)--> open
public struct CircuitBreakerState: Sendable, Equatable {
    public enum Phase: Sendable, Equatable {
        case closed(consecutiveFailures: Int)
        case open(until: UInt64)
        case halfOpen(admitted: Int, succeeded: Int)
    }

    public let policy: CircuitBreakerPolicyValues
    public private(set) var phase: Phase = .closed(consecutiveFailures: 0)

    public init(policy: CircuitBreakerPolicy) {
        self.policy = CircuitBreakerPolicyValues(policy)
    }

    /// Whether `admit(now:)` would let a call through now, without counting one.
    public func wouldAdmit(now: UInt64) -> Bool {
        switch phase {
        case .closed: return true
        case .open(let until): return now >= until
        case .halfOpen(let admitted, _): return admitted < policy.halfOpenTrials
        }
    }

    /// Closes the circuit at once (fresh evidence that the target is well, e.g. its health checks came back).
    public mutating func reset() {
        phase = .closed(consecutiveFailures: 0)
    }

    /// A call admitted while half-open ended without saying anything of the target (the client left): its
    /// trial slot is given back, so that the next call may try.
    public mutating func recordAbandoned() {
        if case .halfOpen(let admitted, let succeeded) = phase {
            phase = .halfOpen(admitted: max(succeeded, admitted - 1), succeeded: succeeded)
        }
    }

    /// Whether a call may go now; a half-open circuit counts the call as one of its trials.
    public mutating func admit(now: UInt64) -> Bool {
        switch phase {
        case .closed:
            return true
        case .open(let until):
            guard now >= until else { return false }
            phase = .halfOpen(admitted: 1, succeeded: 0)
            return true
        case .halfOpen(let admitted, let succeeded):
            guard admitted < policy.halfOpenTrials else { return false }
            phase = .halfOpen(admitted: admitted + 1, succeeded: succeeded)
            return true
        }
    }

    public mutating func recordSuccess() {
        switch phase {
        case .closed:
            phase = .closed(consecutiveFailures: 0)
        case .halfOpen(let admitted, let succeeded):
            phase = succeeded + 1 >= policy.halfOpenTrials ? .closed(consecutiveFailures: 0)
                                                           : .halfOpen(admitted: admitted, succeeded: succeeded + 1)
        case .open:
            break  // a call admitted before the circuit opened; it changes nothing
        }
    }

    public mutating func recordFailure(now: UInt64) {
        switch phase {
        case .closed(let failures):
            phase = failures + 1 >= policy.failureThreshold ? .open(until: now + policy.openNanos)
                                                            : .closed(consecutiveFailures: failures + 1)
        case .halfOpen:
            phase = .open(until: now + policy.openNanos)
        case .open:
            break
        }
    }
}

/// The policy's numbers in the units the state machine uses.
public struct CircuitBreakerPolicyValues: Sendable, Equatable {
    public let failureThreshold: Int
    public let openNanos: UInt64
    public let halfOpenTrials: Int
    init(_ p: CircuitBreakerPolicy) {
        failureThreshold = max(1, p.failureThreshold)
        openNanos = UInt64(max(0, p.openSeconds) * 1e9)
        halfOpenTrials = max(1, p.halfOpenTrials)
    }
}

/// A thread-safe breaker for one target.
public final class CircuitBreaker: Sendable {
    private let state: Mutex<CircuitBreakerState>
    public init(policy: CircuitBreakerPolicy) { state = Mutex(CircuitBreakerState(policy: policy)) }
    public func admit() -> Bool { state.withLock { $0.admit(now: Self.now()) } }
    public func recordSuccess() { state.withLock { $0.recordSuccess() } }
    public func recordFailure() { state.withLock { $0.recordFailure(now: Self.now()) } }
    public var phase: CircuitBreakerState.Phase { state.withLock { $0.phase } }
    static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }
}

