import Dispatch
import Foundation

/// The CPU reference decoder: a llama-family forward pass in float32, written to be read top to bottom.
/// It is the oracle every faster backend is tested against, so it favours plainness over speed; the only
/// concessions are SIMD dot products and splitting matrix rows across cores.
///
/// One decoder holds one sequence's KV cache. `forward` appends tokens at the next positions.
public final class ReferenceDecoder {
    public let weights: ReferenceWeights
    public var config: ModelConfig { weights.config }
    /// Tokens already in the KV cache.
    public private(set) var position = 0
    // Per layer: position-major [position][kvHead][headDimension].
    private var keys: [[Float]]
    private var values: [[Float]]

    public init(weights: ReferenceWeights) {
        self.weights = weights
        keys = Array(repeating: [], count: weights.config.layerCount)
        values = Array(repeating: [], count: weights.config.layerCount)
    }

    /// Forgets the sequence.
    public func reset() {
        position = 0
        for i in keys.indices { keys[i].removeAll(keepingCapacity: true); values[i].removeAll(keepingCapacity: true) }
    }

    /// Runs `tokens` through the model at positions `position ..< position + tokens.count`, appending their
    /// keys and values to the cache. Returns the logits of the last `logitCount` of those tokens.
    public func forward(_ tokens: [Int], logitCount: Int = 1) -> [[Float]] {
        let c = config
        let n = tokens.count, d = c.embeddingWidth
        precondition(n > 0 && tokens.allSatisfy { $0 >= 0 && $0 < c.vocabularySize }, "token id out of range")
        precondition(logitCount <= n)

        // 1. Token embedding: x holds n rows of width d.
        var x = [Float](repeating: 0, count: n * d)
        for (t, token) in tokens.enumerated() {
            for i in 0..<d { x[t * d + i] = weights.tokenEmbedding.values[token * d + i] }
        }

        for (l, layer) in weights.layers.enumerated() {
            // 2. Attention block: x += Wo · attention(RoPE(Wq·norm(x)), RoPE(Wk·norm(x)), Wv·norm(x)).
            let h = rmsNorm(x, rows: n, weight: layer.attentionNorm)
            var q = matmul(h, rows: n, layer.query, bias: layer.queryBias)
            var k = matmul(h, rows: n, layer.key, bias: layer.keyBias)
            let v = matmul(h, rows: n, layer.value, bias: layer.valueBias)
            applyRoPE(&q, rows: n, heads: c.headCount)
            applyRoPE(&k, rows: n, heads: c.kvHeadCount)
            keys[l].append(contentsOf: k)
            values[l].append(contentsOf: v)
            let attended = attention(q, rows: n, layer: l)
            add(&x, matmul(attended, rows: n, layer.output))

            // 3. Feed-forward block (SwiGLU): x += Wdown · (silu(Wgate·norm(x)) ⊙ Wup·norm(x)).
            let f = rmsNorm(x, rows: n, weight: layer.feedForwardNorm)
            var gate = matmul(f, rows: n, layer.gate)
            let up = matmul(f, rows: n, layer.up)
            for i in gate.indices { gate[i] = gate[i] / (1 + exp(-gate[i])) * up[i] }
            add(&x, matmul(gate, rows: n, layer.down))
        }
        position += n

        // 4. Final norm and output projection, only for the rows whose logits are wanted.
        let last = Array(x[(n - logitCount) * d ..< n * d])
        let normed = rmsNorm(last, rows: logitCount, weight: weights.outputNorm)
        let logits = matmul(normed, rows: logitCount, weights.output)
        let vocab = c.vocabularySize
        return (0..<logitCount).map { Array(logits[$0 * vocab ..< ($0 + 1) * vocab]) }
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

    /// Rotary position embedding on each head of each row (row t is at position `position + t`). GGUF's
    /// `llama` layout rotates adjacent pairs (2i, 2i+1): the converter permuted Q and K to make it so. `qwen2`
    /// keeps Hugging Face's layout, which pairs i with i + dims/2 ("NeoX" style).
    func applyRoPE(_ x: inout [Float], rows: Int, heads: Int) {
        let hd = config.headDimension, dims = config.ropeDimension
        let adjacentPairs = config.architecture != "qwen2"
        for t in 0..<rows {
            let pos = Double(position + t)
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

    /// Causal grouped-query attention of the new rows over the whole cache of `layer`.
    func attention(_ q: [Float], rows: Int, layer: Int) -> [Float] {
        let c = config, hd = c.headDimension
        let group = c.headCount / c.kvHeadCount
        let scale = 1 / Float(hd).squareRoot()
        let cacheK = keys[layer], cacheV = values[layer]
        let kvStride = c.kvHeadCount * hd
        var out = [Float](repeating: 0, count: rows * c.headCount * hd)
        var scores = [Float](repeating: 0, count: position + rows)
        for t in 0..<rows {
            let visible = position + t + 1  // causal: the cache before this batch plus rows 0...t
            for head in 0..<c.headCount {
                let kvHead = head / group
                let qBase = (t * c.headCount + head) * hd
                var maximum = -Float.infinity
                for p in 0..<visible {
                    var s: Float = 0
                    for i in 0..<hd { s += q[qBase + i] * cacheK[p * kvStride + kvHead * hd + i] }
                    scores[p] = s * scale
                    maximum = max(maximum, scores[p])
                }
                var total: Float = 0
                for p in 0..<visible { scores[p] = exp(scores[p] - maximum); total += scores[p] }
                for p in 0..<visible {
                    let w = scores[p] / total
                    for i in 0..<hd { out[qBase + i] += w * cacheV[p * kvStride + kvHead * hd + i] }
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
