/// Dequantization of every GGML type Kiln reads into float32. The integer formats are read by `IntegerBlocks`
/// (one description of their bit layouts, shared with the Vulkan kernels), which folds scales in the order
/// ggml and the Python `gguf` package use, so results match them exactly, not just closely.
public enum Dequantize {
    /// Converts `count` elements (a whole number of blocks) of `type` at `source` into `destination`.
    public static func run(_ type: GGMLType, from source: UnsafeRawPointer, count: Int,
                           into destination: UnsafeMutablePointer<Float>) {
        precondition(count % type.blockSize == 0, "dequantize: \(count) elements is not whole blocks of \(type)")
        switch type {
        case .f32, .f16, .bf16:
            for i in 0..<count {
                let p = source + i * type.blockBytes
                destination[i] = switch type {
                case .f32: Float(bitPattern: p.loadUnaligned(as: UInt32.self))
                case .f16: Float(Float16(bitPattern: p.loadUnaligned(as: UInt16.self)))
                default: Float(bitPattern: UInt32(p.loadUnaligned(as: UInt16.self)) << 16)
                }
            }
        default:
            IntegerBlocks.forEach(type, UnsafeRawBufferPointer(start: source, count: type.byteCount(elements: count)), count: count) { b, block in
                let out = destination + b * 32
                for j in 0..<16 { out[j] = Float(block.q[j]) * block.scale0 + block.min0 }
                for j in 16..<32 { out[j] = Float(block.q[j]) * block.scale1 + block.min1 }
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
}
