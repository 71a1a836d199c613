import Foundation

/// Makes small random-weight llama-architecture models for tests (engine, router) that must run fast
/// without the real model. Weights are random values in the requested format (quantized blocks are random
/// bytes with small finite scales), the vocabulary is GPT-2's 256 byte tokens plus a few merges and the
/// ChatML special tokens, and the chat template is ChatML.
public struct TestModelBuilder {
    public var layers = 2
    public var width = 64
    public var feedForwardWidth = 128
    public var heads = 4
    public var kvHeads = 2
    public var contextLength = 512
    public var type: GGMLType = .q8_0
    public var seed: UInt64 = 1
    /// `llama`, or `qwen2` (biases on Q, K and V; NeoX-style RoPE).
    public var architecture = "llama"
    /// Merges of common English pairs added to the byte vocabulary.
    public var merges = ["t h", "th e", "i n", "a n", "e r", "o n", "r e", "Ġ t", "Ġt he", "Ġ a", "e n", "a t"]
    public static let specialTokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    /// Tokens appended after the merges (`filler0`, `filler1`, …), which no text encodes to: for tests that need
    /// a large vocabulary (one whose logits outgrow a buffer).
    public var fillerTokens = 0

    public init() {}

    /// The vocabulary: special tokens, the 256 byte tokens, one token per merge, then the filler tokens.
    public func vocabulary() -> (tokens: [String], types: [Int32], merges: [String]) {
        var tokens = Self.specialTokens
        var types = [Int32](repeating: 3, count: tokens.count)
        for b in 0..<256 {
            tokens.append(String(UnicodeScalar(ByteLevelAlphabet.characterForByte[b])!))
            types.append(1)
        }
        for m in merges {
            tokens.append(m.replacingOccurrences(of: " ", with: ""))
            types.append(1)
        }
        for i in 0..<fillerTokens {
            tokens.append("filler\(i)")
            types.append(1)
        }
        return (tokens, types, merges)
    }

    public func build() -> GGUFWriter {
        var rng = SplitMix64(seed: seed)
        let (tokens, types, merges) = vocabulary()
        let vocab = tokens.count
        let headDim = width / heads
        var w = GGUFWriter()
        let a = architecture
        w.metadata = [
            ("general.architecture", .string(a)),
            ("general.name", .string("kiln-test-model")),
            ("\(a).block_count", .uint32(UInt32(layers))),
            ("\(a).context_length", .uint32(UInt32(contextLength))),
            ("\(a).embedding_length", .uint32(UInt32(width))),
            ("\(a).feed_forward_length", .uint32(UInt32(feedForwardWidth))),
            ("\(a).attention.head_count", .uint32(UInt32(heads))),
            ("\(a).attention.head_count_kv", .uint32(UInt32(kvHeads))),
            ("\(a).rope.freq_base", .float32(10000)),
            ("\(a).rope.dimension_count", .uint32(UInt32(headDim))),
            ("\(a).attention.layer_norm_rms_epsilon", .float32(1e-5)),
            ("\(a).vocab_size", .uint32(UInt32(vocab))),
            ("tokenizer.ggml.model", .string("gpt2")),
            ("tokenizer.ggml.pre", .string("smollm")),
            ("tokenizer.ggml.tokens", .array(.string, tokens.map { .string($0) })),
            ("tokenizer.ggml.token_type", .array(.int32, types.map { .int32($0) })),
            ("tokenizer.ggml.merges", .array(.string, merges.map { .string($0) })),
            ("tokenizer.ggml.bos_token_id", .uint32(1)),
            ("tokenizer.ggml.eos_token_id", .uint32(2)),
            ("tokenizer.ggml.add_bos_token", .bool(false)),
            ("tokenizer.chat_template", .string(
                "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")),
        ]
        func matrix(_ name: String, _ columns: Int, _ rows: Int, type: GGMLType) {
            w.tensors.append(.init(name: name, dimensions: [columns, rows], type: type,
                                   data: Self.randomData(type, count: columns * rows, scale: 1 / Float(columns).squareRoot(), rng: &rng)))
        }
        func norm(_ name: String) {
            let values = (0..<width).map { _ in 1 + Float.random(in: -0.1...0.1, using: &rng) }
            w.tensors.append(.init(name: name, dimensions: [width], type: .f32, data: values.flatMap(Self.bytes)))
        }
        // Row lengths must be whole blocks; the embedding stays in a plain format when the width is not.
        let rowType = { (columns: Int) in columns % type.blockSize == 0 ? type : .f16 }
        matrix("token_embd.weight", width, vocab, type: rowType(width))
        for l in 0..<layers {
            let p = "blk.\(l)."
            norm(p + "attn_norm.weight")
            matrix(p + "attn_q.weight", width, heads * headDim, type: rowType(width))
            matrix(p + "attn_k.weight", width, kvHeads * headDim, type: rowType(width))
            matrix(p + "attn_v.weight", width, kvHeads * headDim, type: rowType(width))
            if architecture == "qwen2" {
                for (name, count) in [("attn_q.bias", heads * headDim), ("attn_k.bias", kvHeads * headDim), ("attn_v.bias", kvHeads * headDim)] {
                    let values = (0..<count).map { _ in Float.random(in: -0.5...0.5, using: &rng) }
                    w.tensors.append(.init(name: p + name, dimensions: [count], type: .f32, data: values.flatMap(Self.bytes)))
                }
            }
            matrix(p + "attn_output.weight", heads * headDim, width, type: rowType(heads * headDim))
            norm(p + "ffn_norm.weight")
            matrix(p + "ffn_gate.weight", width, feedForwardWidth, type: rowType(width))
            matrix(p + "ffn_up.weight", width, feedForwardWidth, type: rowType(width))
            matrix(p + "ffn_down.weight", feedForwardWidth, width, type: rowType(feedForwardWidth))
        }
        norm("output_norm.weight")
        return w
    }

