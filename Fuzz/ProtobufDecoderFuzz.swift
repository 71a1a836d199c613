// libFuzzer target: the protobuf reader must turn any bytes into fields or a ProtobufError, never a
// crash, a hang or a huge allocation. Built by `make fuzz` with -sanitize=fuzzer,address.

@_cdecl("LLVMFuzzerTestOneInput")
public func protobufDecoderFuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    var reader = ProtobufReader(bytes)
    do {
        while let (field, wire) = try reader.readTag() {
            switch wire {
            case .lengthDelimited:
                // Try it as a nested message, a string and bytes, as generated code might.
                var copy = reader
                if var nested = try? copy.readMessage() {
                    while let (f, w) = try? nested.readTag() { _ = try? nested.skipField(tagStart: 0, f, w) }
                }
                _ = try? reader.readString(field: field)
            case .varint:
                var values: [UInt64] = []
                try reader.readVarints(wireType: wire, into: &values)
            default:
                _ = try reader.skipField(tagStart: 0, field, wire)
            }
        }
    } catch {}
    return 0
}
