import KilnTestSupport
import XCTest
@testable import KilnRPC

/// The wire format against the byte sequences protobuf's own encoding guide gives, and hostile input.
final class ProtobufCodecTests: XCTestCase {
    func testVarintFieldFromTheEncodingGuide() throws {
        var w = ProtobufWriter()
        w.write(field: 1, uint64: 150)
        XCTAssertEqual(w.bytes, [0x08, 0x96, 0x01])
        var r = ProtobufReader(w.bytes)
        let tag = try XCTUnwrap(try r.readTag())
        XCTAssertEqual(tag.field, 1)
        XCTAssertEqual(tag.wireType, .varint)
        XCTAssertEqual(try r.readVarint(), 150)
        XCTAssertNil(try r.readTag())
    }

    func testStringFieldFromTheEncodingGuide() throws {
        var w = ProtobufWriter()
        w.write(field: 2, string: "testing")
        XCTAssertEqual(w.bytes, [0x12, 0x07, 0x74, 0x65, 0x73, 0x74, 0x69, 0x6e, 0x67])
        var r = ProtobufReader(w.bytes)
        _ = try r.readTag()
        XCTAssertEqual(try r.readString(field: 2), "testing")
    }

    func testNegativeInt32IsTenBytesAndZigZagIsNot() {
        var w = ProtobufWriter()
        w.write(field: 1, int32: -1)
        XCTAssertEqual(w.bytes, [0x08, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01])
        var z = ProtobufWriter()
        z.write(field: 1, sint32: -1)
        XCTAssertEqual(z.bytes, [0x08, 0x01])
    }

    func testZigZagTable() {
        let pairs: [(Int32, UInt32)] = [(0, 0), (-1, 1), (1, 2), (-2, 3), (2_147_483_647, 4_294_967_294), (-2_147_483_648, 4_294_967_295)]
        for (v, e) in pairs {
            XCTAssertEqual(ZigZag.encode(v), e)
            XCTAssertEqual(ZigZag.decode(e), v)
        }
        XCTAssertEqual(ZigZag.decode(ZigZag.encode(Int64.min)), Int64.min)
        XCTAssertEqual(ZigZag.decode(ZigZag.encode(Int64.max)), Int64.max)
    }

    func testPackedRepeatedFromTheEncodingGuide() throws {
        var w = ProtobufWriter()
        w.writePacked(field: 4, varints: [3, 270, 86942])
        XCTAssertEqual(w.bytes, [0x22, 0x06, 0x03, 0x8E, 0x02, 0x9E, 0xA7, 0x05])
        // Parsers accept packed and unpacked forms of the same field.
        var unpacked = ProtobufWriter()
        for v: UInt64 in [3, 270, 86942] { unpacked.write(field: 4, uint64: v) }
        for bytes in [w.bytes, unpacked.bytes] {
            var r = ProtobufReader(bytes)
            var values: [UInt64] = []
            while let (_, wire) = try r.readTag() { try r.readVarints(wireType: wire, into: &values) }
            XCTAssertEqual(values, [3, 270, 86942])
        }
    }

    func testFixedAndFloatingPointRoundTrip() throws {
        var w = ProtobufWriter()
        w.write(field: 1, fixed32: 0xDEADBEEF)
        w.write(field: 2, fixed64: 0x0123_4567_89AB_CDEF)
        w.write(field: 3, float: -1.5)
        w.write(field: 4, double: .pi)
        XCTAssertEqual(Array(w.bytes[1...4]), [0xEF, 0xBE, 0xAD, 0xDE], "little-endian")
        var r = ProtobufReader(w.bytes)
        _ = try r.readTag(); XCTAssertEqual(try r.readFixed32(), 0xDEADBEEF)
        _ = try r.readTag(); XCTAssertEqual(try r.readFixed64(), 0x0123_4567_89AB_CDEF)
        _ = try r.readTag(); XCTAssertEqual(Float(bitPattern: try r.readFixed32()), -1.5)
        _ = try r.readTag(); XCTAssertEqual(Double(bitPattern: try r.readFixed64()), .pi)
    }

