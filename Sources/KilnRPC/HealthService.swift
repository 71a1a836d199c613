import Synchronization

/// `grpc.health.v1.Health` (grpc `doc/health-checking.md`): Check and Watch, so that load balancers and
/// Kubernetes probes can ask whether this server, or one of its services, is serving.
///
/// The two messages are tiny and encoded by hand here; generated types replace this once the schema
/// generator exists.
public final class HealthService: Sendable {
    /// `HealthCheckResponse.ServingStatus`.
    public enum ServingStatus: UInt64, Sendable {
        case unknown = 0
        case serving = 1
        case notServing = 2
        case serviceUnknown = 3
    }

    private struct State {
        var statuses: [String: ServingStatus] = ["": .serving]
        var watchers: [UInt64: (String, AsyncStream<ServingStatus>.Continuation)] = [:]
        var nextWatcher: UInt64 = 0
    }
    private let state = Mutex(State())

    public init() {}

    /// Sets a service's status ("" is the whole server) and tells its watchers.
    public func setStatus(_ status: ServingStatus, service: String = "") {
        let watchers = state.withLock { s -> [AsyncStream<ServingStatus>.Continuation] in
            s.statuses[service] = status
            return s.watchers.values.filter { $0.0 == service }.map(\.1)
        }
        for w in watchers { w.yield(status) }
    }

    public func status(of service: String) -> ServingStatus? {
        state.withLock { $0.statuses[service] }
    }

    static func decodeService(_ bytes: [UInt8]) throws -> String {
        var r = ProtobufReader(bytes)
        var service = ""
        while let (field, wire) = try r.readTag() {
            if field == 1 && wire == .lengthDelimited {
                service = try r.readString(field: 1)
            } else {
                _ = try r.skipField(tagStart: 0, field, wire)
            }
        }
        return service
    }

    static func encode(_ status: ServingStatus) -> [UInt8] {
        var w = ProtobufWriter()
        if status != .unknown { w.write(field: 1, uint64: status.rawValue) }
        return w.bytes
    }

    /// Registers Check and Watch on `server`.
    public func register(on server: inout RPCServer) {
        let service = "grpc.health.v1.Health"
        server.registerUnary(service: service, method: "Check") { [self] request, _ in
            let name = try Self.decodeService(request)
            guard let status = self.status(of: name) else { throw RPCError(.notFound, "unknown service \(name)") }
            return Self.encode(status)
        }
        server.register(service: service, method: "Watch") { [self] requests, writer, _ in
            let name = try Self.decodeService(try await requests.single())
            let (stream, continuation) = AsyncStream<ServingStatus>.makeStream()
            let id = state.withLock { s -> UInt64 in
                s.nextWatcher += 1
                s.watchers[s.nextWatcher] = (name, continuation)
                return s.nextWatcher
            }
            defer { state.withLock { _ = $0.watchers.removeValue(forKey: id) } }
            continuation.yield(status(of: name) ?? .serviceUnknown)
            var last: ServingStatus?
            for await status in stream {
                if Task.isCancelled { break }
                if status != last { try await writer.write(Self.encode(status)) }
                last = status
            }
        }
    }
}
