import Foundation
import Glibc
import KilnEngine
import KilnHTTP2
import KilnModel
import KilnRPC
import KilnServer

/// A whole Kiln server in this process for the server fuzz targets: h2c on a loopback port, the demo
/// routes, gRPC health and reflection, and `kiln.v1.Inference` on a tiny random-weight model decoded by
/// the CPU reference backend. Each input is one connection: its bytes are written, the write side is
/// shut, and whatever comes back is read for a moment before the connection is closed.
final class ServerFuzzHarness: Sendable {
    static let shared: ServerFuzzHarness = {
        do { return try ServerFuzzHarness() } catch { fatalError("the fuzz server did not start: \(error)") }
    }()

    let port: Int
    private let server: HTTP2Server
    private let group: EventLoopGroup

    private init() throws {
        var builder = TestModelBuilder()
        builder.layers = 1
        builder.width = 32
        builder.feedForwardWidth = 64
        builder.heads = 2
        builder.kvHeads = 1
        builder.contextLength = 256
        let file = try GGUFFile(file: MappedFile(copying: builder.build().serialized()))
        let backend = ReferenceBackend(weights: try ReferenceWeights(gguf: file), blockCount: 64, blockSize: 16)
        let scheduler = Scheduler(backend: backend, cache: KVCacheManager(blockCount: 64, blockSize: 16),
                                  tokenBudget: 64, maxWaiting: 64, maxRunning: 8)
        let engine = EngineLoop(scheduler: scheduler)
        let inference = try InferenceService(modelName: "fuzz", file: file, engine: engine)
        let router = ServiceRoutes.router(demoRoutes: true) { rpc in inference.register(on: &rpc) }
        var config = HTTP2ServerConfiguration()
        config.host = "127.0.0.1"
        config.h2cPort = 0
        config.tlsPort = nil
        config.handshakeTimeout = 1
        config.idleTimeout = 2
        group = try EventLoopGroup(threads: 1)
        server = try HTTP2Server(configuration: config, router: router, group: group)
        try server.start()
        guard let address = server.h2cAddress else { fatalError("the fuzz server has no h2c address") }
        port = address.port
    }

    /// One connection carrying `bytes`; returns once the server has closed it or a short while has passed.
    func exchange(_ bytes: [UInt8]) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var timeout = timeval(tv_sec: 0, tv_usec: 50_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { return }
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { break }   // the server closed, or stopped reading (flow control): enough
            sent += n
        }
        shutdown(fd, Int32(SHUT_WR))
        // Read what comes back for at most 150 ms: long streams are cut by closing the connection.
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        let deadline = DispatchTime.now().uptimeNanoseconds + 150_000_000
        while DispatchTime.now().uptimeNanoseconds < deadline {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { break }
            if n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR { break }
        }
    }
}
