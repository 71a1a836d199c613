import Dispatch
import Foundation

/// The CPU reference decoder: a llama-family forward pass in float32, written to be read top to bottom.
/// It is the oracle every faster backend is tested against, so it favours plainness over speed; the only
/// concessions are SIMD dot products and splitting matrix rows across cores.
///
/// It implements `DecoderBackend`: keys and values live in a paged pool (`blockCount` blocks of
/// `blockSize` positions) addressed through each sequence's block table, exactly as the Vulkan backend
/// addresses its pool. The pool grows on first use of a block, so an unused pool costs nothing.
public final class ReferenceBackend: DecoderBackend {
    public let weights: ReferenceWeights
    public var config: ModelConfig { weights.config }
    public let blockSize: Int
    public let blockCount: Int
    // Per layer: [block][slot][kvHead][headDimension], grown as blocks are written.
    private var keys: [[Float]]
    private var values: [[Float]]

    public init(weights: ReferenceWeights, blockCount: Int, blockSize: Int = 16) {
        self.weights = weights
        self.blockSize = blockSize
        self.blockCount = blockCount
        keys = Array(repeating: [], count: weights.config.layerCount)
        values = Array(repeating: [], count: weights.config.layerCount)
    }

    public func greedy(_ batch: DecodeBatch) throws -> [Int] { try logits(batch).map(argmax) }

    // The pipeline's bookkeeping: steps submitted, picks not yet waited for, the latest step's picks.
    private var submitted = 0
    private var unread: [Int: [Int]] = [:]
    private var latestPicks: (serial: Int, picks: [Int])?

    public func copyBlock(from source: Int, to destination: Int) throws {
        guard source >= 0, source < blockCount, destination >= 0, destination < blockCount else {
            throw DecodeBatchError("block \(source) or \(destination) is outside the pool of \(blockCount)")
        }
        let width = blockSize * config.kvHeadCount * config.headDimension
        for layer in keys.indices {
            let needed = (max(source, destination) + 1) * width
            if keys[layer].count < needed {
                keys[layer] += [Float](repeating: 0, count: needed - keys[layer].count)
                values[layer] += [Float](repeating: 0, count: needed - values[layer].count)
            }
            for i in 0..<width {
                keys[layer][destination * width + i] = keys[layer][source * width + i]
                values[layer][destination * width + i] = values[layer][source * width + i]
            }
        }
    }

    public func logits(_ batch: DecodeBatch) throws -> [[Float]] {
        let c = config
        let n = batch.tokens.count, d = c.embeddingWidth
        try validate(batch)

        // 1. Token embedding: x holds n rows of width d.
        var x = [Float](repeating: 0, count: n * d)
        for (t, token) in batch.tokens.enumerated() {
            for i in 0..<d { x[t * d + i] = weights.tokenEmbedding.values[token * d + i] }
        }
        // Where each token's key and value go in the pool.
        let slots = (0..<n).map { t in
            batch.blockTables[batch.sequences[t]][batch.positions[t] / blockSize] * blockSize + batch.positions[t] % blockSize
        }

        for (l, layer) in weights.layers.enumerated() {
            // 2. Attention block: x += Wo · attention(RoPE(Wq·norm(x)), RoPE(Wk·norm(x)), Wv·norm(x)).
            let h = rmsNorm(x, rows: n, weight: layer.attentionNorm)
            var q = matmul(h, rows: n, layer.query, bias: layer.queryBias)
            var k = matmul(h, rows: n, layer.key, bias: layer.keyBias)
            let v = matmul(h, rows: n, layer.value, bias: layer.valueBias)
            applyRoPE(&q, positions: batch.positions, heads: c.headCount)
            applyRoPE(&k, positions: batch.positions, heads: c.kvHeadCount)
            store(layer: l, keys: k, values: v, slots: slots)
            let attended = attention(q, batch: batch, layer: l)
            add(&x, matmul(attended, rows: n, layer.output))

            // 3. Feed-forward block (SwiGLU): x += Wdown · (silu(Wgate·norm(x)) ⊙ Wup·norm(x)).
            let f = rmsNorm(x, rows: n, weight: layer.feedForwardNorm)
            var gate = matmul(f, rows: n, layer.gate)
            let up = matmul(f, rows: n, layer.up)
            for i in gate.indices { gate[i] = gate[i] / (1 + exp(-gate[i])) * up[i] }
            add(&x, matmul(gate, rows: n, layer.down))
        }

        // 4. Final norm and output projection, only for the rows whose logits are wanted.
        var wanted: [Float] = []
        for r in batch.logitRows { wanted += x[r * d ..< (r + 1) * d] }
        let normed = rmsNorm(wanted, rows: batch.logitRows.count, weight: weights.outputNorm)
        let logits = matmul(normed, rows: batch.logitRows.count, weights.output)
        let vocab = c.vocabularySize
        return (0..<batch.logitRows.count).map { Array(logits[$0 * vocab ..< ($0 + 1) * vocab]) }
    }

