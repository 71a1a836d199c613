import CKilnCPU
import Glibc
import KilnModel

/// Kiln's native CPU decoder: a llama-family forward pass on quantized weights with SIMD kernels (AVX-512
/// VNNI, AVX2 or portable C, the best the CPU has) over a persistent thread pool, and keys and values in a
/// paged f16 pool addressed through each sequence's block table, like the Vulkan backend's.
///
/// Every output element is computed by one thread in one order that depends only on its own inputs, so the
/// logits of a token are bit-identical whatever else is in its batch, however its prompt was chunked, where
/// its blocks lie and how many threads run.
///
/// Not thread-safe: one caller at a time (the engine's scheduler), as every `DecoderBackend`.
public final class CPUBackend: DecoderBackend {
    public let config: ModelConfig
    public let blockSize: Int
    public let blockCount: Int
    /// Threads that compute a step (the caller's included).
    public let threads: Int
    /// The kernel family in use ("avx512-vnni", "avx2" or "portable").
    public var kernelFamily: String { String(cString: kiln_cpu_isa_name(kiln_cpu_isa())) }

    private struct Layer {
        let attentionNorm: [Float], feedForwardNorm: [Float]
        let query: PackedMatrix, key: PackedMatrix, value: PackedMatrix, output: PackedMatrix
        /// Copied once at load to memory the kernels read directly (freed in deinit).
        let queryBias: UnsafeMutablePointer<Float>?, keyBias: UnsafeMutablePointer<Float>?, valueBias: UnsafeMutablePointer<Float>?
        let gate: PackedMatrix, up: PackedMatrix, down: PackedMatrix
    }

    private let embedding: PackedMatrix
    private let layers: [Layer]
    private let outputNorm: [Float]
    private let output: PackedMatrix
    private let pool: OpaquePointer
    /// Per layer, the pool's keys and values: blockCount · blockSize slots of kvHeads · headDim halves, zero
    /// pages until written.
    private let keys: [UnsafeMutablePointer<UInt16>]
    private let values: [UnsafeMutablePointer<UInt16>]
    private let scratch = Scratch()

    /// Why this backend cannot run a model of this shape, or nil.
    public static func unsupported(_ c: ModelConfig) -> String? {
        for (name, width) in [("embedding", c.embeddingWidth), ("feed-forward", c.feedForwardWidth), ("attention", c.headCount * c.headDimension)]
        where width % 32 != 0 {
            return "the \(name) width \(width) is not a multiple of 32"
        }
        return nil
    }

