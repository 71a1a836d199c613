import ArgumentParser
import CLinux
import Glibc
import KilnHTTP2
import KilnServer
import KilnEngine
import KilnModel
import KilnVulkan
import Foundation
import Logging

/// `kiln serve`: `kiln.v1.Inference` on a model (the default SmolLM2 unless told otherwise), with gRPC
/// health, on a TLS listener (development certificates) and an h2c one.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the server.")

    @Option(help: "Address to listen on.") var host = "127.0.0.1"
    @Option(name: .customLong("tls-port"), help: "TLS port (0 picks one).") var tlsPort = 8443
    @Option(name: .customLong("h2c-port"), help: "Cleartext h2c port (0 picks one).") var h2cPort = 8080
    @Flag(name: .customLong("no-tls"), help: "Serve h2c only.") var noTLS = false
    @Flag(name: .customLong("no-h2c"), help: "Serve TLS only.") var noH2C = false
    @Option(help: "Server certificate chain (PEM).") var cert = "Certs/server.pem"
    @Option(help: "Server private key (PEM).") var key = "Certs/server.key"
    @Option(name: .customLong("client-ca"), help: "Require client certificates signed by this CA (mTLS).") var clientCA: String?
    @Option(help: "Event-loop threads (default: one per core).") var threads: Int?
    @Option(name: .customLong("max-streams"), help: "SETTINGS_MAX_CONCURRENT_STREAMS.") var maxStreams: UInt32 = 256
    @Option(name: .customLong("max-connections"), help: "Open connections at most.") var maxConnections = 10_000
    @Option(name: .customLong("max-body-bytes"), help: "Largest request body.") var maxBodyBytes = 64 * 1024 * 1024
    @Option(name: .customLong("max-buffered-request-mb"), help: "Request body bytes one connection may hold unread, in MiB (past it a stream is reset).") var maxBufferedRequestMB = 16
    @Option(name: .customLong("max-buffered-request-mb-total"), help: "The same over all connections together, in MiB.") var maxBufferedRequestMBTotal = 512
    @Option(name: .customLong("idle-timeout"), help: "Seconds before an idle connection is closed.") var idleTimeout = 300.0
    @Option(name: .customLong("handshake-timeout"), help: "Seconds for the TLS handshake and HTTP/2 preface, and for each HTTP/1.1 request head.") var handshakeTimeout = 10.0
    @Option(name: .customLong("keepalive"), help: "Seconds of silence before a PING (0: off).") var keepalive = 60.0
    @Option(name: .customLong("keepalive-timeout"), help: "Seconds a PING may go unanswered.") var keepaliveTimeout = 20.0
    @Option(name: .customLong("drain-seconds"), help: "Seconds in-flight streams get on SIGTERM.") var drainSeconds = 30.0
    @Option(name: .customLong("handoff-grace"), help: "Seconds streams a router can move (kiln route's calls) run on after SIGTERM before they are handed over to another worker.")
    var handoffGrace = 2.0
    @Option(help: "GGUF model to serve through kiln.v1.Inference (\"default\": the SmolLM2 model `make model` fetches).") var model = "default"
    @Flag(name: .customLong("no-model"), help: "Serve no model: transport and health (and the demo routes, with --demo-routes) only.") var noModel = false
    @Flag(name: .customLong("demo-routes"), help: "Also mount the transport's demo routes (/, /echo, /stream, /bytes, /sleep, pkg.Service) for benchmarks and tests; never in production.") var demoRoutes = false
    @Flag(help: "Also serve kiln.interop.v1.Interop (the RPC interop-test service).") var interop = false
    @Option(help: "Decoder: auto (Vulkan on a real GPU, else the native CPU backend), vulkan (any Vulkan device, lavapipe included), cpu (the native CPU backend) or reference (the float32 oracle).") var backend: BackendChoice = .auto
    @Option(name: .customLong("decode-threads"), help: "Threads of the CPU backend (default: one per core).") var decodeThreads: Int?
    @Option(name: .customLong("vulkan-device"), help: "Vulkan device index (default: the best one).") var vulkanDevice: Int?
    @Option(name: .customLong("kv-cache-mb"), help: "Memory for the KV cache, in MiB.") var kvCacheMB = 768
    @Option(name: .customLong("kv-blocks"), help: "KV cache blocks of 16 tokens (overrides --kv-cache-mb).") var kvBlocks: Int?
    @Flag(name: .customLong("no-prefix-cache"), help: "Compute every prompt in full (for comparisons).") var noPrefixCache = false
    @Option(name: .customLong("max-waiting"), help: "Requests queued beyond this are refused (RESOURCE_EXHAUSTED).") var maxWaiting = 256
    @Option(name: .customLong("max-batch"), help: "Sequences decoded in one step at most.") var maxBatch = 64
    @Option(name: .customLong("kv-cache-type"), help: "KV pool element type on the Vulkan backend: f16 or f32.") var kvCacheType: KVCacheType = .f16
    @Option(name: .customLong("step-tokens"), help: "Tokens computed in one step at most (prefill is chunked to fit).") var stepTokens = 256
    @Option(name: .customLong("result-cache-mb"), help: "Memory for whole answers to deterministic requests, in MiB (0: off).") var resultCacheMB = 64
    @Option(name: .customLong("result-cache-ttl"), help: "Seconds a cached answer lives.") var resultCacheTTL = 300.0
    @Option(name: .customLong("max-sessions"), help: "Chat sessions kept at most.") var maxSessions = 1024
    @Option(name: .customLong("session-memory-mb"), help: "Memory all chat sessions' histories may take, in MiB.") var sessionMemoryMB = 256
    @Option(name: .customLong("session-ttl"), help: "Seconds an idle chat session lives.") var sessionTTL = 600.0
    @Option(name: .customLong("session-store"), help: "Also keep chat sessions in Redis (redis://HOST:PORT[/DB]), so that another worker can continue them; Redis down or slow (50 ms) falls back to this worker's memory.")
    var sessionStore: String?
    @Option(name: .customLong("result-cache-store"), help: "Also keep whole answers to deterministic requests in Redis (redis://HOST:PORT[/DB]), for every worker: the in-process cache stays the first level; Redis down or slow counts as a miss.")
    var resultCacheStore: String?

    func validate() throws {
        guard kvCacheMB > 0, kvBlocks.map({ $0 > 0 }) ?? true else { throw ValidationError("the KV cache needs at least one block") }
        guard maxBatch > 0, stepTokens >= maxBatch else { throw ValidationError("--step-tokens must be at least --max-batch (every sequence gets a token per step)") }
        for (flag, value) in [("--session-store", sessionStore), ("--result-cache-store", resultCacheStore)] {
            if let value, RedisConnection.Address.parse(value) == nil { throw ValidationError("\(flag) must be redis://HOST:PORT[/DB] (got \(value))") }
        }
        // Bounded so that the sleeps' Durations and the stores' integer TTLs cannot overflow.
        guard drainSeconds.isFinite, (0...1e6).contains(drainSeconds), handoffGrace.isFinite, (0...1e6).contains(handoffGrace) else {
            throw ValidationError("--drain-seconds and --handoff-grace must be from 0 to 1000000")
        }
        guard sessionTTL.isFinite, sessionTTL > 0, sessionTTL <= 1e9, resultCacheTTL.isFinite, resultCacheTTL > 0, resultCacheTTL <= 1e9 else {
            throw ValidationError("--session-ttl and --result-cache-ttl must be more than 0 and at most 1e9 seconds")
        }
        guard resultCacheMB >= 0, sessionMemoryMB >= 0, maxSessions >= 0 else { throw ValidationError("cache sizes must not be negative") }
        // A request message (4 MiB at most) must fit a connection's buffer, or no large call could ever complete.
        guard maxBufferedRequestMB >= 5, maxBufferedRequestMBTotal >= maxBufferedRequestMB, maxBufferedRequestMBTotal <= 1 << 20 else {
            throw ValidationError("--max-buffered-request-mb must be at least 5 and at most --max-buffered-request-mb-total (at most 1 TiB)")
        }
    }

    func run() async throws {
        VulkanDevice.prepareDriverEnvironment()  // before any thread of ours exists (setenv)
        // Memory follows what the server holds: blocks of 1 MiB and more (request messages, uploads) are
        // mapped on their own and go back to the system when freed, instead of the threshold rising with
        // each large free until they come from arenas that keep them; and two arenas, not eight per core,
        // so that memory freed on one thread is found by the next allocation (RequestBufferTests).
        kiln_tune_allocator(1 << 20, 2)
        LoggingSystem.bootstrap { StreamLogHandler.standardError(label: $0) }
        let logger = Logger(label: "kiln")
        var config = HTTP2ServerConfiguration()
        config.host = host
        config.h2cPort = noH2C ? nil : h2cPort
        config.tlsPort = noTLS ? nil : tlsPort
        if !noTLS {
            config.tls = TLSServerConfiguration(certificateChainPath: cert, privateKeyPath: key, clientCAPath: clientCA)
        }
        config.maxConcurrentStreams = maxStreams
        config.maxConnections = maxConnections
        config.maxRequestBodySize = maxBodyBytes
        config.maxBufferedRequestBytes = maxBufferedRequestMB << 20
        config.maxBufferedRequestBytesTotal = maxBufferedRequestMBTotal << 20
        config.idleTimeout = idleTimeout
        config.handshakeTimeout = handshakeTimeout
        config.keepaliveInterval = keepalive
        config.keepaliveTimeout = keepaliveTimeout
        // Streams still open when --drain-seconds pass end with UNAVAILABLE (the engine stops first); the
        // connections get a second more to carry those statuses out before they are closed.
        config.drainDeadline = drainSeconds + 1

        TerminationSignals.install()
        let group = try EventLoopGroup(threads: threads ?? EventLoopGroup.coreCount)
        var inference: InferenceService?
        let health = HealthService()
        var engine: EngineLoop?
        if !noModel {
            let path = model == "default" ? DefaultModel.path : model
            guard FileManager.default.fileExists(atPath: path) else {
                throw ValidationError("no model at \(path)\(model == "default" ? " (run `make model`, or pass --model PATH)" : "")")
            }
            let file = try GGUFFile(path: path)
            let config = try ModelConfig(gguf: file)
            let blockBytes = VulkanDecoder.kvBytesPerBlock(config, blockSize: 16, kvCache: kvCacheType)
            let blocks = kvBlocks ?? max(1, kvCacheMB * (1 << 20) / blockBytes)
            let decoderBackend = try makeBackend(file: file, choice: backend, deviceIndex: vulkanDevice, blocks: blocks,
                                                 maxTokens: stepTokens, maxSequences: maxBatch, maxLogitRows: maxBatch, kvCache: kvCacheType,
                                                 threads: decodeThreads)
            let cache = KVCacheManager(blockCount: blocks, blockSize: 16, prefixCaching: !noPrefixCache)
            let scheduler = Scheduler(backend: decoderBackend, cache: cache, tokenBudget: stepTokens, maxWaiting: maxWaiting, maxRunning: maxBatch)
            logger.info("engine: \(scheduler.pipelinesSteps ? "greedy steps pipelined (each submitted while the previous one runs)" : "steps synchronous") (KILN_ENGINE_PIPELINE=1/0 overrides)")
            let loop = EngineLoop(scheduler: scheduler) { [health] error in
                // A lost device stays lost: health says so, for probes and the router to route around this replica.
                guard let vulkan = error as? VulkanError, vulkan.isDeviceLost else { return }
                health.setStatus(.notServing)
                health.setStatus(.notServing, service: "kiln.v1.Inference")
            }
            engine = loop
            health.setStatus(.serving, service: "kiln.v1.Inference")
            var options = InferenceOptions()
            options.resultCacheBytes = resultCacheMB << 20
            options.resultCacheTimeToLive = resultCacheTTL
            options.maxSessions = maxSessions
            options.sessionMemoryBytes = sessionMemoryMB << 20
            options.sessionIdleTimeToLive = sessionTTL
            options.sessionStore = sessionStore.flatMap(RedisConnection.Address.parse)
            options.resultCacheStore = resultCacheStore.flatMap(RedisConnection.Address.parse)
            inference = try InferenceService(modelName: URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent,
                                             file: file, engine: loop, options: options)
            announce("serving \(path) on \(type(of: decoderBackend)): \(blocks) KV blocks of 16 tokens (\((blocks * blockBytes) >> 20) MiB)\(noPrefixCache ? ", prefix cache off" : "")")
        }
        let interopService = interop ? InteropService() : nil
        // The OpenAI-compatible API, with a model: its calls go to the inference service over the h2c port
        // (so it is served only where there is one).
        let openAI = inference != nil && !noH2C ? OpenAIService(health: health) : nil
        let router = ServiceRoutes.router(health: health, demoRoutes: demoRoutes, services: { rpc in
            inference?.register(on: &rpc)
            interopService?.register(on: &rpc)
        }, routes: { openAI?.mount(on: &$0) })
        let server = try HTTP2Server(configuration: config, router: router, group: group, logger: logger)
        try server.start()
        if let openAI, let port = server.h2cAddress?.port { try openAI.connect(port: port, group: group) }
        if let a = server.h2cAddress { announce("listening h2c \(a)") }
        if let a = server.tlsAddress { announce("listening tls \(a)") }

        await waitForTermination()
        // Routers stop sending calls here at once (their Watch streams see NOT_SERVING).
        health.setStatus(.notServing)
        health.setStatus(.notServing, service: "kiln.v1.Inference")
        health.endWatches()
        announce("shutting down: draining \(server.connectionCount) connection(s)")
        let drainSeconds = drainSeconds, handoffGrace = handoffGrace
        await withTaskGroup(of: Void.self) { tasks in
            tasks.addTask { await server.shutdown() }
            tasks.addTask { [engine, inference] in
                // Streams a router can continue elsewhere get --handoff-grace, then go on on another worker.
                // (This task never ends the drain by finishing: it waits to be cancelled.)
                if let engine, let inference, (try? await Task.sleep(for: .seconds(handoffGrace))) != nil {
                    let count = inference.handoff.handOff(engine)
                    print("handed \(count) stream(s) over to the router in front")
                    fflush(nil)
                }
                await Self.sleepForever()
            }
            tasks.addTask { [engine] in
                // Generations still running at the drain deadline end now, each with UNAVAILABLE.
                guard (try? await Task.sleep(for: .seconds(drainSeconds))) != nil else { return }
                engine?.stop()
            }
            await tasks.next()
            tasks.cancelAll()
        }
        engine?.stop()
        group.shutdown()
        announce("stopped")
    }

    /// Sleeps until cancelled (a task that must not end the task group's wait by finishing).
    private static func sleepForever() async {
        while (try? await Task.sleep(for: .seconds(3600))) != nil {}
    }

    private func announce(_ line: String) {
        print(line)
        fflush(nil)
    }

    /// Returns on the first SIGTERM or SIGINT; a second one exits at once.
    private func waitForTermination() async {
        await TerminationSignals.wait()
    }
}