    private func validate(_ batch: DecodeBatch) throws {
        try batch.validate(config: config, blockSize: blockSize, blockCount: blockCount)
    }

    // MARK: the operations

    /// RMSNorm of each row, times the learned weight.
    func rmsNorm(_ x: [Float], rows: Int, weight: [Float]) -> [Float] {
        let d = weight.count
        var out = [Float](repeating: 0, count: x.count)
        for r in 0..<rows {
            var sum: Float = 0
            for i in 0..<d { sum += x[r * d + i] * x[r * d + i] }
            let scale = 1 / (sum / Float(d) + config.rmsEpsilon).squareRoot()
            for i in 0..<d { out[r * d + i] = x[r * d + i] * scale * weight[i] }
        }
        return out
    }

    /// Rotary position embedding on each head of each row. GGUF's `llama` layout rotates adjacent pairs
    /// (2i, 2i+1): the converter permuted Q and K to make it so. `qwen2` keeps Hugging Face's layout, which
    /// pairs i with i + dims/2 ("NeoX" style).
    func applyRoPE(_ x: inout [Float], positions: [Int], heads: Int) {
        let hd = config.headDimension, dims = config.ropeDimension
        let adjacentPairs = config.architecture != "qwen2"
        for (t, position) in positions.enumerated() {
            let pos = Double(position)
            for head in 0..<heads {
                let base = (t * heads + head) * hd
                for i in 0..<dims / 2 {
                    let theta = pos * pow(Double(config.ropeBase), -2 * Double(i) / Double(dims))
                    let cosine = Float(cos(theta)), sine = Float(sin(theta))
                    let (a, b) = adjacentPairs ? (base + 2 * i, base + 2 * i + 1) : (base + i, base + i + dims / 2)
                    let x0 = x[a], x1 = x[b]
                    x[a] = x0 * cosine - x1 * sine
                    x[b] = x0 * sine + x1 * cosine
                }
            }
        }
    }

    /// Writes each token's key and value rows into its pool slot (growing the pool to reach it).
    func store(layer: Int, keys k: [Float], values v: [Float], slots: [Int]) {
        let width = config.kvHeadCount * config.headDimension
        for (t, slot) in slots.enumerated() {
            let needed = (slot / blockSize + 1) * blockSize * width
            if keys[layer].count < needed {
                keys[layer] += [Float](repeating: 0, count: needed - keys[layer].count)
                values[layer] += [Float](repeating: 0, count: needed - values[layer].count)
            }
            for i in 0..<width {
                keys[layer][slot * width + i] = k[t * width + i]
                values[layer][slot * width + i] = v[t * width + i]
            }
        }
    }

    /// Causal grouped-query attention: each token attends to positions 0...its own of its sequence, read
    /// through the block table.
    func attention(_ q: [Float], batch: DecodeBatch, layer: Int) -> [Float] {
        let c = config, hd = c.headDimension
        let group = c.headCount / c.kvHeadCount
        let scale = 1 / Float(hd).squareRoot()
        let kvStride = c.kvHeadCount * hd
        let cacheK = keys[layer], cacheV = values[layer]
        var out = [Float](repeating: 0, count: batch.tokens.count * c.headCount * hd)
        for t in 0..<batch.tokens.count {
            let visible = batch.positions[t] + 1
            let table = batch.blockTables[batch.sequences[t]]
            let slots = (0..<visible).map { table[$0 / blockSize] * blockSize + $0 % blockSize }
            var scores = [Float](repeating: 0, count: visible)
            for head in 0..<c.headCount {
                let kvHead = head / group
                let qBase = (t * c.headCount + head) * hd
                var maximum = -Float.infinity
                for (p, slot) in slots.enumerated() {
                    var s: Float = 0
                    for i in 0..<hd { s += q[qBase + i] * cacheK[slot * kvStride + kvHead * hd + i] }
                    scores[p] = s * scale
                    maximum = max(maximum, scores[p])
                }
                var total: Float = 0
                for p in 0..<visible { scores[p] = exp(scores[p] - maximum); total += scores[p] }
                for (p, slot) in slots.enumerated() {
                    let w = scores[p] / total
                    for i in 0..<hd { out[qBase + i] += w * cacheV[slot * kvStride + kvHead * hd + i] }
                }
            }
        }
        return out
    }

