import CKilnCPU
import Foundation
import KilnCPU
import KilnModel
import KilnTestSupport
import XCTest

/// Each CPU kernel against a float64 computation on random inputs, in every kernel family this machine has
/// (the portable one always): matrix products of every weight format at sizes that are not multiples of
/// the vector width or the column tile, attention over a scattered paged pool, and the element-wise
/// operations. Every output is pre-filled with NaN, so one left unwritten fails.
final class KernelTests: XCTestCase {
    /// The portable family and every x86 family up to the best this CPU runs.
    private var families: [kiln_isa] {
        (0...kiln_cpu_best_isa().rawValue).map { kiln_isa(rawValue: $0) }
    }

    private var pool: OpaquePointer!

    override func setUp() { pool = kiln_pool_create(3) }

    override func tearDown() {
        kiln_pool_destroy(pool)
        kiln_cpu_set_isa(kiln_cpu_best_isa())
    }

    private func use(_ isa: kiln_isa) -> String {
        XCTAssertEqual(kiln_cpu_set_isa(isa), 0)
        return String(cString: kiln_cpu_isa_name(isa))
    }

    private static func relativeL2(_ got: [Float], _ want: [Double]) -> Double {
        var e = 0.0, n = 0.0
        for (g, w) in zip(got, want) { e += (Double(g) - w) * (Double(g) - w); n += w * w }
        return (e / max(n, 1e-300)).squareRoot()
    }

    func testMatrixProductsOfEveryFormatAgainstFloat64() throws {
        var rng = TestRandom()
        print("kernel families on this CPU: \(families.map { String(cString: kiln_cpu_isa_name($0)) })")
        let blockShapes = [(1, 32), (7, 96), (45, 160), (70, 576)]
        let superShapes = [(3, 256), (33, 512)]
        let cases: [(GGMLType, [(Int, Int)])] = [
            (.q4_0, blockShapes), (.q4_1, blockShapes), (.q5_0, blockShapes), (.q5_1, blockShapes), (.q8_0, blockShapes),
            (.q4_K, superShapes), (.q5_K, superShapes), (.q6_K, superShapes),
            (.f32, blockShapes), (.f16, blockShapes), (.bf16, blockShapes),
        ]
        for isa in families {
            let family = use(isa)
            for (type, shapes) in cases {
                // Relative L2 over every output of the format: one short dot product alone may nearly cancel,
                // which makes its own relative error meaningless; each output is also held to a bound scaled
                // by its row's and column's norms (Cauchy–Schwarz), so that no single wrong one hides.
                var allGot: [Float] = [], allWant: [Double] = []
                let bound = [.f32, .f16, .bf16].contains(type) ? 1e-4 : 1e-2
                defer {
                    XCTAssertLessThanOrEqual(Self.relativeL2(allGot, allWant), bound, "\(family) \(type): all shapes")
                }
                for (rows, cols) in shapes {
                    for ncols in [1, 3, 6] {
                        let bytes = TestModelBuilder.randomData(type, count: rows * cols, scale: 1 / Float(cols).squareRoot(), rng: &rng)
                        let weights = bytes.withUnsafeBytes { Dequantize.array(type, $0, count: rows * cols) }
                        let packed = try bytes.withUnsafeBytes { try PackedMatrix(type: type, bytes: $0, rows: rows, columns: cols) }
                        let x = (0..<ncols * cols).map { _ in Float.random(in: -1...1, using: &rng) }
                        var want = [Double](repeating: 0, count: ncols * rows)
                        for c in 0..<ncols {
                            for r in 0..<rows {
                                var s = 0.0
                                for i in 0..<cols { s += Double(weights[r * cols + i]) * Double(x[c * cols + i]) }
                                want[c * rows + r] = s
                            }
                        }
                        var xq = [kiln_q8_block](repeating: kiln_q8_block(), count: ncols * cols / 32)
                        kiln_quantize_rows(x, Int32(ncols), Int32(cols), &xq)
                        var y = [Float](repeating: .nan, count: ncols * rows)
                        var matrix = packed.matrix
                        y.withUnsafeMutableBufferPointer { out in
                            withUnsafePointer(to: &matrix) { m in
                                var product = kiln_product(w: m, bias: nil, y: out.baseAddress, ldy: Int32(rows))
                                kiln_matmul(pool, &product, 1, x, xq, Int32(ncols))
                            }
                        }
                        let what = "\(family) \(type) \(rows)×\(cols), \(ncols) columns"
                        XCTAssertFalse(y.contains { !$0.isFinite }, "\(what): an output was not written")
                        allGot += y; allWant += want
                        for c in 0..<ncols {
                            let xNorm = (0..<cols).reduce(0.0) { $0 + Double(x[c * cols + $1]) * Double(x[c * cols + $1]) }.squareRoot()
                            for r in 0..<rows {
                                let wNorm = (0..<cols).reduce(0.0) { $0 + Double(weights[r * cols + $1]) * Double(weights[r * cols + $1]) }.squareRoot()
                                XCTAssertLessThanOrEqual(abs(Double(y[c * rows + r]) - want[c * rows + r]), bound * wNorm * xNorm,
                                                         "\(what): row \(r) column \(c)")
                            }
                        }
                        // A column's result is the same in a tile of any width as alone.
                        for c in 0..<ncols {
                            for r in 0..<rows {
                                let alone = withUnsafePointer(to: &matrix) { m in
                                    x.withUnsafeBufferPointer { xs in
                                        xq.withUnsafeBufferPointer { qs in
                                            kiln_dot_row(m, Int32(r), xs.baseAddress! + c * cols, qs.baseAddress! + c * cols / 32)
                                        }
                                    }
                                }
                                XCTAssertEqual(alone.bitPattern, y[c * rows + r].bitPattern, "\(what): row \(r) column \(c) alone")
                            }
                        }
                    }
                }
            }
        }
    }

