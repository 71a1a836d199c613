import ArgumentParser
import Foundation
import KilnHTTP2
import KilnRouter
import KilnServer
import Logging

/// `kiln route`: the consistent-hash session router in front of `kiln serve` workers.
struct Route: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Route kiln.v1.Inference calls to kiln serve workers (consistent hashing with bounded loads by session).")

    @Option(help: "Address to listen on.") var host = "127.0.0.1"
    @Option(name: .customLong("tls-port"), help: "TLS port (0 picks one).") var tlsPort = 8443
    @Option(name: .customLong("h2c-port"), help: "Cleartext h2c port (0 picks one).") var h2cPort = 8080
    @Flag(name: .customLong("no-tls"), help: "Serve h2c only.") var noTLS = false
    @Option(help: "Server certificate chain (PEM).") var cert = "Certs/server.pem"
    @Option(help: "Server private key (PEM).") var key = "Certs/server.key"
    @Option(name: .customLong("client-ca"), help: "Require client certificates signed by this CA (mTLS).") var clientCA: String?
    @Option(help: "Event-loop threads (default: one per core).") var threads: Int?
    @Option(name: .customLong("backend"), help: "A worker: h2c://HOST:PORT or https://HOST:PORT, optionally ?weight=N (repeat for each).")
    var backends: [String] = []
    @Option(name: .customLong("backends-file"), help: "A file of backends, one per line as --backend takes them (# comments); re-read when it changes and on SIGHUP.")
    var backendsFile: String?
    @Option(name: .customLong("backend-dns"), help: "NAME:PORT (or h2c://, https://NAME:PORT): every A/AAAA record of NAME is a backend, re-resolved every --dns-interval (repeatable).")
    var backendDNS: [String] = []
    @Option(name: .customLong("dns-interval"), help: "Seconds between resolutions of the --backend-dns names.") var dnsInterval = 10.0
    @Option(name: .customLong("max-connections-per-backend"), help: "Connections to one backend; another opens when one is at the backend's MAX_CONCURRENT_STREAMS.")
    var maxConnectionsPerBackend = 4
    @Option(name: .customLong("backend-ca"), help: "CA that signs the workers' certificates (https backends).") var backendCA: String?
    @Option(name: .customLong("backend-cert"), help: "Client certificate for mTLS to the workers.") var backendCert: String?
    @Option(name: .customLong("backend-key"), help: "Its private key.") var backendKey: String?
    @Option(help: "Virtual nodes per unit of backend weight on the hash ring.") var vnodes = HashRing.defaultVirtualNodes
    @Option(name: .customLong("balance-factor"), help: "Bounded loads: no backend takes more than ceil(c*(A+1)/n) calls in flight.")
    var balanceFactor = BoundedLoadHashing.defaultBalanceFactor
    @Option(name: .customLong("keyless-policy"), help: "How calls without a session key pick: round_robin, weighted_round_robin, least_request, least_response_time.")
    var keylessPolicy: BalancingPolicy = .leastResponseTime
    @Option(name: .customLong("health-interval"), help: "Seconds between Check probes while a backend's Watch stream is not open.")
    var healthInterval = 5.0
    @Option(name: .customLong("health-timeout"), help: "Seconds a Check probe may take.") var healthTimeout = 1.0
    @Option(name: .customLong("drain-seconds"), help: "Seconds in-flight calls get on SIGTERM.") var drainSeconds = 30.0
    @Option(name: .customLong("max-migrations"), help: "Times a Generate or Chat stream may move to another worker when its worker fails mid-stream (0: never).")
    var maxMigrations = 3

    func validate() throws {
        guard !backends.isEmpty || backendsFile != nil || !backendDNS.isEmpty else {
            throw ValidationError("give at least one --backend h2c://HOST:PORT, a --backends-file or a --backend-dns NAME:PORT")
        }
        for b in backends {
            if case .failure(let error) = BackendAddress.parse(b) { throw ValidationError(error.description) }
        }
        for d in backendDNS {
            if case .failure(let error) = BackendDiscovery.DNSName.parse(d) { throw ValidationError(error.description) }
        }
        guard dnsInterval.isFinite, dnsInterval >= 0.1, dnsInterval <= 86_400 else { throw ValidationError("--dns-interval must be from 0.1 to 86400 seconds") }
        guard (1...64).contains(maxConnectionsPerBackend) else { throw ValidationError("--max-connections-per-backend must be from 1 to 64") }
        guard (0...64).contains(maxMigrations) else { throw ValidationError("--max-migrations must be from 0 to 64") }
        guard (1...10_000).contains(vnodes) else { throw ValidationError("--vnodes must be from 1 to 10000") }
        guard balanceFactor.isFinite, balanceFactor >= 1, balanceFactor <= 100 else {
            throw ValidationError("--balance-factor must be from 1 to 100")
        }
        guard healthInterval.isFinite, healthInterval >= 0.05, healthInterval <= 3600,
              healthTimeout.isFinite, healthTimeout >= 0.05, healthTimeout <= 60 else {
            throw ValidationError("--health-interval must be from 0.05 to 3600 seconds and --health-timeout from 0.05 to 60")
        }
        guard drainSeconds.isFinite, drainSeconds >= 0 else { throw ValidationError("--drain-seconds must be 0 or more") }
    }

    func run() async throws {
        LoggingSystem.bootstrap { StreamLogHandler.standardError(label: $0) }
        let logger = Logger(label: "kiln-route")
        var config = HTTP2ServerConfiguration()
        config.host = host
        config.h2cPort = h2cPort
        config.tlsPort = noTLS ? nil : tlsPort
        if !noTLS {
            config.tls = TLSServerConfiguration(certificateChainPath: cert, privateKeyPath: key, clientCAPath: clientCA)
        }
        config.drainDeadline = drainSeconds

        TerminationSignals.install()
        HangupSignal.install()
        let group = try EventLoopGroup(threads: threads ?? EventLoopGroup.coreCount)
        let fixed = try backends.map { try BackendAddress.parse($0).get() }
        let dnsNames = try backendDNS.map { try BackendDiscovery.DNSName.parse($0).get() }
        let backendTLS = TLSClientConfiguration(caPath: backendCA, certificateChainPath: backendCert, privateKeyPath: backendKey)
        let health = HealthService()
        let set = try BackendSet(addresses: [], group: group, tls: backendTLS, virtualNodes: vnodes,
                                 balanceFactor: balanceFactor, maxConnectionsPerBackend: maxConnectionsPerBackend,
                                 health: health, logger: logger)
        let prober = HealthProber(backends: set, interval: healthInterval, timeout: healthTimeout)
        let discovery = BackendDiscovery(fixed: fixed, file: backendsFile, dnsNames: dnsNames, backends: set, prober: prober,
                                         dnsInterval: dnsInterval, reloadRequests: { HangupSignal.count }, logger: logger)
        let addresses: [BackendAddress]
        do {
            addresses = try discovery.loadInitial()
            try set.update(addresses: addresses)
        } catch {
            throw ValidationError("\(error)")
        }
        prober.start()
        discovery.start()
        let relay = InferenceRelay(backends: set, keylessPolicy: keylessPolicy, maxMigrations: maxMigrations, logger: logger)
        // The OpenAI-compatible API: its calls go through this router's own relay (affinity, failover).
        let openAI = OpenAIService(health: health)
        let router = ServiceRoutes.router(health: health, relayed: ["kiln.v1.Inference"], routes: { routes in
            relay.mount(on: &routes)
            openAI.mount(on: &routes)
        })
        let server = try HTTP2Server(configuration: config, router: router, group: group, logger: logger)
        try server.start()
        if let port = server.h2cAddress?.port { try openAI.connect(port: port, group: group) }
        announce("routing to \(addresses.map(\.description).joined(separator: ", ")) (\(vnodes) virtual nodes per weight, balance factor \(balanceFactor))")
        if let a = server.h2cAddress { announce("listening h2c \(a)") }
        if let a = server.tlsAddress { announce("listening tls \(a)") }

        await TerminationSignals.wait()
        // Watch streams (a load balancer's, a probe's) end now rather than hold the drain to its deadline.
        health.setStatus(.notServing)
        health.endWatches()
        announce("shutting down: draining \(server.connectionCount) connection(s)")
        await server.shutdown()
        discovery.stop()
        prober.stop()
        set.close()
        group.shutdown()
        announce("stopped")
    }

    private func announce(_ line: String) {
        print(line)
        fflush(nil)
    }
}

extension BalancingPolicy: ExpressibleByArgument {}
