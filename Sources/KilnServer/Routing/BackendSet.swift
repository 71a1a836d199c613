import Glibc
import KilnAPI
import KilnHTTP2
import KilnRouter
import Logging
import Synchronization

/// One worker behind `kiln route`: its address and its connection pool.
public final class Backend: Sendable {
    public let address: BackendAddress
    /// The backend's name on the ring and in every decision.
    public let name: String
    let client: HTTP2Client

    init(address: BackendAddress, client: HTTP2Client) {
        self.address = address
        self.name = address.ringName
        self.client = client
    }
}

/// The workers behind `kiln route`: one connection pool per worker (multiplexed, a further connection when
/// one is at the worker's `MAX_CONCURRENT_STREAMS`, reconnecting with backoff), and the router's decisions
/// over them (`Balancer`, behind one lock: a pick is a few hundred nanoseconds of arithmetic, far from the
/// lock's contention point at a router's call rates).
///
/// The set can change while calls run (`update(addresses:)`, from `BackendDiscovery`): a call holds its
/// `Backend`, so one that ends after its backend left is simply not counted anywhere.
public final class BackendSet: Sendable {
    private struct State {
        var balancer: Balancer
        /// In the balancer's member order.
        var backends: [Backend]
    }

    private let state: Mutex<State>
    private let group: EventLoopGroup
    private let tls: TLSClientConfiguration?
    /// Connections one backend's pool may open.
    let maxConnectionsPerBackend: Int
    /// The router's own health: SERVING while at least one backend may take calls.
    let health: HealthService
    let logger: Logger

    public init(addresses: [BackendAddress], group: EventLoopGroup, tls: TLSClientConfiguration?,
                virtualNodes: Int = HashRing.defaultVirtualNodes, balanceFactor: Double = BoundedLoadHashing.defaultBalanceFactor,
                healthThresholds: BackendHealth.Thresholds = BackendHealth.Thresholds(),
                outlierPolicy: OutlierPolicy = OutlierPolicy(), maxConnectionsPerBackend: Int = 4,
                health: HealthService, logger: Logger) throws {
        self.group = group
        self.tls = tls
        self.maxConnectionsPerBackend = max(1, maxConnectionsPerBackend)
        self.health = health
        self.logger = logger
        let unique = Self.deduplicated(addresses)
        let backends = try unique.map { try Self.makeBackend($0, group: group, tls: tls, maxConnections: max(1, maxConnectionsPerBackend)) }
        let balancer = Balancer(members: unique.map { RingMember(name: $0.ringName, weight: $0.weight) },
                                virtualNodes: virtualNodes, balanceFactor: balanceFactor, healthThresholds: healthThresholds,
                                outlierPolicy: outlierPolicy, seed: UInt64.random(in: 0...UInt64.max))
        state = Mutex(State(balancer: balancer, backends: backends))
        refreshServing()
    }

    private static func makeBackend(_ a: BackendAddress, group: EventLoopGroup, tls: TLSClientConfiguration?, maxConnections: Int) throws -> Backend {
        var config: TLSClientConfiguration?
        if a.tls {
            config = tls ?? TLSClientConfiguration()
            if let name = a.serverName { config?.serverName = name }
        }
        let client = try HTTP2Client(host: a.host, port: a.port, tls: config, group: group, connectTimeout: 2,
                                     keepaliveInterval: 10, keepaliveTimeout: 5, maxConnections: maxConnections)
        return Backend(address: a, client: client)
    }

    /// One address per ring name, the first given.
    static func deduplicated(_ addresses: [BackendAddress]) -> [BackendAddress] {
        var seen = Set<String>()
        return addresses.filter { seen.insert($0.ringName).inserted }
    }

    /// The backends now, in ring member order.
    public var backends: [Backend] { state.withLock { $0.backends } }

    /// Their addresses.
    public var addresses: [BackendAddress] { backends.map(\.address) }

