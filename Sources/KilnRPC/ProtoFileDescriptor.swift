/// One `.proto` file as server reflection serves it: a serialized `google.protobuf.FileDescriptorProto`,
/// the files it imports, and the fully-qualified names of what it declares. `kiln-protoc` emits one per file
/// (e.g. `ProtoFileDescriptor.kiln_v1_inference`).
public struct ProtoFileDescriptor: Sendable {
    /// The file's path as imported, e.g. "kiln/v1/inference.proto".
    public let name: String
    public let dependencies: [String]
    /// Messages, enums, services and methods, fully qualified (e.g. "kiln.v1.Inference.Generate").
    public let symbols: [String]
    public let serialized: [UInt8]

    public init(name: String, dependencies: [String], symbols: [String], serialized: [UInt8]) {
        self.name = name
        self.dependencies = dependencies
        self.symbols = symbols
        self.serialized = serialized
    }
}
