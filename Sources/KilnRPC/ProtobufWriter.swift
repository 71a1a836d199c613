/// Appends protobuf-encoded fields to a byte array. Generated message code calls these.
public struct ProtobufWriter: Sendable {
    public private(set) var bytes: [UInt8]

    public init(capacity: Int = 0) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    /// The number of bytes `value` takes as a varint.
    @inlinable public static func varintSize(_ value: UInt64) -> Int {
        value == 0 ? 1 : (64 - value.leadingZeroBitCount + 6) / 7
    }

    public mutating func writeVarint(_ value: UInt64) {
        var v = value
        while v >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }

    public mutating func writeTag(_ field: Int, _ wireType: WireType) {
        writeVarint(UInt64(field) << 3 | UInt64(wireType.rawValue))
    }

    public mutating func writeFixed32(_ value: UInt32) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    public mutating func writeFixed64(_ value: UInt64) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    public mutating func writeLengthDelimited(_ payload: some Collection<UInt8>) {
        writeVarint(UInt64(payload.count))
        bytes.append(contentsOf: payload)
    }

    public mutating func appendRaw(_ raw: some Collection<UInt8>) {
        bytes.append(contentsOf: raw)
    }

    // MARK: Typed fields (tag + value)

    public mutating func write(field: Int, uint64 v: UInt64) { writeTag(field, .varint); writeVarint(v) }
    public mutating func write(field: Int, uint32 v: UInt32) { writeTag(field, .varint); writeVarint(UInt64(v)) }
    /// `int32`/`int64`/enums: negative values are sign-extended to 10 bytes, as the format requires.
    public mutating func write(field: Int, int64 v: Int64) { writeTag(field, .varint); writeVarint(UInt64(bitPattern: v)) }
    public mutating func write(field: Int, int32 v: Int32) { writeTag(field, .varint); writeVarint(UInt64(bitPattern: Int64(v))) }
    public mutating func write(field: Int, sint32 v: Int32) { writeTag(field, .varint); writeVarint(UInt64(ZigZag.encode(v))) }
    public mutating func write(field: Int, sint64 v: Int64) { writeTag(field, .varint); writeVarint(ZigZag.encode(v)) }
    public mutating func write(field: Int, bool v: Bool) { writeTag(field, .varint); writeVarint(v ? 1 : 0) }
    public mutating func write(field: Int, fixed32 v: UInt32) { writeTag(field, .fixed32); writeFixed32(v) }
    public mutating func write(field: Int, fixed64 v: UInt64) { writeTag(field, .fixed64); writeFixed64(v) }
    public mutating func write(field: Int, float v: Float) { writeTag(field, .fixed32); writeFixed32(v.bitPattern) }
    public mutating func write(field: Int, double v: Double) { writeTag(field, .fixed64); writeFixed64(v.bitPattern) }
    public mutating func write(field: Int, string v: String) { writeTag(field, .lengthDelimited); writeLengthDelimited(v.utf8) }
    public mutating func write(field: Int, bytes v: [UInt8]) { writeTag(field, .lengthDelimited); writeLengthDelimited(v) }

    /// A nested message (or map entry), written by `body` into its own buffer and length-prefixed.
    public mutating func write(field: Int, message body: (inout ProtobufWriter) -> Void) {
        var nested = ProtobufWriter()
        body(&nested)
        writeTag(field, .lengthDelimited)
        writeLengthDelimited(nested.bytes)
    }

    /// A packed repeated varint field (the proto3 default for repeated scalars).
    public mutating func writePacked(field: Int, varints values: some Sequence<UInt64>) {
        var payload = ProtobufWriter()
        for v in values { payload.writeVarint(v) }
        guard !payload.bytes.isEmpty else { return }
        writeTag(field, .lengthDelimited)
        writeLengthDelimited(payload.bytes)
    }
}
