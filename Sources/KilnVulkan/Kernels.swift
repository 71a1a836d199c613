import CVulkan
import Foundation

/// The element type of the paged KV pool: float16 by default (half the memory and half the fetches in
/// attention), float32 selectable (`--kv-cache-type f32`).
public enum KVCacheType: String, Sendable, CaseIterable {
    case f16, f32
    /// Bytes per stored K or V element.
    public var elementBytes: Int { self == .f16 ? 2 : 4 }
}

/// Which kernels run: the CPU-shaped family (lavapipe: lanes never cooperate; 8 rows per lane in the matrix
/// kernels, a lane per row or head elsewhere) or the GPU family (64-lane workgroups that share the work of a
/// row or head: a row's blocks split over `Kernels.lanesPerRow` lanes, a key chunk's scores and values over
/// the workgroup in attention, reductions through shared memory). Chosen from the device type at start-up;
/// `KILN_VULKAN_KERNELS=cpu|gpu` overrides (the tests run both on lavapipe). Each family reduces every output
/// in one order whatever the batch (batch-invariant); the two families differ by rounding.
public enum KernelFamily: String, Sendable, CaseIterable {
    case cpu, gpu

    /// The family for `device`: the environment's choice if any, else by device type.
    public static func choose(for device: VulkanDevice) -> KernelFamily {
        if let name = ProcessInfo.processInfo.environment["KILN_VULKAN_KERNELS"], let family = KernelFamily(rawValue: name) { return family }
        return device.info.kind == .cpu ? .cpu : .gpu
    }
}

/// The compute kernels of one family (`KernelFamily`), and their push-constant layouts (std430: tightly packed
/// 32-bit fields, matching the GLSL). The element-wise kernels (embed, SwiGLU, gather) are the same in both
/// families; RoPE + store differs only in how many lanes share a head (same arithmetic).
final class Kernels {
    /// Matrix kernels per weight layout and epilogue (at format × epilogue count + epilogue): the tiled frame (several
    /// columns) and the single-column one. Built on first use: a model uses one to three of the six layouts,
    /// and a GPU driver compiles each pipeline at creation.
    private var matmulKernels: [(tiled: ComputeKernel, single: ComputeKernel)?]
    private let device: VulkanDevice
    let embed: ComputeKernel
    let ropeStore: ComputeKernel
    let attention: ComputeKernel
    let swiglu: ComputeKernel
    let gatherRows: ComputeKernel
    let argmax: ComputeKernel
    let topCandidates: ComputeKernel
    let rmsNorm: ComputeKernel

    /// The kernels' family.
    let family: KernelFamily
    /// The GPU family's lanes per matrix row in the tiled frame and in the single-column one (powers of two ≤ 64;
    /// `KILN_VULKAN_GPU_LANES_PER_ROW`, 8 by default, and `KILN_VULKAN_GPU_SINGLE_LANES_PER_ROW`, 32). Neither
    /// changes a result: matmul_gpu_*.glsl reduce a row in one tree whatever the count. Measured on an H100: 32
    /// lanes made batch-1 decode ~25% faster than 8 (a 576-wide row's 18 blocks, one per lane), and a 512-token
    /// prefill 6× slower (2 rows per workgroup, so x is fetched 4× as often).
    let lanesPerRow: Int, singleLanesPerRow: Int
    /// The GPU family's columns per workgroup in the tiled matrix frame (a multiple of 4;
    /// `KILN_VULKAN_GPU_COLUMNS_PER_GROUP`, 8 by default: on an H100, batch 32 decoded ~20% faster than with 16).
    /// It does not change any result.
    let columnsPerGroup: Int
    /// The items a matrix kernel's dispatch has for `rows` outputs of `columns` columns: in the CPU family a
    /// lane per 8 rows (matmul_main.glsl, matmul_rows8.glsl); in the GPU family a 64-lane workgroup per group of
    /// 64 / `lanesPerRow` rows and, in the tiled frame (matmul_gpu_main.glsl), per `columnsPerGroup` columns.
    func matmulItems(rows: Int, columns: Int) -> Int {
        guard family == .gpu else { return (rows + 7) / 8 }
        let rowsPerGroup = 64 / (columns == 1 ? singleLanesPerRow : lanesPerRow)
        let columnGroups = columns == 1 ? 1 : (columns + columnsPerGroup - 1) / columnsPerGroup
        return (rows + rowsPerGroup - 1) / rowsPerGroup * columnGroups
    }
    /// The largest vocabulary the GPU family's top-k sorts in shared memory (a chunk of 4,096 logits at most);
    /// past it the decoder samples on the host.
    static let gpuTopCandidatesVocabularyLimit = topCandidateChunks * 4096