    /// Repacking changes no value: every row read back from the packed layout equals `Dequantize`'s (Q4_0's
    /// zeros may lose their sign: d·q + (−8·d) gives +0 where d·(q − 8) gives −0 for a negative d).
    func testRepackingKeepsEveryValue() throws {
        var rng = TestRandom()
        for type in [GGMLType.q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q4_K, .q5_K, .q6_K, .f32, .f16, .bf16] {
            let (rows, cols) = (13, type.blockSize == 256 ? 512 : 96)
            let bytes = TestModelBuilder.randomData(type, count: rows * cols, scale: 0.3, rng: &rng)
            let want = bytes.withUnsafeBytes { Dequantize.array(type, $0, count: rows * cols) }
            let packed = try bytes.withUnsafeBytes { try PackedMatrix(type: type, bytes: $0, rows: rows, columns: cols) }
            var row = [Float](repeating: .nan, count: cols)
            for r in 0..<rows {
                row.withUnsafeMutableBufferPointer { packed.dequantizeRow(r, into: $0.baseAddress!) }
                for i in 0..<cols {
                    let w = want[r * cols + i]
                    if type == .q4_0 && w == 0 { XCTAssertEqual(row[i], 0); continue }
                    XCTAssertEqual(row[i].bitPattern, w.bitPattern, "\(type) row \(r) value \(i)")
                }
            }
        }
    }

    /// The x86 families compute the same integers and the same float operations: their products agree bit
    /// for bit, and the portable family agrees with them to rounding.
    func testFamiliesAgree() throws {
        guard families.count > 1 else { throw XCTSkip("only the portable family on this CPU") }
        var rng = TestRandom()
        let (rows, cols, ncols) = (70, 576, 5)
        for type in [GGMLType.q4_1, .q8_0, .q6_K] {
            let columns = type == .q6_K ? 512 : cols
            let bytes = TestModelBuilder.randomData(type, count: rows * columns, scale: 0.05, rng: &rng)
            let packed = try bytes.withUnsafeBytes { try PackedMatrix(type: type, bytes: $0, rows: rows, columns: columns) }
            let x = (0..<ncols * columns).map { _ in Float.random(in: -1...1, using: &rng) }
            var xq = [kiln_q8_block](repeating: kiln_q8_block(), count: ncols * columns / 32)
            kiln_quantize_rows(x, Int32(ncols), Int32(columns), &xq)
            var results: [[Float]] = []
            for isa in families {
                _ = use(isa)
                var y = [Float](repeating: .nan, count: ncols * rows)
                var matrix = packed.matrix
                y.withUnsafeMutableBufferPointer { out in
                    withUnsafePointer(to: &matrix) { m in
                        var product = kiln_product(w: m, bias: nil, y: out.baseAddress, ldy: Int32(rows))
                        kiln_matmul(pool, &product, 1, x, xq, Int32(ncols))
                    }
                }
                results.append(y)
            }
            for i in 1..<results.count {
                XCTAssertLessThanOrEqual(Self.relativeL2(results[i], results[0].map(Double.init)), 1e-5, "\(type)")
            }
            if results.count == 3 { XCTAssertEqual(results[1], results[2], "\(type): AVX2 and AVX-512 VNNI differ") }
        }
    }

