/// How a token is treated: GGUF's `tokenizer.ggml.token_type`, plus what llama.cpp infers from the text.
public struct TokenAttributes: OptionSet, Sendable, Hashable {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    public static let unknown = TokenAttributes(rawValue: 1 << 0)
    public static let unused = TokenAttributes(rawValue: 1 << 1)
    public static let normal = TokenAttributes(rawValue: 1 << 2)
    public static let control = TokenAttributes(rawValue: 1 << 3)
    public static let userDefined = TokenAttributes(rawValue: 1 << 4)
    public static let byte = TokenAttributes(rawValue: 1 << 5)

    init(ggufType: Int) {
        switch ggufType {
        case 1: self = .normal
        case 2: self = .unknown
        case 3: self = .control
        case 4: self = .userDefined
        case 5: self = .unused
        case 6: self = .byte
        default: self = []
        }
    }
}

/// The tokenizer family of a GGUF vocabulary (`tokenizer.ggml.model`).
public enum TokenizerKind: String, Sendable {
    /// GPT-2-style byte-level BPE with merges (`gpt2`).
    case bytePairEncoding = "gpt2"
    /// SentencePiece-style BPE with scores and byte fallback (`llama`).
    case sentencePiece = "llama"
}

/// A model's vocabulary as GGUF stores it: token texts, attributes, scores, merges and special ids.
public struct Vocabulary: Sendable {
    public let kind: TokenizerKind
    /// BPE only: the pre-tokenizer `tokenizer.ggml.pre` names.
    public let preTokenizer: PreTokenizer
    public let tokens: [[UInt8]]
    public let attributes: [TokenAttributes]
    public let scores: [Float]
    /// BPE merges in rank order, as (left, right) texts.
    public let merges: [(left: [UInt8], right: [UInt8])]
    public let bos: Int?
    public let eos: Int?
    public let eot: Int?
    public let unknown: Int?
    public let padding: Int?
    public let addBOS: Bool
    public let addEOS: Bool
    public let addSpacePrefix: Bool
    /// Decoding removes spaces before punctuation (GPT-2, Llama 3 BPE; not Qwen 2 / SmolLM / SentencePiece).
    public let cleanSpaces: Bool
    /// Llama 3: a whole pre-token that is in the vocabulary is taken as is, before any merge.
    public let ignoreMerges: Bool
    /// Tokens that end generation (EOS, end-of-turn tokens).
    public let endOfGeneration: Set<Int>

    public var count: Int { tokens.count }

    /// Texts llama.cpp treats as ending a turn: they end generation and are control tokens.
    static let endOfGenerationTexts: Set<String> = [
        "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>", "<end_of_turn>",
        "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>",
        "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>", "<｜end▁of▁sentence｜>",
    ]
    static let endOfTurnTexts = [
        "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>", "<EOT>",
        "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>", "<end_of_utterance>",
    ]