    /// What a matrix kernel does with its results: stores (or adds) each row, or, in the CPU family, applies
    /// SwiGLU to the (gate, up) pairs of a `DeviceMatrix.RowOrder.gateUpInterleaved` matrix and stores half as
    /// many values (one dispatch per layer fewer), or applies RoPE to a Q|K|V matrix's results and stores K
    /// and V in the paged cache (matmul_qkv_epilogue.glsl; one dispatch per layer fewer).
    enum MatmulEpilogue: Int, CaseIterable { case store = 0, swiglu = 1, qkv = 2 }

    /// `flags`: see `MatmulFlags`; `epsilon` is NORM_IN's; the last six fields are the QKV epilogue's.
    struct MatmulParameters {
        var K, N, B, xStride, yStride, flags: UInt32; var rowOffset: UInt32 = 0; var epsilon: Float = 0
        var headDim: UInt32 = 0, qWidth: UInt32 = 0, kvWidth: UInt32 = 0, ropeDim: UInt32 = 0, blockSize: UInt32 = 0, maxBlocks: UInt32 = 0
    }
    /// The matrix kernels' `flags` (matmul_args.glsl).
    struct MatmulFlags: OptionSet {
        let rawValue: UInt32
        /// y += W·x (the residual stream).
        static let accumulate = MatmulFlags(rawValue: 1)
        /// x is h ∘ g: scale each result by the RMSNorm factor of h, from the partial sums at binding 7.
        static let normIn = MatmulFlags(rawValue: 2)
        /// Also write y ∘ g (g at binding 4) to binding 5 and y's partial sums of squares to binding 6.
        static let normOut = MatmulFlags(rawValue: 4)
        /// The QKV epilogue's pool is float16.
        static let kvFloat16 = MatmulFlags(rawValue: 8)
    }
    /// Bindings of the matrix kernels: weights (0, 1), x (2), y (3), the folded RMSNorm's (4–7), and the
    /// QKV epilogue's positions, sequences, block tables, rotation table, keys and values (8–13).
    static func matmulBindings(_ epilogue: MatmulEpilogue) -> Int { epilogue == .qkv ? 14 : 8 }

