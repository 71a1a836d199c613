/// Reads protobuf fields from bytes without trusting any length in them: every read is bounds-checked
/// and a bad input is a ``ProtobufError`` naming the offset, never a crash or a large allocation.
public struct ProtobufReader: Sendable {
    private let bytes: [UInt8]
    public private(set) var offset: Int
    private let end: Int
    /// How many messages deep this reader is (nested readers count up), to stop hostile recursion.
    public let depth: Int
    public static let maxDepth = 100

    public init(_ bytes: [UInt8]) {
        self.init(bytes, range: 0..<bytes.count, depth: 0)
    }

    private init(_ bytes: [UInt8], range: Range<Int>, depth: Int) {
        self.bytes = bytes
        self.offset = range.lowerBound
        self.end = range.upperBound
        self.depth = depth
    }

    public var isAtEnd: Bool { offset >= end }

    /// The next field's number and wire type, or nil at the end.
    public mutating func readTag() throws -> (field: Int, wireType: WireType)? {
        guard !isAtEnd else { return nil }
        let at = offset
        let key = try readVarint()
        guard let wire = WireType(rawValue: UInt8(key & 7)) else { throw ProtobufError.invalidWireType(UInt8(key & 7), offset: at) }
        let field = key >> 3
        guard field >= 1 && field <= 0x1FFF_FFFF else { throw ProtobufError.invalidFieldNumber(offset: at) }
        return (Int(field), wire)
    }

    public mutating func readVarint() throws -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        let start = offset
        while true {
            guard offset < end else { throw ProtobufError.truncated(offset: offset) }
            let b = bytes[offset]
            offset += 1
            if shift == 63 && b > 1 { throw ProtobufError.malformedVarint(offset: start) }
            result |= UInt64(b & 0x7F) << shift
            if b < 0x80 { return result }
            shift += 7
            if shift > 63 { throw ProtobufError.malformedVarint(offset: start) }
        }
    }

    public mutating func readFixed32() throws -> UInt32 {
        guard end - offset >= 4 else { throw ProtobufError.truncated(offset: offset) }
        var v: UInt32 = 0
        for i in 0..<4 { v |= UInt32(bytes[offset + i]) << (8 * UInt32(i)) }
        offset += 4
        return v
    }

    public mutating func readFixed64() throws -> UInt64 {
        guard end - offset >= 8 else { throw ProtobufError.truncated(offset: offset) }
        var v: UInt64 = 0
        for i in 0..<8 { v |= UInt64(bytes[offset + i]) << (8 * UInt64(i)) }
        offset += 8
        return v
    }

    /// The range of a length-delimited payload, checked against the bytes that remain.
    private mutating func readLengthDelimitedRange() throws -> Range<Int> {
        let at = offset
        let length = try readVarint()
        guard length <= UInt64(end - offset) else { throw ProtobufError.lengthOutOfBounds(length: length, offset: at) }
        let range = offset..<offset + Int(length)
        offset = range.upperBound
        return range
    }

    public mutating func readBytes() throws -> [UInt8] {
        Array(bytes[try readLengthDelimitedRange()])
    }

    /// A proto3 `string`: must be valid UTF-8.
    public mutating func readString(field: Int) throws -> String {
        let at = offset
        let range = try readLengthDelimitedRange()
        guard let s = String(validating: bytes[range], as: UTF8.self) else { throw ProtobufError.invalidUTF8(field: field, offset: at) }
        return s
    }

    /// A reader over a nested message's bytes.
    public mutating func readMessage() throws -> ProtobufReader {
        let at = offset
        guard depth + 1 < Self.maxDepth else { throw ProtobufError.nestingTooDeep(offset: at) }
        return ProtobufReader(bytes, range: try readLengthDelimitedRange(), depth: depth + 1)
    }

    /// Values of a repeated varint field, packed or not (parsers must accept both).
    public mutating func readVarints(wireType: WireType, into values: inout [UInt64]) throws {
        if wireType == .varint {
            values.append(try readVarint())
            return
        }
        var packed = ProtobufReader(bytes, range: try readLengthDelimitedRange(), depth: depth)
        while !packed.isAtEnd { values.append(try packed.readVarint()) }
    }

    /// Skips a field this reader does not know, returning its raw bytes (tag included) so that
    /// messages can keep unknown fields.
    public mutating func skipField(tagStart: Int, _ field: Int, _ wireType: WireType) throws -> ArraySlice<UInt8> {
        try skipValue(field, wireType, depth: depth)
        return bytes[tagStart..<offset]
    }

    private mutating func skipValue(_ field: Int, _ wireType: WireType, depth: Int) throws {
        switch wireType {
        case .varint: _ = try readVarint()
        case .fixed64: _ = try readFixed64()
        case .fixed32: _ = try readFixed32()
        case .lengthDelimited: _ = try readLengthDelimitedRange()
        case .startGroup:
            guard depth + 1 < Self.maxDepth else { throw ProtobufError.nestingTooDeep(offset: offset) }
            while true {
                let at = offset
                guard let (f, w) = try readTag() else { throw ProtobufError.truncated(offset: offset) }
                if w == .endGroup {
                    guard f == field else { throw ProtobufError.unexpectedEndGroup(offset: at) }
                    return
                }
                try skipValue(f, w, depth: depth + 1)
            }
        case .endGroup:
            throw ProtobufError.unexpectedEndGroup(offset: offset)
        }
    }

    /// Where the next tag starts (for ``skipField(tagStart:_:_:)``).
    public var position: Int { offset }
}
