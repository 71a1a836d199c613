import CKilnCPU
import KilnModel

/// A weight matrix in the layout the CPU kernels read, repacked once at load without changing a single
/// dequantized value:
/// - Q4_1 as it is, and Q4_0 in Q4_1's layout with min −8·d (exact in f16): `KILN_W_Q4`, 20 bytes per 32;
/// - Q8_0 as it is: `KILN_W_Q8`, 34 bytes per 32;
/// - every other integer format as 32 signed bytes with f32 (scale, min) per 16 values, folded as ggml folds
///   them (`IntegerBlocks`): `KILN_W_Q8S`, 48 bytes per 32;
/// - F32, F16 and BF16 as f32.
public final class PackedMatrix: @unchecked Sendable {  // immutable after init; the storage is never written again
    public let rows: Int
    public let columns: Int
    /// The source format, for logs.
    public let sourceType: GGMLType
    let layout: kiln_wtype
    private let storage: UnsafeMutableRawPointer
    let rowBytes: Int

    /// Repacks `rows` rows of `columns` values of `type` at `bytes`.
    public init(type: GGMLType, bytes: UnsafeRawBufferPointer, rows: Int, columns: Int) throws {
        guard rows > 0, columns > 0, columns % 32 == 0 else {
            throw CPUBackendError("a \(rows) × \(columns) matrix: the CPU kernels need rows of a multiple of 32 values")
        }
        guard bytes.count >= type.byteCount(elements: rows * columns), let source = bytes.baseAddress else {
            throw CPUBackendError("a \(type) matrix of \(rows) × \(columns) is larger than its data")
        }
        self.rows = rows
        self.columns = columns
        self.sourceType = type
        let blocks = rows * columns / 32
        var layout: kiln_wtype
        switch type {
        case .q4_1, .q4_0: layout = KILN_W_Q4
        case .q8_0: layout = KILN_W_Q8
        case .f32, .f16, .bf16: layout = KILN_W_F32
        default: layout = KILN_W_Q8S
        }
        if type == .q4_0 && !Self.q4_0HasExactMins(source, blocks: blocks) { layout = KILN_W_Q8S }
        self.layout = layout
        rowBytes = columns / 32 * kiln_wtype_block_bytes(layout)
        storage = UnsafeMutableRawPointer.allocate(byteCount: rows * rowBytes, alignment: 64)

        switch (type, layout) {
        case (.q4_1, _), (.q8_0, _):
            storage.copyMemory(from: source, byteCount: rows * rowBytes)
        case (.q4_0, KILN_W_Q4):
            for b in 0..<blocks {
                let from = source + b * 18, to = storage + b * 20
                let d = from.loadUnaligned(as: UInt16.self)
                to.storeBytes(of: d, toByteOffset: 0, as: UInt16.self)
                to.storeBytes(of: Float16(-8 * Float(Float16(bitPattern: d))).bitPattern, toByteOffset: 2, as: UInt16.self)
                (to + 4).copyMemory(from: from + 2, byteCount: 16)
            }
        case (_, KILN_W_F32):
            Dequantize.run(type, from: source, count: rows * columns, into: storage.bindMemory(to: Float.self, capacity: rows * columns))
        default:
            let out = storage
            IntegerBlocks.forEach(type, UnsafeRawBufferPointer(start: source, count: type.byteCount(elements: rows * columns)),
                                  count: rows * columns) { b, block in
                let to = out + b * 48
                to.storeBytes(of: block.scale0, toByteOffset: 0, as: Float.self)
                to.storeBytes(of: block.scale1, toByteOffset: 4, as: Float.self)
                to.storeBytes(of: block.min0, toByteOffset: 8, as: Float.self)
                to.storeBytes(of: block.min1, toByteOffset: 12, as: Float.self)
                for j in 0..<32 { to.storeBytes(of: block.q[j], toByteOffset: 16 + j, as: Int8.self) }
            }
        }
    }

    deinit { storage.deallocate() }

    /// Q4_0's d·(q − 8) is d·q + m with m = −8·d when −8·d is an f16: always, unless d is within a factor of
    /// 8 of f16's largest value.
    private static func q4_0HasExactMins(_ source: UnsafeRawPointer, blocks: Int) -> Bool {
        for b in 0..<blocks {
            let d = Float(Float16(bitPattern: (source + b * 18).loadUnaligned(as: UInt16.self)))
            if Float(Float16(-8 * d)) != -8 * d { return false }
        }
        return true
    }

    /// The C view of the matrix (valid while `self` lives).
    public var matrix: kiln_matrix {
        kiln_matrix(data: storage, type: Int32(layout.rawValue), rows: Int32(rows), cols: Int32(columns), row_bytes: rowBytes)
    }

    /// Bytes the kernels read per product with one column.
    public var byteCount: Int { rows * rowBytes }

    /// Row `r`'s values, as `Dequantize` gives them (for the token embedding).
    func dequantizeRow(_ r: Int, into out: UnsafeMutablePointer<Float>) {
        let row = UnsafeRawPointer(storage) + r * rowBytes
        func half(_ p: UnsafeRawPointer) -> Float { Float(Float16(bitPattern: p.loadUnaligned(as: UInt16.self))) }
        for b in 0..<columns / 32 {
            let o = out + b * 32
            switch layout {
            case KILN_W_Q4:
                let p = row + b * 20, d = half(p), m = half(p + 2)
                for j in 0..<16 {
                    let v = p.load(fromByteOffset: 4 + j, as: UInt8.self)
                    o[j] = Float(v & 15) * d + m
                    o[j + 16] = Float(v >> 4) * d + m
                }
            case KILN_W_Q8:
                let p = row + b * 34, d = half(p)
                for j in 0..<32 { o[j] = Float(p.load(fromByteOffset: 2 + j, as: Int8.self)) * d + IntegerBlocksNoMin.value }
            case KILN_W_Q8S:
                let p = row + b * 48
                let s = [p.loadUnaligned(as: Float.self), p.loadUnaligned(fromByteOffset: 4, as: Float.self)]
                let m = [p.loadUnaligned(fromByteOffset: 8, as: Float.self), p.loadUnaligned(fromByteOffset: 12, as: Float.self)]
                for j in 0..<32 { o[j] = Float(p.load(fromByteOffset: 16 + j, as: Int8.self)) * s[j / 16] + m[j / 16] }
            default:
                (UnsafeMutableRawPointer(o)).copyMemory(from: row + b * 128, byteCount: 128)
            }
        }
    }
}

/// The "no min" addend of formats without one (x + (−0.0) == x for every x): written out so that the
/// expression is `Dequantize`'s.
enum IntegerBlocksNoMin {
    static let value: Float = -0.0
}

/// A model or batch the CPU backend cannot run, and why.
public struct CPUBackendError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
