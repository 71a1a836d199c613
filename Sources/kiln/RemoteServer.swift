import ArgumentParser
import Foundation
import KilnAPI
import KilnHTTP2
import KilnRPC

/// A Kiln server given on the command line: `h2c://HOST:PORT` (or `http://`) for cleartext,
/// `https://HOST:PORT` for TLS (verified against `--ca`, the development CA by default).
struct RemoteServer {
    let host: String
    let port: Int
    let tls: Bool

    init(_ url: String) throws {
        let schemes = ["h2c://": false, "http://": false, "https://": true]
        guard let (scheme, tls) = schemes.first(where: { url.hasPrefix($0.key) }) else {
            throw ValidationError("--server \(url): expected h2c://HOST:PORT or https://HOST:PORT")
        }
        let rest = url.dropFirst(scheme.count).split(separator: "/", maxSplits: 1).first.map(String.init) ?? ""
        guard let colon = rest.lastIndex(of: ":"), let port = Int(rest[rest.index(after: colon)...]), (1...65535).contains(port) else {
            throw ValidationError("--server \(url): missing or bad port")
        }
        host = String(rest[..<colon]).trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        self.port = port
        self.tls = tls
    }

    /// A generated `kiln.v1.Inference` client on a new channel (one event loop thread).
    func connect(caPath: String) throws -> (Kiln_V1_InferenceClient, EventLoopGroup) {
        let group = try EventLoopGroup(threads: 1)
        let channel = try RPCChannel(host: host, port: port, tls: tls ? TLSClientConfiguration(caPath: caPath) : nil, group: group)
        return (Kiln_V1_InferenceClient(channel: channel), group)
    }
}
