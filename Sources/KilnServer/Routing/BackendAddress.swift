/// A worker as `kiln route --backend` names it: `h2c://HOST:PORT` or `https://HOST:PORT`, optionally
/// `?weight=N` (1 to 1000).
public struct BackendAddress: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var tls: Bool
    public var weight: Int
    /// The name a TLS backend's certificate is checked against when `host` is an address found through DNS
    /// (`--backend-dns`); nil checks `host`.
    public var serverName: String?

    public init(host: String, port: Int, tls: Bool = false, weight: Int = 1, serverName: String? = nil) {
        self.host = host
        self.port = port
        self.tls = tls
        self.weight = weight
        self.serverName = serverName
    }

    /// Parses one `--backend` value; nil with the reason when it is not one.
    public static func parse(_ text: String) -> Result<BackendAddress, BackendAddressError> {
        let tls: Bool
        var rest: Substring
        if text.hasPrefix("h2c://") {
            tls = false
            rest = text.dropFirst(6)
        } else if text.hasPrefix("https://") {
            tls = true
            rest = text.dropFirst(8)
        } else {
            return .failure(BackendAddressError("\(text): a backend is h2c://HOST:PORT or https://HOST:PORT"))
        }
        var weight = 1
        if let q = rest.firstIndex(of: "?") {
            let query = rest[rest.index(after: q)...]
            rest = rest[..<q]
            for pair in query.split(separator: "&") {
                let kv = pair.split(separator: "=", maxSplits: 1)
                guard kv.count == 2, kv[0] == "weight", let w = Int(kv[1]), (1...1000).contains(w) else {
                    return .failure(BackendAddressError("\(text): the only query parameter is weight=N, N from 1 to 1000"))
                }
                weight = w
            }
        }
        if rest.hasSuffix("/") { rest = rest.dropLast() }
        // [v6]:port or host:port
        let host: Substring
        let portText: Substring
        if rest.hasPrefix("["), let close = rest.firstIndex(of: "]") {
            host = rest[rest.index(after: rest.startIndex)..<close]
            let after = rest[rest.index(after: close)...]
            guard after.hasPrefix(":") else { return .failure(BackendAddressError("\(text): missing :PORT")) }
            portText = after.dropFirst()
        } else {
            guard let colon = rest.lastIndex(of: ":") else { return .failure(BackendAddressError("\(text): missing :PORT")) }
            host = rest[..<colon]
            portText = rest[rest.index(after: colon)...]
        }
        guard !host.isEmpty, let port = Int(portText), (1...65535).contains(port) else {
            return .failure(BackendAddressError("\(text): needs a host and a port from 1 to 65535"))
        }
        return .success(BackendAddress(host: String(host), port: port, tls: tls, weight: weight))
    }

    /// The ring's name for this backend: the same address is the same ring member in every router.
    public var ringName: String { host.utf8.contains(UInt8(ascii: ":")) ? "[\(host)]:\(port)" : "\(host):\(port)" }

    public var description: String { "\(tls ? "https" : "h2c")://\(ringName)\(weight == 1 ? "" : "?weight=\(weight)")" }
}

public struct BackendAddressError: Error, CustomStringConvertible, Sendable {
    public let description: String
    init(_ description: String) { self.description = description }
}
