import CVulkan
import Foundation
import KilnModel

/// The llama-family forward pass on Vulkan compute shaders, over a paged KV cache on the device.
///
/// Weights stay quantized on the device (see `DeviceMatrix`); Q, K and V are one stacked matrix, as are
/// gate and up, so a layer is at most nine dispatches: RMSNorm, QKV, RoPE + KV store, attention, output
/// projection (+ residual), RMSNorm, gate|up, SwiGLU, down projection (+ residual). The CPU kernel family
/// folds the RMSNorms into the matrix kernels around them (`foldsNorm`), RoPE + KV store into the QKV
/// kernel (`fusesRope`) and SwiGLU into the gate|up kernel (`fusesSwiGLU`): five dispatches, since each
/// costs tens of µs on lavapipe. A whole step is recorded into one command buffer and submitted once.
public final class VulkanDecoder: DecoderBackend, @unchecked Sendable {
    public let config: ModelConfig
    public let blockSize: Int
    public let blockCount: Int
    /// The KV pool's element type.
    public let kvCache: KVCacheType
    /// The matrix kernels' family in use (by device type, or KILN_VULKAN_KERNELS).
    public var kernelFamily: KernelFamily { kernels.family }
    public let device: VulkanDevice
    /// Most tokens in one step, most sequences in one step, most logit rows in one step (fewer than asked for
    /// when one buffer cannot hold that many rows of logits).
    public let maxTokens: Int, maxSequences: Int, maxLogitRows: Int
    let maxBlocksPerSequence: Int

    /// Weights, KV pool and activations (device-local), and what the host writes or reads each step.
    let arena: MemoryArena, hostArena: MemoryArena
    let kernels: Kernels
    /// Two steps' host-side state, used in turn (see `StepSlot`): a step can be submitted while the one
    /// before it runs (`submitGreedy`).
    let slots: [StepSlot]
    /// Steps submitted so far (the next one's serial).
    var submitted = 0
    /// Picks of greedy steps the device has finished whose caller has not yet asked for them, by serial.
    var unread: [Int: [Int]] = [:]
    /// The latest submitted step, and its logit-row count when it was greedy with picks on the device: its
    /// picks are then in `chosen`, where the next step's `TokenFeed`s read them.
    var latestSubmission: (serial: Int, devicePicks: Int?)?

    struct Layer {
        let qkv: DeviceMatrix, output: DeviceMatrix, gateUp: DeviceMatrix, down: DeviceMatrix
        /// The layer's KV pool, one (keys, values) pair per shard of KV heads (see `KVShard`).
        let keys: [DeviceBuffer], values: [DeviceBuffer]
        // The matrices' sets are one per slice of the matrix (see DeviceMatrix), RoPE's and attention's one per shard.
        // The norm sets are nil where the matrix kernels fold the RMSNorm in, the RoPE sets empty where the
        // QKV kernel does RoPE and the KV store.
        let attentionNormSet: VkDescriptorSetHandle?, qkvSets: [VkDescriptorSetHandle], ropeSets, attentionSets: [VkDescriptorSetHandle]
        let outputSets: [VkDescriptorSetHandle], ffnNormSet: VkDescriptorSetHandle?, gateUpSets: [VkDescriptorSetHandle]
        /// nil where the gate|up kernel applies SwiGLU itself.
        let swigluSet: VkDescriptorSetHandle?, downSets: [VkDescriptorSetHandle]
    }
    var layers: [Layer] = []