    /// A matrix kernel's buffers in binding order, with x or y standing in for the folded RMSNorm's bindings
    /// that the dispatch does not use (a binding must hold some buffer; these are never read or written).
    static func matmulBuffers(quants: DeviceBuffer, scales: DeviceBuffer, x: DeviceBuffer, y: DeviceBuffer,
                              normWeight: DeviceBuffer? = nil, normed: DeviceBuffer? = nil, sumSquaresOut: DeviceBuffer? = nil,
                              sumSquaresIn: DeviceBuffer? = nil, qkvEpilogue: [DeviceBuffer] = []) -> [DeviceBuffer] {
        [quants, scales, x, y, normWeight ?? x, normed ?? y, sumSquaresOut ?? y, sumSquaresIn ?? x] + qkvEpilogue
    }
    struct NormParameters { var B, width4: UInt32; var epsilon: Float }
    /// `flags` 1: also write x ∘ g and the sums of squares (the first layer's folded RMSNorm, see embed.comp).
    struct EmbedParameters { var K, B, format, rowStart, rowCount: UInt32; var flags: UInt32 = 0 }
    /// `headStart`, `shardHeads`: the KV heads one shard of a split pool holds (all of them, unsplit);
    /// `ropeQueries`: 1 in the dispatch that also rotates the query heads (the first shard's).
    struct RopeParameters { var B, headDim, heads, kvHeads, ropeDim, neox, blockSize, maxBlocks, headStart, shardHeads, ropeQueries: UInt32 }
    struct AttentionParameters {
        var B, heads, kvHeads, blockSize, maxBlocks, qkvWidth: UInt32; var scale: Float; var headStart, shardHeads: UInt32
        var chunkKeys, maxChunks: UInt32
        /// 0: one item per (token, KV head) over all its key chunks; 1: one per (chunk, token, KV head),
        /// writing each chunk's softmax; 2: one per (token, query head), merging mode 1's chunks.
        var mode: UInt32
    }
    struct SwigluParameters { var B, width: UInt32 }
    struct GatherParameters { var rows, width4: UInt32 }
    /// Push constants of both two-phase row reductions, argmax.comp and top_candidates.comp.
    struct RowReductionParameters { var rows, vocabulary, chunks, phase: UInt32 }
    /// Candidates per row of top_candidates.comp (its K), and the vocabulary chunks of the first phase of it
    /// and of argmax.comp.
    static let topCandidateCount = 64, topCandidateChunks = 64

