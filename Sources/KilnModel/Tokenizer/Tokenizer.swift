/// Text ↔ token ids for a GGUF model, matching llama.cpp's tokenizer id for id.
public struct Tokenizer: Sendable {
    public let vocabulary: Vocabulary
    private let splitter: SpecialTokenSplitter
    private let bpe: BytePairEncoder?
    private let spm: SentencePieceEncoder?
    /// Each token's text as output, computed once (special tokens rendered).
    private let pieces: [[UInt8]]

    public init(vocabulary: Vocabulary) {
        self.vocabulary = vocabulary
        splitter = SpecialTokenSplitter(vocabulary: vocabulary)
        switch vocabulary.kind {
        case .bytePairEncoding: bpe = BytePairEncoder(vocabulary: vocabulary); spm = nil
        case .sentencePiece: spm = SentencePieceEncoder(vocabulary: vocabulary); bpe = nil
        }
        pieces = (0..<vocabulary.count).map { Self.renderPiece($0, vocabulary) }
    }

    /// The tokenizer of a GGUF file (a model or a vocabulary-only file).
    public init(gguf file: GGUFFile) throws {
        self.init(vocabulary: try Vocabulary(gguf: file))
    }

    /// Token ids for `text`. `addSpecial` adds BOS/EOS where the vocabulary asks for them; `parseSpecial`
    /// lets control tokens written in the text (`<|im_start|>`) become their ids.
    public func encode(_ text: String, addSpecial: Bool = false, parseSpecial: Bool = true) -> [Int] {
        encode(bytes: Array(text.utf8), addSpecial: addSpecial, parseSpecial: parseSpecial)
    }

    /// Token ids for raw bytes (which need not be valid UTF-8).
    public func encode(bytes: [UInt8], addSpecial: Bool = false, parseSpecial: Bool = true) -> [Int] {
        var output: [Int] = []
        output.reserveCapacity(bytes.count / 3 + 2)
        if addSpecial && vocabulary.addBOS, let bos = vocabulary.bos { output.append(bos) }
        let fragments = splitter.split(bytes, parseSpecial: parseSpecial)
        if let bpe {
            for fragment in fragments {
                switch fragment {
                case .token(let id): output.append(id)
                case .text(let range):
                    let cpts = bytes.withUnsafeBufferPointer { LlamaUTF8.decode(UnsafeBufferPointer(rebasing: $0[range])) }
                    var word: [UInt8] = []
                    vocabulary.preTokenizer.split(cpts) { piece in
                        word.removeAll(keepingCapacity: true)
                        for i in piece { LlamaUTF8.append(cpts[i], to: &word) }
                        bpe.encode(word: word[...], into: &output)
                    }
                }
            }
        } else if let spm {
            var previousWasSpecial = true
            for fragment in fragments {
                switch fragment {
                case .token(let id):
                    output.append(id)
                    previousWasSpecial = true
                case .text(let range):
                    // A space before the first text and after each special token; every space becomes ▁.
                    var text: [UInt8] = []
                    text.reserveCapacity(range.count + 3)
                    if vocabulary.addSpacePrefix && previousWasSpecial { text += [0xE2, 0x96, 0x81] }
                    for b in bytes[range] {
                        if b == 0x20 { text += [0xE2, 0x96, 0x81] } else { text.append(b) }
                    }
                    spm.encode(text, into: &output)
                    previousWasSpecial = false
                }
            }
        }
        if addSpecial && vocabulary.addEOS, let eos = vocabulary.eos { output.append(eos) }
        return output
    }

    /// The bytes token `id` stands for. Control tokens are empty unless `renderSpecial`.
    public func piece(_ id: Int, renderSpecial: Bool = false) -> [UInt8] {
        guard id >= 0, id < pieces.count else { return [] }
        if !renderSpecial && !vocabulary.attributes[id].isDisjoint(with: [.control, .unknown]) { return [] }
        return pieces[id]
    }

