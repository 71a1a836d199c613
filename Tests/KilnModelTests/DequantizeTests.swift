import Foundation
import KilnModel
import KilnTestSupport
import XCTest

/// Dequantization of every type against the Python `gguf` package (`gguf.quants.dequantize`) on the same
/// random blocks.
final class DequantizeTests: XCTestCase {
    func testEveryTypeMatchesPythonGGUF() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        var rng = TestRandom()
        for type in GGMLType.allCases {
            let blocks = 64
            let count = blocks * type.blockSize
            var bytes = (0..<type.byteCount(elements: count)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            // Random f16 scale bytes can be Inf/NaN; keep those fields finite so the values are comparable.
            fixScales(type, &bytes, blocks: blocks, rng: &rng)
            let input = dir.appendingPathComponent("\(type).bin"), output = dir.appendingPathComponent("\(type).f32")
            try Data(bytes).write(to: input)
            _ = try ggufPeer(["dequant", type.description, input.path, output.path])
            let theirs = try Data(contentsOf: output).withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
            let ours = bytes.withUnsafeBytes { Dequantize.array(type, $0, count: count) }
            XCTAssertEqual(theirs.count, count, "\(type)")
            var maxRelative: Float = 0, mismatches = 0
            for (a, b) in zip(ours, theirs) where a.bitPattern != b.bitPattern {
                if a.isNaN && b.isNaN { continue }
                mismatches += 1
                maxRelative = max(maxRelative, abs(a - b) / max(abs(b), 1e-30))
            }
            // Exact for the plain formats; a relative 1e-6 allowance for the others.
            switch type {
            case .f32, .f16, .bf16, .q8_0, .q4_0, .q5_0: XCTAssertEqual(mismatches, 0, "\(type) differs")
            default: XCTAssertLessThanOrEqual(maxRelative, 1e-6, "\(type): \(mismatches) values differ")
            }
        }
    }

    private func fixScales(_ type: GGMLType, _ bytes: inout [UInt8], blocks: Int, rng: inout some RandomNumberGenerator) {
        func finiteHalf() -> [UInt8] {
            let f = Float16(Float.random(in: -2...2, using: &rng))
            return [UInt8(f.bitPattern & 0xFF), UInt8(f.bitPattern >> 8)]
        }
        switch type {
        case .f32:
            for i in stride(from: 0, to: bytes.count, by: 4) {
                let f = Float.random(in: -1e6...1e6, using: &rng).bitPattern
                for k in 0..<4 { bytes[i + k] = UInt8(truncatingIfNeeded: f >> (8 * UInt32(k))) }
            }
        case .f16:
            for i in stride(from: 0, to: bytes.count, by: 2) { let h = finiteHalf(); bytes[i] = h[0]; bytes[i + 1] = h[1] }
        case .bf16:
            break  // every bf16 bit pattern converts exactly, NaN included
        default:
            let offsets: [Int] = switch type {
            case .q4_1, .q5_1, .q4_K, .q5_K: [0, 2]
            case .q6_K: [208]
            default: [0]
            }
            for b in 0..<blocks {
                for o in offsets {
                    let h = finiteHalf()
                    bytes[b * type.blockBytes + o] = h[0]; bytes[b * type.blockBytes + o + 1] = h[1]
                }
            }
        }
    }
}
