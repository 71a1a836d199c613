/// Dequantization of every GGML type Kiln reads, block by block, into float32. The arithmetic follows the
/// order ggml and the Python `gguf` package use (scale × quant − min, scales folded first), so results match
/// them exactly, not just closely.
public enum Dequantize {
    /// Converts `count` elements (a whole number of blocks) of `type` at `source` into `destination`.
    public static func run(_ type: GGMLType, from source: UnsafeRawPointer, count: Int,
                           into destination: UnsafeMutablePointer<Float>) {
        precondition(count % type.blockSize == 0, "dequantize: \(count) elements is not whole blocks of \(type)")
        let blocks = count / type.blockSize
        for b in 0..<blocks {
            let block = source + b * type.blockBytes
            let out = destination + b * type.blockSize
            switch type {
            case .f32: out.pointee = Float(bitPattern: block.loadUnaligned(as: UInt32.self))
            case .f16: out.pointee = half(block, 0)
            case .bf16: out.pointee = Float(bitPattern: UInt32(block.loadUnaligned(as: UInt16.self)) << 16)
            case .q4_0: q4_0(block, out)
            case .q4_1: q4_1(block, out)
            case .q5_0: q5_0(block, out)
            case .q5_1: q5_1(block, out)
            case .q8_0: q8_0(block, out)
            case .q4_K: q4_K(block, out)
            case .q5_K: q5_K(block, out)
            case .q6_K: q6_K(block, out)
            }
        }
    }

    /// Dequantizes a whole buffer into a new array.
    public static func array(_ type: GGMLType, _ bytes: UnsafeRawBufferPointer, count: Int) -> [Float] {
        precondition(type.byteCount(elements: count) <= bytes.count)
        return [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            if let base = bytes.baseAddress, let out = buffer.baseAddress { run(type, from: base, count: count, into: out) }
            initialized = count
        }
    }

    @inline(__always) static func half(_ p: UnsafeRawPointer, _ offset: Int) -> Float {
        Float(Float16(bitPattern: p.loadUnaligned(fromByteOffset: offset, as: UInt16.self)))
    }

    @inline(__always) static func byte(_ p: UnsafeRawPointer, _ offset: Int) -> UInt8 {
        p.load(fromByteOffset: offset, as: UInt8.self)
    }

    // 32 values: f16 scale, 16 bytes of 4-bit quants (low nibbles are values 0..15, high nibbles 16..31).
    static func q4_0(_ b: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = half(b, 0)
        for j in 0..<16 {
            let q = byte(b, 2 + j)
            y[j] = d * Float(Int(q & 0x0F) - 8)
            y[j + 16] = d * Float(Int(q >> 4) - 8)
        }
    }

    static func q4_1(_ b: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = half(b, 0), m = half(b, 2)
        for j in 0..<16 {
            let q = byte(b, 4 + j)
            y[j] = d * Float(q & 0x0F) + m
            y[j + 16] = d * Float(q >> 4) + m
        }
    }

    // The fifth bit of value j is bit j of the 32-bit qh.
    static func q5_0(_ b: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = half(b, 0)
        let qh = UInt32(littleEndian: b.loadUnaligned(fromByteOffset: 2, as: UInt32.self))
        for j in 0..<16 {
            let q = byte(b, 6 + j)
            let lo = Int(q & 0x0F) | Int((qh >> UInt32(j)) & 1) << 4
            let hi = Int(q >> 4) | Int((qh >> UInt32(j + 16)) & 1) << 4
            y[j] = d * Float(lo - 16)
            y[j + 16] = d * Float(hi - 16)
        }
    }