    func testNestedMessageAndUnknownFieldsAreKept() throws {
        var w = ProtobufWriter()
        w.write(field: 1, message: { $0.write(field: 1, string: "inner") })
        w.write(field: 99, uint64: 7)               // unknown to the reader below
        w.writeTag(50, .startGroup); w.write(field: 1, uint64: 1); w.writeTag(50, .endGroup)  // a group, skipped whole
        w.write(field: 2, bool: true)
        var r = ProtobufReader(w.bytes)
        var unknown: [UInt8] = []
        var inner = ""
        var flag = false
        while true {
            let start = r.position
            guard let (field, wire) = try r.readTag() else { break }
            switch field {
            case 1:
                var m = try r.readMessage()
                _ = try m.readTag()
                inner = try m.readString(field: 1)
            case 2: flag = try r.readVarint() != 0
            default: unknown += try r.skipField(tagStart: start, field, wire)
            }
        }
        XCTAssertEqual(inner, "inner")
        XCTAssertTrue(flag)
        XCTAssertEqual(unknown, [0x98, 0x06, 0x07] + [0x93, 0x03, 0x08, 0x01, 0x94, 0x03])
    }

    func testTruncatedAndHostileInputsAreErrorsWithOffsets() {
        func firstError(_ bytes: [UInt8]) -> ProtobufError? {
            var r = ProtobufReader(bytes)
            do {
                while let (f, w) = try r.readTag() {
                    if w == .lengthDelimited { _ = try r.readBytes() } else { _ = try r.skipField(tagStart: 0, f, w) }
                }
                return nil
            } catch let e as ProtobufError {
                return e
            } catch {
                return nil
            }
        }
        XCTAssertEqual(firstError([0x08]), .truncated(offset: 1))
        XCTAssertEqual(firstError([0x08, 0x96]), .truncated(offset: 2))
        XCTAssertEqual(firstError([0x0A, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F]), .lengthOutOfBounds(length: 0xFFFF_FFFF, offset: 1),
                       "a 4 GiB length is refused, not allocated")
        XCTAssertEqual(firstError([0x08] + [UInt8](repeating: 0xFF, count: 11)), .malformedVarint(offset: 1))
        XCTAssertEqual(firstError([0x0E]), .invalidWireType(6, offset: 0))
        XCTAssertEqual(firstError([0x00, 0x00]), .invalidFieldNumber(offset: 0))
        XCTAssertEqual(firstError([0x0C]), .unexpectedEndGroup(offset: 1))
        var r = ProtobufReader([0x0A, 0x02, 0xC3, 0x28])
        _ = try? r.readTag()
        XCTAssertThrowsError(try r.readString(field: 1)) { XCTAssertEqual($0 as? ProtobufError, .invalidUTF8(field: 1, offset: 1)) }
        // 200 nested groups: refused, not a stack overflow.
        let deep = [UInt8](repeating: 0x0B, count: 200) + [UInt8](repeating: 0x0C, count: 200)
        XCTAssertEqual(firstError(deep), .nestingTooDeep(offset: 100))
    }

