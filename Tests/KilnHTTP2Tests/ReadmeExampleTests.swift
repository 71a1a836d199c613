import Glibc
import XCTest
import KilnHTTP2
import KilnTestSupport

/// The README's "Using the transport from Swift" example, as written there (only the ports differ, so that the
/// test never meets a server already on 8080/8443): if the API it shows changes, this stops compiling.
final class ReadmeExampleTests: XCTestCase {
    func testTheReadmeTransportExampleRuns() async throws {
        let (h2cPort, tlsPort) = (freePort(), freePort())
        // --- as in the README ---
        let group = try EventLoopGroup()
        var router = HTTP2Router()
        router.add("/hello", .handler(HTTP2ClosureHandler { request, response in
            response.sendHead(headers: ["content-type": "text/plain"])
            try await response.write(Array("hello\n".utf8))
            response.finish(trailers: ["x-done": "1"])
        }))
        var config = HTTP2ServerConfiguration()   // h2c on 8080; TLS on 8443 once a certificate is given
        config.tls = TLSServerConfiguration(certificateChainPath: certPath("server.pem"), privateKeyPath: certPath("server.key"))
        // --- the test's ports ---
        config.h2cPort = h2cPort
        config.tlsPort = tlsPort
        // --- as in the README ---
        let server = try HTTP2Server(configuration: config, router: router, group: group)
        try server.start()

        let client = try HTTP2Client(host: "localhost", port: tlsPort,
                                     tls: TLSClientConfiguration(caPath: certPath("ca.pem")), group: group)
        let reply = try await client.request(path: "/hello")   // status, headers, body, trailers
        // --- what the README says comes back ---
        XCTAssertEqual(reply.status, 200)
        XCTAssertEqual(reply.body, Array("hello\n".utf8))
        XCTAssertEqual(reply.trailers["x-done"], "1")
        // The group's default is one loop per core (`EventLoopGroup.init(threads:)`).
        XCTAssertEqual(group.loops.count, max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN))))

        client.close()
        await server.shutdown()
        group.shutdown()
    }
}