    /// Loads and repacks the weights of `file`. `threads` defaults to one per core.
    public init(file: GGUFFile, blockCount: Int, blockSize: Int = 16, threads: Int? = nil) throws {
        let config = try ModelConfig(gguf: file)
        if let why = Self.unsupported(config) { throw CPUBackendError("the CPU backend cannot run this model: \(why)") }
        // Slots go to the kernels as Int32: a pool past 2^31 slots is refused here, not trapped on per step.
        guard blockCount > 0, blockSize > 0, blockCount.multipliedReportingOverflow(by: blockSize).partialValue < Int(Int32.max),
              !blockCount.multipliedReportingOverflow(by: blockSize).overflow else {
            throw CPUBackendError("a KV pool of \(blockCount) blocks of \(blockSize)")
        }
        self.config = config
        self.blockSize = blockSize
        self.blockCount = blockCount
        let d = config.embeddingWidth, kvWidth = config.kvHeadCount * config.headDimension
        let qWidth = config.headCount * config.headDimension

        func matrix(_ name: String, columns: Int, rows: Int) throws -> PackedMatrix {
            let info = try file.tensor(name, dimensions: [columns, rows])
            return try PackedMatrix(type: info.type, bytes: file.data(of: info), rows: rows, columns: columns)
        }
        let vector = file.floats, optionalVector = file.optionalFloats
        embedding = try matrix("token_embd.weight", columns: d, rows: config.vocabularySize)
        layers = try (0..<config.layerCount).map { i in
            let p = "blk.\(i)."
            return Layer(
                attentionNorm: try vector(p + "attn_norm.weight", d),
                feedForwardNorm: try vector(p + "ffn_norm.weight", d),
                query: try matrix(p + "attn_q.weight", columns: d, rows: qWidth),
                key: try matrix(p + "attn_k.weight", columns: d, rows: kvWidth),
                value: try matrix(p + "attn_v.weight", columns: d, rows: kvWidth),
                output: try matrix(p + "attn_output.weight", columns: qWidth, rows: d),
                queryBias: try optionalVector(p + "attn_q.bias", qWidth).map(Self.copied),
                keyBias: try optionalVector(p + "attn_k.bias", kvWidth).map(Self.copied),
                valueBias: try optionalVector(p + "attn_v.bias", kvWidth).map(Self.copied),
                gate: try matrix(p + "ffn_gate.weight", columns: d, rows: config.feedForwardWidth),
                up: try matrix(p + "ffn_up.weight", columns: d, rows: config.feedForwardWidth),
                down: try matrix(p + "ffn_down.weight", columns: config.feedForwardWidth, rows: d))
        }
        outputNorm = try vector("output_norm.weight", d)
        output = config.tiedOutput ? embedding : try matrix("output.weight", columns: d, rows: config.vocabularySize)

        let slots = blockCount * blockSize * kvWidth
        var keys: [UnsafeMutablePointer<UInt16>] = [], values: [UnsafeMutablePointer<UInt16>] = []
        for _ in 0..<config.layerCount {
            // calloc: a large pool is mapped zero pages, paid for only as blocks are written.
            guard let k = calloc(slots, 2), let v = calloc(slots, 2) else { throw CPUBackendError("no memory for a KV pool of \(blockCount) blocks") }
            keys.append(k.bindMemory(to: UInt16.self, capacity: slots))
            values.append(v.bindMemory(to: UInt16.self, capacity: slots))
        }
        self.keys = keys
        self.values = values
        // KILN_CPU_KERNELS=portable|avx2|avx512-vnni runs a lower kernel family than the CPU's best (to compare them).
        if let name = getenv("KILN_CPU_KERNELS").map({ String(cString: $0) }), !name.isEmpty {
            guard let isa = (0...kiln_cpu_best_isa().rawValue).map({ kiln_isa(rawValue: $0) }).first(where: { String(cString: kiln_cpu_isa_name($0)) == name }) else {
                throw CPUBackendError("KILN_CPU_KERNELS=\(name): this CPU runs \((0...kiln_cpu_best_isa().rawValue).map { String(cString: kiln_cpu_isa_name(kiln_isa(rawValue: $0))) }.joined(separator: ", "))")
            }
            kiln_cpu_set_isa(isa)
        }
        let count = max(1, min(threads ?? Self.coreCount, 256))
        guard let pool = kiln_pool_create(Int32(count)) else { throw CPUBackendError("could not start \(count) threads") }
        self.pool = pool
        self.threads = Int(kiln_pool_threads(pool))
    }

    private static func copied(_ values: [Float]) -> UnsafeMutablePointer<Float> {
        let p = UnsafeMutablePointer<Float>.allocate(capacity: values.count)
        p.initialize(from: values, count: values.count)
        return p
    }

    deinit {
        for l in layers { for b in [l.queryBias, l.keyBias, l.valueBias] { b?.deallocate() } }
        kiln_pool_destroy(pool)
        for p in keys { free(p) }
        for p in values { free(p) }
    }

    /// The cores this process may run on.
    public static var coreCount: Int { Int(kiln_cpu_count()) }

    /// Bytes per second this backend's threads read from memory together (best of a few passes over 256 MiB).
    public func measureReadBandwidth() -> Double { kiln_read_bandwidth(pool, 256 << 20, 5) }

    /// Bytes of weights a batch-1 decode step reads (every matrix once, the output projection included).
    public var weightBytes: Int {
        layers.reduce(output.byteCount) { sum, l in
            sum + [l.query, l.key, l.value, l.output, l.gate, l.up, l.down].reduce(0) { $0 + $1.byteCount }
        }
    }

    public func greedy(_ batch: DecodeBatch) throws -> [Int] { try logits(batch).map(argmax) }

