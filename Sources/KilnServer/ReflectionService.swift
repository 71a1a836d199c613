import KilnAPI
import KilnRPC

/// gRPC server reflection (`grpc.reflection.v1.ServerReflection`, and the same messages as `v1alpha` for
/// older clients such as grpcio-reflection's): lists the services and serves the schema files that
/// `kiln-protoc` embedded, so grpcurl and friends work without the `.proto` files.
public struct ReflectionService: Grpc_Reflection_V1_ServerReflectionService {
    private let files: [String: ProtoFileDescriptor]
    private let fileOfSymbol: [String: String]
    private let services: [String]

    /// `services`: the fully-qualified names to list; `files`: every schema file they (transitively) use.
    public init(services: [String], files: [ProtoFileDescriptor]) {
        self.services = services.sorted()
        var byName: [String: ProtoFileDescriptor] = [:], bySymbol: [String: String] = [:]
        for f in files {
            byName[f.name] = f
            for s in f.symbols { bySymbol[s] = f.name }
        }
        self.files = byName
        fileOfSymbol = bySymbol
    }

    /// The schema files `kiln-protoc` generated into KilnAPI.
    public static let kilnFiles: [ProtoFileDescriptor] = [.kiln_v1_inference, .kiln_interop_v1_interop, .grpc_health_v1_health, .grpc_reflection_v1_reflection]

    /// The two service names reflection answers on.
    public static let serviceNames = ["grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"]

    /// Registers v1 (generated) and v1alpha (the same handler under the older name).
    public func registerBoth(on server: inout RPCServer) {
        register(on: &server)
        server.register(service: "grpc.reflection.v1alpha.ServerReflection", method: "ServerReflectionInfo") { requests, writer, context in
            try await self.serverReflectionInfo(requests: RPCTypedRequests(requests), responses: RPCTypedWriter(writer), context: context)
        }
    }

    public func serverReflectionInfo(requests: RPCTypedRequests<Grpc_Reflection_V1_ServerReflectionRequest>,
                                     responses: RPCTypedWriter<Grpc_Reflection_V1_ServerReflectionResponse>,
                                     context: RPCServerContext) async throws {
        var sent: Set<String> = []   // files this stream already carried: not sent again
        for try await request in requests {
            var response = Grpc_Reflection_V1_ServerReflectionResponse()
            response.validHost = request.host
            response.originalRequest = request
            response.messageResponse = answer(request, sent: &sent)
            try await responses.write(response)
        }
    }

    private func answer(_ request: Grpc_Reflection_V1_ServerReflectionRequest, sent: inout Set<String>)
        -> Grpc_Reflection_V1_ServerReflectionResponse.OneOf_MessageResponse {
        switch request.messageRequest {
        case .listServices:
            var list = Grpc_Reflection_V1_ListServiceResponse()
            list.service = services.map { var s = Grpc_Reflection_V1_ServiceResponse(); s.name = $0; return s }
            return .listServicesResponse(list)
        case .fileByFilename(let name):
            guard files[name] != nil else { return error(.notFound, "no file \(name)") }
            return .fileDescriptorResponse(withDependencies(name, sent: &sent))
        case .fileContainingSymbol(let symbol):
            guard let name = fileOfSymbol[symbol.hasPrefix(".") ? String(symbol.dropFirst()) : symbol] else {
                return error(.notFound, "no symbol \(symbol)")
            }
            return .fileDescriptorResponse(withDependencies(name, sent: &sent))
        case .fileContainingExtension(let e):
            return error(.notFound, "no extension \(e.extensionNumber) of \(e.containingType) (these schemas declare none)")
        case .allExtensionNumbersOfType(let type):
            guard fileOfSymbol[type] != nil else { return error(.notFound, "no type \(type)") }
            var numbers = Grpc_Reflection_V1_ExtensionNumberResponse()
            numbers.baseTypeName = type
            return .allExtensionNumbersResponse(numbers)
        case nil:
            return error(.invalidArgument, "empty reflection request")
        }
    }

    /// `name` and, depth first, the files it imports, leaving out what this stream already sent.
    private func withDependencies(_ name: String, sent: inout Set<String>) -> Grpc_Reflection_V1_FileDescriptorResponse {
        var response = Grpc_Reflection_V1_FileDescriptorResponse()
        func add(_ n: String) {
            guard let f = files[n], !sent.contains(n) else { return }
            sent.insert(n)
            response.fileDescriptorProto.append(f.serialized)
            f.dependencies.forEach(add)
        }
        // The asked-for file always comes first, even when this stream sent it before.
        sent.remove(name)
        add(name)
        return response
    }

    private func error(_ code: RPCStatusCode, _ message: String) -> Grpc_Reflection_V1_ServerReflectionResponse.OneOf_MessageResponse {
        var e = Grpc_Reflection_V1_ErrorResponse()
        e.errorCode = Int32(code.rawValue)
        e.errorMessage = message
        return .errorResponse(e)
    }
}
