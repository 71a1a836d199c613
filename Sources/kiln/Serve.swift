import ArgumentParser
import Glibc
import KilnHTTP2
import KilnServer
import KilnEngine
import KilnModel
import KilnVulkan
import Foundation
import Logging

/// `kiln serve`: TLS and h2c listeners; for now with the transport's demo routes.
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
    @Option(name: .customLong("idle-timeout"), help: "Seconds before an idle connection is closed.") var idleTimeout = 300.0
    @Option(name: .customLong("handshake-timeout"), help: "Seconds for TLS handshake and preface.") var handshakeTimeout = 10.0
    @Option(name: .customLong("keepalive"), help: "Seconds of silence before a PING (0: off).") var keepalive = 60.0
    @Option(name: .customLong("keepalive-timeout"), help: "Seconds a PING may go unanswered.") var keepaliveTimeout = 20.0
    @Option(name: .customLong("drain-seconds"), help: "Seconds in-flight streams get on SIGTERM.") var drainSeconds = 30.0
    @Option(help: "GGUF model to serve through kiln.v1.Inference (without it: transport and health only).") var model: String?
    @Option(help: "Decoder: vulkan, cpu, or auto (Vulkan when a device exists).") var backend: BackendChoice = .auto
    @Option(name: .customLong("vulkan-device"), help: "Vulkan device index (default: the best one).") var vulkanDevice: Int?
    @Option(name: .customLong("kv-blocks"), help: "KV cache blocks of 16 tokens.") var kvBlocks = 1024
    @Option(name: .customLong("max-waiting"), help: "Requests queued beyond this are refused (RESOURCE_EXHAUSTED).") var maxWaiting = 256

    func run() async throws {
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
        config.idleTimeout = idleTimeout
        config.handshakeTimeout = handshakeTimeout
        config.keepaliveInterval = keepalive
        config.keepaliveTimeout = keepaliveTimeout
        config.drainDeadline = drainSeconds

        TerminationSignals.install()
        let group = try EventLoopGroup(threads: threads ?? EventLoopGroup.coreCount)
        var inference: InferenceService?
        var engine: EngineLoop?
        if let model {
            let file = try GGUFFile(path: model)
            let decoderBackend = try makeBackend(file: file, choice: backend, deviceIndex: vulkanDevice, blocks: kvBlocks)
            let loop = EngineLoop(scheduler: Scheduler(backend: decoderBackend, cache: KVCacheManager(blockCount: kvBlocks, blockSize: 16), maxWaiting: maxWaiting))
            engine = loop
            inference = try InferenceService(modelName: URL(fileURLWithPath: model).deletingPathExtension().lastPathComponent, file: file, engine: loop)
            announce("serving \(model) on \(type(of: decoderBackend))")
        }
        let router = DemoRoutes.router { rpc in inference?.register(on: &rpc) }
        let server = try HTTP2Server(configuration: config, router: router, group: group, logger: logger)
        try server.start()
        if let a = server.h2cAddress { announce("listening h2c \(a)") }
        if let a = server.tlsAddress { announce("listening tls \(a)") }

        await waitForTermination()
        announce("shutting down: draining \(server.connectionCount) connection(s)")
        await server.shutdown()
        engine?.stop()
        group.shutdown()
        announce("stopped")
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
