import KilnRPC

/// The router's picture of its backends and its decisions over them: health (active checks and passive
/// ejection), in-flight calls, response times, and a pick per call. Pure and single-owner: `kiln route` keeps
/// one behind a lock and passes the time in; tests drive it on a simulated clock.
///
/// A backend is eligible for a call when its health checks say up, outlier ejection lets it in, its circuit
/// breaker is not open, and the call has not tried it already. Calls with a session key go through
/// `BoundedLoadHashing`; the others through the policy asked for.
///
/// Two guards act on failed calls, on purpose:
/// - outlier ejection (5 in a row) is the gentle one: capped at 10% of the backends, so that a fault that is
///   everyone's (a bad model push, the router's own network) does not empty the pool;
/// - the circuit breaker (`CircuitBreakerState`, 10 in a row, open 10 s, one trial) is the fuse: uncapped, it
///   stops sending to a backend that keeps failing after ejection's cap has kept it in, so that calls fail fast
///   or go elsewhere instead of timing out against it.
/// Active health coming back up clears both.
///
/// The member set can change (`reconfigured(members:)`): a backend keeps its state across the change by name.
public struct Balancer: Sendable {
    public let members: [RingMember]
    public let hashing: BoundedLoadHashing
    public private(set) var inFlight: [Int]
    public private(set) var latency: [LatencyEWMA]
    public private(set) var health: [BackendHealth]
    public private(set) var outliers: OutlierDetector
    public private(set) var breakers: [CircuitBreakerState]
    /// The load each worker last reported (ORCA trailers), if any.
    public private(set) var reported: [WorkerLoad?]
    public private(set) var stats: [BackendStats]
    let healthThresholds: BackendHealth.Thresholds
    let breakerPolicy: CircuitBreakerPolicy
    let indexByName: [String: Int]
    var roundRobin = RoundRobin()
    var weightedRoundRobin: SmoothWeightedRoundRobin
    var twoChoices: PowerOfTwoChoices

    /// Counters per backend, reported by the router's GetStats.
    public struct BackendStats: Sendable, Equatable {
        /// Calls sent, by the policy that picked the backend.
        public var picks: [BalancingPolicy: Int] = [:]
        /// Keyed calls that went to their key's ring owner.
        public var affinityHits = 0
        /// Keyed calls this backend took because their owner was at its bound.
        public var spillsIn = 0
        /// Keyed calls this backend owned but passed on because it was at its bound.
        public var spillsOut = 0
        /// Calls sent here as a retry of a call that failed on another backend.
        public var retries = 0
        /// Streams continued here after another backend failed them mid-stream (a subset of `retries`).
        public var migrationsIn = 0
        public var failures = 0
        /// Times this backend's circuit breaker opened.
        public var breakerOpenings = 0
        public init() {}
    }

    /// A decision: where the call goes, and why.
    public struct Pick: Sendable, Equatable {
        public var member: Int
        public var policy: BalancingPolicy
        /// For keyed calls, how the bounded-load pick came about; nil otherwise.
        public var hashOutcome: BoundedLoadHashing.Outcome?
    }

    public init(
        members: [RingMember],
        virtualNodes: Int = HashRing.defaultVirtualNodes,
        balanceFactor: Double = BoundedLoadHashing.defaultBalanceFactor,
        healthThresholds: BackendHealth.Thresholds = BackendHealth.Thresholds(),
        outlierPolicy: OutlierPolicy = OutlierPolicy(),
        breakerPolicy: CircuitBreakerPolicy = Balancer.defaultBreakerPolicy,
        seed: UInt64 = 0
    ) {
        self.members = members
        hashing = BoundedLoadHashing(ring: HashRing(members: members, virtualNodes: virtualNodes), balanceFactor: balanceFactor)
        inFlight = [Int](repeating: 0, count: members.count)
        latency = [LatencyEWMA](repeating: LatencyEWMA(), count: members.count)
        health = [BackendHealth](repeating: BackendHealth(thresholds: healthThresholds), count: members.count)
        outliers = OutlierDetector(backendCount: members.count, policy: outlierPolicy)
        breakers = [CircuitBreakerState](repeating: CircuitBreakerState(policy: breakerPolicy), count: members.count)
        reported = [WorkerLoad?](repeating: nil, count: members.count)
        stats = [BackendStats](repeating: BackendStats(), count: members.count)
        weightedRoundRobin = SmoothWeightedRoundRobin(memberCount: members.count)
        twoChoices = PowerOfTwoChoices(seed: seed)
        self.healthThresholds = healthThresholds
        self.breakerPolicy = breakerPolicy
        var names: [String: Int] = [:]
        for (i, m) in members.enumerated() where names[m.name] == nil { names[m.name] = i }
        indexByName = names
    }

