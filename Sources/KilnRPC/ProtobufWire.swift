/// Protobuf wire types (protobuf `encoding.md`).
public enum WireType: UInt8, Sendable {
    case varint = 0
    case fixed64 = 1
    case lengthDelimited = 2
    case startGroup = 3
    case endGroup = 4
    case fixed32 = 5
}

/// Why bytes could not be decoded. Every case names the byte offset where decoding stopped.
public enum ProtobufError: Error, Equatable, Sendable, CustomStringConvertible {
    case truncated(offset: Int)
    case malformedVarint(offset: Int)
    case invalidWireType(UInt8, offset: Int)
    case invalidFieldNumber(offset: Int)
    case lengthOutOfBounds(length: UInt64, offset: Int)
    case invalidUTF8(field: Int, offset: Int)
    case unexpectedEndGroup(offset: Int)
    case nestingTooDeep(offset: Int)
    case wrongWireType(field: Int, WireType, offset: Int)

    public var description: String {
        switch self {
        case .truncated(let o): return "truncated input at byte \(o)"
        case .malformedVarint(let o): return "varint longer than 10 bytes at byte \(o)"
        case .invalidWireType(let t, let o): return "invalid wire type \(t) at byte \(o)"
        case .invalidFieldNumber(let o): return "field number 0 or above 2^29-1 at byte \(o)"
        case .lengthOutOfBounds(let l, let o): return "length \(l) runs past the end at byte \(o)"
        case .invalidUTF8(let f, let o): return "field \(f): string is not valid UTF-8 at byte \(o)"
        case .unexpectedEndGroup(let o): return "unexpected end-group at byte \(o)"
        case .nestingTooDeep(let o): return "messages nested too deeply at byte \(o)"
        case .wrongWireType(let f, let t, let o): return "field \(f): unexpected wire type \(t) at byte \(o)"
        }
    }
}

/// ZigZag mapping for `sint32` / `sint64`: small magnitudes, either sign, become small varints.
public enum ZigZag {
    @inlinable public static func encode(_ v: Int32) -> UInt32 { UInt32(bitPattern: (v << 1) ^ (v >> 31)) }
    @inlinable public static func encode(_ v: Int64) -> UInt64 { UInt64(bitPattern: (v << 1) ^ (v >> 63)) }
    @inlinable public static func decode(_ v: UInt32) -> Int32 { Int32(bitPattern: (v >> 1) ^ (0 &- (v & 1))) }
    @inlinable public static func decode(_ v: UInt64) -> Int64 { Int64(bitPattern: (v >> 1) ^ (0 &- (v & 1))) }
}
