import CKilnCPU
import KilnModel

/// A weight matrix in the layout the CPU kernels read, repacked once at load without changing a dequantized
/// value:
/// - Q4_1, and Q4_0 with min −8·d (exact in f32): `KILN_W_Q4`, rows interleaved by sixteen: per block of 32,
///   the group's sixteen scales and mins as f32 and its 256 bytes of nibbles arranged so that lane j (4 bytes)
///   of each 64-byte vector holds row j's four values (24 bytes per row and block);
/// - Q8_0: `KILN_W_Q8`, likewise interleaved: sixteen f32 scales and 512 bytes q + 128 (unsigned, for
///   vpdpbusd) (36 bytes per row and block);
/// - every other integer format as 32 signed bytes with f32 (scale, min) per 16 values, folded as ggml folds
///   them (`IntegerBlocks`): `KILN_W_Q8S`, a row at a time, 48 bytes per 32;
/// - F32, F16 and BF16 as f32.
/// The interleaved layouts pad the last group with zero rows.
/// (The byte offsets here are the C kernels' `KILN_GROUP_ROWS` = 16 layout, kiln_cpu.h.)
public final class PackedMatrix: @unchecked Sendable {  // immutable after init: the storage is never written again
    public let rows: Int
    public let columns: Int
    /// The source format, for logs.
    public let sourceType: GGMLType
    let layout: kiln_wtype
    private let storage: UnsafeMutableRawPointer
    /// Bytes from one row (or group of sixteen rows, for the interleaved layouts) to the next.
    let stride: Int
    private let storageBytes: Int

    /// Rows per group of the interleaved layouts (the C kernels' KILN_GROUP_ROWS).
    static let groupRows = 16

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
        let nb = columns / 32
        switch type {
        case .q4_1, .q4_0: layout = KILN_W_Q4
        case .q8_0: layout = KILN_W_Q8
        case .f32, .f16, .bf16: layout = KILN_W_F32
        default: layout = KILN_W_Q8S
        }
        let groups = (rows + Self.groupRows - 1) / Self.groupRows
        switch layout {
        case KILN_W_Q4: stride = nb * Self.groupRows * 24; storageBytes = groups * stride
        case KILN_W_Q8: stride = nb * Self.groupRows * 36; storageBytes = groups * stride
        default: stride = nb * kiln_wtype_block_bytes(layout); storageBytes = rows * stride
        }
        storage = UnsafeMutableRawPointer.allocate(byteCount: storageBytes, alignment: 64)
        storage.initializeMemory(as: UInt8.self, repeating: 0, count: storageBytes)

        func half(_ p: UnsafeRawPointer) -> Float { Float(Float16(bitPattern: p.loadUnaligned(as: UInt16.self))) }
        switch layout {
        case KILN_W_Q4:
            let blockBytes = type == .q4_1 ? 20 : 18
            for r in 0..<rows {
                let (g, j) = (r / Self.groupRows, r % Self.groupRows)
                for b in 0..<nb {
                    let from = source + (r * nb + b) * blockBytes
                    let to = storage + g * stride + b * Self.groupRows * 24
                    let d = half(from)
                    let m = type == .q4_1 ? half(from + 2) : -8 * d
                    let qs = from + (type == .q4_1 ? 4 : 2)
                    to.storeBytes(of: d, toByteOffset: 4 * j, as: Float.self)
                    to.storeBytes(of: m, toByteOffset: 64 + 4 * j, as: Float.self)
                    func value(_ i: Int) -> UInt8 {
                        let byte = qs.load(fromByteOffset: i % 16, as: UInt8.self)
                        return i < 16 ? byte & 15 : byte >> 4
                    }
                    for v in 0..<4 {
                        for k in 0..<4 {
                            to.storeBytes(of: value(4 * v + k) | value(16 + 4 * v + k) << 4, toByteOffset: 128 + 64 * v + 4 * j + k, as: UInt8.self)
                        }
                    }
                }
            }
        case KILN_W_Q8:
            for r in 0..<rows {
                let (g, j) = (r / Self.groupRows, r % Self.groupRows)
                for b in 0..<nb {
                    let from = source + (r * nb + b) * 34
                    let to = storage + g * stride + b * Self.groupRows * 36
                    to.storeBytes(of: half(from), toByteOffset: 4 * j, as: Float.self)
                    for t in 0..<8 {
                        for k in 0..<4 {
                            to.storeBytes(of: from.load(fromByteOffset: 2 + 4 * t + k, as: UInt8.self) ^ 0x80, toByteOffset: 64 + 64 * t + 4 * j + k, as: UInt8.self)
                        }
                    }
                }
            }
        case KILN_W_F32:
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

    /// The C view of the matrix (valid while `self` lives).
    public var matrix: kiln_matrix {
        kiln_matrix(data: storage, type: Int32(layout.rawValue), rows: Int32(rows), cols: Int32(columns), stride: stride)
    }

    /// Bytes the kernels read per product with one column.
    public var byteCount: Int { storageBytes }

    /// Row `r`'s values, as `Dequantize` gives them (the token embedding's rows). Q4_0's zeros may come
    /// out as +0 where `Dequantize` gives −0.
    public func dequantizeRow(_ r: Int, into out: UnsafeMutablePointer<Float>) {
        let (g, j) = (r / Self.groupRows, r % Self.groupRows)
        for b in 0..<columns / 32 {
            let o = out + b * 32
            switch layout {
            case KILN_W_Q4:
                let p = UnsafeRawPointer(storage) + g * stride + b * Self.groupRows * 24
                let d = p.load(fromByteOffset: 4 * j, as: Float.self), m = p.load(fromByteOffset: 64 + 4 * j, as: Float.self)
                for v in 0..<4 {
                    for k in 0..<4 {
                        let byte = p.load(fromByteOffset: 128 + 64 * v + 4 * j + k, as: UInt8.self)
                        o[4 * v + k] = Float(byte & 15) * d + m
                        o[16 + 4 * v + k] = Float(byte >> 4) * d + m
                    }
                }
            case KILN_W_Q8:
                let p = UnsafeRawPointer(storage) + g * stride + b * Self.groupRows * 36
                let d = p.load(fromByteOffset: 4 * j, as: Float.self)
                for t in 0..<8 {
                    for k in 0..<4 {
                        let q = Int8(bitPattern: p.load(fromByteOffset: 64 + 64 * t + 4 * j + k, as: UInt8.self) ^ 0x80)
                        o[4 * t + k] = Float(q) * d + noMin
                    }
                }
            case KILN_W_Q8S:
                let p = UnsafeRawPointer(storage) + r * stride + b * 48
                let s = [p.load(as: Float.self), p.load(fromByteOffset: 4, as: Float.self)]
                let m = [p.load(fromByteOffset: 8, as: Float.self), p.load(fromByteOffset: 12, as: Float.self)]
                for i in 0..<32 { o[i] = Float(p.load(fromByteOffset: 16 + i, as: Int8.self)) * s[i / 16] + m[i / 16] }
            default:
                UnsafeMutableRawPointer(o).copyMemory(from: UnsafeRawPointer(storage) + r * stride + b * 128, byteCount: 128)
            }
        }
    }
}

/// The "no min" addend of formats without one (x + (−0.0) == x for every x): written out so that the
/// expression is `Dequantize`'s.
private let noMin: Float = -0.0

/// A model or batch the CPU backend cannot run, and why.
public struct CPUBackendError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