    /// `queryHeadsPerKVHead`: the attention kernel's group (grouped-query attention; 1 without it);
    /// `kvCache`: the KV pool's element type, which the RoPE/store and attention kernels are built for.
    /// `family`: which kernels (see `KernelFamily.choose`); `attentionChunkKeys`: the decoder's key chunk (the GPU
    /// family's attention sizes its shared memory by it).
    init(device: VulkanDevice, headDimension: Int, queryHeadsPerKVHead: Int = 1, kvCache: KVCacheType = .f16, family: KernelFamily? = nil,
         attentionChunkKeys: Int = 64) throws {
        let family = family ?? KernelFamily.choose(for: device)
        self.family = family
        self.device = device
        let gpu = family == .gpu
        func lanes(_ variable: String, _ standard: Int) throws -> Int {
            let lanes = ProcessInfo.processInfo.environment[variable].flatMap { Int($0) } ?? standard
            guard lanes > 0, lanes <= 64, lanes & (lanes - 1) == 0 else {
                throw VulkanError("kernels", message: "\(variable)=\(lanes) is not a power of two from 1 to 64")
            }
            return lanes
        }
        lanesPerRow = try lanes("KILN_VULKAN_GPU_LANES_PER_ROW", 8)
        singleLanesPerRow = try lanes("KILN_VULKAN_GPU_SINGLE_LANES_PER_ROW", 32)
        let columnsPerGroup = ProcessInfo.processInfo.environment["KILN_VULKAN_GPU_COLUMNS_PER_GROUP"].flatMap { Int($0) } ?? 8
        guard columnsPerGroup > 0, columnsPerGroup % 4 == 0 else {
            throw VulkanError("kernels", message: "KILN_VULKAN_GPU_COLUMNS_PER_GROUP=\(columnsPerGroup) is not a positive multiple of 4")
        }
        self.columnsPerGroup = columnsPerGroup
        if gpu, attentionChunkKeys > 256 || headDimension > 256 || headDimension % 8 != 0 {
            throw VulkanError("kernels", message: "the GPU family's attention takes chunks of at most 256 keys and heads of at most 256 elements (a multiple of 8)")
        }
        // attention_gpu.glsl's reduction trees span the chunk's keys rounded up to a power of two.
        var tree = 1
        while tree < attentionChunkKeys { tree *= 2 }
        matmulKernels = Array(repeating: nil, count: DeviceMatrix.Format.allCases.count * MatmulEpilogue.allCases.count)
        let floats = VK_FORMAT_R32G32B32A32_SFLOAT, words = VK_FORMAT_R32G32B32A32_UINT
        embed = try ComputeKernel(device: device, name: "embed", spirv: EmbeddedShaders.embed, bindings: 7, pushConstantBytes: MemoryLayout<EmbedParameters>.size)
        let half = kvCache == .f16
        let ropeCode = gpu ? (half ? EmbeddedShaders.ropeStoreGpuF16 : EmbeddedShaders.ropeStoreGpu) : (half ? EmbeddedShaders.ropeStoreF16 : EmbeddedShaders.ropeStore)
        // Items: (token, head) pairs; the GPU family's lane per vec4 of the head.
        ropeStore = try ComputeKernel(device: device, name: (half ? "rope_store_f16" : "rope_store") + (gpu ? "_gpu" : ""), spirv: ropeCode,
                                      bindings: 8, pushConstantBytes: MemoryLayout<RopeParameters>.size, lanesPerItem: gpu ? headDimension / 4 : 1,
                                      texelBindings: [0: floats, 4: floats])
        // A float16 pool is read as uint texels (8 halves each), a float32 one as float texels.
        let pool = half ? words : floats
        // Items: (token, KV head) in mode 0, (chunk, token, KV head) in mode 1, (token, query head) in mode 2;
        // the GPU family's 64-lane workgroup each.
        attention = gpu
            ? try ComputeKernel(device: device, name: half ? "attention_gpu_f16" : "attention_gpu", spirv: half ? EmbeddedShaders.attentionGpuF16 : EmbeddedShaders.attentionGpu,
                                bindings: 8, pushConstantBytes: MemoryLayout<AttentionParameters>.size,
                                specialization: [UInt32(headDimension), UInt32(queryHeadsPerKVHead), UInt32(attentionChunkKeys), UInt32(tree)], workgroupSize: 64,
                                lanesPerItem: 64, texelBindings: [0: floats, 4: pool, 5: pool])
            : try ComputeKernel(device: device, name: half ? "attention_f16" : "attention", spirv: half ? EmbeddedShaders.attentionF16 : EmbeddedShaders.attention,
                                bindings: 8, pushConstantBytes: MemoryLayout<AttentionParameters>.size,
                                specialization: [UInt32(headDimension), UInt32(queryHeadsPerKVHead)], texelBindings: [0: floats, 4: pool, 5: pool])
        swiglu = try ComputeKernel(device: device, name: "swiglu", spirv: EmbeddedShaders.swiglu, bindings: 2, pushConstantBytes: MemoryLayout<SwigluParameters>.size,
                                   texelBindings: [0: floats])
        gatherRows = try ComputeKernel(device: device, name: "gather_rows", spirv: EmbeddedShaders.gatherRows, bindings: 3, pushConstantBytes: MemoryLayout<GatherParameters>.size)
        // Items: rows; (row, chunk) pairs and then rows in the two phases of argmax and top-k. The GPU family
        // gives each a 64-lane workgroup.
        rmsNorm = try ComputeKernel(device: device, name: gpu ? "rmsnorm_gpu" : "rmsnorm", spirv: gpu ? EmbeddedShaders.rmsnormGpu : EmbeddedShaders.rmsnorm, bindings: 3,
                                    pushConstantBytes: MemoryLayout<NormParameters>.size, workgroupSize: gpu ? 64 : nil, lanesPerItem: gpu ? 64 : 1,
                                    texelBindings: [0: floats, 1: floats])
        argmax = try ComputeKernel(device: device, name: gpu ? "argmax_gpu" : "argmax", spirv: gpu ? EmbeddedShaders.argmaxGpu : EmbeddedShaders.argmax, bindings: 3,
                                   pushConstantBytes: MemoryLayout<RowReductionParameters>.size, workgroupSize: gpu ? 64 : nil, lanesPerItem: gpu ? 64 : 1)
        topCandidates = gpu
            ? try ComputeKernel(device: device, name: "top_candidates_gpu", spirv: EmbeddedShaders.topCandidatesGpu, bindings: 3,
                                pushConstantBytes: MemoryLayout<RowReductionParameters>.size, specialization: [UInt32(Self.topCandidateCount), 4096], workgroupSize: 64,
                                lanesPerItem: 64)
            : try ComputeKernel(device: device, name: "top_candidates", spirv: EmbeddedShaders.topCandidates, bindings: 3,
                                pushConstantBytes: MemoryLayout<RowReductionParameters>.size, specialization: [UInt32(Self.topCandidateCount)])
    }