    /// The router's breaker: 10 failed calls in a row open it for 10 s, then one trial call decides.
    public static let defaultBreakerPolicy: CircuitBreakerPolicy = {
        var p = CircuitBreakerPolicy()
        p.failureThreshold = 10
        p.openSeconds = 10
        p.halfOpenTrials = 1
        return p
    }()

    /// The index of the member with this name, if it is one.
    public func index(of name: String) -> Int? { indexByName[name] }

    /// The same router over a new member set: members that stay keep their in-flight counts, response times,
    /// health, ejection, breaker, reported load and counters; new ones start fresh (up, unmeasured); the ring
    /// is rebuilt, so only keys of members that left or arrived move.
    public func reconfigured(members newMembers: [RingMember]) -> Balancer {
        var next = Balancer(members: newMembers, virtualNodes: hashing.probeOrder.ring.virtualNodesPerWeight,
                            balanceFactor: hashing.balanceFactor, healthThresholds: healthThresholds,
                            outlierPolicy: outliers.policy, breakerPolicy: breakerPolicy)
        next.twoChoices = twoChoices
        next.roundRobin = roundRobin
        for (i, member) in newMembers.enumerated() {
            guard let j = indexByName[member.name] else { continue }
            next.inFlight[i] = inFlight[j]
            next.latency[i] = latency[j]
            next.health[i] = health[j]
            next.outliers.adopt(outliers, backend: j, as: i)
            next.breakers[i] = breakers[j]
            next.reported[i] = reported[j]
            next.stats[i] = stats[j]
        }
        return next
    }

    /// Whether a backend may take a call now (health up, not ejected or offering its trial, breaker closed or
    /// offering a trial).
    public func isEligible(_ member: Int, now: UInt64) -> Bool {
        members.indices.contains(member) && health[member].isUp && outliers.isAvailable(member, now: now)
            && breakers[member].wouldAdmit(now: now)
    }

    /// Whether any backend may take a call now.
    public func anyEligible(now: UInt64) -> Bool {
        members.indices.contains { isEligible($0, now: now) }
    }

    /// Picks a backend and counts the call in flight on it. `keyHash` (a session key's `StableHash`) selects
    /// the ring; `excluding` holds the backends this call already tried. Nil when no backend is eligible.
    public mutating func pick(
        keyHash: UInt64?, keyless policy: BalancingPolicy = .leastResponseTime,
        excluding tried: Set<Int> = [], isRetry: Bool = false, now: UInt64
    ) -> Pick? {
        // Plain arrays, so that the policies' closures do not hold `self` while the policies mutate.
        let allowed = members.indices.map { !tried.contains($0) && isEligible($0, now: now) }
        let eligible = { (m: Int) in allowed[m] }
        let decision: Pick?
        if let keyHash {
            // The bound is over the router's own calls in flight, as in the paper: every replica of the router
            // fed the same events picks the same way.
            decision = hashing.pick(keyHash: keyHash, inFlight: inFlight, eligible: eligible)
                .map { Pick(member: $0.member, policy: .consistentHash, hashOutcome: $0.outcome) }
        } else {
            let loads = members.indices.map { effectiveLoad($0, now: now) }
            let weights = members.map { Double(max(1, $0.weight)) }
            let averages = latency.map { $0.value(now: now) }
            let chosen: Int?
            switch policy {
            case .roundRobin:
                chosen = roundRobin.pick(memberCount: members.count, eligible: eligible)
            case .weightedRoundRobin:
                chosen = weightedRoundRobin.pick(weights: members.map(\.weight), eligible: eligible)
            case .leastRequest, .consistentHash:
                // A keyless call has nothing to hash: consistent_hash spreads it like least-request.
                chosen = twoChoices.pick(memberCount: members.count, eligible: eligible) { m in
                    Double(loads[m] + 1) / weights[m]
                }
            case .leastResponseTime:
                // Unmeasured backends cost nothing, so a new one gets calls and a first sample at once.
                chosen = twoChoices.pick(memberCount: members.count, eligible: eligible) { m in
                    averages[m] * Double(loads[m] + 1) / weights[m]
                }
            }
            decision = chosen.map { Pick(member: $0, policy: policy, hashOutcome: nil) }
        }
        guard let decision else { return nil }
        let m = decision.member
        inFlight[m] += 1
        outliers.admit(m, now: now)
        _ = breakers[m].admit(now: now)
        stats[m].picks[decision.policy, default: 0] += 1
        if isRetry { stats[m].retries += 1 }
        switch decision.hashOutcome {
        case .owner?:
            stats[m].affinityHits += 1
        case .spilled?:
            stats[m].spillsIn += 1
            if let owner = hashing.probeOrder.ring.owner(ofHash: keyHash ?? 0) { stats[owner].spillsOut += 1 }
        case .ownerUnavailable?, nil:
            break
        }
        return decision
    }

