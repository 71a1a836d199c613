import Foundation
import Glibc
import XCTest
@_exported import KilnTestSupport
@testable import KilnHTTP2
import KilnServer

/// A port that was free a moment ago.
func freePort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = 0
    _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
    return Int(UInt16(bigEndian: addr.sin_port))
}

/// Waits until something accepts TCP connections on `port`.
func waitForListener(port: Int, timeout: Double = 10) throws {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if let c = try? RawConnection(port: port) { c.close(); return }
        usleep(20_000)
    }
    throw HTTP2Error.timeout
}

/// An in-process server on ephemeral ports with the given router.
final class TestServer {
    let group: EventLoopGroup
    let server: HTTP2Server
    var h2cPort: Int { server.h2cAddress!.port }
    var tlsPort: Int { server.tlsAddress!.port }

    init(router: HTTP2Router = DemoRoutes.router(), threads: Int = 2, tls: Bool = true, clientCA: String? = nil,
         configure: (inout HTTP2ServerConfiguration) -> Void = { _ in }) throws {
        var config = HTTP2ServerConfiguration()
        config.h2cPort = 0
        config.tlsPort = 0
        if tls {
            config.tls = TLSServerConfiguration(certificateChainPath: certPath("server.pem"), privateKeyPath: certPath("server.key"), clientCAPath: clientCA)
        }
        configure(&config)
        group = try EventLoopGroup(threads: threads)
        server = try HTTP2Server(configuration: config, router: router, group: group)
        try server.start()
    }

    func stop() async {
        await server.shutdown()
        group.shutdown()
    }
}

/// A `kiln serve` child process, for tests that need a separate process (signals, memory).
final class KilnProcess {
    let process = Process()
    let h2cPort: Int
    let tlsPort: Int
    private let output = Pipe()

    /// `withDemoRoutes`: pass `--demo-routes` (the routes most transport tests use).
    init(extraArguments: [String] = [], withDemoRoutes: Bool = true) throws {
        h2cPort = freePort()
        tlsPort = freePort()
        process.executableURL = URL(fileURLWithPath: kilnBinary)
        process.currentDirectoryURL = repositoryRoot
        process.arguments = ["serve", "--no-model", "--h2c-port", String(h2cPort), "--tls-port", String(tlsPort), "--threads", "2"]
            + (withDemoRoutes ? ["--demo-routes"] : []) + extraArguments
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        try waitForListener(port: h2cPort)
    }

    var pid: Int32 { process.processIdentifier }

    /// Resident memory in bytes, from /proc.
    var residentBytes: Int { Self.residentBytes(of: pid) }

    /// Resident memory of process `pid` in bytes, from /proc (0 once it is gone).
    static func residentBytes(of pid: Int32) -> Int { statusField("VmRSS:", of: pid) }

    /// Resident anonymous memory of process `pid` (its heap and stacks, not the code and files it maps),
    /// in bytes: what buffering grows.
    static func anonymousBytes(of pid: Int32) -> Int { statusField("RssAnon:", of: pid) }

    private static func statusField(_ name: String, of pid: Int32) -> Int {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return 0 }
        for line in status.split(separator: "\n") where line.hasPrefix(name) {
            let kb = line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.flatMap { Int($0) } ?? 0
            return kb * 1024
        }
        return 0
    }

    func signal(_ sig: Int32) { kill(pid, sig) }

    /// Waits for exit; returns the status, or nil on timeout.
    func waitForExit(timeout: Double) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning { return nil }
        return process.terminationStatus
    }

    func stop() {
        if process.isRunning {
            kill(pid, SIGKILL)
            process.waitUntilExit()
        }
    }
}

/// A blocking TCP socket for speaking raw bytes at the server.
final class RawConnection {
    let fd: Int32

    init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = UInt16(port).bigEndian
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        if rc != 0 {
            let e = errno
            Glibc.close(fd)
            throw HTTP2Error.system("connect", e)
        }
    }

    func send(_ bytes: [UInt8]) {
        _ = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }

    /// Reads until the peer closes or `timeout` passes. Returns the bytes and whether the peer closed.
    func readUntilClosed(timeout: Double) -> (bytes: [UInt8], closed: Bool) {
        var all: [UInt8] = []
        let deadline = Date().addingTimeInterval(timeout)
        var buf = [UInt8](repeating: 0, count: 65536)
        while Date() < deadline {
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ms = Int32(max(1, deadline.timeIntervalSinceNow * 1000))
            if poll(&pfd, 1, ms) <= 0 { continue }
            let n = recv(fd, &buf, buf.count, 0)
            if n <= 0 { return (all, true) }
            all.append(contentsOf: buf[0..<n])
        }
        return (all, false)
    }

    /// What arrives next, waiting up to `timeout`; nil when the peer closed or nothing came.
    func receive(timeout: Double = 10) -> [UInt8]? {
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&pfd, 1, Int32(timeout * 1000)) > 0 else { return nil }
        var buf = [UInt8](repeating: 0, count: 65536)
        let n = recv(fd, &buf, buf.count, 0)
        return n > 0 ? Array(buf[0..<n]) : nil
    }

    func close() { Glibc.close(fd) }
}

/// Raw HTTP/2 frames for the bad-input tests.
enum Frames {
    static let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

    static func frame(type: UInt8, flags: UInt8, stream: UInt32, payload: [UInt8]) -> [UInt8] {
        let n = payload.count
        return [UInt8(n >> 16 & 0xff), UInt8(n >> 8 & 0xff), UInt8(n & 0xff), type, flags,
                UInt8(stream >> 24 & 0x7f), UInt8(stream >> 16 & 0xff), UInt8(stream >> 8 & 0xff), UInt8(stream & 0xff)] + payload
    }

    static let emptySettings = frame(type: 4, flags: 0, stream: 0, payload: [])

    /// HPACK for `:method POST`, `:scheme http`, `:path /echo`, `:authority x`.
    static let postEchoHeaderBlock: [UInt8] = [0x83, 0x86, 0x44, 0x05] + Array("/echo".utf8) + [0x41, 0x01, UInt8(ascii: "x")]

    /// Finds GOAWAY frames in server output and returns their error codes.
    static func goAwayErrorCodes(in bytes: [UInt8]) -> [UInt32] {
        var codes: [UInt32] = []
        var i = 0
        while i + 9 <= bytes.count {
            let len = Int(bytes[i]) << 16 | Int(bytes[i + 1]) << 8 | Int(bytes[i + 2])
            let type = bytes[i + 3]
            if type == 7 && i + 9 + 8 <= bytes.count {
                let p = i + 9 + 4
                codes.append(UInt32(bytes[p]) << 24 | UInt32(bytes[p + 1]) << 16 | UInt32(bytes[p + 2]) << 8 | UInt32(bytes[p + 3]))
            }
            i += 9 + len
        }
        return codes
    }
}

/// Open file descriptors of this process.
func openFileDescriptorCount() -> Int {
    (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? -1
}
