import Foundation
import KilnAPI
import KilnRPC
import Synchronization

/// `kiln.interop.v1.Interop`: every call kind and failure mode, for the interop tests against grpcio in
/// both directions (`kiln serve --interop` mounts it). Counts handlers that ended cancelled.
public final class InteropService: Kiln_Interop_V1_InteropService {
    private let cancelled = Atomic<UInt64>(0)

    /// The largest payload a response carries (Expand's payload_bytes, Collect's total): 16 MiB, past any
    /// client's default receive limit (the interop tests ask for 5 MiB to see it refused) but bounded.
    static let largestPayload: UInt32 = 16 << 20

    public init() {}

    public func unary(request: Kiln_Interop_V1_EchoRequest, context: RPCServerContext) async throws -> Kiln_Interop_V1_EchoResponse {
        try await counting {
            // Echoed metadata is bounded: at most 64 distinct keys, each value as the client sent it.
            for key in Set(request.echoMetadata).prefix(64) {
                for value in context.metadata.values(key) {
                    context.addInitialMetadata(key, value)
                    context.addTrailingMetadata(key, value)
                }
            }
            if request.delayMs > 0 { try await Task.sleep(for: .milliseconds(Int(request.delayMs))) }
            try Self.failIfAsked(request)
            var response = Kiln_Interop_V1_EchoResponse()
            response.payload = request.payload
            return response
        }
    }

    public func expand(request: Kiln_Interop_V1_ExpandRequest, responses: RPCTypedWriter<Kiln_Interop_V1_EchoResponse>,
                       context: RPCServerContext) async throws {
        try await counting {
            guard request.payloadBytes <= Self.largestPayload else {
                throw RPCError(.invalidArgument, "payload_bytes must be at most \(Self.largestPayload)")
            }
            let payload = [UInt8](repeating: 0, count: Int(request.payloadBytes))
            for i in 0..<request.count {
                var response = Kiln_Interop_V1_EchoResponse()
                response.payload = payload
                response.index = i
                try await responses.write(response)
                if request.intervalMs > 0 { try await Task.sleep(for: .milliseconds(Int(request.intervalMs))) }
            }
        }
    }

    public func collect(requests: RPCTypedRequests<Kiln_Interop_V1_EchoRequest>, context: RPCServerContext) async throws -> Kiln_Interop_V1_EchoResponse {
        try await counting {
            var response = Kiln_Interop_V1_EchoResponse()
            for try await request in requests {
                try Self.failIfAsked(request)
                guard response.payload.count + request.payload.count <= Int(Self.largestPayload) else {
                    throw RPCError(.resourceExhausted, "the collected payload would pass \(Self.largestPayload) bytes")
                }
                response.payload += request.payload
            }
            return response
        }
    }

    public func converse(requests: RPCTypedRequests<Kiln_Interop_V1_EchoRequest>, responses: RPCTypedWriter<Kiln_Interop_V1_EchoResponse>,
                         context: RPCServerContext) async throws {
        try await counting {
            var index: UInt32 = 0
            for try await request in requests {
                try Self.failIfAsked(request)
                var response = Kiln_Interop_V1_EchoResponse()
                response.payload = request.payload
                response.index = index
                index &+= 1
                try await responses.write(response)
            }
        }
    }

    public func stats(request: Kiln_Interop_V1_StatsRequest, context: RPCServerContext) async throws -> Kiln_Interop_V1_StatsResponse {
        var response = Kiln_Interop_V1_StatsResponse()
        response.cancelledCalls = cancelled.load(ordering: .relaxed)
        return response
    }

    private static func failIfAsked(_ request: Kiln_Interop_V1_EchoRequest) throws {
        guard request.failCode != 0 else { return }
        throw RPCError(RPCStatusCode(rawValue: Int(request.failCode)) ?? .unknown, request.failMessage)
    }

    /// Runs a handler body, counting it when it ends because its call was cancelled.
    private func counting<T>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch {
            if Task.isCancelled || error is CancellationError { cancelled.add(1, ordering: .relaxed) }
            throw error
        }
    }
}
