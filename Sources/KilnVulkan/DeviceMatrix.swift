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
///
/// A matrix larger than one buffer may be (the device's maxStorageBufferRange: 128 MiB on lavapipe, less than
/// a large vocabulary's embedding) is split into row slices of whole groups, each in buffers of its own; the
/// kernels run once per slice and write at the slice's row offset.
struct DeviceMatrix {
    /// Rows per storage group; the shaders' `blockIndex` (matmul_args.glsl, embed.comp) uses the same number.
    static let groupRows = 64

    /// Where block `block` of row `row` is stored, in blocks, for a matrix of `blocksPerRow` blocks per row.
    static func blockIndex(row: Int, block: Int, blocksPerRow: Int) -> Int {
        ((row / groupRows) * blocksPerRow + block) * groupRows + row % groupRows
    }

    /// The raw values are the embedding kernel's `format` (embed.comp) and index `Kernels`' matrix kernels: 0, 1, 2, ...
    enum Format: UInt32, CaseIterable {
        case f32 = 0, q8_0 = 1, q4_1 = 2, q8_sub16 = 3, f16 = 4, bf16 = 5

        /// Bytes of one 32-value block in the quants buffer.
        var quantBytes: Int {
            switch self {
            case .f32: 128
            case .f16, .bf16: 64
            case .q8_0, .q8_sub16: 32
            case .q4_1: 16
            }
        }
        /// Bytes of one block's scales: none, d, (d, m), or (scale, min) per 16 values, as float32.
        var scaleBytes: Int {
            switch self {
            case .f32, .f16, .bf16: 0
            case .q8_0: 4
            case .q4_1: 8
            case .q8_sub16: 16
            }
        }
    }

    /// The order in which the stacked tensors' rows are stored.
    enum RowOrder {
        /// Tensor after tensor, each in its own order.
        case stacked
        /// Two tensors of equal height (gate, up) interleaved four rows at a time: stored rows 8j ..< 8j + 4
        /// are the first's rows 4j ..< 4j + 4, stored rows 8j + 4 ..< 8j + 8 the second's. An invocation of
        /// the CPU family owns 8 stored rows, so it holds 4 whole (gate, up) pairs and can apply SwiGLU
        /// itself (SWIGLU_EPILOGUE in matmul_args.glsl).
        case gateUpInterleaved

        /// The stored row of stacked row `row` in a matrix of `rows` rows.
        func storedRow(_ row: Int, rows: Int) -> Int {
            switch self {
            case .stacked: return row
            case .gateUpInterleaved:
                let half = rows / 2, i = row % half
                return 8 * (i / 4) + (row < half ? 0 : 4) + i % 4
            }
        }
    }

    /// Rows `rowStart ..< rowStart + rows` of the matrix, in buffers of their own (the grouped layout, counted
    /// from `rowStart`).
    struct Slice {
        let rowStart: Int
        let rows: Int
        let quants: DeviceBuffer
        let scales: DeviceBuffer
    }

    let format: Format
    let rows: Int
    let columns: Int
    let slices: [Slice]

    /// Uploads the rows of `tensors` stacked in order (e.g. Q, K and V as one matrix) with `columns` inputs
    /// into `arena`. `maxBufferBytes` (default: the device's maxStorageBufferRange) bounds each slice's buffers.
    /// `order`: how their rows are stored (`RowOrder.gateUpInterleaved` takes two tensors of equal height, a
    /// multiple of 4).
    init(arena: MemoryArena, file: GGUFFile, tensors: [GGUFTensorInfo], label: String, maxBufferBytes: Int? = nil, order: RowOrder = .stacked) throws {
        let upload = Upload(arena: arena)
        try self.init(upload: upload, file: file, tensors: tensors, label: label, maxBufferBytes: maxBufferBytes, order: order)
        try upload.finish()
    }

