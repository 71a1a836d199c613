import Foundation
import KilnRPC
import KilnTestSupport
import XCTest

/// Every field shape the generator emits (all scalar types, optional, packed and unpacked repeated,
/// nested messages, enums, maps, oneof): random values round-trip, and Python protobuf reads the same
/// bytes back to the same values and writes the bytes Swift writes.
final class EverythingRoundTripTests: XCTestCase {
    typealias E = Kiln_Test_V1_Everything

    static func random(using rng: inout some RandomNumberGenerator) -> E {
        func text() -> String { String((0..<Int.random(in: 0...8, using: &rng)).map { _ in "ab✓é\n".randomElement(using: &rng)! }) }
        func inner() -> E.Inner {
            var i = E.Inner()
            i.name = text()
            i.values = (0..<Int.random(in: 0...4, using: &rng)).map { _ in UInt32.random(in: 0...UInt32.max, using: &rng) }
            return i
        }
        var e = E()
        e.fDouble = Double.random(in: -1e9...1e9, using: &rng)
        e.fFloat = Float.random(in: -1e6...1e6, using: &rng)
        e.fInt64 = Int64.random(in: .min ... .max, using: &rng)
        e.fUint64 = UInt64.random(in: 0 ... .max, using: &rng)
        e.fInt32 = Int32.random(in: .min ... .max, using: &rng)
        e.fFixed64 = UInt64.random(in: 0 ... .max, using: &rng)
        e.fFixed32 = UInt32.random(in: 0 ... .max, using: &rng)
        e.fBool = Bool.random(using: &rng)
        e.fString = text()
        e.fBytes = (0..<Int.random(in: 0...6, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
        e.fUint32 = UInt32.random(in: 0 ... .max, using: &rng)
        e.fSfixed32 = Int32.random(in: .min ... .max, using: &rng)
        e.fSfixed64 = Int64.random(in: .min ... .max, using: &rng)
        e.fSint32 = Int32.random(in: .min ... .max, using: &rng)
        e.fSint64 = Int64.random(in: .min ... .max, using: &rng)
        if Bool.random(using: &rng) { e.oInt32 = Int32.random(in: -5...5, using: &rng) }
        if Bool.random(using: &rng) { e.oString = text() }
        e.rInt32 = (0..<Int.random(in: 0...5, using: &rng)).map { _ in Int32.random(in: .min ... .max, using: &rng) }
        e.rSint64 = (0..<Int.random(in: 0...5, using: &rng)).map { _ in Int64.random(in: .min ... .max, using: &rng) }
        e.rDouble = (0..<Int.random(in: 0...3, using: &rng)).map { _ in Double.random(in: -10...10, using: &rng) }
        e.rFixed32 = (0..<Int.random(in: 0...3, using: &rng)).map { _ in UInt32.random(in: 0 ... .max, using: &rng) }
        e.rString = (0..<Int.random(in: 0...3, using: &rng)).map { _ in text() }
        e.rBytes = (0..<Int.random(in: 0...2, using: &rng)).map { _ in [UInt8.random(in: 0...255, using: &rng)] }
        e.rInner = (0..<Int.random(in: 0...2, using: &rng)).map { _ in inner() }
        e.rColor = (0..<Int.random(in: 0...3, using: &rng)).map { _ in E.Color(rawValue: Int32.random(in: 0...2, using: &rng)) }
        e.inner = Bool.random(using: &rng) ? inner() : nil
        e.color = E.Color(rawValue: Int32.random(in: 0...2, using: &rng))
        for _ in 0..<Int.random(in: 0...3, using: &rng) { e.mStringInt32[text()] = Int32.random(in: -100...100, using: &rng) }
        for _ in 0..<Int.random(in: 0...2, using: &rng) { e.mInt64Inner[Int64.random(in: -9...9, using: &rng)] = inner() }
        switch Int.random(in: 0...3, using: &rng) {
        case 0: e.choice = .cText(text())
        case 1: e.choice = .cInner(inner())
        case 2: e.choice = .cNumber(Int64.random(in: .min ... .max, using: &rng))
        default: e.choice = nil
        }
        return e
    }

    func testRandomValuesRoundTrip() throws {
        var rng = TestRandom()
        for _ in 0..<2000 {
            let e = Self.random(using: &rng)
            XCTAssertEqual(try E(serializedBytes: e.serializedBytes()), e)
        }
    }

    func testPythonAgreesByteForByte() throws {
        var rng = TestRandom()
        for _ in 0..<15 {
            let e = Self.random(using: &rng)
            let bytes = e.serializedBytes()
            // Python decodes Swift's bytes, re-encodes them deterministically; Swift decodes those.
            let json = try GeneratedCodeTests.peer("decode", "Everything", GeneratedCodeTests.hex(bytes), module: "kiln.test.v1.everything_pb2")
            let back = GeneratedCodeTests.bytes(try GeneratedCodeTests.peer("encode", "Everything", json, module: "kiln.test.v1.everything_pb2"))
            XCTAssertEqual(try E(serializedBytes: back), e, "value survives Swift → Python → Swift\n\(json)")
        }
    }
}