    static func bytes(_ f: Float) -> [UInt8] { withUnsafeBytes(of: f.bitPattern.littleEndian) { Array($0) } }

    /// `count` random elements of `type` whose values are of magnitude about `scale`.
    public static func randomData(_ type: GGMLType, count: Int, scale: Float, rng: inout some RandomNumberGenerator) -> [UInt8] {
        precondition(count % type.blockSize == 0)
        func half(_ f: Float) -> [UInt8] { withUnsafeBytes(of: Float16(f).bitPattern.littleEndian) { Array($0) } }
        switch type {
        case .f32:
            return (0..<count).flatMap { _ in bytes(Float.random(in: -scale...scale, using: &rng)) }
        case .f16:
            return (0..<count).flatMap { _ in half(Float.random(in: -scale...scale, using: &rng)) }
        case .bf16:
            return (0..<count).flatMap { _ -> [UInt8] in
                let bits = Float.random(in: -scale...scale, using: &rng).bitPattern >> 16
                return [UInt8(bits & 0xFF), UInt8(bits >> 8)]
            }
        default:
            var out: [UInt8] = []
            out.reserveCapacity(type.byteCount(elements: count))
            for _ in 0..<count / type.blockSize {
                var block = (0..<type.blockBytes).map { _ in UInt8.random(in: 0...255, using: &rng) }
                // Quant steps: 4-bit formats span ±8 steps, 5-bit ±16, 8-bit ±127, K formats scales up to 63.
                let (d, dmin): (Float, Float)
                switch type {
                case .q4_0: d = scale / 8; dmin = 0
                case .q4_1: d = scale / 8; dmin = -scale
                case .q5_0: d = scale / 16; dmin = 0
                case .q5_1: d = scale / 16; dmin = -scale
                case .q8_0: d = scale / 127; dmin = 0
                case .q4_K: d = scale / 8 / 63 * 2; dmin = scale / 63
                case .q5_K: d = scale / 16 / 63 * 2; dmin = scale / 63
                case .q6_K: d = scale / 32 / 127 * 4; dmin = 0
                default: d = 0; dmin = 0
                }
                let dBytes = half(d), mBytes = half(dmin)
                switch type {
                case .q6_K: block[208] = dBytes[0]; block[209] = dBytes[1]
                case .q4_1, .q5_1, .q4_K, .q5_K:
                    block[0] = dBytes[0]; block[1] = dBytes[1]; block[2] = mBytes[0]; block[3] = mBytes[1]
                default: block[0] = dBytes[0]; block[1] = dBytes[1]
                }
                out += block
            }
            return out
        }
    }
}