    /// The matrix kernel for `columns` columns of x and the items its dispatch has for `rows` outputs: the
    /// single-column frame for one column, the frame of 4-column tiles otherwise. Both reduce in the same order.
    func matmul(for format: DeviceMatrix.Format, columns: Int, rows: Int, epilogue: MatmulEpilogue = .store) throws -> (ComputeKernel, items: Int) {
        let kernels = try matmulPair(format, epilogue)
        return (columns == 1 ? kernels.single : kernels.tiled, matmulItems(rows: rows, columns: columns))
    }

    /// The tiled matrix kernel of `format` (its descriptor set layout is both frames').
    func matmul(for format: DeviceMatrix.Format, epilogue: MatmulEpilogue = .store) throws -> ComputeKernel { try matmulPair(format, epilogue).tiled }

    /// Throws unless this family has `epilogue`: the GPU family's frames own one row per lane, so no lane holds
    /// a (gate, up) pair or a RoPE pair.
    func require(_ epilogue: MatmulEpilogue) throws {
        guard epilogue == .store || family == .cpu else {
            throw VulkanError("kernels", message: "the \(epilogue) epilogue exists in the CPU kernel family only")
        }
    }

    /// Both frames of `format` with `epilogue`, built the first time they are asked for.
    private func matmulPair(_ format: DeviceMatrix.Format, _ epilogue: MatmulEpilogue) throws -> (tiled: ComputeKernel, single: ComputeKernel) {
        let i = Int(format.rawValue) * MatmulEpilogue.allCases.count + epilogue.rawValue
        if let kernels = matmulKernels[i] { return kernels }
        try require(epilogue)
        // Weights, scales and activations are read through texel views (see ComputeKernel.texelBindings).
        let floats = VK_FORMAT_R32G32B32A32_SFLOAT, words = VK_FORMAT_R32G32B32A32_UINT
        let gpu = family == .gpu
        let (name, cpuTiled, cpuSingle, gpuTiled, gpuSingle) = switch epilogue {
        case .store: Self.code(format)
        case .swiglu: Self.swigluCode(format)
        case .qkv: Self.qkvCode(format)
        }
        var texels = [0: format == .f32 ? floats : words, 1: floats, 2: floats, 4: floats, 7: floats]
        if epilogue == .qkv { texels[11] = floats }
        func build(_ name: String, _ code: [UInt32], lanes: Int) throws -> ComputeKernel {
            try ComputeKernel(device: device, name: gpu ? name + "_gpu" : name, spirv: code, bindings: Self.matmulBindings(epilogue),
                              pushConstantBytes: MemoryLayout<MatmulParameters>.size, specialization: gpu ? [UInt32(lanes), UInt32(columnsPerGroup)] : [],
                              workgroupSize: gpu ? 64 : nil, lanesPerItem: gpu ? 64 : 1, texelBindings: texels)
        }
        let suffix = epilogue == .store ? "" : "_\(epilogue)"
        let kernels = (tiled: try build("matmul_" + name + suffix, gpu ? gpuTiled : cpuTiled, lanes: lanesPerRow),
                       single: try build("matmul_" + name + "_rows8" + suffix, gpu ? gpuSingle : cpuSingle, lanes: singleLanesPerRow))
        matmulKernels[i] = kernels
        return kernels
    }

