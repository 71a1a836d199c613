/// A float32 matrix stored row by row: `rows` outputs, each a contiguous row of `columns` inputs
/// (ggml's layout: `dimensions[0]` is the row length).
public struct Matrix: Sendable {
    public let rows: Int
    public let columns: Int
    public let values: [Float]

    public init(rows: Int, columns: Int, values: [Float]) {
        precondition(values.count == rows * columns)
        self.rows = rows
        self.columns = columns
        self.values = values
    }
}

/// The weights of one transformer block, dequantized to float32.
public struct LayerWeights: Sendable {
    public let attentionNorm: [Float]
    public let query: Matrix, key: Matrix, value: Matrix, output: Matrix
    public let queryBias: [Float]?, keyBias: [Float]?, valueBias: [Float]?
    public let feedForwardNorm: [Float]
    public let gate: Matrix, up: Matrix, down: Matrix
}

/// Every weight of a llama-family model as float32: what the reference decoder computes with. Quantized
/// tensors are expanded once at load; the oracle trades memory for plainness.
public struct ReferenceWeights: Sendable {
    public let config: ModelConfig
    public let tokenEmbedding: Matrix
    public let layers: [LayerWeights]
    public let outputNorm: [Float]
    /// The output projection; the token embedding itself when the model ties them.
    public let output: Matrix

    public init(gguf file: GGUFFile) throws {
        let config = try ModelConfig(gguf: file)
        self.config = config
        let d = config.embeddingWidth, kvWidth = config.kvHeadCount * config.headDimension
        let qWidth = config.headCount * config.headDimension

        func matrix(_ name: String, columns: Int, rows: Int) throws -> Matrix {
            let info = try file.tensor(name, dimensions: [columns, rows])
            return Matrix(rows: rows, columns: columns, values: Dequantize.array(info.type, file.data(of: info), count: info.elementCount))
        }
        let vector = file.floats, optionalVector = file.optionalFloats

        tokenEmbedding = try matrix("token_embd.weight", columns: d, rows: config.vocabularySize)
        layers = try (0..<config.layerCount).map { i in
            let p = "blk.\(i)."
            return LayerWeights(
                attentionNorm: try vector(p + "attn_norm.weight", d),
                query: try matrix(p + "attn_q.weight", columns: d, rows: qWidth),
                key: try matrix(p + "attn_k.weight", columns: d, rows: kvWidth),
                value: try matrix(p + "attn_v.weight", columns: d, rows: kvWidth),
                output: try matrix(p + "attn_output.weight", columns: qWidth, rows: d),
                queryBias: try optionalVector(p + "attn_q.bias", qWidth),
                keyBias: try optionalVector(p + "attn_k.bias", kvWidth),
                valueBias: try optionalVector(p + "attn_v.bias", kvWidth),
                feedForwardNorm: try vector(p + "ffn_norm.weight", d),
                gate: try matrix(p + "ffn_gate.weight", columns: d, rows: config.feedForwardWidth),
                up: try matrix(p + "ffn_up.weight", columns: d, rows: config.feedForwardWidth),
                down: try matrix(p + "ffn_down.weight", columns: config.feedForwardWidth, rows: d))
        }
        outputNorm = try vector("output_norm.weight", d)
        output = config.tiedOutput ? tokenEmbedding
            : try matrix("output.weight", columns: d, rows: config.vocabularySize)
    }
}
