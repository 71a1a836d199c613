import Glibc
import KilnAPI
import KilnHTTP2
import KilnRouter
import Logging
import Synchronization

/// The workers behind `kiln route`: one multiplexed HTTP/2 client per worker (reconnecting when its
/// connection drops), and the router's decisions over them (`Balancer`, behind one lock: a pick is a few
/// hundred nanoseconds of arithmetic, far from the lock's contention point at a router's call rates).
public final class BackendSet: Sendable {
    public let addresses: [BackendAddress]
    let clients: [HTTP2Client]
    private let balancer: Mutex<Balancer>
    /// The router's own health: SERVING while at least one backend may take calls.
    let health: HealthService
    let logger: Logger

    public init(addresses: [BackendAddress], group: EventLoopGroup, tls: TLSClientConfiguration?,
                virtualNodes: Int = HashRing.defaultVirtualNodes, balanceFactor: Double = BoundedLoadHashing.defaultBalanceFactor,
                healthThresholds: BackendHealth.Thresholds = BackendHealth.Thresholds(),
                outlierPolicy: OutlierPolicy = OutlierPolicy(), health: HealthService, logger: Logger) throws {
        self.addresses = addresses
        clients = try addresses.map { a in
            try HTTP2Client(host: a.host, port: a.port, tls: a.tls ? (tls ?? TLSClientConfiguration()) : nil, group: group,
                            connectTimeout: 2, keepaliveInterval: 10, keepaliveTimeout: 5)
        }
        balancer = Mutex(Balancer(members: addresses.map { RingMember(name: $0.ringName, weight: $0.weight) },
                                  virtualNodes: virtualNodes, balanceFactor: balanceFactor, healthThresholds: healthThresholds,
                                  outlierPolicy: outlierPolicy, seed: UInt64.random(in: 0...UInt64.max)))
        self.health = health
        self.logger = logger
        refreshServing()
    }

    /// Monotonic nanoseconds, the clock every decision is made on.
    public static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    /// Picks a backend for a call and counts it in flight there; nil when none may take it.
    func pick(keyHash: UInt64?, keyless policy: BalancingPolicy, excluding tried: Set<Int>, isRetry: Bool) -> Balancer.Pick? {
        balancer.withLock { $0.pick(keyHash: keyHash, keyless: policy, excluding: tried, isRetry: isRetry, now: Self.now()) }
    }

    /// Ends a call `pick` counted, feeding latency and passive health.
    func finish(member: Int, result: Balancer.CallResult, seconds: Double?) {
        let ejected = balancer.withLock { $0.finish(member: member, result: result, seconds: seconds, now: Self.now()) }
        if ejected {
            logger.warning("backend \(addresses[member]) ejected after consecutive failures")
            refreshServing()
        }
    }

    /// Applies an active health-check event to a backend, logging changes.
    func applyHealth(_ event: BackendHealth.Event, to member: Int) {
        let changed = balancer.withLock { $0.applyHealth(event, to: member, now: Self.now()) }
        if changed {
            let up = balancer.withLock { $0.health[member].isUp }
            logger.notice("backend \(addresses[member]) is \(up ? "up" : "down")")
        }
        refreshServing()
    }

    /// Sets the router's health from its backends'.
    func refreshServing() {
        let any = balancer.withLock { $0.anyEligible(now: Self.now()) }
        let status: HealthService.ServingStatus = any ? .serving : .notServing
        if health.status(of: "") != status { health.setStatus(status) }
        if health.status(of: "kiln.v1.Inference") != status { health.setStatus(status, service: "kiln.v1.Inference") }
    }

    /// Each backend as `GetStats` on the router reports it.
    public func stats() -> [Kiln_V1_BackendStats] {
        let now = Self.now()
        let b = snapshot()
        return addresses.indices.map { m in
            var s = Kiln_V1_BackendStats()
            s.address = addresses[m].description
            s.ejected = !b.outliers.isAvailable(m, now: now)
            s.healthy = b.health[m].isUp && !s.ejected
            s.inFlight = UInt32(clamping: b.inFlight[m])
            let picks = b.stats[m].picks
            s.keyedPicks = UInt64(picks[.consistentHash] ?? 0)
            s.keylessPicks = UInt64(picks.filter { $0.key != .consistentHash }.values.reduce(0, +))
            s.affinityHits = UInt64(b.stats[m].affinityHits)
            s.spillsIn = UInt64(b.stats[m].spillsIn)
            s.spillsOut = UInt64(b.stats[m].spillsOut)
            s.ejections = UInt64(b.outliers.totalEjections[m])
            s.retries = UInt64(b.stats[m].retries)
            s.failures = UInt64(b.stats[m].failures)
            s.latencySeconds = b.latency[m].seconds ?? 0
            return s
        }
    }

    /// A copy of the router's state, for stats and tests.
    public func snapshot() -> Balancer { balancer.withLock { $0 } }

    /// Closes every backend connection.
    public func close() {
        for c in clients { c.close() }
    }
}