    /// Per layout: its name, then the SPIR-V of the tiled and single-column frames of the CPU family, then of the GPU family.
    private static func code(_ format: DeviceMatrix.Format) -> (String, [UInt32], [UInt32], [UInt32], [UInt32]) {
        switch format {
        case .f32: ("f32", EmbeddedShaders.matmulF32, EmbeddedShaders.matmulF32Rows8, EmbeddedShaders.matmulF32Gpu, EmbeddedShaders.matmulF32GpuSingle)
        case .f16: ("f16", EmbeddedShaders.matmulF16, EmbeddedShaders.matmulF16Rows8, EmbeddedShaders.matmulF16Gpu, EmbeddedShaders.matmulF16GpuSingle)
        case .bf16: ("bf16", EmbeddedShaders.matmulBf16, EmbeddedShaders.matmulBf16Rows8, EmbeddedShaders.matmulBf16Gpu, EmbeddedShaders.matmulBf16GpuSingle)
        case .q8_0: ("q8_0", EmbeddedShaders.matmulQ80, EmbeddedShaders.matmulQ80Rows8, EmbeddedShaders.matmulQ80Gpu, EmbeddedShaders.matmulQ80GpuSingle)
        case .q4_1: ("q4_1", EmbeddedShaders.matmulQ41, EmbeddedShaders.matmulQ41Rows8, EmbeddedShaders.matmulQ41Gpu, EmbeddedShaders.matmulQ41GpuSingle)
        case .q8_sub16: ("q8_sub16", EmbeddedShaders.matmulQ8Sub16, EmbeddedShaders.matmulQ8Sub16Rows8, EmbeddedShaders.matmulQ8Sub16Gpu, EmbeddedShaders.matmulQ8Sub16GpuSingle)
        }
    }

    /// The CPU family's SwiGLU-epilogue frames per layout, in `code`'s shape (no GPU-family frames: empty).
    private static func swigluCode(_ format: DeviceMatrix.Format) -> (String, [UInt32], [UInt32], [UInt32], [UInt32]) {
        switch format {
        case .f32: ("f32", EmbeddedShaders.matmulF32Swiglu, EmbeddedShaders.matmulF32Rows8Swiglu, [], [])
        case .f16: ("f16", EmbeddedShaders.matmulF16Swiglu, EmbeddedShaders.matmulF16Rows8Swiglu, [], [])
        case .bf16: ("bf16", EmbeddedShaders.matmulBf16Swiglu, EmbeddedShaders.matmulBf16Rows8Swiglu, [], [])
        case .q8_0: ("q8_0", EmbeddedShaders.matmulQ80Swiglu, EmbeddedShaders.matmulQ80Rows8Swiglu, [], [])
        case .q4_1: ("q4_1", EmbeddedShaders.matmulQ41Swiglu, EmbeddedShaders.matmulQ41Rows8Swiglu, [], [])
        case .q8_sub16: ("q8_sub16", EmbeddedShaders.matmulQ8Sub16Swiglu, EmbeddedShaders.matmulQ8Sub16Rows8Swiglu, [], [])
        }
    }

    /// The CPU family's QKV-epilogue frames per layout, in `code`'s shape (no GPU-family frames: empty).
    private static func qkvCode(_ format: DeviceMatrix.Format) -> (String, [UInt32], [UInt32], [UInt32], [UInt32]) {
        switch format {
        case .f32: ("f32", EmbeddedShaders.matmulF32Qkv, EmbeddedShaders.matmulF32Rows8Qkv, [], [])
        case .f16: ("f16", EmbeddedShaders.matmulF16Qkv, EmbeddedShaders.matmulF16Rows8Qkv, [], [])
        case .bf16: ("bf16", EmbeddedShaders.matmulBf16Qkv, EmbeddedShaders.matmulBf16Rows8Qkv, [], [])
        case .q8_0: ("q8_0", EmbeddedShaders.matmulQ80Qkv, EmbeddedShaders.matmulQ80Rows8Qkv, [], [])
        case .q4_1: ("q4_1", EmbeddedShaders.matmulQ41Qkv, EmbeddedShaders.matmulQ41Rows8Qkv, [], [])
        case .q8_sub16: ("q8_sub16", EmbeddedShaders.matmulQ8Sub16Qkv, EmbeddedShaders.matmulQ8Sub16Rows8Qkv, [], [])
        }
    }
}
