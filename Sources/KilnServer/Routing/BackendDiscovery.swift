import Glibc
import KilnHTTP2
import Logging
import Synchronization

/// Where `kiln route` learns its backends, and keeps learning them while it runs: the `--backend` list (fixed),
/// a `--backends-file` (re-read when it changes, checked every `fileCheckInterval`, and at once on request —
/// SIGHUP), and `--backend-dns` names (A/AAAA records re-resolved every `dnsInterval`: a Kubernetes headless
/// Service lists its ready pods this way). The backend set is the union, one backend per address.
///
/// A source that fails keeps what it gave last: a file that does not parse (say, half-written) or a name that
/// does not resolve (a DNS blip) must not take healthy backends away. Health checks, not discovery, decide
/// whether a listed backend gets calls.
public final class BackendDiscovery: Sendable {
    /// A `--backend-dns` entry: a name to resolve and what each address it resolves to becomes.
    public struct DNSName: Sendable, Hashable, CustomStringConvertible {
        public var name: String
        public var port: Int
        public var tls: Bool
        public var weight: Int

        /// Parses `NAME:PORT`, `h2c://NAME:PORT` or `https://NAME:PORT`, optionally with `?weight=N`.
        public static func parse(_ text: String) -> Result<DNSName, BackendAddressError> {
            let full = text.contains("://") ? text : "h2c://" + text
            return BackendAddress.parse(full).map { DNSName(name: $0.host, port: $0.port, tls: $0.tls, weight: $0.weight) }
        }

        public var description: String { "\(tls ? "https" : "h2c")://\(name):\(port)" }
    }

    /// Resolves a name to its addresses (numeric strings); throws when resolution fails.
    public typealias Resolver = @Sendable (_ name: String) throws -> [String]

    public let fixed: [BackendAddress]
    public let file: String?
    public let dnsNames: [DNSName]
    public let fileCheckInterval: Double
    public let dnsInterval: Double
    let backends: BackendSet
    let prober: HealthProber?
    let resolve: Resolver
    /// A counter that grows each time the operator asks for a reload (SIGHUP).
    let reloadRequests: @Sendable () -> Int
    let logger: Logger
    private let state = Mutex(SourceState())
    private let loop = Mutex<Task<Void, Never>?>(nil)

    private struct SourceState {
        var fileStamp: FileStamp?
        var fromFile: [BackendAddress] = []
        var fromDNS: [DNSName: [BackendAddress]] = [:]
        var lastResolved: UInt64 = 0
        var reloadsSeen = 0
    }

    /// What identifies a version of the file without reading it: a rename (Kubernetes swaps a ConfigMap's
    /// directory link) changes the inode, an edit in place the time or size.
    struct FileStamp: Equatable {
        var device: UInt64, inode: UInt64, size: Int64, seconds: Int, nanoseconds: Int
    }

    public init(fixed: [BackendAddress], file: String?, dnsNames: [DNSName], backends: BackendSet, prober: HealthProber?,
                fileCheckInterval: Double = 1, dnsInterval: Double = 10, resolve: @escaping Resolver = BackendDiscovery.systemResolve,
                reloadRequests: @escaping @Sendable () -> Int = { 0 }, logger: Logger) {
        self.fixed = fixed
        self.file = file
        self.dnsNames = dnsNames
        self.backends = backends
        self.prober = prober
        self.fileCheckInterval = max(0.05, fileCheckInterval)
        self.dnsInterval = max(0.05, dnsInterval)
        self.resolve = resolve
        self.reloadRequests = reloadRequests
        self.logger = logger
    }

    /// Reads every source once, now. Throws when the file cannot be read or parsed at this first reading
    /// (a router started with a broken file should say so, not start empty).
    public func loadInitial() throws -> [BackendAddress] {
        if let file {
            let parsed = try Self.parseFile(at: file)
            state.withLock { $0.fileStamp = Self.stamp(of: file); $0.fromFile = parsed }
        }
        resolveAll(now: BackendSet.now())
        return current()
    }

    /// The union of the sources as last read.
    public func current() -> [BackendAddress] {
        state.withLock { s in
            fixed + s.fromFile + dnsNames.flatMap { s.fromDNS[$0] ?? [] }
        }
    }

    /// Watches the sources until `stop()`, applying each change to the backend set and the prober.
    public func start() {
        guard file != nil || !dnsNames.isEmpty else { return }
        let task = Task { [self] in
            while !Task.isCancelled {
                poll(now: BackendSet.now())
                guard (try? await Task.sleep(for: .seconds(min(fileCheckInterval, dnsInterval)))) != nil else { return }
            }
        }
        loop.withLock { $0 = task }
    }

    public func stop() {
        loop.withLock { $0?.cancel(); $0 = nil }
    }