    /// Text for a whole sequence, as llama.cpp's detokenizer gives it (BOS/EOS dropped when the vocabulary
    /// adds them, SentencePiece's prefix space removed, spaces before punctuation cleaned where the model
    /// asks). Invalid UTF-8 becomes U+FFFD.
    public func decode(_ ids: [Int], renderSpecial: Bool = false) -> String {
        String(decoding: decodeBytes(ids, renderSpecial: renderSpecial), as: UTF8.self)
    }

    public func decodeBytes(_ ids: [Int], renderSpecial: Bool = false) -> [UInt8] {
        var ids = ids[...]
        var removeSpace = vocabulary.addSpacePrefix
        if vocabulary.addBOS, let bos = vocabulary.bos, ids.first == bos { ids = ids.dropFirst(); removeSpace = false }
        if vocabulary.addEOS, let eos = vocabulary.eos, ids.last == eos { ids = ids.dropLast() }
        var out: [UInt8] = []
        for (i, id) in ids.enumerated() {
            var p = piece(id, renderSpecial: renderSpecial)[...]
            if i == 0 && removeSpace && p.first == 0x20 { p = p.dropFirst() }
            out += p
        }
        if vocabulary.cleanSpaces { out = Self.cleanSpaces(out) }
        return out
    }

    /// True for tokens that end generation (EOS, end of turn).
    public func isEndOfGeneration(_ id: Int) -> Bool { vocabulary.endOfGeneration.contains(id) }

    private static func renderPiece(_ id: Int, _ v: Vocabulary) -> [UInt8] {
        let attributes = v.attributes[id], text = v.tokens[id]
        if !attributes.isDisjoint(with: [.unknown, .control, .userDefined]) { return text }
        if attributes.contains(.normal) {
            switch v.kind {
            case .sentencePiece:
                return replacing([0xE2, 0x96, 0x81], with: [0x20], in: text)
            case .bytePairEncoding:
                var out: [UInt8] = []
                for scalar in String(decoding: text, as: UTF8.self).unicodeScalars {
                    if let b = ByteLevelAlphabet.byteForCharacter[scalar.value] {
                        out.append(b)
                    } else {
                        // As llama.cpp: a character outside the byte alphabet is shown, not dropped.
                        var utf8: [UInt8] = []
                        LlamaUTF8.append(scalar.value, to: &utf8)
                        out += Array(("[UNK_BYTE_0x" + utf8.map { String($0, radix: 16).leftPadded(to: 2) }.joined()
                            + String(decoding: text, as: UTF8.self) + "]").utf8)
                    }
                }
                return out
            }
        }
        if attributes.contains(.byte), text.count == 6, let b = UInt8(String(decoding: text[3..<5], as: UTF8.self), radix: 16) {
            return [b]
        }
        return []
    }

    private static func replacing(_ pattern: [UInt8], with replacement: [UInt8], in text: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        var i = 0
        while i < text.count {
            if i + pattern.count <= text.count && text[i..<i + pattern.count].elementsEqual(pattern) {
                out += replacement
                i += pattern.count
            } else {
                out.append(text[i])
                i += 1
            }
        }
        return out
    }

    /// llama.cpp's three passes: no space before ? ! . , ; " ' " → "'"; no space before 's 'm 're 've.
    private static func cleanSpaces(_ s: [UInt8]) -> [UInt8] {
        var a: [UInt8] = []
        for (i, b) in s.enumerated() {
            if b == 0x20, i + 1 < s.count, [0x3F, 0x21, 0x2E, 0x2C].contains(s[i + 1]) { continue }
            a.append(b)
        }
        var c: [UInt8] = []
        var i = 0
        while i < a.count {
            if a[i] == 0x20, i + 2 < a.count, a[i + 1] == 0x27, a[i + 2] == 0x20 { c.append(0x27); i += 3; continue }
            c.append(a[i]); i += 1
        }
        var d: [UInt8] = []
        for (i, b) in c.enumerated() {
            if b == 0x20, i + 2 < c.count, c[i + 1] == 0x27 {
                let x = c[i + 2]
                if x == 0x73 || x == 0x6D { continue }
                if i + 3 < c.count, (x == 0x72 && c[i + 3] == 0x65) || (x == 0x76 && c[i + 3] == 0x65) { continue }
            }
            d.append(b)
        }
        return d
    }
}