    /// KV heads `headStart ..< headStart + heads`, whose keys (and values) for all blocks fit one buffer. A
    /// pool whose layer's K or V exceeds maxStorageBufferRange is split by KV heads, each shard laid out like
    /// an unsplit pool of its heads; RoPE/store and attention run once per shard. Unsplit: one shard of all.
    struct KVShard {
        let headStart: Int, heads: Int
        /// Bytes of one block's K (or V) of these heads in one layer.
        let blockBytes: Int
    }
    let kvShards: [KVShard]
    let embedding: DeviceMatrix
    let outputMatrix: DeviceMatrix
    let x, normed, qkv, attended, hidden, gathered, gatheredNormed, logitsBuffer, chosen: DeviceBuffer
    /// Per token, the sums of squares of each 8 elements of the residual stream (written with it where the
    /// RMSNorm is folded into the matrix kernels), and those of the rows whose logits are wanted.
    let sumSquares, gatheredSumSquares: DeviceBuffer
    /// Keys per attention chunk (a multiple of the block size): a token's keys are reduced chunk by chunk, then
    /// the chunks merged in order, whichever way a step runs them (see attention.glsl). Fixed per decoder:
    /// a token's output depends on it (within float rounding).
    public let attentionChunkKeys: Int
    /// Where steps with few tokens over long contexts put each key chunk's softmax, so that chunks run side
    /// by side (attention.glsl's mode 1) instead of one lane walking them all.
    let attentionPartials: DeviceBuffer
    /// Steps with fewer (token, KV head) pairs than this run attention chunks side by side: below it the
    /// device would be short of work (a CPU's 8-lane workgroups for the CPU family, a GPU's thousands of lanes).
    let attentionSplitBelow: Int
    /// Steps that ran attention chunks side by side (for the tests).
    var attentionSplitSteps = 0
    /// gate|up's output for the SwiGLU kernel (nil where the gate|up kernel applies SwiGLU itself).
    let gateUp: DeviceBuffer?
    /// Whether the gate|up matrix kernel applies SwiGLU to its results itself (the CPU family; its rows are
    /// stored interleaved, see `DeviceMatrix.RowOrder.gateUpInterleaved`) instead of a SwiGLU dispatch after
    /// it: one dispatch per layer fewer, and the same results bit for bit. `KILN_VULKAN_FUSE_SWIGLU=0` turns it off.
    public let fusesSwiGLU: Bool
    /// Whether the RMSNorms are folded into the matrix kernels around them (the CPU family): the kernels that
    /// write the residual stream also write it times the next norm's weight and its sums of squares, and
    /// the kernels that read the norm's output scale their results (matmul_args.glsl). Two dispatches per
    /// layer fewer; results equal the separate kernel's within float rounding. `KILN_VULKAN_FOLD_NORM=0`
    /// turns it off.
    public let foldsNorm: Bool
    /// Whether the QKV kernel applies RoPE and stores K and V in the pool itself (the CPU family, where the
    /// pool is one shard and pairs are adjacent): one dispatch per layer fewer, the same values bit for bit.
    /// `KILN_VULKAN_FUSE_ROPE=0` turns it off.
    public let fusesRope: Bool
    /// Top-k and argmax on the device: each (row, vocabulary chunk)'s result, then each row's (read back).
    let partialCandidates, candidatesBuffer: DeviceBuffer
    /// The logits where the host reads them (`logitsBuffer` itself when that is host-visible).
    let hostLogits: DeviceBuffer
    /// Whether greedy picks and top candidates are found on the device (only ids and candidates are read
    /// back) or by the host in the logits. By default the device does it when its memory is not the host's
    /// (reading the logits back costs a copy there); on unified memory, lavapipe included, the host reads
    /// the logits where they lie for free, and its one-pass top-k beats a kernel on a CPU.
    /// `KILN_VULKAN_SAMPLING=device|host` overrides (the tests run both).
    public let samplesOnDevice: Bool
    let tokensBuffer, positionsBuffer, sequencesBuffer, blockTablesBuffer, rowsBuffer, rotation: DeviceBuffer
    let gatherSet, argmaxSet, topCandidatesSet: VkDescriptorSetHandle
    /// The final RMSNorm's set (nil where it is folded into the vocabulary projection), and the gather of
    /// the wanted rows' sums of squares (where it is).
    let outputNormSet, gatherSumSquaresSet: VkDescriptorSetHandle?
    let embedSets, outputSets: [VkDescriptorSetHandle]

    /// Device bytes one KV block takes: K and V of every layer for `blockSize` tokens.
    public static func kvBytesPerBlock(_ c: ModelConfig, blockSize: Int = 16, kvCache: KVCacheType = .f16) -> Int {
        2 * c.layerCount * kvBytesPerLayerBlock(c, blockSize: blockSize, kvCache: kvCache)
    }