    public func copyBlock(from source: Int, to destination: Int) throws {
        guard source >= 0, source < blockCount, destination >= 0, destination < blockCount else {
            throw DecodeBatchError("block \(source) or \(destination) is outside the pool of \(blockCount)")
        }
        let width = blockSize * config.kvHeadCount * config.headDimension
        for layer in 0..<config.layerCount {
            (keys[layer] + destination * width).update(from: keys[layer] + source * width, count: width)
            (values[layer] + destination * width).update(from: values[layer] + source * width, count: width)
        }
    }

    public func logits(_ batch: DecodeBatch) throws -> [[Float]] {
        try batch.validate(config: config, blockSize: blockSize, blockCount: blockCount)
        let c = config, n = batch.tokens.count, d = c.embeddingWidth
        let hd = c.headDimension, qWidth = c.headCount * hd, kvWidth = c.kvHeadCount * hd, ffn = c.feedForwardWidth
        let s = scratch
        s.reserve(tokens: n, config: c)

        for (t, token) in batch.tokens.enumerated() { embedding.dequantizeRow(token, into: s.x + t * d) }
        var positions = [Int32](), slots = [Int32](), tableOffsets = [Int32](), tables = [Int32]()
        var offsetOfSequence = [Int32]()
        for table in batch.blockTables {
            offsetOfSequence.append(Int32(tables.count))
            tables += table.map { Int32($0) }
        }
        for t in 0..<n {
            let p = batch.positions[t], table = batch.blockTables[batch.sequences[t]]
            positions.append(Int32(p))
            slots.append(Int32(table[p / blockSize] * blockSize + p % blockSize))
            tableOffsets.append(offsetOfSequence[batch.sequences[t]])
        }
        let neox: Int32 = c.architecture == "qwen2" ? 1 : 0

        for (l, layer) in layers.enumerated() {
            // Attention: x += Wo · attention(RoPE(Wq·norm(x)), RoPE(Wk·norm(x)), Wv·norm(x)).
            kiln_rms_norm(s.x, layer.attentionNorm, Int32(n), Int32(d), c.rmsEpsilon, s.h)
            kiln_quantize(pool, s.h, Int32(n), Int32(d), s.xq)
            withProducts([(layer.query, layer.queryBias, s.q, qWidth), (layer.key, layer.keyBias, s.k, kvWidth),
                          (layer.value, layer.valueBias, s.v, kvWidth)]) { kiln_matmul(pool, $0, $1, s.h, s.xq, Int32(n)) }
            positions.withUnsafeBufferPointer { pos in
                kiln_rope(s.q, pos.baseAddress, Int32(n), Int32(c.headCount), Int32(hd), Int32(c.ropeDimension), c.ropeBase, neox)
                kiln_rope(s.k, pos.baseAddress, Int32(n), Int32(c.kvHeadCount), Int32(hd), Int32(c.ropeDimension), c.ropeBase, neox)
            }
            slots.withUnsafeBufferPointer { kiln_kv_store(keys[l], values[l], s.k, s.v, $0.baseAddress, Int32(n), Int32(kvWidth)) }
            positions.withUnsafeBufferPointer { pos in
                tableOffsets.withUnsafeBufferPointer { offsets in
                    tables.withUnsafeBufferPointer { tab in
                        var args = kiln_attention_args(q: s.q, keys: keys[l], values: values[l], positions: pos.baseAddress,
                                                       table_offsets: offsets.baseAddress, tables: tab.baseAddress, out: s.attended,
                                                       rows: Int32(n), heads: Int32(c.headCount), kv_heads: Int32(c.kvHeadCount),
                                                       head_dim: Int32(hd), block_size: Int32(blockSize))
                        kiln_attention(pool, &args)
                    }
                }
            }
            kiln_quantize(pool, s.attended, Int32(n), Int32(qWidth), s.xq)
            withProducts([(layer.output, nil, s.h, d)]) { kiln_matmul(pool, $0, $1, s.attended, s.xq, Int32(n)) }
            kiln_add(s.x, s.h, n * d)

            // Feed-forward (SwiGLU): x += Wdown · (silu(Wgate·norm(x)) ⊙ Wup·norm(x)).
            kiln_rms_norm(s.x, layer.feedForwardNorm, Int32(n), Int32(d), c.rmsEpsilon, s.h)
            kiln_quantize(pool, s.h, Int32(n), Int32(d), s.xq)
            withProducts([(layer.gate, nil, s.gate, ffn), (layer.up, nil, s.up, ffn)]) { kiln_matmul(pool, $0, $1, s.h, s.xq, Int32(n)) }
            kiln_swiglu(pool, s.gate, s.up, n * ffn)
            kiln_quantize(pool, s.gate, Int32(n), Int32(ffn), s.xq)
            withProducts([(layer.down, nil, s.h, d)]) { kiln_matmul(pool, $0, $1, s.gate, s.xq, Int32(n)) }
            kiln_add(s.x, s.h, n * d)
        }

        // Final norm and the output projection, for the rows whose logits are wanted.
        let rows = batch.logitRows.count
        guard rows > 0 else { return [] }
        for (i, r) in batch.logitRows.enumerated() { (s.h + i * d).update(from: s.x + r * d, count: d) }
        kiln_rms_norm(s.h, outputNorm, Int32(rows), Int32(d), c.rmsEpsilon, s.x)
        kiln_quantize(pool, s.x, Int32(rows), Int32(d), s.xq)
        let vocab = c.vocabularySize
        var logits = [Float](repeating: 0, count: rows * vocab)
        logits.withUnsafeMutableBufferPointer { out in
            withProducts([(output, nil, out.baseAddress!, vocab)]) { kiln_matmul(pool, $0, $1, s.x, s.xq, Int32(rows)) }
        }
        return (0..<rows).map { Array(logits[$0 * vocab ..< ($0 + 1) * vocab]) }
    }