    func testAttentionOverAScatteredPoolAgainstFloat64() {
        var rng = TestRandom()
        for isa in families {
            let family = use(isa)
            // Head sizes: a multiple of the vector width, and one that is not (the portable path inside the others).
            for (heads, kvHeads, headDim) in [(4, 2, 64), (6, 3, 16), (2, 1, 12)] {
                let blockSize = 16, blockCount = 12, kvWidth = kvHeads * headDim
                var keys = [UInt16](repeating: 0, count: blockCount * blockSize * kvWidth)
                var values = keys
                for i in keys.indices {
                    keys[i] = kiln_f32_to_f16(Float.random(in: -1...1, using: &rng))
                    values[i] = kiln_f32_to_f16(Float.random(in: -1...1, using: &rng))
                }
                // Three tokens of two sequences, their blocks out of order in the pool.
                let tables: [Int32] = [7, 2, 9, 0, /* second sequence */ 11, 4]
                let tableOffsets: [Int32] = [0, 4, 0]
                let positions: [Int32] = [52, 20, 5]
                let q = (0..<3 * heads * headDim).map { _ in Float.random(in: -2...2, using: &rng) }
                var out = [Float](repeating: .nan, count: q.count)
                var want = [Double](repeating: 0, count: q.count)
                let group = heads / kvHeads
                for t in 0..<3 {
                    for h in 0..<heads {
                        let g = h / group
                        let slots = (0...Int(positions[t])).map { p in
                            Int(tables[Int(tableOffsets[t]) + p / blockSize]) * blockSize + p % blockSize
                        }
                        let qh = (0..<headDim).map { Double(q[(t * heads + h) * headDim + $0]) }
                        let scores = slots.map { slot in
                            (0..<headDim).reduce(0.0) { $0 + qh[$1] * Double(kiln_f16_to_f32(keys[(slot * kvHeads + g) * headDim + $1])) }
                                / Double(headDim).squareRoot()
                        }
                        let m = scores.max() ?? 0
                        let e = scores.map { Foundation.exp($0 - m) }
                        let total = e.reduce(0, +)
                        for i in 0..<headDim {
                            want[(t * heads + h) * headDim + i] = zip(e, slots).reduce(0.0) {
                                $0 + $1.0 * Double(kiln_f16_to_f32(values[($1.1 * kvHeads + g) * headDim + i]))
                            } / total
                        }
                    }
                }
                keys.withUnsafeBufferPointer { k in
                    values.withUnsafeBufferPointer { v in
                        q.withUnsafeBufferPointer { qp in
                            positions.withUnsafeBufferPointer { pos in
                                tableOffsets.withUnsafeBufferPointer { offsets in
                                    tables.withUnsafeBufferPointer { tab in
                                        out.withUnsafeMutableBufferPointer { o in
                                            var args = kiln_attention_args(
                                                q: qp.baseAddress, keys: k.baseAddress, values: v.baseAddress, positions: pos.baseAddress,
                                                table_offsets: offsets.baseAddress, tables: tab.baseAddress, out: o.baseAddress, rows: 3,
                                                heads: Int32(heads), kv_heads: Int32(kvHeads), head_dim: Int32(headDim), block_size: Int32(blockSize))
                                            kiln_attention(pool, &args)
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                let what = "\(family) attention \(heads)/\(kvHeads) heads of \(headDim)"
                XCTAssertFalse(out.contains { !$0.isFinite }, "\(what): an output was not written")
                XCTAssertLessThanOrEqual(Self.relativeL2(out, want), 1e-4, what)
            }
        }
    }

    func testElementWiseOperationsAgainstFloat64() {
        var rng = TestRandom()
        for isa in families {
            let family = use(isa)
            for count in [8, 13, 1536, 4101] {
                var gate = (0..<count).map { _ in Float.random(in: -12...12, using: &rng) }
                let up = (0..<count).map { _ in Float.random(in: -3...3, using: &rng) }
                let want = zip(gate, up).map { g, u in Double(g) / (1 + Foundation.exp(-Double(g))) * Double(u) }
                kiln_swiglu(pool, &gate, up, count)
                XCTAssertLessThanOrEqual(Self.relativeL2(gate, want), 1e-4, "\(family) swiglu of \(count)")
            }
        }
        let (rows, width) = (3, 100)
        let x = (0..<rows * width).map { _ in Float.random(in: -4...4, using: &rng) }
        let weight = (0..<width).map { _ in Float.random(in: 0.5...1.5, using: &rng) }
        var out = [Float](repeating: .nan, count: x.count)
        kiln_rms_norm(x, weight, Int32(rows), Int32(width), 1e-5, &out)
        var want = [Double](repeating: 0, count: x.count)
        for r in 0..<rows {
            let row = x[r * width ..< (r + 1) * width].map(Double.init)
            let scale = 1 / (row.reduce(0) { $0 + $1 * $1 } / Double(width) + 1e-5).squareRoot()
            for i in 0..<width { want[r * width + i] = row[i] * scale * Double(weight[i]) }
        }
        XCTAssertLessThanOrEqual(Self.relativeL2(out, want), 1e-4, "rms norm")

        for neox in [Int32(0), 1] {
            let (heads, headDim, dims) = (3, 16, 12)
            let positions: [Int32] = [0, 9, 700]
            var v = (0..<3 * heads * headDim).map { _ in Float.random(in: -1...1, using: &rng) }
            var want = v.map(Double.init)
            for t in 0..<3 {
                for h in 0..<heads {
                    for i in 0..<dims / 2 {
                        let theta = Double(positions[t]) * pow(10000.0, -2 * Double(i) / Double(dims))
                        let base = (t * heads + h) * headDim
                        let (a, b) = neox == 1 ? (base + i, base + i + dims / 2) : (base + 2 * i, base + 2 * i + 1)
                        let x0 = Double(v[a]), x1 = Double(v[b])
                        want[a] = x0 * cos(theta) - x1 * sin(theta)
                        want[b] = x0 * sin(theta) + x1 * cos(theta)
                    }
                }
            }
            kiln_rope(&v, positions, 3, Int32(heads), Int32(headDim), Int32(dims), 10000, neox)
            XCTAssertLessThanOrEqual(Self.relativeL2(v, want), 1e-4, "rope neox=\(neox)")
        }
    }

    /// Quantized activations: d = max|x| / 127, every q within ±127 and their sums exact.
    func testActivationQuantization() {
        var rng = TestRandom()
        let x = (0..<96).map { i in i < 32 ? 0 : Float.random(in: -5...5, using: &rng) }
        var q = [kiln_q8_block](repeating: kiln_q8_block(), count: 3)
        kiln_quantize_rows(x, 1, 96, &q)
        XCTAssertEqual(q[0].d, 0)
        for b in 0..<3 {
            let values = withUnsafeBytes(of: q[b].q) { Array($0.bindMemory(to: Int8.self)) }
            XCTAssertEqual(q[b].sum0, values[0..<16].reduce(0) { $0 + Int32($1) })
            XCTAssertEqual(q[b].sum1, values[16..<32].reduce(0) { $0 + Int32($1) })
            for j in 0..<32 where b > 0 {
                XCTAssertLessThanOrEqual(abs(Float(values[j]) * q[b].d - x[b * 32 + j]), q[b].d / 2 * 1.0001)
            }
        }
    }

    /// Rounding is to the nearest integer with ties to even (as nearbyintf), and a NaN or infinite input
    /// becomes −127 rather than an undefined conversion.
    func testActivationQuantizationRoundsTiesToEvenAndClampsNaN() {
        var x = [Float](repeating: 0, count: 64)
        // amax 127: the scale is 1 and the values are quantized as they are.
        for (j, v) in [127, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, -126.5, 3.49].enumerated() { x[j] = Float(v) }
        x[32] = 2; x[33] = .nan; x[34] = 1
        var q = [kiln_q8_block](repeating: kiln_q8_block(), count: 2)
        kiln_quantize_rows(x, 1, 64, &q)
        let first = withUnsafeBytes(of: q[0].q) { Array($0.bindMemory(to: Int8.self)) }
        XCTAssertEqual(Array(first[0..<10]), [127, 0, 2, 2, 0, -2, -2, 126, -126, 3])
        let second = withUnsafeBytes(of: q[1].q) { Array($0.bindMemory(to: Int8.self)) }
        XCTAssertEqual(Array(second[0..<3]), [127, -127, 64])
        XCTAssertEqual(q[1].sum0, 64)
    }
}
