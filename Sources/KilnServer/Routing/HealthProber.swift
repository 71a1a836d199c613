import KilnAPI
import KilnHTTP2
import KilnRPC
import KilnRouter
import Synchronization

/// Active health checks of `kiln route`'s backends: per backend, a `grpc.health.v1.Health/Watch` stream whose
/// pushed statuses are taken at once, and, whenever that stream is not open (the worker is unreachable, has
/// restarted, or lacks Watch), a `Check` probe every `interval` with a `timeout`, judged with rise and fall
/// thresholds. A Watch stream that breaks counts as one failed probe, so a worker killed outright is down
/// after one more failed probe, within one interval.
///
/// The backend set may change: `sync()` starts checking backends that arrived and stops those that left.
public final class HealthProber: Sendable {
    let backends: BackendSet
    let interval: Double
    let timeout: Double
    private let tasks = Mutex<[ObjectIdentifier: Task<Void, Never>]>([:])

    public init(backends: BackendSet, interval: Double = 5, timeout: Double = 1) {
        self.backends = backends
        self.interval = max(0.05, interval)
        self.timeout = max(0.05, timeout)
    }

    /// Starts one checking task per backend.
    public func start() { sync() }

    /// Checks exactly the backends the set holds now: starts tasks for new ones, stops those of departed ones.
    public func sync() {
        let current = backends.backends
        tasks.withLock { running in
            let wanted = Set(current.map { ObjectIdentifier($0) })
            for (id, task) in running where !wanted.contains(id) {
                task.cancel()
                running[id] = nil
            }
            for b in current where running[ObjectIdentifier(b)] == nil {
                running[ObjectIdentifier(b)] = Task { [self] in await self.run(backend: b) }
            }
        }
    }

    /// Stops every checking task.
    public func stop() {
        tasks.withLock { running in
            for t in running.values { t.cancel() }
            running = [:]
        }
    }

    private func run(backend m: Backend) async {
        while !Task.isCancelled {
            switch await watch(backend: m) {
            case .broken:
                backends.applyHealth(.probed(serving: false), to: m)
            case .unsupported, .endedCleanly:
                break
            }
            // The stream is not open: probe until it can be opened again.
            guard !Task.isCancelled else { return }
            backends.applyHealth(.probed(serving: await check(backend: m)), to: m)
            guard (try? await Task.sleep(for: .seconds(interval))) != nil else { return }
        }
    }

    enum WatchEnd { case broken, unsupported, endedCleanly }

    private static let grpcHeaders: HTTP2Headers = ["content-type": "application/grpc", "te": "trailers"]
    private static let emptyRequest = GRPCMessageFramer.frame([])

    /// Holds a Watch stream open, applying each status it pushes; returns when it ends.
    private func watch(backend m: Backend) async -> WatchEnd {
        let call: HTTP2ClientCall
        do {
            call = try m.client.makeCall(path: "/grpc.health.v1.Health/Watch", headers: Self.grpcHeaders)
        } catch {
            return .broken
        }
        return await withTaskCancellationHandler {
            do {
                try await call.write(Self.emptyRequest)
                call.finish()
                let head = try await call.response()
                if head.endStream {
                    let code = RPCStatusCode(grpcStatus: head.headers["grpc-status"])
                    return code == .unimplemented ? .unsupported : .broken
                }
                var deframer = GRPCMessageDeframer(maxMessageSize: 1024)
                for try await chunk in call.body {
                    deframer.append(chunk)
                    while let message = try deframer.next() {
                        let response = try Grpc_Health_V1_HealthCheckResponse(serializedBytes: message.payload)
                        backends.applyHealth(.watched(serving: response.status == .serving), to: m)
                    }
                }
                return .broken  // a worker ends Watch only when it goes away
            } catch {
                call.cancel()
                return .broken
            }
        } onCancel: {
            call.cancel()
        }
    }

    /// One `Check`: true when the backend answers SERVING within the timeout.
    private func check(backend m: Backend) async -> Bool {
        var headers = Self.grpcHeaders
        headers.add("grpc-timeout", GRPCTimeout.format(nanoseconds: UInt64(timeout * 1e9)))
        guard let call = try? m.client.makeCall(path: "/grpc.health.v1.Health/Check", headers: headers) else { return false }
        let timer = Task { [timeout] in
            if (try? await Task.sleep(for: .seconds(timeout))) != nil { call.cancel() }
        }
        defer { timer.cancel() }
        do {
            try await call.write(Self.emptyRequest)
            call.finish()
            let head = try await call.response()
            guard head.status == 200, !head.endStream else { return false }
            var deframer = GRPCMessageDeframer(maxMessageSize: 1024)
            for try await chunk in call.body { deframer.append(chunk) }
            guard let message = try deframer.next() else { return false }
            return try Grpc_Health_V1_HealthCheckResponse(serializedBytes: message.payload).status == .serving
        } catch {
            call.cancel()
            return false
        }
    }
}
