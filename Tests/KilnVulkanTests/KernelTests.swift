import Foundation
@testable import KilnModel
@testable import KilnVulkan
import KilnTestSupport
import XCTest

/// Each kernel against a float64 CPU computation on random inputs of several shapes, including row counts
/// that are not multiples of the rows per invocation; outputs are poisoned with NaN first so an element the
/// kernel forgot to write fails the comparison.
final class KernelTests: XCTestCase {
    static let device: VulkanDevice? = try? VulkanDevice()

    private func device() throws -> VulkanDevice {
        guard let device = Self.device else {
            XCTFail("no Vulkan device: install mesa-vulkan-drivers (lavapipe)")
            throw VulkanError("test", message: "no device")
        }
        return device
    }

    func testDeviceIsFoundAndDescribed() throws {
        let devices = try VulkanDevice.available()
        XCTAssertFalse(devices.isEmpty, "lavapipe should be installed by make deps")
        let d = try device()
        print("Vulkan device: \(d.info)")
        XCTAssertGreaterThan(d.info.maxStorageBufferRange, 1 << 20)
        XCTAssertNotNil(d.info.computeQueueFamily)
        // A device that does not exist is a clear error, and opening one after it still works (the failed
        // open undid what it had made).
        XCTAssertThrowsError(try VulkanDevice(index: devices.count)) { error in
            XCTAssertTrue("\(error)".contains("no Vulkan device #\(devices.count)"), "\(error)")
        }
        XCTAssertEqual(try VulkanDevice(index: d.info.index).info.name, d.info.name)
    }

    func testMatmulEveryFormatAndShape() throws {
        let device = try device()
        let arena = MemoryArena(device: device, chunkSize: 64 << 20)
        let stream = try CommandStream(device: device)
        var rng = TestRandom()
        // Both kernel families on this device (lavapipe).
        let families = try KernelFamily.allCases.map { try Kernels(device: device, headDimension: 64, family: $0) }
        for type in [GGMLType.q4_1, .q4_0, .q8_0, .f32, .f16, .bf16, .q5_0, .q5_1, .q4_K, .q5_K, .q6_K] {
            for (n, k, b) in [(1, 256, 1), (5, 256, 3), (37, 512, 6), (130, 768, 9), (70, 256, 37)] {
                var w = GGUFWriter()
                w.tensors = [.init(name: "w", dimensions: [k, n], type: type,
                                   data: TestModelBuilder.randomData(type, count: n * k, scale: 0.5, rng: &rng))]
                let file = try GGUFFile(file: MappedFile(copying: w.serialized()))
                let info = try XCTUnwrap(file.tensor("w"))
                let matrix = try DeviceMatrix(arena: arena, file: file, tensors: [info], label: "w")
                // Quantized formats stay quantized on the device (dequantized in registers); only float
                // formats are expanded to float32.
                let stored: DeviceMatrix.Format = switch type {
                case .q8_0: .q8_0
                case .q4_0, .q4_1, .q4_K: .q4_1
                case .q5_0, .q5_1, .q5_K, .q6_K: .q8_sub16
                case .f16: .f16
                case .bf16: .bf16
                default: .f32
                }
                XCTAssertEqual(matrix.format, stored, "\(type) on the device")
                let weights = Dequantize.array(type, file.data(of: info), count: n * k)
                let xs = (0..<b * k).map { _ in Float.random(in: -1...1, using: &rng) }
                let residual = (0..<b * n).map { _ in Float.random(in: -1...1, using: &rng) }
                let xBuffer = try arena.buffer(xs.count * 4, label: "x"), yBuffer = try arena.buffer(b * n * 4, label: "y")
                xs.withUnsafeBytes { xBuffer.copy($0) }
                // One descriptor set serves every variant: all matrix kernels share one binding layout.
                XCTAssertEqual(matrix.slices.count, 1)
                let set = try families[0].matmul(for: matrix.format).bind(Kernels.matmulBuffers(quants: matrix.slices[0].quants, scales: matrix.slices[0].scales, x: xBuffer, y: yBuffer))
                // Every family's two frames (tiles of several columns, and one column at a time) on every case;
                // a family's two must agree bit for bit, since the decoder picks one by batch size.
                for kernels in families {
                let variants = [(try kernels.matmul(for: matrix.format), kernels.matmulItems(rows: n, columns: b)),
                                try kernels.matmul(for: matrix.format, columns: 1, rows: n)]
                var firstResult: [Float]?
                for (kernel, items) in variants {
                for accumulate in [false, true] {
                    let y = yBuffer.floats(b * n)
                    for i in 0..<y.count { y[i] = accumulate ? residual[i] : .nan }
                    try stream.begin()
                    stream.dispatch(kernel, set,
                                    Kernels.MatmulParameters(K: UInt32(k), N: UInt32(n), B: UInt32(b), xStride: UInt32(k), yStride: UInt32(n), flags: accumulate ? 1 : 0),
                                    items: items)
                    try stream.submitAndWait()
                    let relative = Self.relativeError(y, weights: weights, xs: xs, residual: accumulate ? residual : nil,
                                                      rows: n, width: k, columns: b, label: "\(type) \(n)×\(k) B=\(b)")
                    XCTAssertLessThanOrEqual(relative, 1e-4, "\(type) \(n)×\(k) B=\(b) accumulate=\(accumulate) \(kernel.name)")
                    if !accumulate {
                        if let firstResult { XCTAssertEqual(Array(y), firstResult, "\(kernel.name) differs from the tiled kernel") }
                        firstResult = Array(y)
                    }
                }
                }
                }
            }
        }
    }