    /// The same through `upload`, which the caller finishes.
    init(upload: Upload, file: GGUFFile, tensors: [GGUFTensorInfo], label: String, maxBufferBytes: Int? = nil, order: RowOrder = .stacked) throws {
        let arena = upload.arena
        let columns = tensors[0].rowLength
        precondition(tensors.allSatisfy { $0.rowLength == columns })
        let rows = tensors.reduce(0) { $0 + $1.rowCount }
        if case .gateUpInterleaved = order {
            precondition(tensors.count == 2 && tensors[0].rowCount == tensors[1].rowCount && tensors[0].rowCount % 4 == 0)
        }
        let types = Set(tensors.map(\.type))
        let format: Format = types == [.q8_0] ? .q8_0 : types == [.f16] ? .f16 : types == [.bf16] ? .bf16
            : types.isSubset(of: IntegerBlocks.fourBitTypes) ? .q4_1
            : types.isSubset(of: IntegerBlocks.types) ? .q8_sub16 : .f32
        let blocksPerRow = columns / 32
        self.format = format
        self.rows = rows
        self.columns = columns

        // Slices of whole groups (at least one: a group larger than a buffer is refused by the arena, by name).
        let limit = min(maxBufferBytes ?? arena.device.info.maxStorageBufferRange, arena.device.info.maxStorageBufferRange)
        let groupBytes = Self.groupRows * blocksPerRow * format.quantBytes
        let sliceRows = max(1, limit / groupBytes) * Self.groupRows
        // Each slice's buffers, and where the host writes their bytes (in place, or staging).
        var slices: [Slice] = []
        var written: [(quants: UnsafeMutableRawPointer, scales: UnsafeMutableRawPointer)] = []
        for start in stride(from: 0, to: rows, by: sliceRows) {
            let count = min(sliceRows, rows - start)
            // Storage covers whole groups; the padding rows are never read (kernels clamp rows to rows − 1).
            let storedBlocks = (count + Self.groupRows - 1) / Self.groupRows * Self.groupRows * blocksPerRow
            let name = slices.isEmpty && count == rows ? label : "\(label)[\(start)..<\(start + count)]"
            let quants = try upload.buffer(storedBlocks * format.quantBytes, label: name)
            let scales = try upload.buffer(storedBlocks * format.scaleBytes, label: name + ".scales")
            slices.append(Slice(rowStart: start, rows: count, quants: quants.buffer, scales: scales.buffer))
            written.append((quants.bytes, scales.bytes))
        }
        self.slices = slices

        // Where block `block` of global row `row` is written: its slice's bytes, at this block index.
        typealias Place = (quants: UnsafeMutableRawPointer, scales: UnsafeMutableRawPointer)
        func place(_ stackedRow: Int, _ block: Int) -> (Place, Int) {
            let row = order.storedRow(stackedRow, rows: rows)
            let i = row / sliceRows
            return (written[i], Self.blockIndex(row: row - slices[i].rowStart, block: block, blocksPerRow: blocksPerRow))
        }
        var row = 0  // the first row of the current tensor in the stack
        for t in tensors {
            let data = file.data(of: t)
            let blocks = t.elementCount / 32
            switch format {
            case .f32:
                let values = Dequantize.array(t.type, data, count: t.elementCount)
                values.withUnsafeBytes { v in
                    for b in 0..<blocks {
                        let (slice, at) = place(row + b / blocksPerRow, b % blocksPerRow)
                        (slice.quants + at * 128).copyMemory(from: v.baseAddress! + b * 128, byteCount: 128)
                    }
                }
            case .f16, .bf16:
                // The file's 16-bit values, 32 (64 bytes) per block, as they are.
                for b in 0..<blocks {
                    let (slice, at) = place(row + b / blocksPerRow, b % blocksPerRow)
                    (slice.quants + at * 64).copyMemory(from: data.baseAddress! + b * 64, byteCount: 64)
                }
            case .q8_0:
                for b in 0..<blocks {
                    let src = data.baseAddress! + b * 34
                    let (slice, at) = place(row + b / blocksPerRow, b % blocksPerRow)
                    slice.scales.assumingMemoryBound(to: Float.self)[at] = Float(Float16(bitPattern: src.loadUnaligned(as: UInt16.self)))
                    (slice.quants + at * 32).copyMemory(from: src + 2, byteCount: 32)
                }
            case .q4_1 where t.type == .q4_K:
                // Q4_K's sub-blocks of 32 are Q4_1 blocks: value = q * (d * scale) + -(dmin * min).
                IntegerBlocks.forEach(t.type, data, count: t.elementCount) { b, block in
                    let (slice, at) = place(row + b / blocksPerRow, b % blocksPerRow)
                    let s = slice.scales.assumingMemoryBound(to: Float.self), q = slice.quants.assumingMemoryBound(to: UInt8.self)
                    s[2 * at] = block.scale0
                    s[2 * at + 1] = block.min0
                    for j in 0..<16 { q[at * 16 + j] = UInt8(block.q[j]) | UInt8(block.q[j + 16]) << 4 }
                }
            case .q4_1:
                // Q4_1 as is; Q4_0 as Q4_1 with m = -8d (d * q - 8d is exact: both products fit a float).
                let stride = t.type.blockBytes, quantOffset = t.type == .q4_0 ? 2 : 4
                for b in 0..<blocks {
                    let src = data.baseAddress! + b * stride
                    let (slice, at) = place(row + b / blocksPerRow, b % blocksPerRow)
                    let s = slice.scales.assumingMemoryBound(to: Float.self)
                    let d = Float(Float16(bitPattern: src.loadUnaligned(as: UInt16.self)))
                    s[2 * at] = d
                    s[2 * at + 1] = t.type == .q4_0 ? -8 * d : Float(Float16(bitPattern: src.loadUnaligned(fromByteOffset: 2, as: UInt16.self)))
                    (slice.quants + at * 16).copyMemory(from: src + quantOffset, byteCount: 16)
                }
            case .q8_sub16:
                IntegerBlocks.forEach(t.type, data, count: t.elementCount) { b, block in
                    let (slice, at) = place(row + b / blocksPerRow, b % blocksPerRow)
                    let s = slice.scales.assumingMemoryBound(to: Float.self)
                    s[4 * at] = block.scale0; s[4 * at + 1] = block.min0; s[4 * at + 2] = block.scale1; s[4 * at + 3] = block.min1
                    block.q.withUnsafeBytes { (slice.quants + 32 * at).copyMemory(from: $0.baseAddress!, byteCount: 32) }
                }
            }
            row += t.rowCount
        }
    }
}
