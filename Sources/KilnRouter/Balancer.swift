/// The router's picture of its backends and its decisions over them: health (active checks and passive
/// ejection), in-flight calls, response times, and a pick per call. Pure and single-owner: `kiln route` keeps
/// one behind a lock and passes the time in; tests drive it on a simulated clock.
///
/// A backend is eligible for a call when its health checks say up, outlier ejection lets it in, and the call
/// has not tried it already. Calls with a session key go through `BoundedLoadHashing`; the others through the
/// policy asked for.
public struct Balancer: Sendable {
    public let members: [RingMember]
    public let hashing: BoundedLoadHashing
    public private(set) var inFlight: [Int]
    public private(set) var latency: [LatencyEWMA]
    public private(set) var health: [BackendHealth]
    public private(set) var outliers: OutlierDetector
    public private(set) var stats: [BackendStats]
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
        public var failures = 0
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
        seed: UInt64 = 0
    ) {
        self.members = members
        hashing = BoundedLoadHashing(ring: HashRing(members: members, virtualNodes: virtualNodes), balanceFactor: balanceFactor)
        inFlight = [Int](repeating: 0, count: members.count)
        latency = [LatencyEWMA](repeating: LatencyEWMA(), count: members.count)
        health = [BackendHealth](repeating: BackendHealth(thresholds: healthThresholds), count: members.count)
        outliers = OutlierDetector(backendCount: members.count, policy: outlierPolicy)
        stats = [BackendStats](repeating: BackendStats(), count: members.count)
        weightedRoundRobin = SmoothWeightedRoundRobin(memberCount: members.count)
        twoChoices = PowerOfTwoChoices(seed: seed)
    }

    /// Whether a backend may take a call now (health up, not ejected or offering its trial).
    public func isEligible(_ member: Int, now: UInt64) -> Bool {
        members.indices.contains(member) && health[member].isUp && outliers.isAvailable(member, now: now)
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
        let loads = inFlight
        let weights = members.map { Double(max(1, $0.weight)) }
        let averages = latency.map { $0.value(now: now) }
        let decision: Pick?
        if let keyHash {
            decision = hashing.pick(keyHash: keyHash, inFlight: loads, eligible: eligible)
                .map { Pick(member: $0.member, policy: .consistentHash, hashOutcome: $0.outcome) }
        } else {
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
            return false
        case .failed:
            stats[m].failures += 1
            return outliers.recordFailure(m, now: now)
        case .abandoned:
            // A trial that the client abandoned proves nothing; let the next call try again.
            if outliers.states[m] == .halfOpen { outliers.recordSuccess(m, now: now) }
            return false
        }
    }

    /// Applies an active health-check event to a backend; true when it changed the backend's state. A backend
    /// that comes back up is also taken back from outlier ejection.
    @discardableResult
    public mutating func applyHealth(_ event: BackendHealth.Event, to member: Int, now: UInt64 = 0) -> Bool {
        guard members.indices.contains(member) else { return false }
        let changed = health[member].apply(event)
        if changed && health[member].isUp { outliers.uneject(member, now: now) }
        return changed
    }
}