    /// A stack of matrices in different formats (as Q4_K_M files mix Q4_K and Q6_K in one layer's Q, K and V)
    /// is kept quantized in the Q8_SUB16 layout, and multiplies exactly as its rows dequantized.
    func testMixedFormatStackStaysQuantized() throws {
        let device = try device()
        let arena = MemoryArena(device: device, chunkSize: 16 << 20)
        let stream = try CommandStream(device: device)
        var rng = TestRandom()
        let k = 512, b = 5
        let parts: [(GGMLType, Int)] = [(.q4_K, 40), (.q6_K, 24), (.q8_0, 9), (.q5_0, 8)]
        var w = GGUFWriter()
        for (i, (type, rows)) in parts.enumerated() {
            w.tensors.append(.init(name: "w\(i)", dimensions: [k, rows], type: type,
                                   data: TestModelBuilder.randomData(type, count: rows * k, scale: 0.5, rng: &rng)))
        }
        let file = try GGUFFile(file: MappedFile(copying: w.serialized()))
        let infos = try parts.indices.map { try XCTUnwrap(file.tensor("w\($0)")) }
        let matrix = try DeviceMatrix(arena: arena, file: file, tensors: infos, label: "stack")
        XCTAssertEqual(matrix.format, .q8_sub16)
        let weights = infos.flatMap { Dequantize.array($0.type, file.data(of: $0), count: $0.elementCount) }
        let n = weights.count / k
        let xs = (0..<b * k).map { _ in Float.random(in: -1...1, using: &rng) }
        let xBuffer = try arena.buffer(xs.count * 4, label: "x"), yBuffer = try arena.buffer(b * n * 4, label: "y")
        xs.withUnsafeBytes { xBuffer.copy($0) }
        for family in KernelFamily.allCases {
            let kernels = try Kernels(device: device, headDimension: 64, family: family)
            let set = try kernels.matmul(for: matrix.format).bind(Kernels.matmulBuffers(quants: matrix.slices[0].quants, scales: matrix.slices[0].scales, x: xBuffer, y: yBuffer))
            for columns in [b, 1] {
                let (kernel, items) = try kernels.matmul(for: matrix.format, columns: columns, rows: n)
                let y = yBuffer.floats(b * n)
                for i in 0..<y.count { y[i] = .nan }
                try stream.begin()
                stream.dispatch(kernel, set, Kernels.MatmulParameters(K: UInt32(k), N: UInt32(n), B: UInt32(columns), xStride: UInt32(k), yStride: UInt32(n), flags: 0),
                                items: items)
                try stream.submitAndWait()
                let relative = Self.relativeError(y, weights: weights, xs: xs, residual: nil, rows: n, width: k, columns: columns, label: kernel.name)
                XCTAssertLessThanOrEqual(relative, 1e-4, "\(kernel.name), \(columns) columns")
            }
        }
    }

