import Foundation
import KilnModel
import KilnTestSupport
import XCTest

/// A `kiln serve` child (release build, Vulkan on lavapipe) on free ports, killed when released. Its output
/// goes to a file that a failing test prints.
final class KilnServeProcess {
    let process = Process()
    let h2cPort: Int
    let tlsPort: Int
    let logURL: URL

    /// Starts `kiln serve` on the default model (or `model`) with `arguments` added, and waits for its listener.
    convenience init(model: String = DefaultModel.path, tls: Bool = false, _ arguments: [String] = [], environment: [String: String] = [:],
                     port: Int? = nil) throws {
        try self.init(tls: tls, environment: environment, port: port) { h2cPort, tlsPort in
            ["serve", "--model", model, "--h2c-port", "\(h2cPort)"] + (tls ? ["--tls-port", "\(tlsPort)"] : ["--no-tls"]) + arguments
        }
    }

    /// Starts `kiln route` (h2c only) in front of workers on `workerPorts`, with `arguments` added.
    convenience init(routeTo workerPorts: [Int], _ arguments: [String] = []) throws {
        try self.init(tls: false, environment: [:]) { h2cPort, _ in
            ["route", "--no-tls", "--h2c-port", "\(h2cPort)"] + workerPorts.flatMap { ["--backend", "h2c://127.0.0.1:\($0)"] } + arguments
        }
    }

    /// Starts the release `kiln` with the arguments `command` makes from the ports, and waits for its listener.
    init(tls: Bool, environment: [String: String], port: Int? = nil, command: (_ h2cPort: Int, _ tlsPort: Int) -> [String]) throws {
        h2cPort = port ?? Self.freePort()
        tlsPort = tls ? Self.freePort() : 0
        logURL = try temporaryDirectory().appendingPathComponent("serve.log")
        FileManager.default.createFile(atPath: logURL.path, contents: nil)
        process.executableURL = URL(fileURLWithPath: kilnReleaseBinary)
        process.currentDirectoryURL = repositoryRoot
        if !environment.isEmpty { process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
        process.arguments = command(h2cPort, tlsPort)
        let logHandle = try FileHandle(forWritingTo: logURL)
        process.standardOutput = logHandle
        process.standardError = logHandle
        try process.run()
        // Loading the model onto the device takes a moment.
        let deadline = Date().addingTimeInterval(60)
        while !Self.accepts(h2cPort) {
            guard process.isRunning, Date() < deadline else {
                throw ServeFailed(log: log())
            }
            usleep(50_000)
        }
    }

    deinit {
        // A process that never started has pid 0, and kill(0, …) would kill this test's own process group.
        guard process.processIdentifier > 0 else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    func log() -> String { (try? String(contentsOf: logURL, encoding: .utf8)) ?? "" }

    /// Runs one of the grpcio scripts beside this file with `arguments`; fails the test on a FAIL line or
    /// a nonzero exit, and returns the PASS count.
    @discardableResult
    static func runScript(_ name: String, _ arguments: [String], timeout: Double = 900, servers: [KilnServeProcess],
                          file: StaticString = #filePath, line: UInt = #line) throws -> Int {
        let script = repositoryRoot.appendingPathComponent("Tests/KilnServerTests/\(name)").path
        let r = try runTool("/usr/bin/env", ["python3", script] + arguments, timeout: timeout)
        print(r.stdout)
        let detail = r.stdout + r.stderr + servers.map { "\n--- server log:\n" + $0.log().suffix(4000) }.joined()
        XCTAssertEqual(r.status, 0, detail, file: file, line: line)
        XCTAssertFalse(r.stdout.split(separator: "\n").contains { $0.hasPrefix("FAIL ") }, detail, file: file, line: line)
        return r.stdout.components(separatedBy: "\nPASS ").count - (r.stdout.hasPrefix("PASS ") ? 0 : 1)
    }

    static func accepts(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }

    /// A port nothing listens on now (bound to 0, read back, released).
    static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        _ = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}

/// `kiln serve` exited or never listened; its log says why.
struct ServeFailed: Error, CustomStringConvertible {
    let log: String
    var description: String { "kiln serve did not start:\n\(log)" }
}