    static func q5_1(_ b: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = half(b, 0), m = half(b, 2)
        let qh = UInt32(littleEndian: b.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
        for j in 0..<16 {
            let q = byte(b, 8 + j)
            let lo = Int(q & 0x0F) | Int((qh >> UInt32(j)) & 1) << 4
            let hi = Int(q >> 4) | Int((qh >> UInt32(j + 16)) & 1) << 4
            y[j] = d * Float(lo) + m
            y[j + 16] = d * Float(hi) + m
        }
    }

    static func q8_0(_ b: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = half(b, 0)
        for j in 0..<32 { y[j] = Float(b.load(fromByteOffset: 2 + j, as: Int8.self)) * d }
    }

    /// The 6-bit scale and min of sub-block `j` (of 8) from the 12 packed bytes of Q4_K / Q5_K.
    @inline(__always) public static func scaleMin(_ scales: UnsafeRawPointer, _ j: Int) -> (Float, Float) {
        if j < 4 {
            return (Float(byte(scales, j) & 63), Float(byte(scales, j + 4) & 63))
        }
        let sc = (byte(scales, j + 4) & 0x0F) | ((byte(scales, j - 4) >> 6) << 4)
        let m = (byte(scales, j + 4) >> 4) | ((byte(scales, j) >> 6) << 4)
        return (Float(sc), Float(m))
    }

    // 256 values: f16 d, f16 dmin, 12 bytes of scales/mins, 128 bytes of nibbles (each 32-byte run holds two
    // sub-blocks: low nibbles first).
    static func q4_K(_ b: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = half(b, 0), dmin = half(b, 2)
        let scales = b + 4, qs = b + 16
        for sub in 0..<8 {
            let (sc, m) = scaleMin(scales, sub)
            let scale = d * sc, minimum = dmin * m
            let run = qs + (sub / 2) * 32
            let shift: UInt8 = sub % 2 == 0 ? 0 : 4
            for l in 0..<32 {
                y[sub * 32 + l] = scale * Float((byte(run, l) >> shift) & 0x0F) - minimum
            }
        }
    }

    // Q4_K plus 32 bytes of high bits: bit `sub` of qh[l] is the fifth bit of value l of sub-block `sub`.
    static func q5_K(_ b: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = half(b, 0), dmin = half(b, 2)
        let scales = b + 4, qh = b + 16, qs = b + 48
        for sub in 0..<8 {
            let (sc, m) = scaleMin(scales, sub)
            let scale = d * sc, minimum = dmin * m
            let run = qs + (sub / 2) * 32
            let shift: UInt8 = sub % 2 == 0 ? 0 : 4
            for l in 0..<32 {
                let q = ((byte(run, l) >> shift) & 0x0F) | (((byte(qh, l) >> UInt8(sub)) & 1) << 4)
                y[sub * 32 + l] = scale * Float(q) - minimum
            }
        }
    }

    // 256 values: 128 bytes low nibbles, 64 bytes of 2-bit high parts, 16 signed 8-bit scales (one per 16
    // values), f16 d. Each 128-value half uses 64 bytes of ql and 32 of qh.
    static func q6_K(_ b: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let ql = b, qh = b + 128, scales = b + 192
        let d = half(b, 208)
        for half in 0..<2 {
            let l0 = ql + half * 64, h0 = qh + half * 32
            for l in 0..<32 {
                let h = byte(h0, l)
                let q1 = Int((byte(l0, l) & 0x0F) | ((h >> 0) & 3) << 4) - 32
                let q2 = Int((byte(l0, l + 32) & 0x0F) | ((h >> 2) & 3) << 4) - 32
                let q3 = Int((byte(l0, l) >> 4) | ((h >> 4) & 3) << 4) - 32
                let q4 = Int((byte(l0, l + 32) >> 4) | ((h >> 6) & 3) << 4) - 32
                let base = half * 128 + l
                y[base] = d * Float(scales.load(fromByteOffset: base / 16, as: Int8.self)) * Float(q1)
                y[base + 32] = d * Float(scales.load(fromByteOffset: (base + 32) / 16, as: Int8.self)) * Float(q2)
                y[base + 64] = d * Float(scales.load(fromByteOffset: (base + 64) / 16, as: Int8.self)) * Float(q3)
                y[base + 96] = d * Float(scales.load(fromByteOffset: (base + 96) / 16, as: Int8.self)) * Float(q4)
            }
        }
    }
}