    /// Replaces the backend set. Backends that stay keep their connections, health, ejection and counters;
    /// ones that leave finish the calls they hold and close; only the keys of those that come or go move.
    /// Returns what changed, for logs and the health prober.
    @discardableResult
    public func update(addresses: [BackendAddress]) throws -> (added: [Backend], removed: [Backend]) {
        let wanted = Self.deduplicated(addresses)
        let (added, removed): ([Backend], [Backend]) = try state.withLock { s in
            let current = Dictionary(s.backends.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
            var next: [Backend] = []
            var added: [Backend] = []
            for a in wanted {
                if let b = current[a.ringName], b.address == a {
                    next.append(b)
                } else {
                    let b = try Self.makeBackend(a, group: group, tls: tls, maxConnections: maxConnectionsPerBackend)
                    next.append(b)
                    added.append(b)
                }
            }
            let kept = Set(next.map { ObjectIdentifier($0) })
            let removed = s.backends.filter { !kept.contains(ObjectIdentifier($0)) }
            guard !added.isEmpty || !removed.isEmpty else { return ([], []) }
            s.balancer = s.balancer.reconfigured(members: next.map { RingMember(name: $0.name, weight: $0.address.weight) })
            s.backends = next
            return (added, removed)
        }
        for b in removed { b.client.close() }
        if !added.isEmpty || !removed.isEmpty {
            logger.notice("backends now \(self.addresses.map(\.description).joined(separator: ", "))",
                          metadata: ["added": "\(added.map(\.address.description))", "removed": "\(removed.map(\.address.description))"])
            refreshServing()
        }
        return (added, removed)
    }

    /// Monotonic nanoseconds, the clock every decision is made on.
    public static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    /// Picks a backend for a call and counts it in flight there; nil when none may take it. `tried` holds the
    /// names of the backends this call already tried.
    func pick(keyHash: UInt64?, keyless policy: BalancingPolicy, excluding tried: Set<String>, isRetry: Bool) -> (Backend, Balancer.Pick)? {
        state.withLock { s in
            let excluded: Set<Int> = tried.isEmpty ? [] : Set(tried.compactMap { s.balancer.index(of: $0) })
            guard let p = s.balancer.pick(keyHash: keyHash, keyless: policy, excluding: excluded, isRetry: isRetry, now: Self.now()) else {
                return nil
            }
            return (s.backends[p.member], p)
        }
    }

    /// Counts a stream continued on `backend` after another failed it mid-stream.
    func noteMigration(to backend: Backend) {
        state.withLock { s in
            if let m = s.balancer.index(of: backend.name) { s.balancer.noteMigration(to: m) }
        }
    }

    /// Ends a call `pick` counted, feeding latency, passive health and the load the worker reported.
    func finish(_ backend: Backend, result: Balancer.CallResult, seconds: Double?, load: WorkerLoad? = nil) {
        let ejected = state.withLock { s -> Bool in
            guard let m = s.balancer.index(of: backend.name) else { return false }  // it left meanwhile
            if let load { s.balancer.applyLoadReport(load, to: m) }
            return s.balancer.finish(member: m, result: result, seconds: seconds, now: Self.now())
        }
        if ejected {
            logger.warning("backend \(backend.address) ejected after consecutive failures")
            refreshServing()
        }
    }

    /// Applies an active health-check event to a backend, logging changes.
    func applyHealth(_ event: BackendHealth.Event, to backend: Backend) {
        let up: Bool? = state.withLock { s in
            guard let m = s.balancer.index(of: backend.name), s.backends[m] === backend,
                  s.balancer.applyHealth(event, to: m, now: Self.now()) else { return nil }
            return s.balancer.health[m].isUp
        }
        if let up { logger.notice("backend \(backend.address) is \(up ? "up" : "down")") }
        refreshServing()
    }

    /// Sets the router's health from its backends'.
    func refreshServing() {
        let any = state.withLock { $0.balancer.anyEligible(now: Self.now()) }
        let status: HealthService.ServingStatus = any ? .serving : .notServing
        if health.status(of: "") != status { health.setStatus(status) }
        if health.status(of: "kiln.v1.Inference") != status { health.setStatus(status, service: "kiln.v1.Inference") }
    }

    /// Each backend as `GetStats` on the router reports it.
    public func stats() -> [Kiln_V1_BackendStats] {
        let now = Self.now()
        let (b, backends) = state.withLock { ($0.balancer, $0.backends) }
        return backends.indices.map { m in
            var s = Kiln_V1_BackendStats()
            s.address = backends[m].address.description
            s.ejected = !b.outliers.isAvailable(m, now: now)
            s.breakerOpen = !b.breakers[m].wouldAdmit(now: now)
            s.healthy = b.health[m].isUp && !s.ejected && !s.breakerOpen
            s.inFlight = UInt32(clamping: b.inFlight[m])
            let picks = b.stats[m].picks
            s.keyedPicks = UInt64(picks[.consistentHash] ?? 0)
            s.keylessPicks = UInt64(picks.filter { $0.key != .consistentHash }.values.reduce(0, +))
            s.affinityHits = UInt64(b.stats[m].affinityHits)
            s.spillsIn = UInt64(b.stats[m].spillsIn)
            s.spillsOut = UInt64(b.stats[m].spillsOut)
            s.ejections = UInt64(b.outliers.totalEjections[m])
            s.retries = UInt64(b.stats[m].retries)
            s.migrationsIn = UInt64(b.stats[m].migrationsIn)
            s.failures = UInt64(b.stats[m].failures)
            s.latencySeconds = b.latency[m].seconds ?? 0
            s.breakerOpenings = UInt64(b.stats[m].breakerOpenings)
            s.connections = UInt32(clamping: backends[m].client.connectionCount)
            if let r = b.reported[m] {
                s.reportedRunning = UInt32(clamping: r.running)
                s.reportedWaiting = UInt32(clamping: r.waiting)
                s.reportedKvFreeBlocks = UInt32(clamping: r.freeBlocks)
                s.reportAgeSeconds = Double(now &- r.receivedAt) / 1e9
            }
            return s
        }
    }

    /// A copy of the router's state, for stats and tests.
    public func snapshot() -> Balancer { state.withLock { $0.balancer } }

    /// Closes every backend connection.
    public func close() {
        for b in backends { b.client.close() }
    }
}
