import Foundation
import KilnAPI
import KilnHTTP2
import KilnRPC
import XCTest

/// Generated service code against real grpcio peers: Kiln's generated client calls grpcio's health
/// servicer, and grpcio's health stub calls a Kiln service written against the generated protocol.
final class GeneratedServiceTests: XCTestCase {
    func testGeneratedClientAgainstGrpcioHealthServicer() async throws {
        let script = GeneratedCodeTests.root.appendingPathComponent("Tests/KilnProtocTests/health_server.py").path
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", script]
        let out = Pipe(), input = Pipe()
        p.standardOutput = out
        p.standardInput = input
        try p.run()
        defer {
            try? input.fileHandleForWriting.close()
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
        }
        var line = Data()
        while !line.contains(UInt8(ascii: "\n")) {
            let d = out.fileHandleForReading.availableData
            if d.isEmpty { break }
            line.append(d)
        }
        let port = try XCTUnwrap(Int(String(decoding: line, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)))
        let group = try EventLoopGroup(threads: 1)
        defer { group.shutdown() }
        let channel = try RPCChannel(host: "127.0.0.1", port: port, group: group)
        defer { channel.close() }
        let client = Grpc_Health_V1_HealthClient(channel: channel)

        let serving = try await client.check(Grpc_Health_V1_HealthCheckRequest())
        XCTAssertEqual(serving.status, .serving)
        var busy = Grpc_Health_V1_HealthCheckRequest()
        busy.service = "kiln.Busy"
        let busyStatus = try await client.check(busy)
        XCTAssertEqual(busyStatus.status, .notServing)
        var unknown = Grpc_Health_V1_HealthCheckRequest()
        unknown.service = "no.Such"
        do {
            _ = try await client.check(unknown)
            XCTFail("unknown service reported healthy")
        } catch let e as RPCError {
            XCTAssertEqual(e.code, .notFound)
        }
        var iterator = try await client.watch(busy).makeAsyncIterator()
        let first = try await iterator.next()
        XCTAssertEqual(first?.status, .notServing)
    }

    struct TestHealth: Grpc_Health_V1_HealthService {
        func check(request: Grpc_Health_V1_HealthCheckRequest, context: RPCServerContext) async throws -> Grpc_Health_V1_HealthCheckResponse {
            guard request.service.isEmpty || request.service == "kiln.v1.Inference" else { throw RPCError(.notFound, "unknown service") }
            var r = Grpc_Health_V1_HealthCheckResponse()
            r.status = .serving
            return r
        }

        func watch(request: Grpc_Health_V1_HealthCheckRequest, responses: RPCTypedWriter<Grpc_Health_V1_HealthCheckResponse>,
                   context: RPCServerContext) async throws {
            var r = Grpc_Health_V1_HealthCheckResponse()
            r.status = .serving
            try await responses.write(r)
        }
    }

    func testGeneratedServerProtocolServesGrpcioStub() async throws {
        var rpc = RPCServer()
        TestHealth().register(on: &rpc)
        let group = try EventLoopGroup(threads: 1)
        let server = try rpc.startHTTP2Server(group: group)
        let port = server.h2cAddress!.port
        let script = """
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc
        stub = health_pb2_grpc.HealthStub(grpc.insecure_channel("127.0.0.1:\(port)"))
        print(health_pb2.HealthCheckResponse.ServingStatus.Name(stub.Check(health_pb2.HealthCheckRequest(service="kiln.v1.Inference")).status))
        try:
            stub.Check(health_pb2.HealthCheckRequest(service="nope"))
        except grpc.RpcError as e:
            print(e.code().name)
        print(health_pb2.HealthCheckResponse.ServingStatus.Name(next(iter(stub.Watch(health_pb2.HealthCheckRequest()))).status))
        """
        let output = try await Task.detached { () -> String in
            try GeneratedCodeTests.python(["-c", script])
        }.value
        XCTAssertEqual(output.split(separator: "\n"), ["SERVING", "NOT_FOUND", "SERVING"])
        await server.shutdown()
        group.shutdown()
    }
}
