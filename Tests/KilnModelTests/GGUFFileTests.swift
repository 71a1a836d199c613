import Foundation
import KilnModel
import KilnTestSupport
import XCTest

final class GGUFFileTests: XCTestCase {
    /// Our reading of the real model equals the Python `gguf` reader's: every tensor's name, type, shape and
    /// data offset, and the scalar metadata.
    func testDefaultModelMatchesPythonReader() throws {
        let file = try defaultModelFile()
        XCTAssertEqual(file.version, 3)
        let peer = try ggufPeer(["describe", DefaultModel.path])
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(peer.stdout.utf8)) as? [String: Any])
        let tensors = try XCTUnwrap(json["tensors"] as? [[String: Any]])
        XCTAssertEqual(tensors.count, file.tensors.count)
        for (theirs, ours) in zip(tensors, file.tensors) {
            XCTAssertEqual(theirs["name"] as? String, ours.name)
            XCTAssertEqual(theirs["type"] as? String, ours.type.description)
            XCTAssertEqual(theirs["shape"] as? [Int], ours.dimensions)
            XCTAssertEqual(theirs["offset"] as? Int, ours.fileOffset)
            XCTAssertEqual(theirs["bytes"] as? Int, ours.byteCount)
        }
        let metadata = try XCTUnwrap(json["metadata"] as? [String: Any])
        for (key, value) in metadata {
            let ours = try XCTUnwrap(file.metadata[key], key)
            switch value {
            case let s as String: XCTAssertEqual(ours.string, s, key)
            case let dict as [String: Any]: XCTAssertEqual(ours.array?.count, dict["count"] as? Int, key)
            case let n as NSNumber: XCTAssertEqual(ours.double ?? -1, n.doubleValue, accuracy: 1e-9, key)
            default: XCTFail("unexpected value for \(key)")
            }
        }
        let config = try ModelConfig(gguf: file)
        XCTAssertEqual(config.layerCount, 30)
        XCTAssertEqual(config.embeddingWidth, 576)
        XCTAssertEqual(config.headCount, 9)
        XCTAssertEqual(config.kvHeadCount, 3)
        XCTAssertEqual(config.headDimension, 64)
        XCTAssertEqual(config.vocabularySize, 49152)
        XCTAssertTrue(config.tiedOutput)
        XCTAssertFalse(config.attentionBias)
    }

    /// Opening maps the file: the model's 98 MB are not read, so opening is fast and memory stays flat.
    func testOpeningDoesNotReadTensorData() throws {
        let before = residentKiB()
        let file = try defaultModelFile()
        XCTAssertGreaterThan(file.file.bytes.count, 90_000_000)
        XCTAssertLessThan(residentKiB() - before, 40_000, "opening should not copy the file")
    }

    // MARK: hostile files

    private func smallFile() -> [UInt8] {
        var w = GGUFWriter()
        w.metadata = [("general.architecture", .string("llama")), ("a.list", .array(.uint32, [.uint32(1), .uint32(2)])),
                      ("every.type", .array(.array, [.array(.int8, [.int8(-1)]), .array(.string, [.string("é"), .string("")])])),
                      ("b", .bool(true)), ("f", .float64(0.25)), ("i", .int64(-7)), ("u16", .uint16(9)), ("i16", .int16(-9)),
                      ("u8", .uint8(200)), ("f32", .float32(1.5)), ("i32", .int32(-3)), ("u64", .uint64(1 << 40))]
        w.tensors = [
            .init(name: "x", dimensions: [32, 2], type: .q8_0, data: [UInt8](repeating: 0, count: 68)),
            .init(name: "y", dimensions: [4], type: .f32, data: [UInt8](repeating: 0, count: 16)),
        ]
        return w.serialized()
    }

    private func open(_ bytes: [UInt8]) throws -> GGUFFile {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("f.gguf").path
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return try GGUFFile(path: path)
    }

    private func expectProblem(_ bytes: [UInt8], _ check: (GGUFError.Problem) -> Bool, file: StaticString = #filePath, line: UInt = #line) {
        do {
            _ = try open(bytes)
            XCTFail("opened a broken file", file: file, line: line)
        } catch let error as GGUFError {
            XCTAssertTrue(check(error.problem), "\(error)", file: file, line: line)
            XCTAssertTrue(error.description.contains("at offset"), file: file, line: line)
        } catch {
            XCTFail("\(error)", file: file, line: line)
        }
    }

    /// Byte offset of the first occurrence of `pattern`.
    private func offset(of pattern: [UInt8], in bytes: [UInt8]) -> Int {
        (0...(bytes.count - pattern.count)).first { bytes[$0..<$0 + pattern.count].elementsEqual(pattern) }!
    }

    private func put(_ value: UInt64, at offset: Int, in bytes: inout [UInt8]) {
        for i in 0..<8 { bytes[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) }
    }

    func testValidSmallFileOpens() throws {
        let file = try open(smallFile())
        XCTAssertEqual(file.tensors.map(\.name), ["x", "y"])
        XCTAssertEqual(file.metadata["a.list"], .array(.uint32, [.uint32(1), .uint32(2)]))
        XCTAssertEqual(file.metadata["every.type"], .array(.array, [.array(.int8, [.int8(-1)]), .array(.string, [.string("é"), .string("")])]))
        XCTAssertEqual(file.metadata["b"], .bool(true))
        XCTAssertEqual(file.metadata["f"]?.double, 0.25)
        XCTAssertEqual(file.metadata["i"]?.integer, -7)
        XCTAssertEqual(file.metadata["u64"]?.integer, 1 << 40)
        XCTAssertEqual(file.metadata["i16"], .int16(-9))
    }

    func testBadMagicAndVersion() {
        var bytes = smallFile()
        bytes[0] = 0x47 ^ 0xFF
        expectProblem(bytes) { if case .badMagic = $0 { return true }; return false }
        bytes = smallFile()
        bytes[4] = 1
        expectProblem(bytes) { $0 == .unsupportedVersion(1) }
    }

    /// Every truncation of the header and data is refused with an error, never a crash.
    func testEveryTruncationIsAnError() {
        let bytes = smallFile()
        // The last tensor ("y", 16 bytes) is followed by 16 bytes of padding no reader needs.
        for length in 0..<bytes.count - 16 {
            expectProblem(Array(bytes[..<length])) {
                switch $0 {
                case .truncated, .absurdCount, .tensorPastEnd, .badMagic: return true
                default: return false
                }
            }
        }
    }

    func testAbsurdCountsAreRefusedBeforeAllocating() {
        var bytes = smallFile()
        put(1 << 60, at: 8, in: &bytes)  // tensor count
        expectProblem(bytes) { if case .absurdCount(let what, _, _) = $0 { return what == "tensor count" }; return false }
        bytes = smallFile()
        put(1 << 40, at: 16, in: &bytes)  // metadata key count
        expectProblem(bytes) { if case .absurdCount = $0 { return true }; return false }
        bytes = smallFile()
        put(1 << 62, at: 24, in: &bytes)  // length of the first key
        expectProblem(bytes) { if case .absurdCount = $0 { return true }; return false }
        bytes = smallFile()
        let list = offset(of: Array("a.list".utf8), in: bytes)
        put(1 << 50, at: list + 6 + 4 + 4, in: &bytes)  // element count of a.list
        expectProblem(bytes) { if case .absurdCount = $0 { return true }; return false }
    }

    func testTensorProblemsAreNamed() {
        let base = smallFile()
        let y = offset(of: [1, 0, 0, 0, 0, 0, 0, 0, 0x79], in: base)  // name length 1, "y"
        let yType = y + 9 + 4 + 8, yOffset = yType + 4
        // Data past the end of the file.
        var bytes = base
        put(1 << 40, at: yOffset, in: &bytes)
        expectProblem(bytes) { if case .tensorPastEnd(let t, _, _) = $0 { return t == "y" }; return false }
        // Overlapping the tensor before it.
        bytes = base
        put(32, at: yOffset, in: &bytes)
        expectProblem(bytes) { if case .overlappingTensors = $0 { return true }; return false }
        // Misaligned.
        bytes = base
        put(70, at: yOffset, in: &bytes)
        expectProblem(bytes) { if case .misalignedTensor(let t, _, _) = $0 { return t == "y" }; return false }
        // A type Kiln does not read is refused by name.
        bytes = base
        bytes[yType] = 10
        expectProblem(bytes) { $0 == .unsupportedTensorType(tensor: "y", type: 10) }
        XCTAssertTrue(GGUFError(.unsupportedTensorType(tensor: "y", type: 10), offset: 0).description.contains("Q2_K"))
        // Zero or too many dimensions.
        bytes = base
        bytes[y + 9] = 0
        expectProblem(bytes) { if case .badTensorDimensions = $0 { return true }; return false }
    }

    func testBadAlignmentAndDuplicates() {
        var w = GGUFWriter()
        w.metadata = [("general.alignment", .uint32(3))]
        expectProblem(w.serialized()) { $0 == .badAlignment(3) }
        w.metadata = [("k", .uint8(1)), ("k", .uint8(2))]
        expectProblem(w.serialized()) { $0 == .duplicateKey("k") }
        w.metadata = []
        w.tensors = [.init(name: "t", dimensions: [1], type: .f32, data: [0, 0, 0, 0]),
                     .init(name: "t", dimensions: [1], type: .f32, data: [0, 0, 0, 0])]
        expectProblem(w.serialized()) { $0 == .duplicateTensor("t") }
    }

    /// Boundary values in the fields a model's shape comes from are refused by name, never trapped on: a
    /// negative alignment, head widths past any real model, rope bases and norm epsilons that are not finite
    /// positive numbers.
    func testBoundaryValuesInModelFieldsAreRefused() throws {
        var w = GGUFWriter()
        w.metadata = [("general.alignment", .int32(-1))]
        expectProblem(w.serialized()) { $0 == .badAlignment(UInt64(truncatingIfNeeded: -1)) }
        w.metadata = [("general.alignment", .int64(Int64.min))]
        expectProblem(w.serialized()) { if case .badAlignment = $0 { return true }; return false }
        let model = TestModelBuilder().build()
        let cases: [(String, GGUFValue)] = [
            ("llama.attention.key_length", .uint64(1 << 62)), ("llama.attention.key_length", .int32(-1)),
            ("llama.attention.key_length", .uint32(0)), ("llama.block_count", .uint64(UInt64.max)),
            ("llama.context_length", .int64(-1)), ("llama.rope.freq_base", .float32(.nan)),
            ("llama.rope.freq_base", .float32(-.infinity)), ("llama.rope.freq_base", .float64(-1)),
            ("llama.attention.layer_norm_rms_epsilon", .float32(.infinity)), ("llama.attention.layer_norm_rms_epsilon", .float64(0)),
            ("llama.attention.layer_norm_rms_epsilon", .float64(1e300)),
        ]
        for (key, value) in cases {
            var bad = model
            bad.metadata = bad.metadata.filter { $0.key != key } + [(key, value)]
            let file = try open(bad.serialized())
            XCTAssertThrowsError(try ModelConfig(gguf: file), "\(key) = \(value)") { error in
                XCTAssertTrue("\(error)".contains(key), "\(key) = \(value): \(error)")
            }
        }
    }

    /// Random corruption of the header never crashes the reader (the fuzz target goes further).
    func testRandomCorruptionNeverCrashes() throws {
        let base = smallFile()
        var rng = TestRandom()
        var refused = 0
        for _ in 0..<500 {
            var bytes = base
            for _ in 0..<Int.random(in: 1...4, using: &rng) {
                bytes[Int.random(in: 0..<200, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
            }
            do { _ = try open(bytes) } catch is GGUFError { refused += 1 }
        }
        XCTAssertGreaterThan(refused, 0)
    }

    func testUnknownArchitectureIsRefusedByName() throws {
        var w = GGUFWriter()
        w.metadata = [("general.architecture", .string("mamba"))]
        let file = try open(w.serialized())
        XCTAssertThrowsError(try ModelConfig(gguf: file)) { error in
            XCTAssertEqual((error as? GGUFError)?.problem, .unsupportedArchitecture("mamba", supported: ["llama", "qwen2"]))
            XCTAssertTrue("\(error)".contains("mamba"))
        }
    }
}

/// Resident set size of this process, from /proc.
func residentKiB() -> Int {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
    for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
        return Int(line.split(separator: " ")[1]) ?? 0
    }
    return 0
}