    /// Bytes of one block's K (or V) in one layer, for all KV heads or for `heads` of them (a shard).
    static func kvBytesPerLayerBlock(_ c: ModelConfig, blockSize: Int, kvCache: KVCacheType, heads: Int? = nil) -> Int {
        blockSize * (heads ?? c.kvHeadCount) * c.headDimension * kvCache.elementBytes
    }

    /// Loads `file`'s weights onto `device` with a KV pool of `blockCount` blocks of `blockSize` tokens.
    /// `maxBufferBytes` splits weight matrices as if the device's buffers could hold no more (tests use it to
    /// split small models; by default matrices are split only past maxStorageBufferRange). `samplesOnDevice`:
    /// see the property (nil: the environment's choice, else by memory type). `attentionSplitBelow`: see the
    /// property (nil: by kernel family; the tests force either path).
    /// Why the Vulkan kernels cannot run a model of this shape, or nil when they can.
    public static func unsupported(_ c: ModelConfig) -> String? {
        if c.attentionBias { return "QKV biases (\(c.architecture)) are not in the Vulkan kernels yet" }
        return nil
    }

    public init(device: VulkanDevice, file: GGUFFile, blockCount: Int = 512, blockSize: Int = 16,
                maxTokens: Int = 512, maxSequences: Int = 64, maxLogitRows: Int = 64, kvCache: KVCacheType = .f16,
                kernelFamily: KernelFamily? = nil, maxBufferBytes: Int? = nil, samplesOnDevice: Bool? = nil, fusesSwiGLU: Bool? = nil,
                foldsNorm: Bool? = nil, fusesRope: Bool? = nil, attentionChunkKeys: Int = 64, attentionSplitBelow: Int? = nil) throws {
        let c = try ModelConfig(gguf: file)
        if let why = Self.unsupported(c) { throw VulkanError("model", message: "\(why); use --backend cpu or reference") }
        guard c.embeddingWidth % 32 == 0, c.feedForwardWidth % 32 == 0, c.headDimension % 4 == 0 else {
            throw VulkanError("model", message: "widths must be multiples of 32")
        }
        guard c.headDimension % 8 == 0 else {
            throw VulkanError("model", message: "head dimension \(c.headDimension) is not a multiple of 8, which attention.glsl needs; use --backend cpu")
        }
        guard c.ropeDimension % 8 == 0 else {
            throw VulkanError("model", message: "rotary dimension \(c.ropeDimension) is not a multiple of 8, which rope_store.comp needs; use --backend cpu")
        }
        guard attentionChunkKeys > 0, attentionChunkKeys % blockSize == 0 else {
            throw VulkanError("model", message: "attention chunks of \(attentionChunkKeys) keys are not a multiple of the \(blockSize)-token block")
        }
        self.attentionChunkKeys = attentionChunkKeys
        config = c
        self.device = device
        self.blockSize = blockSize
        self.blockCount = blockCount
        self.kvCache = kvCache
        self.maxTokens = maxTokens
        self.maxSequences = maxSequences
        // A step's logits are one buffer: no more rows than it holds (about 260 for a 128k-token vocabulary
        // under lavapipe's 128 MiB), whatever was asked for.
        let maxLogitRows = min(maxLogitRows, max(1, device.info.maxStorageBufferRange / (c.vocabularySize * 4)))
        self.maxLogitRows = maxLogitRows
        maxBlocksPerSequence = (c.contextLength + blockSize - 1) / blockSize
        let arena = MemoryArena(device: device, placement: .device), hostArena = MemoryArena(device: device, placement: .host)
        self.arena = arena
        self.hostArena = hostArena
        let kernels = try Kernels(device: device, headDimension: c.headDimension, queryHeadsPerKVHead: c.headCount / c.kvHeadCount, kvCache: kvCache,
                                  family: kernelFamily, attentionChunkKeys: attentionChunkKeys)
        self.kernels = kernels
        let fusesSwiGLU = fusesSwiGLU ?? (kernels.family == .cpu && ProcessInfo.processInfo.environment["KILN_VULKAN_FUSE_SWIGLU"] != "0")
        if fusesSwiGLU { try kernels.require(.swiglu) }   // before any weight is uploaded
        self.fusesSwiGLU = fusesSwiGLU
        let environment = ProcessInfo.processInfo.environment
        let foldsNorm = foldsNorm ?? (kernels.family == .cpu && environment["KILN_VULKAN_FOLD_NORM"] != "0")
        if foldsNorm, kernels.family != .cpu { throw VulkanError("kernels", message: "the folded RMSNorm exists in the CPU kernel family only") }
        self.foldsNorm = foldsNorm
        let tableWords = maxSequences * maxBlocksPerSequence
        slots = try (0..<2).map {
            try StepSlot(device: device, hostArena: hostArena, index: $0, maxTokens: maxTokens, tableWords: tableWords, maxLogitRows: maxLogitRows)
        }

        func tensor(_ name: String) throws -> GGUFTensorInfo {
            guard let t = file.tensor(name) else { throw GGUFError(.missingTensor(name), offset: 0) }
            return t
        }
        func vector(_ name: String) throws -> DeviceBuffer {
            let t = try tensor(name)
            let values = Dequantize.array(t.type, file.data(of: t), count: t.elementCount)
            let upload = Upload(arena: arena)
            let (buffer, bytes) = try upload.buffer(values.count * 4, label: name)
            values.withUnsafeBytes { bytes.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            try upload.finish()
            return buffer
        }
        let d = c.embeddingWidth, f = c.feedForwardWidth
        let qWidth = c.headCount * c.headDimension, kvWidth = c.kvHeadCount * c.headDimension
        let qkvWidth = qWidth + 2 * kvWidth

        func matrix(_ names: [String], _ label: String, order: DeviceMatrix.RowOrder = .stacked) throws -> DeviceMatrix {
            try DeviceMatrix(arena: arena, file: file, tensors: names.map(tensor), label: label, maxBufferBytes: maxBufferBytes, order: order)
        }
        embedding = try matrix(["token_embd.weight"], "token_embd")
        outputMatrix = c.tiedOutput ? embedding : try matrix(["output.weight"], "output")
        x = try arena.buffer(maxTokens * d * 4, label: "x")
        normed = try arena.buffer(maxTokens * d * 4, label: "normed")
        gatheredNormed = try arena.buffer(maxLogitRows * d * 4, label: "gathered_normed")
        sumSquares = try arena.buffer(maxTokens * d / 8 * 4, label: "sum_squares")
        gatheredSumSquares = try arena.buffer(maxLogitRows * d / 8 * 4, label: "gathered_sum_squares")
        qkv = try arena.buffer(maxTokens * qkvWidth * 4, label: "qkv")
        attended = try arena.buffer(maxTokens * qWidth * 4, label: "attended")
        gateUp = fusesSwiGLU ? nil : try arena.buffer(maxTokens * 2 * f * 4, label: "gate_up")
        hidden = try arena.buffer(maxTokens * f * 4, label: "hidden")
        attentionPartials = try arena.buffer(min(16 << 20, device.info.maxStorageBufferRange), label: "attention_partials")
        // KILN_VULKAN_ATTENTION_SPLIT=0: never side by side (for A/B measurements; the results are the same).
        self.attentionSplitBelow = attentionSplitBelow
            ?? (ProcessInfo.processInfo.environment["KILN_VULKAN_ATTENTION_SPLIT"] == "0" ? 0 : kernels.family == .cpu ? 64 : 16_384)
        gathered = try arena.buffer(maxLogitRows * d * 4, label: "gathered")
        // Logits stay on the device: the host reads them where they lie on unified memory, else from a copy
        // made only when it needs them (sampling on the device reads back an id or 130 words per row).
        logitsBuffer = try arena.buffer(maxLogitRows * c.vocabularySize * 4, label: "logits")
        hostLogits = logitsBuffer.mapped != nil ? logitsBuffer : try hostArena.buffer(maxLogitRows * c.vocabularySize * 4, label: "logits_host")
        // The GPU family's top-k sorts a vocabulary chunk in shared memory: past its limit the host samples.
        let topCandidatesFit = kernels.family == .cpu || c.vocabularySize <= Kernels.gpuTopCandidatesVocabularyLimit
        self.samplesOnDevice = topCandidatesFit && (samplesOnDevice ?? ProcessInfo.processInfo.environment["KILN_VULKAN_SAMPLING"].map { $0 == "device" } ?? !device.unifiedMemory)
        let record = (2 * Kernels.topCandidateCount + 2) * 4
        partialCandidates = try arena.buffer(maxLogitRows * Kernels.topCandidateChunks * record, label: "partial_candidates")
        // Greedy picks stay on the device (each step copies them to its slot for the host; the next step's
        // fed tokens are copied from here). The step tables the kernels read are copied in from the step's
        // slot, which the host writes.
        chosen = try arena.buffer(maxLogitRows * 4, label: "chosen")
        candidatesBuffer = try hostArena.buffer(maxLogitRows * record, label: "candidates")
        tokensBuffer = try arena.buffer(maxTokens * 4, label: "tokens")
        positionsBuffer = try arena.buffer(maxTokens * 4, label: "positions")
        sequencesBuffer = try arena.buffer(maxTokens * 4, label: "sequences")
        blockTablesBuffer = try arena.buffer(maxSequences * maxBlocksPerSequence * 4, label: "block_tables")
        rowsBuffer = try arena.buffer(maxLogitRows * 4, label: "logit_rows")
        // cos/sin per (position, pair), computed in double exactly as the CPU reference does.
        let pairs = c.ropeDimension / 2
        let rotationUpload = Upload(arena: arena)
        let rotationBytes: UnsafeMutableRawPointer
        (rotation, rotationBytes) = try rotationUpload.buffer(c.contextLength * pairs * 8, label: "rotation")
        let table = rotationBytes.assumingMemoryBound(to: Float.self)
        for pos in 0..<c.contextLength {
            for i in 0..<pairs {
                let theta = Double(pos) * pow(Double(c.ropeBase), -2 * Double(i) / Double(c.ropeDimension))
                table[(pos * pairs + i) * 2] = Float(cos(theta))
                table[(pos * pairs + i) * 2 + 1] = Float(sin(theta))
            }
        }
        try rotationUpload.finish()
        // The pool: as many KV heads per buffer as the buffer limit allows.
        let headBytes = blockCount * Self.kvBytesPerLayerBlock(c, blockSize: blockSize, kvCache: kvCache, heads: 1)
        let bufferLimit = min(maxBufferBytes ?? Int.max, device.info.maxStorageBufferRange)
        let headsPerShard = min(c.kvHeadCount, bufferLimit / max(headBytes, 1))
        guard headsPerShard > 0 else {
            throw VulkanError("KV pool", message: "\(blockCount) blocks need \(headBytes >> 20) MiB per KV head and layer, above the buffer limit of \(bufferLimit >> 20) MiB; use fewer blocks")
        }
        kvShards = stride(from: 0, to: c.kvHeadCount, by: headsPerShard).map {
            let heads = min(headsPerShard, c.kvHeadCount - $0)
            return KVShard(headStart: $0, heads: heads, blockBytes: Self.kvBytesPerLayerBlock(c, blockSize: blockSize, kvCache: kvCache, heads: heads))
        }
        // The QKV kernel's epilogue stores into one shard and rotates adjacent pairs only.
        let fusesRope = (fusesRope ?? (kernels.family == .cpu && environment["KILN_VULKAN_FUSE_ROPE"] != "0")) && kvShards.count == 1 && c.architecture != "qwen2"
        if fusesRope { try kernels.require(.qkv) }
        self.fusesRope = fusesRope

        let tokensBuffer = tokensBuffer, x = x, normed = normed, sumSquares = sumSquares, gatheredNormed = gatheredNormed, gatheredSumSquares = gatheredSumSquares
        // Each layer's attention norm, then the final one: the kernel before each (embedding, previous down
        // projection) multiplies by it where the norm is folded in.
        let attentionNorms = try (0..<c.layerCount).map { try vector("blk.\($0).attn_norm.weight") }
        let outputNorm = try vector("output_norm.weight")
        embedSets = try embedding.slices.map {
            VkDescriptorSetHandle(try kernels.embed.bind([$0.quants, $0.scales, tokensBuffer, x, attentionNorms.first ?? outputNorm, normed, sumSquares]))
        }
        func matmulSets(_ m: DeviceMatrix, x input: DeviceBuffer, y output: DeviceBuffer, epilogue: Kernels.MatmulEpilogue = .store,
                        normOut: DeviceBuffer? = nil, normIn sums: DeviceBuffer? = nil, qkvEpilogue: [DeviceBuffer] = []) throws -> [VkDescriptorSetHandle] {
            let kernel = try kernels.matmul(for: m.format, epilogue: epilogue)
            return try m.slices.map {
                VkDescriptorSetHandle(try kernel.bind(Kernels.matmulBuffers(
                    quants: $0.quants, scales: $0.scales, x: input, y: output, normWeight: foldsNorm ? normOut : nil,
                    normed: foldsNorm && normOut != nil ? normed : nil, sumSquaresOut: foldsNorm && normOut != nil ? sumSquares : nil,
                    sumSquaresIn: foldsNorm ? sums : nil, qkvEpilogue: qkvEpilogue)))
            }
        }
        if foldsNorm {
            gatherSet = VkDescriptorSetHandle(try kernels.gatherRows.bind([rowsBuffer, normed, gatheredNormed]))
            gatherSumSquaresSet = VkDescriptorSetHandle(try kernels.gatherRows.bind([rowsBuffer, sumSquares, gatheredSumSquares]))
            outputNormSet = nil
        } else {
            gatherSet = VkDescriptorSetHandle(try kernels.gatherRows.bind([rowsBuffer, x, gathered]))
            gatherSumSquaresSet = nil
            outputNormSet = VkDescriptorSetHandle(try kernels.rmsNorm.bind([gathered, outputNorm, gatheredNormed]))
        }
        outputSets = try matmulSets(outputMatrix, x: gatheredNormed, y: logitsBuffer, normIn: gatheredSumSquares)
        argmaxSet = VkDescriptorSetHandle(try kernels.argmax.bind([logitsBuffer, partialCandidates, chosen]))
        topCandidatesSet = VkDescriptorSetHandle(try kernels.topCandidates.bind([logitsBuffer, partialCandidates, candidatesBuffer]))

        for l in 0..<c.layerCount {
            let p = "blk.\(l)."
            let qkvMatrix = try matrix([p + "attn_q.weight", p + "attn_k.weight", p + "attn_v.weight"], p + "qkv")
            let outputProjection = try matrix([p + "attn_output.weight"], p + "attn_output")
            let gateUpMatrix = try matrix([p + "ffn_gate.weight", p + "ffn_up.weight"], p + "gate_up", order: fusesSwiGLU ? .gateUpInterleaved : .stacked)
            let downMatrix = try matrix([p + "ffn_down.weight"], p + "ffn_down")
            let attentionNorm = attentionNorms[l], ffnNorm = try vector(p + "ffn_norm.weight")
            let nextNorm = l + 1 < c.layerCount ? attentionNorms[l + 1] : outputNorm
            let keys = try kvShards.map { try arena.buffer(blockCount * $0.blockBytes, label: p + "keys_\($0.headStart)") }
            let values = try kvShards.map { try arena.buffer(blockCount * $0.blockBytes, label: p + "values_\($0.headStart)") }
            // Locals for the closures below (self is not yet fully initialized).
            let qkv = qkv, positionsBuffer = positionsBuffer, sequencesBuffer = sequencesBuffer, blockTablesBuffer = blockTablesBuffer, rotation = rotation, attended = attended
            let hidden = hidden, attentionPartials = attentionPartials
            layers.append(Layer(
                qkv: qkvMatrix, output: outputProjection, gateUp: gateUpMatrix, down: downMatrix, keys: keys, values: values,
                attentionNormSet: foldsNorm ? nil : VkDescriptorSetHandle(try kernels.rmsNorm.bind([x, attentionNorm, normed])),
                qkvSets: try matmulSets(qkvMatrix, x: normed, y: qkv, epilogue: fusesRope ? .qkv : .store, normIn: sumSquares,
                                        qkvEpilogue: fusesRope ? [positionsBuffer, sequencesBuffer, blockTablesBuffer, rotation, keys[0], values[0]] : []),
                ropeSets: fusesRope ? [] : try zip(keys, values).map {
                    VkDescriptorSetHandle(try kernels.ropeStore.bind([qkv, positionsBuffer, sequencesBuffer, blockTablesBuffer, rotation, $0, $1, qkv]))
                },
                attentionSets: try zip(keys, values).map {
                    VkDescriptorSetHandle(try kernels.attention.bind([qkv, positionsBuffer, sequencesBuffer, blockTablesBuffer, $0, $1, attended, attentionPartials]))
                },
                outputSets: try matmulSets(outputProjection, x: attended, y: x, normOut: ffnNorm),
                ffnNormSet: foldsNorm ? nil : VkDescriptorSetHandle(try kernels.rmsNorm.bind([x, ffnNorm, normed])),
                gateUpSets: try gateUp.map { try matmulSets(gateUpMatrix, x: normed, y: $0, normIn: sumSquares) }
                    ?? matmulSets(gateUpMatrix, x: normed, y: hidden, epilogue: .swiglu, normIn: sumSquares),
                swigluSet: try gateUp.map { VkDescriptorSetHandle(try kernels.swiglu.bind([$0, hidden])) },
                downSets: try matmulSets(downMatrix, x: hidden, y: x, normOut: nextNorm)))
        }
    }

    /// Copies KV block `source` to block `destination` in every layer (copy-on-write of a shared block).
    public func copyBlock(from source: Int, to destination: Int) throws {
        guard source >= 0, source < blockCount, destination >= 0, destination < blockCount else {
            throw VulkanError("copyBlock", message: "block \(source) or \(destination) is outside the pool of \(blockCount)")
        }
        let slot = slots[submitted % slots.count]
        try retire(slot)
        let stream = slot.stream
        try stream.begin()
        stream.barrier()   // after the steps still in flight, which may write the source block
        for layer in layers {
            for (shard, (keys, values)) in zip(kvShards, zip(layer.keys, layer.values)) {
                let bytes = shard.blockBytes
                stream.copy(from: keys, at: source * bytes, to: keys, at: destination * bytes, bytes: bytes)
                stream.copy(from: values, at: source * bytes, to: values, at: destination * bytes, bytes: bytes)
            }
        }
        try stream.submitAndWait()
    }

    /// Per-kernel timings when KILN_VULKAN_PROFILE=1 (each dispatch submitted alone) or gpu (timestamps).
    public func profileReport() -> String { CommandStream.profileReport(slots.map(\.stream)) }

    /// Bytes of device memory the decoder holds (weights, KV pool, activations).
    public var deviceBytes: Int { arena.allocatedBytes + hostArena.allocatedBytes }

    /// Row slices over all weight matrices (one per matrix unless some were split).
    var matrixSliceCount: Int {
        layers.reduce(embedding.slices.count + (config.tiedOutput ? 0 : outputMatrix.slices.count)) {
            $0 + $1.qkv.slices.count + $1.output.slices.count + $1.gateUp.slices.count + $1.down.slices.count
        }
    }

    public func logits(_ batch: DecodeBatch) throws -> [[Float]] {
        try run(batch, output: .logits, feeds: [])
        return hostLogitRows(batch.logitRows.count)
    }

    public var topCandidateCount: Int { Kernels.topCandidateCount }

    /// Runs the step and returns each row's 64 most likely tokens (the full logits too only when
    /// `alsoLogits`): found on the device (2·64 + 2 words read back per row) when `samplesOnDevice`, else by
    /// the host in the logits where they lie.
    public func candidates(_ batch: DecodeBatch, alsoLogits: Bool) throws -> (candidates: [TopCandidates], logits: [[Float]]) {
        try run(batch, output: .candidates(alsoLogits: alsoLogits), feeds: [])
        let k = Kernels.topCandidateCount, v = config.vocabularySize, count = batch.logitRows.count
        let rows: [TopCandidates]
        if samplesOnDevice {
            let words = candidatesBuffer.contents.assumingMemoryBound(to: UInt32.self)
            rows = try (0..<count).map { r -> TopCandidates in
                let base = r * (2 * k + 2)
                var ids: [Int] = [], scores: [Float] = []
                for j in 0..<k where words[base + k + j] != UInt32.max {
                    guard Int(words[base + k + j]) < v else { throw VulkanError("top candidates", message: "token id \(words[base + k + j]) is out of the vocabulary") }
                    ids.append(Int(words[base + k + j]))
                    scores.append(Float(bitPattern: words[base + j]))
                }
                let maximum = Double(Float(bitPattern: words[base + 2 * k])), sum = Double(Float(bitPattern: words[base + 2 * k + 1]))
                return TopCandidates(ids: ids, scores: scores, logNormalizer: maximum + Foundation.log(sum))
            }
        } else {
            rows = (0..<count).map { TopCandidates(logits: hostLogitRow($0), count: k) }
        }
        return (rows, alsoLogits ? hostLogitRows(count) : [])
    }

    public func greedy(_ batch: DecodeBatch) throws -> [Int] {
        if samplesOnDevice { return try waitGreedy(submitGreedy(batch, feeds: [])) }
        try run(batch, output: .greedy(onDevice: false), feeds: [])
        return (0..<batch.logitRows.count).map { argmax(hostLogitRow($0)) }   // the first maximum, as on the device
    }

    /// Logit row `row` where the host reads it (valid until the next step).
    func hostLogitRow(_ row: Int) -> UnsafeBufferPointer<Float> {
        let v = config.vocabularySize
        return UnsafeBufferPointer(hostLogits.floats(v, at: row * v))
    }

    /// The first `count` rows of logits, copied out of host-visible memory.
    func hostLogitRows(_ count: Int) -> [[Float]] {
        (0..<count).map { Array(hostLogitRow($0)) }
    }

    /// What a step leaves for the host to read.
    enum Output: Equatable { case logits, greedy(onDevice: Bool), candidates(alsoLogits: Bool) }
}

extension VulkanDecoder: PipelinedDecoderBackend {
    /// A submitted step runs on the device while the host goes on; where the device is a CPU (lavapipe)
    /// both compete for the same cores, and `kiln bench decode --compare-pipeline` measured no gain there.
    public var overlapsSteps: Bool { device.info.kind != .cpu }

    /// Submits a greedy step (picks found on the device, whatever `samplesOnDevice` says, so that the next
    /// step can be fed them) and returns without waiting for it. At most two steps are in flight: a third
    /// submission first waits for the oldest (its picks are kept for `waitGreedy`).
    public func submitGreedy(_ batch: DecodeBatch, feeds: [TokenFeed]) throws -> SubmittedStep {
        try submit(batch, output: .greedy(onDevice: true), feeds: feeds)
    }

    public func waitGreedy(_ step: SubmittedStep) throws -> [Int] {
        if let picks = unread.removeValue(forKey: step.serial) { return picks }
        let slot = slots[step.serial % slots.count]
        guard let inFlight = slot.inFlight, inFlight.serial == step.serial, inFlight.picks != nil else {
            throw VulkanError("waitGreedy", message: "step \(step.serial) is not a greedy step in flight (not submitted, or already waited for)")
        }
        try retire(slot)
        return unread.removeValue(forKey: step.serial) ?? []
    }
}

/// A descriptor set (an opaque Vulkan handle) held by the decoder.
struct VkDescriptorSetHandle: @unchecked Sendable {
    let set: VkDescriptorSet
    init(_ set: VkDescriptorSet) { self.set = set }
}
