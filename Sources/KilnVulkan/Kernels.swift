import CVulkan

/// The element type of the paged KV pool: float16 by default (half the memory and half the fetches in
/// attention), float32 selectable (`--kv-cache-type f32`).
public enum KVCacheType: String, Sendable, CaseIterable {
    case f16, f32
    /// Bytes per stored K or V element.
    public var elementBytes: Int { self == .f16 ? 2 : 4 }
}

/// The compute kernels of the CPU-shaped family (lanes own whole rows, 16-byte loads, no shared memory or
/// barriers), and their push-constant layouts (std430: tightly packed 32-bit fields, matching the GLSL).
final class Kernels {
    let matmulF32: ComputeKernel
    let matmulQ8_0: ComputeKernel
    let matmulQ4_1: ComputeKernel
    let matmulF32Rows8: ComputeKernel
    let matmulQ8_0Rows8: ComputeKernel
    let matmulQ4_1Rows8: ComputeKernel
    let embed: ComputeKernel
    let ropeStore: ComputeKernel
    let attention: ComputeKernel
    let swiglu: ComputeKernel
    let gatherRows: ComputeKernel
    let argmax: ComputeKernel
    let rmsNorm: ComputeKernel

    /// Output rows per invocation of the tiled matrix kernels (matmul_main.glsl) and of the single-column
    /// ones (matmul_rows8.glsl).
    static let rowsPerInvocation = 8
    static let rowsPerInvocationSingleColumn = 8

    struct MatmulParameters { var K, N, B, xStride, yStride, flags: UInt32 }
    struct NormParameters { var B, width4: UInt32; var epsilon: Float }
    struct EmbedParameters { var K, B, format: UInt32 }
    struct RopeParameters { var B, headDim, heads, kvHeads, ropeDim, neox, blockSize, maxBlocks: UInt32 }
    struct AttentionParameters { var B, heads, kvHeads, blockSize, maxBlocks, qkvWidth: UInt32; var scale: Float }
    struct SwigluParameters { var B, width: UInt32 }
    struct GatherParameters { var rows, width4: UInt32 }
    struct ArgmaxParameters { var rows, vocabulary: UInt32 }

    /// `queryHeadsPerKVHead`: the attention kernel's group (grouped-query attention; 1 without it);
    /// `kvCache`: the KV pool's element type, which the RoPE/store and attention kernels are built for.
    init(device: VulkanDevice, headDimension: Int, queryHeadsPerKVHead: Int = 1, kvCache: KVCacheType = .f16) throws {
        let matmulBytes = MemoryLayout<MatmulParameters>.size
        // Weights, scales and activations are read through texel views (see ComputeKernel.texelBindings).
        let floats = VK_FORMAT_R32G32B32A32_SFLOAT, words = VK_FORMAT_R32G32B32A32_UINT
        matmulF32 = try ComputeKernel(device: device, name: "matmul_f32", spirv: EmbeddedShaders.matmulF32, bindings: 4, pushConstantBytes: matmulBytes,
                                      texelBindings: [0: floats, 1: floats, 2: floats])
        matmulQ8_0 = try ComputeKernel(device: device, name: "matmul_q8_0", spirv: EmbeddedShaders.matmulQ80, bindings: 4, pushConstantBytes: matmulBytes,
                                       texelBindings: [0: words, 1: floats, 2: floats])
        matmulQ4_1 = try ComputeKernel(device: device, name: "matmul_q4_1", spirv: EmbeddedShaders.matmulQ41, bindings: 4, pushConstantBytes: matmulBytes,
                                       texelBindings: [0: words, 1: floats, 2: floats])
        matmulF32Rows8 = try ComputeKernel(device: device, name: "matmul_f32_rows8", spirv: EmbeddedShaders.matmulF32Rows8, bindings: 4, pushConstantBytes: matmulBytes,
                                           texelBindings: [0: floats, 1: floats, 2: floats])
        matmulQ8_0Rows8 = try ComputeKernel(device: device, name: "matmul_q8_0_rows8", spirv: EmbeddedShaders.matmulQ80Rows8, bindings: 4, pushConstantBytes: matmulBytes,
                                            texelBindings: [0: words, 1: floats, 2: floats])
        matmulQ4_1Rows8 = try ComputeKernel(device: device, name: "matmul_q4_1_rows8", spirv: EmbeddedShaders.matmulQ41Rows8, bindings: 4, pushConstantBytes: matmulBytes,
                                            texelBindings: [0: words, 1: floats, 2: floats])
        embed = try ComputeKernel(device: device, name: "embed", spirv: EmbeddedShaders.embed, bindings: 4, pushConstantBytes: MemoryLayout<EmbedParameters>.size)
        let half = kvCache == .f16
        ropeStore = try ComputeKernel(device: device, name: half ? "rope_store_f16" : "rope_store", spirv: half ? EmbeddedShaders.ropeStoreF16 : EmbeddedShaders.ropeStore,
                                      bindings: 8, pushConstantBytes: MemoryLayout<RopeParameters>.size, texelBindings: [0: floats, 4: floats])
        // A float16 pool is read as uint texels (8 halves each), a float32 one as float texels.
        let pool = half ? words : floats
        attention = try ComputeKernel(device: device, name: half ? "attention_f16" : "attention", spirv: half ? EmbeddedShaders.attentionF16 : EmbeddedShaders.attention,
                                      bindings: 7, pushConstantBytes: MemoryLayout<AttentionParameters>.size,
                                      specialization: [UInt32(headDimension), UInt32(queryHeadsPerKVHead)], texelBindings: [0: floats, 4: pool, 5: pool])
        swiglu = try ComputeKernel(device: device, name: "swiglu", spirv: EmbeddedShaders.swiglu, bindings: 2, pushConstantBytes: MemoryLayout<SwigluParameters>.size,
                                   texelBindings: [0: floats])
        gatherRows = try ComputeKernel(device: device, name: "gather_rows", spirv: EmbeddedShaders.gatherRows, bindings: 3, pushConstantBytes: MemoryLayout<GatherParameters>.size)
        rmsNorm = try ComputeKernel(device: device, name: "rmsnorm", spirv: EmbeddedShaders.rmsnorm, bindings: 3, pushConstantBytes: MemoryLayout<NormParameters>.size,
                                    texelBindings: [0: floats, 1: floats])
        argmax = try ComputeKernel(device: device, name: "argmax", spirv: EmbeddedShaders.argmax, bindings: 2, pushConstantBytes: MemoryLayout<ArgmaxParameters>.size)
    }

    /// The matrix kernel for `columns` columns of x and the invocations it needs for `rows` outputs: the
    /// single-column frame for one column, the 4 × 4 tiles otherwise. Both reduce in the same order.
    func matmul(for format: DeviceMatrix.Format, columns: Int, rows: Int) -> (ComputeKernel, invocations: Int) {
        guard columns == 1 else { return (matmul(for: format), (rows + Self.rowsPerInvocation - 1) / Self.rowsPerInvocation) }
        let kernel: ComputeKernel = switch format {
        case .f32: matmulF32Rows8
        case .q8_0: matmulQ8_0Rows8
        case .q4_1: matmulQ4_1Rows8
        }
        return (kernel, (rows + Self.rowsPerInvocationSingleColumn - 1) / Self.rowsPerInvocationSingleColumn)
    }

    func matmul(for format: DeviceMatrix.Format) -> ComputeKernel {
        switch format {
        case .f32: return matmulF32
        case .q8_0: return matmulQ8_0
        case .q4_1: return matmulQ4_1
        }
    }
}