    /// One round: re-reads the file if it changed or a reload was asked for, re-resolves names that are due,
    /// and applies the result. Exposed for tests, which drive it without waiting.
    public func poll(now: UInt64) {
        if let file {
            let requests = reloadRequests()
            let stamp = Self.stamp(of: file)
            let due = state.withLock { s -> Bool in
                let asked = requests != s.reloadsSeen
                s.reloadsSeen = requests
                return asked || stamp != s.fileStamp
            }
            if due {
                do {
                    let parsed = try Self.parseFile(at: file)
                    state.withLock { $0.fileStamp = stamp; $0.fromFile = parsed }
                } catch {
                    // Keep the last good list. The stamp is taken, so the error is logged once, not every second;
                    // a corrected file changes the stamp and is read at the next poll.
                    state.withLock { $0.fileStamp = stamp }
                    logger.error("backends file \(file): \(error); keeping the previous \(state.withLock { $0.fromFile.count }) backend(s)")
                }
            }
        }
        if !dnsNames.isEmpty, state.withLock({ now &- $0.lastResolved >= UInt64(dnsInterval * 1e9) }) {
            resolveAll(now: now)
        }
        apply()
    }

    private func resolveAll(now: UInt64) {
        guard !dnsNames.isEmpty else { return }
        for name in dnsNames {
            do {
                let addresses = try resolve(name.name).map {
                    BackendAddress(host: $0, port: name.port, tls: name.tls, weight: name.weight, serverName: name.tls ? name.name : nil)
                }
                state.withLock { $0.fromDNS[name] = addresses }
            } catch {
                logger.warning("resolving \(name): \(error); keeping its \(state.withLock { $0.fromDNS[name]?.count ?? 0 }) address(es)")
            }
        }
        state.withLock { $0.lastResolved = now }
    }

    private func apply() {
        do {
            let (added, removed) = try backends.update(addresses: current())
            if !added.isEmpty || !removed.isEmpty { prober?.sync() }
        } catch {
            logger.error("updating backends: \(error)")
        }
    }

    // MARK: The file

    /// One backend per line, as `--backend` takes it (`h2c://HOST:PORT`, `https://HOST:PORT`, `?weight=N`);
    /// blank lines and `#` comments are skipped. At most 64 KiB and 10,000 backends.
    public static func parseFile(at path: String) throws -> [BackendAddress] {
        let bytes = try readSmallFile(path, limit: 64 << 10)
        guard let text = String(validating: bytes, as: UTF8.self) else { throw BackendAddressError("\(path) is not UTF-8") }
        return try parseList(text, source: path)
    }

    static func parseList(_ text: String, source: String) throws -> [BackendAddress] {
        var out: [BackendAddress] = []
        for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
            let trimmed = String(line.drop { " \t\r".contains($0) }.reversed().drop { " \t\r".contains($0) }.reversed())
            guard !trimmed.isEmpty else { continue }
            switch BackendAddress.parse(trimmed) {
            case .success(let a): out.append(a)
            case .failure(let e): throw BackendAddressError("\(source):\(n + 1): \(e.description)")
            }
            guard out.count <= 10_000 else { throw BackendAddressError("\(source): more than 10000 backends") }
        }
        return out
    }

    static func stamp(of path: String) -> FileStamp? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return FileStamp(device: UInt64(st.st_dev), inode: UInt64(st.st_ino), size: Int64(st.st_size),
                         seconds: st.st_mtim.tv_sec, nanoseconds: st.st_mtim.tv_nsec)
    }

    static func readSmallFile(_ path: String, limit: Int) throws -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw BackendAddressError("cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 16 << 10)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw BackendAddressError("cannot read \(path): \(String(cString: strerror(errno)))")
            }
            if n == 0 { return out }
            out += buffer[0..<n]
            guard out.count <= limit else { throw BackendAddressError("\(path) is larger than \(limit) bytes") }
        }
    }

    // MARK: DNS

    /// `getaddrinfo` for A and AAAA records, numeric addresses out, sorted and unique (so that the same
    /// answer in another order changes nothing).
    public static let systemResolve: Resolver = { name in
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(name, nil, &hints, &result)
        guard rc == 0 else { throw BackendAddressError("\(name): \(String(cString: gai_strerror(rc)))") }
        defer { freeaddrinfo(result) }
        var found = Set<String>()
        var p = result
        while let info = p {
            var host = [CChar](repeating: 0, count: Int(NI_MAXHOST))
            if getnameinfo(info.pointee.ai_addr, info.pointee.ai_addrlen, &host, socklen_t(host.count), nil, 0, NI_NUMERICHOST) == 0 {
                found.insert(String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
            }
            p = info.pointee.ai_next
        }
        return found.sorted()
    }
}
