import Foundation
import XCTest
@testable import KilnHTTP2

/// Kiln's client against nghttpd, a server nobody here wrote.
final class ClientInteropTests: XCTestCase {
    var docroot: URL!
    var payload: [UInt8] = []
    var group: EventLoopGroup!

    override func setUp() async throws {
        docroot = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-nghttpd-\(getpid())")
        try FileManager.default.createDirectory(at: docroot, withIntermediateDirectories: true)
        var rng = TestRandom()
        payload = (0..<(1 << 20) + 123).map { _ in UInt8.random(in: 0...255, using: &rng) }
        try Data(payload).write(to: docroot.appendingPathComponent("blob.bin"))
        try Data("small\n".utf8).write(to: docroot.appendingPathComponent("small.txt"))
        group = try EventLoopGroup(threads: 2)
    }

    override func tearDown() async throws {
        group.shutdown()
        try? FileManager.default.removeItem(at: docroot)
    }

    private func startNghttpd(port: Int, tls: Bool) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/sbin/nghttpd")
        var args = ["-a", "127.0.0.1", "-d", docroot.path]
        if tls {
            args += [String(port), certPath("server.key"), certPath("server.pem")]
        } else {
            args += ["--no-tls", String(port)]
        }
        p.arguments = args
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        try waitForListener(port: port)
        return p
    }

    private func stopProcess(_ p: Process) {
        // SIGKILL: children of the test process inherit a signal mask that blocks SIGTERM.
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
    }

    func testAgainstNghttpdCleartext() async throws {
        let port = freePort()
        let nghttpd = try startNghttpd(port: port, tls: false)
        defer { stopProcess(nghttpd) }
        let client = try HTTP2Client(host: "127.0.0.1", port: port, group: group)
        defer { client.close() }
        let r = try await client.request(path: "/blob.bin")
        XCTAssertEqual(r.status, 200)
        XCTAssertEqual(r.body, payload)
        let missing = try await client.request(path: "/nope")
        XCTAssertEqual(missing.status, 404)
    }

    func testAgainstNghttpdTLSWithVerification() async throws {
        let port = freePort()
        let nghttpd = try startNghttpd(port: port, tls: true)
        defer { stopProcess(nghttpd) }
        let client = try HTTP2Client(host: "localhost", port: port, tls: TLSClientConfiguration(caPath: certPath("ca.pem")), group: group)
        defer { client.close() }
        let r = try await client.request(path: "/blob.bin")
        XCTAssertEqual(r.status, 200)
        XCTAssertEqual(r.body, payload)

        // A name the certificate does not carry must fail verification.
        let wrongName = try HTTP2Client(host: "127.0.0.1", port: port, tls: TLSClientConfiguration(caPath: certPath("ca.pem"), serverName: "example.com"), group: group)
        do {
            _ = try await wrongName.request(path: "/small.txt")
            XCTFail("a certificate for another name was accepted")
        } catch {}
        wrongName.close()
    }

    func testManyConcurrentStreamsOnOneConnection() async throws {
        let port = freePort()
        let nghttpd = try startNghttpd(port: port, tls: false)
        defer { stopProcess(nghttpd) }
        let client = try HTTP2Client(host: "127.0.0.1", port: port, group: group)
        defer { client.close() }
        let expected = payload
        try await withThrowingTaskGroup(of: Bool.self) { tasks in
            for i in 0..<200 {
                tasks.addTask {
                    let r = try await client.request(path: i % 2 == 0 ? "/blob.bin" : "/small.txt")
                    return i % 2 == 0 ? r.body == expected : r.body == Array("small\n".utf8)
                }
            }
            var ok = 0
            for try await good in tasks where good { ok += 1 }
            XCTAssertEqual(ok, 200)
        }
    }

    func testReconnectsAfterServerRestart() async throws {
        let port = freePort()
        var nghttpd = try startNghttpd(port: port, tls: false)
        let client = try HTTP2Client(host: "127.0.0.1", port: port, group: group)
        defer { client.close() }
        let first = try await client.request(path: "/small.txt")
        XCTAssertEqual(first.status, 200)
        stopProcess(nghttpd)
        // The old connection is gone; the next call fails or reconnects, but once the server is back
        // calls succeed on a new connection without a new client.
        nghttpd = try startNghttpd(port: port, tls: false)
        defer { stopProcess(nghttpd) }
        var succeeded = false
        for _ in 0..<20 {
            if let r = try? await client.request(path: "/small.txt"), r.status == 200 {
                succeeded = true
                break
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        XCTAssertTrue(succeeded, "client reconnected")
    }
}