    /// Calls `body` with the C descriptions of products (matrix, bias, output, output row stride) that share
    /// an input.
    private func withProducts(_ list: [(PackedMatrix, UnsafeMutablePointer<Float>?, UnsafeMutablePointer<Float>, Int)],
                              _ body: (UnsafePointer<kiln_product>, Int32) -> Void) {
        var matrices = list.map(\.0.matrix)
        matrices.withUnsafeMutableBufferPointer { m in
            let products = list.indices.map { i in
                kiln_product(w: UnsafePointer(m.baseAddress! + i), bias: list[i].1.map { UnsafePointer($0) }, y: list[i].2, ldy: Int32(list[i].3))
            }
            products.withUnsafeBufferPointer { body($0.baseAddress!, Int32(list.count)) }
        }
    }
}

/// A step's working buffers, grown to the largest step seen and reused.
private final class Scratch {
    private(set) var capacity = 0
    var x = UnsafeMutablePointer<Float>.allocate(capacity: 1)
    var h = UnsafeMutablePointer<Float>.allocate(capacity: 1)
    var q = UnsafeMutablePointer<Float>.allocate(capacity: 1)
    var k = UnsafeMutablePointer<Float>.allocate(capacity: 1)
    var v = UnsafeMutablePointer<Float>.allocate(capacity: 1)
    var attended = UnsafeMutablePointer<Float>.allocate(capacity: 1)
    var gate = UnsafeMutablePointer<Float>.allocate(capacity: 1)
    var up = UnsafeMutablePointer<Float>.allocate(capacity: 1)
    var xq = UnsafeMutablePointer<kiln_q8_block>.allocate(capacity: 1)

    func reserve(tokens n: Int, config c: ModelConfig) {
        guard n > capacity else { return }
        release()
        let d = c.embeddingWidth, q = c.headCount * c.headDimension, kv = c.kvHeadCount * c.headDimension, f = c.feedForwardWidth
        // h also holds the output norm's input and x its result: one row per wanted logit row (≤ n).
        x = .allocate(capacity: n * d); h = .allocate(capacity: n * max(d, q))
        self.q = .allocate(capacity: n * q); k = .allocate(capacity: n * kv); v = .allocate(capacity: n * kv)
        attended = .allocate(capacity: n * q); gate = .allocate(capacity: n * f); up = .allocate(capacity: n * f)
        xq = .allocate(capacity: n * max(d, q, f) / 32)
        capacity = n
    }

    private func release() {
        for p in [x, h, q, k, v, attended, gate, up] { p.deallocate() }
        xq.deallocate()
    }

    deinit { release() }
}