    /// half_rounding.glsl, which stores the float16 KV pool, against Swift's `Float16(x)` (round to nearest even)
    /// bit for bit: exact ties between neighbouring halves (normal and subnormal, odd and even), values one float32
    /// ulp either side of a tie, the overflow boundary, float32 subnormals, zeros, infinities, NaN, and random
    /// values over the whole float16 range.
    func testHalfRoundingMatchesFloat16() throws {
        let device = try device()
        let arena = MemoryArena(device: device, chunkSize: 16 << 20)
        let stream = try CommandStream(device: device)
        let kernel = try ComputeKernel(device: device, name: "half_rounding_check", spirv: EmbeddedShaders.halfRoundingCheck, bindings: 2, pushConstantBytes: 4)
        var rng = TestRandom()
        var inputs: [Float] = [0, -0.0, .infinity, -.infinity, .nan, 65504, 65519.996, 65520, 65536, 1e5, -1e5, 1e-30, -1e-30,
                               Float(bitPattern: 1), 0x1p-25, -0x1p-25, 0x1.0002p-25, 0x1p-24, 0x1.8p-24, 0x1.4p-23, 1.0 + 0x1p-11, 1.0 + 0x3p-11]
        for _ in 0..<4000 {
            // A random finite half, then a float32 exactly halfway to the next half up, and one ulp either side.
            let half = Float16(bitPattern: UInt16.random(in: 0...0xFFFF, using: &rng))
            guard half.isFinite, abs(half) < Float16.greatestFiniteMagnitude else { continue }
            let next = Float(half.nextUp), here = Float(half), tie = here + (next - here) / 2
            inputs += [here, tie, tie.nextUp, tie.nextDown, -tie]
            inputs.append(Float.random(in: -70000...70000, using: &rng) * Float(pow(2.0, Double(Int.random(in: -30...0, using: &rng)))))
        }
        let input = try arena.buffer(inputs.count * 4, label: "floats")
        inputs.withUnsafeBytes { input.copy($0) }
        let output = try arena.buffer(inputs.count * 4, label: "halves")
        let bits = output.contents.assumingMemoryBound(to: UInt32.self)
        for i in 0..<inputs.count { bits[i] = 0xDEAD_BEEF }
        try stream.begin()
        stream.dispatch(kernel, try kernel.bind([input, output]), UInt32(inputs.count), items: inputs.count)
        try stream.submitAndWait()
        var mismatches: [String] = []
        for (i, x) in inputs.enumerated() {
            let expected = Float16(x)
            let ok = x.isNaN ? (bits[i] & 0x7C00 == 0x7C00 && bits[i] & 0x3FF != 0 && bits[i] <= 0xFFFF) : bits[i] == UInt32(expected.bitPattern)
            if !ok, mismatches.count < 8 { mismatches.append("\(x) (0x\(String(x.bitPattern, radix: 16))): 0x\(String(bits[i], radix: 16)), Float16 0x\(String(expected.bitPattern, radix: 16))") }
        }
        XCTAssertEqual(mismatches, [], "of \(inputs.count) values")
    }

