import KilnModel

/// A weight matrix on the device in the layout its kernel reads fastest on a CPU-like device: quantized
/// blocks split into a 16-byte-aligned array of quants and a separate array of float32 scales.
/// Every quantized format stays quantized, in one of three layouts, each dequantized in registers by its
/// kernel: Q8_0 as is; 4-bit formats with one (scale, min) per 32 values (Q4_0, Q4_1, Q4_K) as Q4_1;
/// the rest (Q5_0, Q5_1, Q5_K, Q6_K, and stacks of mixed formats) as Q8_SUB16: 32 signed bytes and a
/// (scale, min) per 16 values (see `IntegerBlocks`). F16 and BF16 stay 16-bit (widened in registers, exactly);
/// F32, and stacks that mix float formats, are float32.
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

    /// The raw values are the embedding kernel's `format` (embed.comp) and index `Kernels`' matrix kernels: 0, 1, 2, ...
    enum Format: UInt32, CaseIterable { case f32 = 0, q8_0 = 1, q4_1 = 2, q8_sub16 = 3, f16 = 4, bf16 = 5 }
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
        let format: Format = types == [.q8_0] ? .q8_0 : types == [.f16] ? .f16 : types == [.bf16] ? .bf16
            : types.isSubset(of: IntegerBlocks.fourBitTypes) ? .q4_1
            : types.isSubset(of: IntegerBlocks.types) ? .q8_sub16 : .f32
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
        case .f16, .bf16:
            // The file's 16-bit values, 32 (64 bytes) per block, moved into the grouped layout.
            quants = try arena.buffer(storedBlocks * 64, label: label)
            scales = try arena.buffer(16, label: label + ".scales")
            var row = 0
            for t in tensors {
                let data = file.data(of: t)
                for b in 0..<t.elementCount / 32 {
                    let at = Self.blockIndex(row: row + b / blocksPerRow, block: b % blocksPerRow, blocksPerRow: blocksPerRow)
                    (quants.contents + at * 64).copyMemory(from: data.baseAddress! + b * 64, byteCount: 64)
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
                if t.type == .q4_K {
                    // Q4_K's sub-blocks of 32 are Q4_1 blocks: value = q * (d * scale) + -(dmin * min).
                    IntegerBlocks.forEach(t.type, data, count: t.elementCount) { b, block in
                        let at = Self.blockIndex(row: row + b / blocksPerRow, block: b % blocksPerRow, blocksPerRow: blocksPerRow)
                        s[2 * at] = block.scale0
                        s[2 * at + 1] = block.min0
                        for j in 0..<16 { q[at * 16 + j] = UInt8(block.q[j]) | UInt8(block.q[j + 16]) << 4 }
                    }
                    row += t.rowCount
                    continue
                }
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
        case .q8_sub16:
            quants = try arena.buffer(storedBlocks * 32, label: label)
            scales = try arena.buffer(storedBlocks * 16, label: label + ".scales")
            let q = quants.contents.assumingMemoryBound(to: Int8.self)
            let s = scales.contents.assumingMemoryBound(to: Float.self)
            var row = 0
            for t in tensors {
                IntegerBlocks.forEach(t.type, file.data(of: t), count: t.elementCount) { b, block in
                    let at = Self.blockIndex(row: row + b / blocksPerRow, block: b % blocksPerRow, blocksPerRow: blocksPerRow)
                    s[4 * at] = block.scale0; s[4 * at + 1] = block.min0; s[4 * at + 2] = block.scale1; s[4 * at + 3] = block.min1
                    block.q.withUnsafeBufferPointer { (q + 32 * at).initialize(from: $0.baseAddress!, count: 32) }
                }
                row += t.rowCount
            }
        }
    }
}
