import KilnModel

/// A weight matrix on the device in the layout its kernel reads fastest on a CPU-like device: quantized
/// blocks split into a 16-byte-aligned array of quants and a separate array of float32 scales.
/// Q4_1 and Q8_0 stay quantized (Q4_0 becomes Q4_1 with m = −8d); other formats are expanded to float32.
///
/// Blocks are stored in row groups of `groupRows` (one workgroup's rows: 8 lanes × 8 rows): block b of every
/// row in a group lies side by side, then block b + 1 (see `blockIndex`). A workgroup then streams one
/// contiguous 1 KiB run per step instead of 64 rows' worth of 16-byte strides, which a CPU's prefetchers
/// follow: 1.6× on matrices that are not in cache (the 49,152-row vocabulary projection 10.5 → 6.5 ms).
struct DeviceMatrix {
    /// Rows per storage group; the shaders' `blockIndex` (matmul_args.glsl, embed.comp) uses the same number.
    static let groupRows = 64

    /// Where block `block` of row `row` is stored, in blocks, for a matrix of `blocksPerRow` blocks per row.
    static func blockIndex(row: Int, block: Int, blocksPerRow: Int) -> Int {
        ((row / groupRows) * blocksPerRow + block) * groupRows + row % groupRows
    }

    enum Format: UInt32 { case f32 = 0, q8_0 = 1, q4_1 = 2 }
    let format: Format
    let rows: Int
    let columns: Int
    let quants: DeviceBuffer
    let scales: DeviceBuffer

    /// Uploads the rows of `tensors` stacked in order (e.g. Q, K and V as one matrix) with `columns` inputs.
    init(arena: MemoryArena, file: GGUFFile, tensors: [GGUFTensorInfo], label: String) throws {
        let columns = tensors[0].rowLength
        precondition(tensors.allSatisfy { $0.rowLength == columns })
        let rows = tensors.reduce(0) { $0 + $1.rowCount }
        let types = Set(tensors.map(\.type))
        let format: Format = types == [.q4_1] || types == [.q4_0] || types == [.q4_0, .q4_1] ? .q4_1
            : types == [.q8_0] ? .q8_0 : .f32
        let blocksPerRow = columns / 32
        // Storage covers whole groups; the padding rows are never read (kernels clamp rows to rows − 1).
        let storedBlocks = (rows + Self.groupRows - 1) / Self.groupRows * Self.groupRows * blocksPerRow
        self.format = format
        self.rows = rows
        self.columns = columns
        switch format {
        case .f32:
            quants = try arena.buffer(storedBlocks * 32 * 4, label: label)
            scales = try arena.buffer(16, label: label + ".scales")
            let q = quants.contents.assumingMemoryBound(to: Float.self)
            var row = 0
            for t in tensors {
                let values = Dequantize.array(t.type, file.data(of: t), count: t.elementCount)
                values.withUnsafeBufferPointer { v in
                    for r in 0..<t.rowCount {
                        for b in 0..<blocksPerRow {
                            let at = Self.blockIndex(row: row + r, block: b, blocksPerRow: blocksPerRow) * 32
                            (q + at).initialize(from: v.baseAddress! + r * columns + b * 32, count: 32)
                        }
                    }
                }
                row += t.rowCount
            }
        case .q8_0:
            quants = try arena.buffer(storedBlocks * 32, label: label)
            scales = try arena.buffer(storedBlocks * 4, label: label + ".scales")
            let q = quants.contents.assumingMemoryBound(to: UInt8.self)
            let s = scales.contents.assumingMemoryBound(to: Float.self)
            var row = 0
            for t in tensors {
                let data = file.data(of: t)
                for b in 0..<t.elementCount / 32 {
                    let src = data.baseAddress! + b * 34
                    let block = Self.blockIndex(row: row + b / blocksPerRow, block: b % blocksPerRow, blocksPerRow: blocksPerRow)
                    s[block] = Float(Float16(bitPattern: src.loadUnaligned(as: UInt16.self)))
                    (q + block * 32).initialize(from: src.assumingMemoryBound(to: UInt8.self) + 2, count: 32)
                }
                row += t.rowCount
            }
        case .q4_1:
            quants = try arena.buffer(storedBlocks * 16, label: label)
            scales = try arena.buffer(storedBlocks * 8, label: label + ".scales")
            let q = quants.contents.assumingMemoryBound(to: UInt8.self)
            let s = scales.contents.assumingMemoryBound(to: Float.self)
            var row = 0
            for t in tensors {
                let data = file.data(of: t)
                let stride = t.type.blockBytes, quantOffset = t.type == .q4_0 ? 2 : 4
                for b in 0..<t.elementCount / 32 {
                    let src = data.baseAddress! + b * stride
                    let block = Self.blockIndex(row: row + b / blocksPerRow, block: b % blocksPerRow, blocksPerRow: blocksPerRow)
                    let d = Float(Float16(bitPattern: src.loadUnaligned(as: UInt16.self)))
                    let m = t.type == .q4_0 ? -8 * d : Float(Float16(bitPattern: src.loadUnaligned(fromByteOffset: 2, as: UInt16.self)))
                    s[2 * block] = d
                    s[2 * block + 1] = m
                    (q + block * 16).initialize(from: src.assumingMemoryBound(to: UInt8.self) + quantOffset, count: 16)
                }
                row += t.rowCount
            }
        }
    }
}
