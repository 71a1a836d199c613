/// What generated message types conform to: decode from a reader, encode into a writer.
public protocol ProtobufMessage: Sendable, Equatable {
    init()
    init(reader: inout ProtobufReader) throws
    func encode(to writer: inout ProtobufWriter)
}

extension ProtobufMessage {
    /// The message's wire bytes.
    public func serializedBytes() -> [UInt8] {
        var w = ProtobufWriter()
        encode(to: &w)
        return w.bytes
    }

    /// Decodes a message from its wire bytes.
    public init(serializedBytes bytes: [UInt8]) throws {
        var r = ProtobufReader(bytes)
        try self.init(reader: &r)
    }
}
