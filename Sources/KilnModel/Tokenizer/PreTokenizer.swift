/// Splits text into the pieces BPE runs on, as the regular expression that `tokenizer.ggml.pre` names
/// would, implemented by hand over code points (as llama.cpp does) for speed and exactness.
public enum PreTokenizer: String, Sendable, CaseIterable {
    /// GPT-2's expression.
    case gpt2 = "gpt-2"
    /// Every digit alone, then GPT-2's expression (SmolLM, StarCoder).
    case smollm
    /// Llama 3: case-insensitive contractions, numbers in groups of up to three, newlines kept apart.
    case llama3 = "llama-bpe"
    /// Qwen 2: Llama 3's expression with single digits.
    case qwen2
    /// `tokenizer.ggml.pre` absent or "default": punctuation runs, GPT-2's expression, digit runs, threes.
    case standard = "default"

    /// The pre-tokenizer a GGUF `tokenizer.ggml.pre` value names, including its aliases.
    public init?(ggufName: String) {
        switch ggufName {
        case "", "default": self = .standard
        case "gpt-2", "phi-2": self = .gpt2
        case "smollm": self = .smollm
        case "llama-bpe", "llama3", "llama-v3", "falcon3": self = .llama3
        case "qwen2", "deepseek-r1-qwen": self = .qwen2
        default: return nil
        }
    }

    /// Calls `body` with each piece of `cpts`, in order, as a range of code-point indices.
    func split(_ cpts: [UInt32], _ body: (Range<Int>) -> Void) {
        let all = 0..<cpts.count
        guard !all.isEmpty else { return }
        switch self {
        case .gpt2: Self.gpt2(cpts, all, body)
        case .llama3: Self.llama3(cpts, all, threeDigits: true, body)
        case .qwen2: Self.llama3(cpts, all, threeDigits: false, body)
        case .smollm:
            Self.runs(cpts, all, where: { CodepointClass.of($0).contains(.number) }, maximal: false) { Self.gpt2(cpts, $0, body) }
        case .standard:
            // [\p{P}$+<=>^~|]+ then GPT-2 then \p{N}+ then [0-9]{3}: each step re-splits the pieces of the last.
            Self.runs(cpts, all, where: Self.isDefaultPunctuation, maximal: true) { piece in
                Self.gpt2(cpts, piece) { piece2 in
                    Self.runs(cpts, piece2, where: { CodepointClass.of($0).contains(.number) }, maximal: true) { piece3 in
                        Self.asciiDigitTriples(cpts, piece3, body)
                    }
                }
            }
        }
    }

    private static func isDefaultPunctuation(_ c: UInt32) -> Bool {
        if c < 0x80 {
            // ASCII punctuation except the backtick; the expression adds $ + < = > ^ ~ |.
            return (0x21...0x2F).contains(c) || (0x3A...0x40).contains(c) || (0x5B...0x5E).contains(c)
                || c == 0x5F || (0x7B...0x7E).contains(c)
        }
        return CodepointClass.of(c).contains(.punctuation)
    }

    /// Splits `range` into runs of code points matching `matches` (each one alone unless `maximal`) and the
    /// gaps between them: what a one-class regular expression split leaves, nothing dropped.
    private static func runs(_ cpts: [UInt32], _ range: Range<Int>, where matches: (UInt32) -> Bool, maximal: Bool,
                             _ body: (Range<Int>) -> Void) {
        var start = range.lowerBound
        var pos = range.lowerBound
        while pos < range.upperBound {
            guard matches(cpts[pos]) else { pos += 1; continue }
            if start < pos { body(start..<pos) }
            var end = pos + 1
            if maximal { while end < range.upperBound && matches(cpts[end]) { end += 1 } }
            body(pos..<end)
            pos = end
            start = end
        }
        if start < range.upperBound { body(start..<range.upperBound) }
    }

    private static func asciiDigitTriples(_ cpts: [UInt32], _ range: Range<Int>, _ body: (Range<Int>) -> Void) {
        func digit(_ i: Int) -> Bool { i < range.upperBound && (0x30...0x39).contains(cpts[i]) }
        var start = range.lowerBound, pos = range.lowerBound
        while pos < range.upperBound {
            if digit(pos) && digit(pos + 1) && digit(pos + 2) {
                if start < pos { body(start..<pos) }
                body(pos..<pos + 3)
                pos += 3
                start = pos
            } else {
                pos += 1
            }
        }
        if start < range.upperBound { body(start..<range.upperBound) }
    }

