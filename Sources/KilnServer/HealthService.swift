import KilnAPI
import KilnRPC
import Synchronization

/// `grpc.health.v1.Health` (grpc `doc/health-checking.md`) on the generated types: Check and Watch, so that
/// load balancers and Kubernetes probes can ask whether this server, or one of its services, is serving.
public final class HealthService: Grpc_Health_V1_HealthService {
    public typealias ServingStatus = Grpc_Health_V1_HealthCheckResponse.ServingStatus

    private struct State {
        var statuses: [String: ServingStatus] = ["": .serving]
        var watchers: [UInt64: (String, AsyncStream<ServingStatus>.Continuation)] = [:]
        var nextWatcher: UInt64 = 0
        /// Set by `endWatches`: the server is going away.
        var ending = false
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

    /// Ends every Watch stream once it has sent the last status set (a server draining must not wait for
    /// streams that never end on their own: a router's Watch would hold the drain to its deadline). A Watch
    /// opened later ends after its first status.
    public func endWatches() {
        let watchers = state.withLock { s -> [AsyncStream<ServingStatus>.Continuation] in
            s.ending = true
            return s.watchers.values.map(\.1)
        }
        for w in watchers { w.finish() }
    }

    public func status(of service: String) -> ServingStatus? {
        state.withLock { $0.statuses[service] }
    }

    public func check(request: Grpc_Health_V1_HealthCheckRequest, context: RPCServerContext) async throws -> Grpc_Health_V1_HealthCheckResponse {
        guard let status = status(of: request.service) else { throw RPCError(.notFound, "unknown service \(request.service)") }
        var response = Grpc_Health_V1_HealthCheckResponse()
        response.status = status
        return response
    }

    /// Sends the current status, then every change, until the client goes away. A service nobody has set
    /// reads SERVICE_UNKNOWN (not an error: it may appear later).
    public func watch(request: Grpc_Health_V1_HealthCheckRequest, responses: RPCTypedWriter<Grpc_Health_V1_HealthCheckResponse>,
                      context: RPCServerContext) async throws {
        let (stream, continuation) = AsyncStream<ServingStatus>.makeStream()
        let (id, ending) = state.withLock { s -> (UInt64, Bool) in
            s.nextWatcher += 1
            s.watchers[s.nextWatcher] = (request.service, continuation)
            return (s.nextWatcher, s.ending)
        }
        defer { state.withLock { _ = $0.watchers.removeValue(forKey: id) } }
        continuation.yield(status(of: request.service) ?? .serviceUnknown)
        if ending { continuation.finish() }
        var last: ServingStatus?
        for await status in stream {
            if Task.isCancelled { break }
            if status != last {
                var response = Grpc_Health_V1_HealthCheckResponse()
                response.status = status
                try await responses.write(response)
            }
            last = status
        }
    }
}
