/// The shape of a llama-family model, read from GGUF metadata (`<arch>.*` keys).
public struct ModelConfig: Sendable, Equatable {
    /// Architectures Kiln runs. `qwen2` is llama with biases on the Q, K and V projections.
    public static let supportedArchitectures = ["llama", "qwen2"]

    public var architecture: String
    public var layerCount: Int
    public var embeddingWidth: Int
    public var feedForwardWidth: Int
    public var headCount: Int
    public var kvHeadCount: Int
    public var headDimension: Int
    public var ropeBase: Float
    /// How many dimensions of each head RoPE rotates (the rest pass through).
    public var ropeDimension: Int
    public var rmsEpsilon: Float
    public var contextLength: Int
    public var vocabularySize: Int
    /// True when the file has no `output.weight`: logits come from the token embedding matrix.
    public var tiedOutput: Bool
    /// True when Q/K/V projections carry biases (qwen2).
    public var attentionBias: Bool

    public init(architecture: String, layerCount: Int, embeddingWidth: Int, feedForwardWidth: Int,
                headCount: Int, kvHeadCount: Int, headDimension: Int, ropeBase: Float, ropeDimension: Int,
                rmsEpsilon: Float, contextLength: Int, vocabularySize: Int, tiedOutput: Bool, attentionBias: Bool) {
        self.architecture = architecture
        self.layerCount = layerCount
        self.embeddingWidth = embeddingWidth
        self.feedForwardWidth = feedForwardWidth
        self.headCount = headCount
        self.kvHeadCount = kvHeadCount
        self.headDimension = headDimension
        self.ropeBase = ropeBase
        self.ropeDimension = ropeDimension
        self.rmsEpsilon = rmsEpsilon
        self.contextLength = contextLength
        self.vocabularySize = vocabularySize
        self.tiedOutput = tiedOutput
        self.attentionBias = attentionBias
    }

    /// Reads the configuration of `file`; an unknown architecture is refused by name.
    public init(gguf file: GGUFFile) throws {
        let arch = try file.string("general.architecture")
        guard Self.supportedArchitectures.contains(arch) else {
            throw GGUFError(.unsupportedArchitecture(arch, supported: Self.supportedArchitectures), offset: 0)
        }
        func positive(_ key: String, _ value: Int) throws -> Int {
            guard value > 0, value < 1 << 24 else { throw GGUFError(.invalidValue(key: key, reason: "\(value)"), offset: 0) }
            return value
        }
        let layers = try positive("\(arch).block_count", file.integer("\(arch).block_count"))
        let width = try positive("\(arch).embedding_length", file.integer("\(arch).embedding_length"))
        let ffn = try positive("\(arch).feed_forward_length", file.integer("\(arch).feed_forward_length"))
        let heads = try positive("\(arch).attention.head_count", file.integer("\(arch).attention.head_count"))
        let kvHeads = try positive("\(arch).attention.head_count_kv",
                                   file.optionalInteger("\(arch).attention.head_count_kv") ?? heads)
        guard width % heads == 0, heads % kvHeads == 0 else {
            throw GGUFError(.invalidValue(key: "\(arch).attention.head_count",
                                          reason: "width \(width), \(heads) heads, \(kvHeads) KV heads do not divide"), offset: 0)
        }
        let headDim = try positive("\(arch).attention.key_length", file.optionalInteger("\(arch).attention.key_length") ?? width / heads)
        let ropeDim = try file.optionalInteger("\(arch).rope.dimension_count") ?? headDim
        guard ropeDim > 0, ropeDim <= headDim, ropeDim % 2 == 0 else {
            throw GGUFError(.invalidValue(key: "\(arch).rope.dimension_count", reason: "\(ropeDim) for head dimension \(headDim)"), offset: 0)
        }
        let vocab: Int
        if let v = try file.optionalInteger("\(arch).vocab_size") {
            vocab = v
        } else if let tokens = file.metadata["tokenizer.ggml.tokens"]?.array {
            vocab = tokens.count
        } else if let embedding = file.tensor("token_embd.weight"), embedding.dimensions.count == 2 {
            vocab = embedding.dimensions[1]
        } else {
            throw GGUFError(.missingKey("\(arch).vocab_size"), offset: 0)
        }
        // A base or epsilon that is not a finite positive number would make every logit NaN.
        func finitePositive(_ key: String, _ fallback: Double) throws -> Float {
            let value = try file.optionalDouble(key) ?? fallback
            guard value.isFinite, value > 0, Float(value).isFinite, Float(value) > 0 else {
                throw GGUFError(.invalidValue(key: key, reason: "\(value) is not a finite positive number"), offset: 0)
            }
            return Float(value)
        }
        self.init(
            architecture: arch, layerCount: layers, embeddingWidth: width, feedForwardWidth: ffn,
            headCount: heads, kvHeadCount: kvHeads, headDimension: headDim,
            ropeBase: try finitePositive("\(arch).rope.freq_base", 10000),
            ropeDimension: ropeDim,
            rmsEpsilon: try finitePositive("\(arch).attention.layer_norm_rms_epsilon", 1e-5),
            contextLength: try positive("\(arch).context_length", file.optionalInteger("\(arch).context_length") ?? 2048),
            vocabularySize: try positive("\(arch).vocab_size", vocab),
            tiedOutput: file.tensor("output.weight") == nil,
            attentionBias: file.tensor("blk.0.attn_q.bias") != nil)
    }
}