    // 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)
    private static func gpt2(_ cpts: [UInt32], _ range: Range<Int>, _ body: (Range<Int>) -> Void) {
        let end = range.upperBound
        func cls(_ p: Int) -> CodepointClass { p < end ? CodepointClass.of(cpts[p]) : .outside }
        let wln: CodepointClass = [.whitespace, .letter, .number]
        var pos = range.lowerBound
        while pos < end {
            let start = pos
            let c = cpts[pos]
            if c == 0x27, pos + 1 < end {  // contractions, case-sensitive
                let c1 = cpts[pos + 1]
                if c1 == 0x73 || c1 == 0x74 || c1 == 0x6D || c1 == 0x64 { body(pos..<pos + 2); pos += 2; continue }
                if pos + 2 < end {
                    let c2 = cpts[pos + 2]
                    if (c1 == 0x72 && c2 == 0x65) || (c1 == 0x76 && c2 == 0x65) || (c1 == 0x6C && c2 == 0x6C) {
                        body(pos..<pos + 3); pos += 3; continue
                    }
                }
            }
            let f2 = c == 0x20 ? cls(pos + 1) : cls(pos)
            if f2.contains(.letter) || f2.contains(.number) {
                let kind: CodepointClass = f2.contains(.letter) ? .letter : .number
                if c == 0x20 { pos += 1 }
                while cls(pos).contains(kind) { pos += 1 }
                body(start..<pos)
                continue
            }
            if f2.isDisjoint(with: wln) && f2.contains(.present) {
                if c == 0x20 { pos += 1 }
                while true {
                    let f = cls(pos)
                    guard f.isDisjoint(with: wln) && f.contains(.present) else { break }
                    pos += 1
                }
                body(start..<pos)
                continue
            }
            var n = 0
            while cls(pos + n).contains(.whitespace) { n += 1 }
            if n > 1 && pos + n < end { n -= 1 }  // \s+(?!\S): leave the last space to the next piece
            pos += max(n, 1)
            body(start..<pos)
        }
    }

    // Llama 3 / Qwen 2:
    // (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
    private static func llama3(_ cpts: [UInt32], _ range: Range<Int>, threeDigits: Bool, _ body: (Range<Int>) -> Void) {
        let end = range.upperBound
        func cls(_ p: Int) -> CodepointClass { p < end ? CodepointClass.of(cpts[p]) : .outside }
        func lower(_ c: UInt32) -> UInt32 { (0x41...0x5A).contains(c) ? c + 0x20 : c }
        func isNewline(_ p: Int) -> Bool { p < end && (cpts[p] == 0x0D || cpts[p] == 0x0A) }
        let wln: CodepointClass = [.whitespace, .letter, .number]
        var pos = range.lowerBound
        while pos < end {
            let start = pos
            let c = cpts[pos]
            let flags = cls(pos)
            if c == 0x27, pos + 1 < end {
                let c1 = lower(cpts[pos + 1])
                if c1 == 0x73 || c1 == 0x74 || c1 == 0x6D || c1 == 0x64 { body(pos..<pos + 2); pos += 2; continue }
                if pos + 2 < end {
                    let c2 = lower(cpts[pos + 2])
                    if (c1 == 0x72 && c2 == 0x65) || (c1 == 0x76 && c2 == 0x65) || (c1 == 0x6C && c2 == 0x6C) {
                        body(pos..<pos + 3); pos += 3; continue
                    }
                }
            }
            if !(c == 0x0D || c == 0x0A || flags.contains(.number)),
               flags.contains(.letter) || cls(pos + 1).contains(.letter) {
                pos += 1
                while cls(pos).contains(.letter) { pos += 1 }
                body(start..<pos)
                continue
            }
            if flags.contains(.number) {
                let limit = threeDigits ? 3 : 1
                while pos - start < limit && cls(pos).contains(.number) { pos += 1 }
                body(start..<pos)
                continue
            }
            let f2 = c == 0x20 ? cls(pos + 1) : flags
            if f2.isDisjoint(with: wln) && flags.contains(.present) {
                if c == 0x20 { pos += 1 }
                while true {
                    let f = cls(pos)
                    guard f.isDisjoint(with: wln) && f.contains(.present) else { break }
                    pos += 1
                }
                while isNewline(pos) { pos += 1 }
                body(start..<pos)
                continue
            }
            var n = 0
            var afterLastNewline = 0
            while cls(pos + n).contains(.whitespace) {
                if isNewline(pos + n) { afterLastNewline = pos + n + 1 }
                n += 1
            }
            if afterLastNewline > 0 {
                pos = afterLastNewline  // \s*[\r\n]+
            } else {
                if n > 1 && pos + n < end { n -= 1 }  // \s+(?!\S)
                pos += max(n, 1)
            }
            body(start..<pos)
        }
    }
}
