/// A parsed `.proto` file: what the generator emits Swift from.
public struct ProtoFile: Sendable, Equatable {
    public var path: String
    public var package: String = ""
    public var imports: [String] = []
    public var messages: [ProtoMessage] = []
    public var enums: [ProtoEnum] = []
    public var services: [ProtoService] = []
}

/// The scalar types of proto3, and references to messages or enums.
public enum ProtoFieldType: Sendable, Equatable {
    case double, float, int64, uint64, int32, fixed64, fixed32, bool, string, bytes, uint32, sfixed32, sfixed64, sint32, sint64
    /// A message or enum, by the name as written (resolved later).
    case named(String)

    static let scalars: [String: ProtoFieldType] = [
        "double": .double, "float": .float, "int64": .int64, "uint64": .uint64, "int32": .int32,
        "fixed64": .fixed64, "fixed32": .fixed32, "bool": .bool, "string": .string, "bytes": .bytes,
        "uint32": .uint32, "sfixed32": .sfixed32, "sfixed64": .sfixed64, "sint32": .sint32, "sint64": .sint64,
    ]
}

public struct ProtoField: Sendable, Equatable {
    public enum Label: Sendable, Equatable { case singular, optional, repeated }
    public var name: String
    public var number: Int
    public var type: ProtoFieldType
    public var label: Label
    /// For `map<K, V>` fields: the key type (the value type is `type`).
    public var mapKey: ProtoFieldType?
    /// The oneof this field belongs to, by name.
    public var oneof: String?
    public var comment: String?
    public var location: SourceLocation
}

public struct ProtoMessage: Sendable, Equatable {
    public var name: String
    public var fields: [ProtoField] = []
    public var oneofs: [String] = []
    public var messages: [ProtoMessage] = []
    public var enums: [ProtoEnum] = []
    public var reservedNumbers: [ClosedRange<Int>] = []
    public var reservedNames: [String] = []
    public var comment: String?
    public var location: SourceLocation
}

public struct ProtoEnum: Sendable, Equatable {
    public struct Value: Sendable, Equatable {
        public var name: String
        public var number: Int
        public var comment: String?
    }
    public var name: String
    public var values: [Value] = []
    public var comment: String?
    public var location: SourceLocation
}

public struct ProtoService: Sendable, Equatable {
    public struct Method: Sendable, Equatable {
        public var name: String
        public var input: String
        public var output: String
        public var clientStreaming: Bool
        public var serverStreaming: Bool
        public var comment: String?
    }
    public var name: String
    public var methods: [Method] = []
    public var comment: String?
}
