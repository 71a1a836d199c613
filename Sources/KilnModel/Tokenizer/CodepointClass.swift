/// Character classes the pre-tokenizers split on, as llama.cpp defines them: `\p{L}` (letters), `\p{N}`
/// (numbers), `\s` (a fixed set of 25 whitespace code points) and `\p{P}` (punctuation).
struct CodepointClass: OptionSet, Sendable {
    let rawValue: UInt8
    static let letter = CodepointClass(rawValue: 1)
    static let number = CodepointClass(rawValue: 2)
    static let whitespace = CodepointClass(rawValue: 4)
    static let punctuation = CodepointClass(rawValue: 8)
    /// Set for every code point in range (llama.cpp's "flags are non-zero"); absent only past the piece.
    static let present = CodepointClass(rawValue: 16)

    /// Past the end of a piece: no class at all.
    static let outside: CodepointClass = []

    /// The class of code point `c`. The Basic Multilingual Plane is tabulated once; the rest is computed.
    static func of(_ c: UInt32) -> CodepointClass {
        if c < 0x10000 { return CodepointClass(rawValue: bmpTable[Int(c)]) }
        return compute(c)
    }

    private static let bmpTable: [UInt8] = (0..<0x10000).map { compute(UInt32($0)).rawValue }

    private static func compute(_ c: UInt32) -> CodepointClass {
        var result: CodepointClass = .present
        switch c {
        case 0x09...0x0D, 0x20, 0x85, 0xA0, 0x1680, 0x2000...0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000:
            result.insert(.whitespace)
        default: break
        }
        guard let scalar = Unicode.Scalar(c) else { return result }  // surrogates and > 0x10FFFF
        switch scalar.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
            result.insert(.letter)
        case .decimalNumber, .letterNumber, .otherNumber:
            result.insert(.number)
        case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation,
             .initialPunctuation, .finalPunctuation, .otherPunctuation:
            result.insert(.punctuation)
        default: break
        }
        return result
    }
}

/// UTF-8 decoding and encoding with llama.cpp's rules, so that odd input tokenizes as it does there: an
/// invalid byte becomes U+FFFD and decoding resumes at the next byte; overlong forms are not rejected.
enum LlamaUTF8 {
    static let replacement: UInt32 = 0xFFFD

    static func decode(_ bytes: UnsafeBufferPointer<UInt8>) -> [UInt32] {
        var out: [UInt32] = []
        out.reserveCapacity(bytes.count)
        var i = 0
        let n = bytes.count
        while i < n {
            let b0 = bytes[i]
            if b0 < 0x80 { out.append(UInt32(b0)); i += 1; continue }
            let length: Int
            switch b0 {
            case 0xC0...0xDF: length = 2
            case 0xE0...0xEF: length = 3
            case 0xF0...0xF7: length = 4
            default: length = 0  // stray continuation byte or 0xF8+
            }
            guard length > 0, i + length <= n else { out.append(replacement); i += 1; continue }
            var c = UInt32(b0) & (length == 2 ? 0x1F : length == 3 ? 0x0F : 0x07)
            var valid = true
            for k in 1..<length {
                let b = bytes[i + k]
                if b & 0xC0 != 0x80 { valid = false; break }
                c = c << 6 | UInt32(b & 0x3F)
            }
            if valid { out.append(c); i += length } else { out.append(replacement); i += 1 }
        }
        return out
    }

    /// Appends the UTF-8 form of `c`. Past U+10FFFF (where llama.cpp throws) U+FFFD is written instead.
    static func append(_ c: UInt32, to out: inout [UInt8]) {
        switch c {
        case 0..<0x80: out.append(UInt8(c))
        case 0x80..<0x800:
            out.append(UInt8(0xC0 | c >> 6)); out.append(UInt8(0x80 | c & 0x3F))
        case 0x800..<0x10000:
            out.append(UInt8(0xE0 | c >> 12)); out.append(UInt8(0x80 | (c >> 6) & 0x3F)); out.append(UInt8(0x80 | c & 0x3F))
        case 0x10000...0x10FFFF:
            out.append(UInt8(0xF0 | c >> 18)); out.append(UInt8(0x80 | (c >> 12) & 0x3F))
            out.append(UInt8(0x80 | (c >> 6) & 0x3F)); out.append(UInt8(0x80 | c & 0x3F))
        default: append(replacement, to: &out)
        }
    }
}