    /// How a call ended, as far as the backend's health is concerned.
    public enum CallResult: Sendable, Equatable {
        /// Answered (whatever its gRPC status, unless the status blames the backend).
        case succeeded
        /// The backend failed the call: connection refused or lost, UNAVAILABLE, a reset.
        case failed
        /// Ended by the client or its deadline: says nothing about the backend.
        case abandoned
    }

    /// Ends a call picked by `pick`: takes it out of flight, feeds response time and passive health.
    /// Returns true when this call's failure ejected the backend.
    @discardableResult
    public mutating func finish(member m: Int, result: CallResult, seconds: Double?, now: UInt64) -> Bool {
        guard members.indices.contains(m) else { return false }
        inFlight[m] = max(0, inFlight[m] - 1)
        switch result {
        case .succeeded:
            if let seconds { latency[m].record(seconds, now: now) }
            outliers.recordSuccess(m, now: now)
            breakers[m].recordSuccess()
            return false
        case .failed:
            stats[m].failures += 1
            let wasOpen: Bool
            if case .open = breakers[m].phase { wasOpen = true } else { wasOpen = false }
            breakers[m].recordFailure(now: now)
            if !wasOpen, case .open = breakers[m].phase { stats[m].breakerOpenings += 1 }
            return outliers.recordFailure(m, now: now)
        case .abandoned:
            // A trial that the client abandoned proves nothing; let the next call try again.
            if outliers.states[m] == .halfOpen { outliers.recordSuccess(m, now: now) }
            breakers[m].recordAbandoned()
            return false
        }
    }

    /// How loaded a backend is for the keyless policies: the router's own calls in flight there, or, while its
    /// last ORCA report is fresh (under `WorkerLoad.freshNanos` old), the worker's running plus waiting
    /// requests if more (other routers' calls count too).
    /// Counts a stream continued on `m` after its backend failed mid-stream (picked as a retry).
    public mutating func noteMigration(to m: Int) {
        stats[m].migrationsIn += 1
    }

    public func effectiveLoad(_ m: Int, now: UInt64) -> Int {
        guard let report = reported[m], now &- report.receivedAt < WorkerLoad.freshNanos else { return inFlight[m] }
        return max(inFlight[m], report.running + report.waiting)
    }

    /// Records the load a worker reported with a finished call.
    public mutating func applyLoadReport(_ report: WorkerLoad, to m: Int) {
        guard members.indices.contains(m) else { return }
        reported[m] = report
    }

    /// Applies an active health-check event to a backend; true when it changed the backend's state. A backend
    /// that comes back up is also taken back from outlier ejection.
    @discardableResult
    public mutating func applyHealth(_ event: BackendHealth.Event, to member: Int, now: UInt64 = 0) -> Bool {
        guard members.indices.contains(member) else { return false }
        let changed = health[member].apply(event)
        if changed && health[member].isUp {
            outliers.uneject(member, now: now)
            breakers[member].reset()
        }
        return changed
    }
}

/// A worker's load as it reports it in each response's trailers (`endpoint-load-metrics-bin`, an ORCA
/// `OrcaLoadReport` with named metrics `running`, `waiting`, `kv_free_blocks`).
public struct WorkerLoad: Sendable, Equatable {
    /// Reports older than this are not used for picks (the worker may have emptied or filled since).
    public static let freshNanos: UInt64 = 2_000_000_000
    public var running: Int
    public var waiting: Int
    public var freeBlocks: Int
    /// When the router received it, monotonic nanoseconds.
    public var receivedAt: UInt64
    public init(running: Int, waiting: Int, freeBlocks: Int, receivedAt: UInt64) {
        self.running = running
        self.waiting = waiting
        self.freeBlocks = freeBlocks
        self.receivedAt = receivedAt
    }
}