    /// Reads the vocabulary of a GGUF file (a full model or a vocabulary-only file).
    public init(gguf file: GGUFFile) throws {
        let model = try file.string("tokenizer.ggml.model")
        guard let kind = TokenizerKind(rawValue: model) else {
            throw GGUFError(.invalidValue(key: "tokenizer.ggml.model", reason: "\"\(model)\" is not supported (supported: gpt2, llama)"), offset: 0)
        }
        self.kind = kind
        guard let tokenValues = file.metadata["tokenizer.ggml.tokens"]?.array, !tokenValues.isEmpty else {
            throw GGUFError(.missingKey("tokenizer.ggml.tokens"), offset: 0)
        }
        var tokens: [[UInt8]] = []
        tokens.reserveCapacity(tokenValues.count)
        for (i, value) in tokenValues.enumerated() {
            guard let text = value.string else { throw GGUFError(.wrongKeyType(key: "tokenizer.ggml.tokens", expected: "an array of strings"), offset: 0) }
            tokens.append(text.isEmpty ? Array("[EMPTY_\(i)]".utf8) : Array(text.utf8))
        }
        let n = tokens.count

        var scores = [Float](repeating: 0, count: n)
        if let values = file.metadata["tokenizer.ggml.scores"]?.array {
            guard values.count == n else { throw GGUFError(.invalidValue(key: "tokenizer.ggml.scores", reason: "\(values.count) scores for \(n) tokens"), offset: 0) }
            for (i, v) in values.enumerated() { scores[i] = Float(v.double ?? 0) }
        }
        var attributes = [TokenAttributes](repeating: .normal, count: n)
        if let values = file.metadata["tokenizer.ggml.token_type"]?.array {
            guard values.count == n else { throw GGUFError(.invalidValue(key: "tokenizer.ggml.token_type", reason: "\(values.count) types for \(n) tokens"), offset: 0) }
            for (i, v) in values.enumerated() { attributes[i] = TokenAttributes(ggufType: v.integer ?? 0) }
        }

        var pre = PreTokenizer.standard
        var merges: [(left: [UInt8], right: [UInt8])] = []
        var bos: Int?, eos: Int?, unknown: Int?
        var addBOS: Bool, addSpacePrefix: Bool, cleanSpaces: Bool, ignoreMerges = false
        switch kind {
        case .sentencePiece:
            bos = 1; eos = 2; unknown = 0
            addBOS = true; addSpacePrefix = true; cleanSpaces = false
        case .bytePairEncoding:
            bos = 11; eos = 11; unknown = nil
            addBOS = false; addSpacePrefix = false; cleanSpaces = true
            let preName = file.metadata["tokenizer.ggml.pre"]?.string ?? "default"
            guard let p = PreTokenizer(ggufName: preName) else {
                throw GGUFError(.invalidValue(key: "tokenizer.ggml.pre", reason: "unknown pre-tokenizer \"\(preName)\" (supported: \(PreTokenizer.allCases.map(\.rawValue).joined(separator: ", ")))"), offset: 0)
            }
            pre = p
            switch p {
            case .llama3: ignoreMerges = true; addBOS = true
            case .qwen2, .smollm: cleanSpaces = false
            default: break
            }
            guard let values = file.metadata["tokenizer.ggml.merges"]?.array else {
                throw GGUFError(.missingKey("tokenizer.ggml.merges"), offset: 0)
            }
            merges.reserveCapacity(values.count)
            for v in values {
                let bytes = Array((v.string ?? "").utf8)
                // Split at the first space after the first byte (a merge side may itself start with a space).
                if let space = bytes.dropFirst().firstIndex(of: 0x20) {
                    merges.append((Array(bytes[..<space]), Array(bytes[(space + 1)...])))
                } else {
                    merges.append(([], []))
                }
            }
        }
        self.preTokenizer = pre
        self.merges = merges

        func specialId(_ key: String, _ current: Int?) throws -> Int? {
            var id = current.flatMap { $0 < n ? $0 : nil }
            if let value = try file.optionalInteger("tokenizer.ggml.\(key)_token_id"), value >= 0, value < n { id = value }
            return id
        }
        self.bos = try specialId("bos", bos)
        self.eos = try specialId("eos", eos)
        self.unknown = try specialId("unknown", unknown)
        self.padding = try specialId("padding", nil)
        var eot = try specialId("eot", nil)
        let eom = try specialId("eom", nil)
        self.addBOS = try file.optionalBool("tokenizer.ggml.add_bos_token") ?? addBOS
        self.addEOS = try file.optionalBool("tokenizer.ggml.add_eos_token") ?? false
        self.addSpacePrefix = try file.optionalBool("tokenizer.ggml.add_space_prefix") ?? addSpacePrefix
        self.cleanSpaces = cleanSpaces
        self.ignoreMerges = ignoreMerges

        // Texts that mark the end of a turn are control tokens and end generation, whatever the file says.
        var byText: [String: Int] = [:]
        for (i, t) in tokens.enumerated() { byText[String(decoding: t, as: UTF8.self)] = i }
        if eot == nil, let found = Self.endOfTurnTexts.lazy.compactMap({ byText[$0] }).first {
            eot = found
            attributes[found].insert(.control)
        }
        var endOfGeneration: Set<Int> = []
        for text in Self.endOfGenerationTexts {
            if let id = byText[text] { endOfGeneration.insert(id); attributes[id].insert(.control) }
        }
        for id in [self.eos, eot, eom].compactMap({ $0 }) { endOfGeneration.insert(id) }
        self.eot = eot
        self.endOfGeneration = endOfGeneration
        self.tokens = tokens
        self.attributes = attributes
        self.scores = scores
    }

    /// The token's text as stored in the vocabulary (byte-level encoded for BPE, with ▁ for SentencePiece).
    public func text(of id: Int) -> String { String(decoding: tokens[id], as: UTF8.self) }
}