    /// Top-k on the device against the host's order (score descending, lower id first on ties) on rows with
    /// ties, NaN, -infinity and vocabularies smaller than the candidate count or the chunk count, with every
    /// output word poisoned first; the log-normalizer within float rounding of the host's double sum. Both kernel
    /// families (the GPU one sorts in shared memory).
    func testTopCandidatesMatchTheHost() throws {
        let device = try device()
        let arena = MemoryArena(device: device, chunkSize: 16 << 20)
        let stream = try CommandStream(device: device)
        for family in KernelFamily.allCases {
        let kernels = try Kernels(device: device, headDimension: 64, family: family)
        var rng = TestRandom()
        let k = Kernels.topCandidateCount, chunks = Kernels.topCandidateChunks, record = 2 * k + 2
        for vocabulary in [49152, 1000, 37] {
            let rows = 5
            var logits = (0..<rows * vocabulary).map { _ in Float.random(in: -8...8, using: &rng) }
            // Row 1: a few distinct values only, so most candidates tie; row 2: NaN and -infinity sprinkled
            // in; row 3: one huge maximum at the end; row 4: all equal.
            for i in 0..<vocabulary {
                logits[vocabulary + i] = Float(Int.random(in: 0..<4, using: &rng))
                if i % 7 == 3 { logits[2 * vocabulary + i] = .nan } else if i % 11 == 5 { logits[2 * vocabulary + i] = -.infinity }
                logits[4 * vocabulary + i] = 0.5
            }
            logits[4 * vocabulary - 1] = 1e4
            let input = try arena.buffer(logits.count * 4, label: "logits")
            logits.withUnsafeBytes { input.copy($0) }
            let partial = try arena.buffer(rows * chunks * record * 4, label: "partial")
            let result = try arena.buffer(rows * record * 4, label: "result")
            let words = result.contents.assumingMemoryBound(to: UInt32.self)
            for i in 0..<rows * record { words[i] = 0x7FC0_0001 }
            let set = try kernels.topCandidates.bind([input, partial, result])
            try stream.begin()
            stream.dispatch(kernels.topCandidates, set, Kernels.RowReductionParameters(rows: UInt32(rows), vocabulary: UInt32(vocabulary), chunks: UInt32(chunks), phase: 0),
                            items: rows * chunks)
            stream.barrier()
            stream.dispatch(kernels.topCandidates, set, Kernels.RowReductionParameters(rows: UInt32(rows), vocabulary: UInt32(vocabulary), chunks: UInt32(chunks), phase: 1),
                            items: rows)
            try stream.submitAndWait()
            for r in 0..<rows {
                let expected = TopCandidates(logits: Array(logits[r * vocabulary..<(r + 1) * vocabulary]), count: k)
                let base = r * record
                let count = min(k, expected.ids.count)
                let ids = (0..<k).map { words[base + k + $0] }
                XCTAssertEqual(ids.prefix(count).map { Int($0) }, expected.ids, "\(family) family, vocabulary \(vocabulary), row \(r): ids")
                XCTAssertEqual((0..<count).map { Float(bitPattern: words[base + $0]) }, expected.scores, "\(family) family, vocabulary \(vocabulary), row \(r): scores")
                XCTAssertTrue(ids.dropFirst(count).allSatisfy { $0 == UInt32.max }, "vocabulary \(vocabulary), row \(r): unused slots marked")
                let normalizer = Double(Float(bitPattern: words[base + 2 * k])) + Foundation.log(Double(Float(bitPattern: words[base + 2 * k + 1])))
                XCTAssertEqual(normalizer, expected.logNormalizer, accuracy: 1e-5 * max(1, abs(expected.logNormalizer)), "vocabulary \(vocabulary), row \(r): normalizer")
            }
        }
        }
    }

    /// Relative L2 error of `y` (columns × rows, column-major) against W·x (+ residual) in float64; fails for
    /// every element left unwritten (NaN).
    static func relativeError(_ y: UnsafeMutableBufferPointer<Float>, weights: [Float], xs: [Float], residual: [Float]?,
                              rows n: Int, width k: Int, columns: Int, label: String) -> Double {
        var error = 0.0, norm = 0.0
        for col in 0..<columns {
            for row in 0..<n {
                var expected = residual.map { Double($0[col * n + row]) } ?? 0
                for i in 0..<k { expected += Double(weights[row * k + i]) * Double(xs[col * k + i]) }
                let got = Double(y[col * n + row])
                XCTAssertFalse(got.isNaN, "\(label): element (\(row), \(col)) not written")
                error += (got - expected) * (got - expected)
                norm += expected * expected
            }
        }
        return (error / max(norm, 1e-30)).squareRoot()
    }
}