    func testRandomBytesNeverCrash() {
        var rng = TestRandom()
        for _ in 0..<20_000 {
            let bytes = (0..<Int.random(in: 0...64, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            var r = ProtobufReader(bytes)
            do {
                while let (f, w) = try r.readTag() { _ = try r.skipField(tagStart: 0, f, w) }
            } catch {}
        }
    }
}

final class GRPCFramingTests: XCTestCase {
    func testFrameAndDeframeAcrossChunkBoundaries() throws {
        let messages: [[UInt8]] = [[], Array("hello".utf8), [UInt8](repeating: 7, count: 70_000)]
        var stream: [UInt8] = []
        for m in messages { stream += GRPCMessageFramer.frame(m) }
        XCTAssertEqual(Array(GRPCMessageFramer.frame(Array("hello".utf8)).prefix(5)), [0, 0, 0, 0, 5])
        var d = GRPCMessageDeframer()
        var out: [[UInt8]] = []
        var i = 0
        while i < stream.count {
            let n = min(7, stream.count - i)  // awkward chunk sizes split prefixes and payloads
            d.append(Array(stream[i..<i + n]))
            i += n
            while let m = try d.next() { out.append(m.payload) }
        }
        XCTAssertEqual(out, messages)
        XCTAssertFalse(d.hasPartialMessage)
    }

    func testOversizedMessageIsRefusedFromItsPrefix() {
        var d = GRPCMessageDeframer(maxMessageSize: 1024)
        d.append([0, 0, 0x10, 0, 0])  // declares 1 MiB; none of it has arrived
        XCTAssertThrowsError(try d.next()) { XCTAssertEqual(($0 as? RPCError)?.code, .resourceExhausted) }
    }

    func testBadCompressedFlagAndTruncation() {
        var d = GRPCMessageDeframer()
        d.append([2, 0, 0, 0, 0])
        XCTAssertThrowsError(try d.next()) { XCTAssertEqual(($0 as? RPCError)?.code, .internal) }
        var t = GRPCMessageDeframer()
        t.append([0, 0, 0, 0, 9, 1, 2])
        XCTAssertNil(try t.next())
        XCTAssertTrue(t.hasPartialMessage, "end of stream here means a truncated message")
    }
}

final class RPCMetadataTests: XCTestCase {
    func testStatusMessagePercentEncoding() {
        XCTAssertEqual(StatusMessageCoding.encode("ok"), "ok")
        XCTAssertEqual(StatusMessageCoding.encode("50% done\n"), "50%25 done%0A")
        XCTAssertEqual(StatusMessageCoding.encode("héllo"), "h%C3%A9llo")
        XCTAssertEqual(StatusMessageCoding.decode("h%C3%A9llo 50%25"), "héllo 50%")
        XCTAssertEqual(StatusMessageCoding.decode("bad %zz escape %4"), "bad %zz escape %4", "malformed escapes stay as they are")
        for s in ["", "plain", "tab\tand\r\nnewlines", "ünïcødé ✓", "%%%"] {
            XCTAssertEqual(StatusMessageCoding.decode(StatusMessageCoding.encode(s)), s)
        }
    }

    func testTimeoutHeader() {
        XCTAssertEqual(GRPCTimeout.parse("1S"), 1_000_000_000)
        XCTAssertEqual(GRPCTimeout.parse("250m"), 250_000_000)
        XCTAssertEqual(GRPCTimeout.parse("2H"), 7_200_000_000_000)
        XCTAssertEqual(GRPCTimeout.parse("99999999n"), 99_999_999)
        XCTAssertNil(GRPCTimeout.parse("123456789S"), "at most 8 digits")
        XCTAssertNil(GRPCTimeout.parse("S"))
        XCTAssertNil(GRPCTimeout.parse("10x"))
        XCTAssertNil(GRPCTimeout.parse("-1S"))
        XCTAssertEqual(GRPCTimeout.format(nanoseconds: 1_500_000_000), "1500000u")
        XCTAssertEqual(GRPCTimeout.format(nanoseconds: 5), "5n")
        XCTAssertEqual(GRPCTimeout.format(nanoseconds: 3_600_000_000_000 * 2), "7200000m")
        XCTAssertEqual(GRPCTimeout.format(nanoseconds: 3_600_000_000_000 * 1000), "3600000S")
        for n: UInt64 in [1, 999, 123_456_789, 86_400_000_000_000] {
            XCTAssertGreaterThanOrEqual(GRPCTimeout.parse(GRPCTimeout.format(nanoseconds: n))!, n, "never shortened")
        }
    }

    func testStatusCodes() {
        XCTAssertEqual(RPCStatusCode.allCases.count, 17)
        XCTAssertEqual(RPCStatusCode(grpcStatus: "14"), .unavailable)
        XCTAssertEqual(RPCStatusCode(grpcStatus: "42"), .unknown)
        XCTAssertEqual(RPCStatusCode(grpcStatus: nil), .unknown)
        XCTAssertEqual(RPCStatusCode(httpStatus: 404), .unimplemented)
        XCTAssertEqual(RPCStatusCode(httpStatus: 503), .unavailable)
        XCTAssertEqual(RPCError(wrapping: CancellationError()).code, .cancelled)
        struct Odd: Error {}
        let e = RPCError(wrapping: Odd())
        XCTAssertEqual(e.code, .unknown)
        XCTAssertNotNil(e.cause)
    }
}
