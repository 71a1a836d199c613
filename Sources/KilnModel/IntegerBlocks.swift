/// GGUF's integer-quantized formats read as blocks of 32 small integers with a (scale, min) per 16 values:
/// value j of a block is `Float(q[j]) * scale[h] + min[h]`, h = j / 16. Scales and mins are folded with the
/// float operations ggml and the Python `gguf` package use, so that one expression gives their values bit for
/// bit; formats without a min get −0.0, the one addend that leaves every float (signed zeros included) as it
/// is. `Dequantize` evaluates it on the CPU, and the Vulkan kernels dequantize the same integers in registers
/// (the Q4_1 and Q8_SUB16 layouts of `DeviceMatrix`), so both read one description of the bit layouts.
public enum IntegerBlocks {
    /// The formats this reads.
    public static let types: Set<GGMLType> = [.q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q4_K, .q5_K, .q6_K]
    /// The formats whose integers are 4-bit and unsigned (Q4_0 after adding 8 back) with one (scale, min) per
    /// 32 values: Q4_1's layout.
    public static let fourBitTypes: Set<GGMLType> = [.q4_0, .q4_1, .q4_K]

    /// One block: 32 integers and (scale, min) for values 0..15 and 16..31.
    public struct Block {
        public var q = [Int8](repeating: 0, count: 32)
        public var scale0: Float = 0, min0: Float = 0, scale1: Float = 0, min1: Float = 0
    }

    /// The "no min" addend: x + (−0.0) == x for every x, −0.0 included.
    static let noMin: Float = -0.0

    /// Calls `body(index, block)` for every 32-value block of `count` values of `type` at `data`, in order.
    /// The same `Block` is reused between calls.
    public static func forEach(_ type: GGMLType, _ data: UnsafeRawBufferPointer, count: Int, _ body: (Int, inout Block) -> Void) {
        guard let base = data.baseAddress else { return }
        var block = Block()
        func half(_ p: UnsafeRawPointer, _ offset: Int) -> Float { Float(Float16(bitPattern: p.loadUnaligned(fromByteOffset: offset, as: UInt16.self))) }
        func byte(_ p: UnsafeRawPointer, _ offset: Int) -> UInt8 { p.load(fromByteOffset: offset, as: UInt8.self) }
        func both(_ scale: Float, _ min: Float) { block.scale0 = scale; block.min0 = min; block.scale1 = scale; block.min1 = min }
        switch type {
        case .q4_0, .q4_1, .q5_0, .q5_1, .q8_0:
            for b in 0..<count / 32 {
                let p = base + b * type.blockBytes
                switch type {
                case .q4_0:  // d * (q - 8)
                    both(half(p, 0), noMin)
                    for j in 0..<16 { let v = byte(p, 2 + j); block.q[j] = Int8(Int(v & 0x0F) - 8); block.q[j + 16] = Int8(Int(v >> 4) - 8) }
                case .q4_1:  // d * q + m
                    both(half(p, 0), half(p, 2))
                    for j in 0..<16 { let v = byte(p, 4 + j); block.q[j] = Int8(v & 0x0F); block.q[j + 16] = Int8(v >> 4) }
                case .q5_0, .q5_1:  // d * (q - 16), or d * q + m; the fifth bit of value j is bit j of qh
                    let legacy = type == .q5_0
                    both(half(p, 0), legacy ? noMin : half(p, 2))
                    let qh = UInt32(littleEndian: p.loadUnaligned(fromByteOffset: legacy ? 2 : 4, as: UInt32.self))
                    let quants = legacy ? 6 : 8, bias = legacy ? 16 : 0
                    for j in 0..<16 {
                        let v = byte(p, quants + j)
                        block.q[j] = Int8((Int(v & 0x0F) | Int((qh >> UInt32(j)) & 1) << 4) - bias)
                        block.q[j + 16] = Int8((Int(v >> 4) | Int((qh >> UInt32(j + 16)) & 1) << 4) - bias)
                    }
                default:  // .q8_0: q * d
                    both(half(p, 0), noMin)
                    for j in 0..<32 { block.q[j] = p.load(fromByteOffset: 2 + j, as: Int8.self) }
                }
                body(b, &block)
            }
        case .q4_K, .q5_K:
            // 256 values: d, dmin, 12 bytes of 6-bit scales and mins, (Q5_K: 32 bytes of fifth bits,) nibbles.
            let five = type == .q5_K
            for s in 0..<count / 256 {
                let p = base + s * type.blockBytes
                let d = half(p, 0), dmin = half(p, 2)
                let qh = p + 16, qs = p + (five ? 48 : 16)
                for sub in 0..<8 {
                    let (sc, m) = scaleMin(p + 4, sub)
                    both(d * sc, -(dmin * m))  // scale * q - minimum, as q * scale + (-minimum)
                    let run = qs + (sub / 2) * 32
                    let shift: UInt8 = sub % 2 == 0 ? 0 : 4
                    for l in 0..<32 {
                        var v = (byte(run, l) >> shift) & 0x0F
                        if five { v |= ((byte(qh, l) >> UInt8(sub)) & 1) << 4 }
                        block.q[l] = Int8(v)
                    }
                    body(s * 8 + sub, &block)
                }
            }
        case .q6_K:
            // 256 values: 128 bytes of low nibbles, 64 of 2-bit high parts, 16 signed scales (one per 16), d.
            var values = [Int8](repeating: 0, count: 256)
            for s in 0..<count / 256 {
                let p = base + s * type.blockBytes
                let ql = p, qh = p + 128, scales = p + 192
                let d = half(p, 208)
                for h in 0..<2 {
                    let l0 = ql + h * 64, h0 = qh + h * 32
                    for l in 0..<32 {
                        let hb = byte(h0, l), at = h * 128 + l
                        values[at] = Int8(Int((byte(l0, l) & 0x0F) | (hb & 3) << 4) - 32)
                        values[at + 32] = Int8(Int((byte(l0, l + 32) & 0x0F) | ((hb >> 2) & 3) << 4) - 32)
                        values[at + 64] = Int8(Int((byte(l0, l) >> 4) | ((hb >> 4) & 3) << 4) - 32)
                        values[at + 96] = Int8(Int((byte(l0, l + 32) >> 4) | ((hb >> 6) & 3) << 4) - 32)
                    }
                }
                for sub in 0..<8 {
                    // d * scale * q, evaluated left to right in Dequantize: (d * scale) is the block's scale.
                    block.scale0 = d * Float(scales.load(fromByteOffset: 2 * sub, as: Int8.self)); block.min0 = noMin
                    block.scale1 = d * Float(scales.load(fromByteOffset: 2 * sub + 1, as: Int8.self)); block.min1 = noMin
                    for l in 0..<32 { block.q[l] = values[sub * 32 + l] }
                    body(s * 8 + sub, &block)
                }
            }
        default:
            preconditionFailure("IntegerBlocks does not read \(type)")
        }
    }

    /// The 6-bit scale and min of sub-block `j` (of 8) from the 12 packed bytes of Q4_K / Q5_K.
    static func scaleMin(_ scales: UnsafeRawPointer, _ j: Int) -> (Float, Float) {
        func byte(_ i: Int) -> UInt8 { scales.load(fromByteOffset: i, as: UInt8.self) }
        if j < 4 { return (Float(byte(j) & 63), Float(byte(j + 4) & 63)) }
        return (Float((byte(j + 4) & 0x0F) | ((byte(j - 4) >> 6) << 4)), Float((byte(j + 4) >> 4) | ((byte(j) >> 6) << 4)))
    }
}