    func add(_ x: inout [Float], _ y: [Float]) {
        for i in x.indices { x[i] += y[i] }
    }

    /// y = x · Wᵀ (+ bias) for `rows` input rows. Output rows are split across cores; each weight row is read
    /// once per call and used for every input row.
    func matmul(_ x: [Float], rows: Int, _ w: Matrix, bias: [Float]? = nil) -> [Float] {
        let k = w.columns, outWidth = w.rows
        var y = [Float](repeating: 0, count: rows * outWidth)
        let chunks = min(outWidth, ProcessInfo.processInfo.activeProcessorCount * 8)
        x.withUnsafeBufferPointer { xp in
            w.values.withUnsafeBufferPointer { wp in
                y.withUnsafeMutableBufferPointer { yp in
                    nonisolated(unsafe) let xb = xp.baseAddress!, wb = wp.baseAddress!
                    nonisolated(unsafe) let yb = yp.baseAddress!
                    DispatchQueue.concurrentPerform(iterations: chunks) { chunk in
                        let start = chunk * outWidth / chunks, end = (chunk + 1) * outWidth / chunks
                        for o in start..<end {
                            let row = wb + o * k
                            let b = bias?[o] ?? 0
                            for t in 0..<rows { yb[t * outWidth + o] = dot(row, xb + t * k, k) + b }
                        }
                    }
                }
            }
        }
        return y
    }
}

/// A batch a backend cannot run, and why.
public struct DecodeBatchError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Dot product of two float32 vectors, eight lanes at a time.
@inline(__always)
func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
    var acc = SIMD8<Float>()
    var i = 0
    while i + 8 <= n {
        acc += UnsafeRawPointer(a + i).loadUnaligned(as: SIMD8<Float>.self)
            * UnsafeRawPointer(b + i).loadUnaligned(as: SIMD8<Float>.self)
        i += 8
    }
    var sum = acc.sum()
    while i < n { sum += a[i] * b[i]; i += 1 }
    return sum
}

/// Log-softmax of logits, computed in double (the reference data's convention).
public func logSoftmax(_ logits: [Float]) -> [Double] {
    let maximum = Double(logits.max() ?? 0)
    var total = 0.0
    for v in logits { total += Foundation.exp(Double(v) - maximum) }
    let logTotal = Foundation.log(total) + maximum
    return logits.map { Double($0) - logTotal }
}

/// The pipeline on the CPU: each step runs when submitted (nothing overlaps), with fed tokens taken from
/// the previous step's picks, so the scheduler's pipelined path is tested against the oracle too.
extension ReferenceBackend: PipelinedDecoderBackend {
    public var overlapsSteps: Bool { false }

    public func submitGreedy(_ batch: DecodeBatch, feeds: [TokenFeed]) throws -> SubmittedStep {
        var batch = batch
        for feed in feeds {
            guard let latest = latestPicks, latest.serial == submitted - 1, feed.previousRow >= 0, feed.previousRow < latest.picks.count,
                  feed.token >= 0, feed.token < batch.tokens.count else {
                throw DecodeBatchError("token feed \(feed) names no pick of the step submitted just before")
            }
            batch.tokens[feed.token] = latest.picks[feed.previousRow]
        }
        let picks = try greedy(batch)
        let step = SubmittedStep(serial: submitted, rows: picks.count)
        submitted += 1
        latestPicks = (step.serial, picks)
        unread[step.serial] = picks
        return step
    }

    public func waitGreedy(_ step: SubmittedStep) throws -> [Int] {
        guard let picks = unread.removeValue(forKey: step.serial) else { throw DecodeBatchError("step \(step.serial) was not submitted or was already waited for") }
        return picks
    }
}
