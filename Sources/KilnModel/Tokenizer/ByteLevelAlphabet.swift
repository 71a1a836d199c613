/// GPT-2's byte-level alphabet: every byte has a printable stand-in character, so BPE vocabularies can store
/// arbitrary bytes as text. Printable Latin-1 bytes stand for themselves; the other 68 map, in order, to
/// U+0100 onwards (space is "Ġ" U+0120, newline "Ċ" U+010A).
enum ByteLevelAlphabet {
    /// Byte → stand-in code point.
    static let characterForByte: [UInt32] = {
        var table = [UInt32](repeating: 0, count: 256)
        var next: UInt32 = 0x100
        for b in 0..<256 {
            if (0x21...0x7E).contains(b) || (0xA1...0xAC).contains(b) || (0xAE...0xFF).contains(b) {
                table[b] = UInt32(b)
            } else {
                table[b] = next
                next += 1
            }
        }
        return table
    }()

    /// Stand-in code point → byte.
    static let byteForCharacter: [UInt32: UInt8] = {
        var map: [UInt32: UInt8] = [:]
        for (b, c) in characterForByte.enumerated() { map[c] = UInt8(b) }
        return map
    }()

    /// The raw bytes a byte-level encoded text stands for; nil when it has a character outside the alphabet.
    static func decode(_ text: [UInt8]) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(text.count)
        for scalar in String(decoding: text, as: UTF8.self).unicodeScalars {
            guard let b = byteForCharacter[scalar.value] else { return nil }
            out.append(b)
        }
        return out
    }
}
