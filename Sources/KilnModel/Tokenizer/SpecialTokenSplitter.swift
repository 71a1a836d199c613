/// A stretch of input: plain text still to be tokenized, or a special token already recognised.
enum TextFragment: Equatable {
    case text(Range<Int>)
    case token(Int)
}

/// Finds special tokens (`<|im_start|>`, `<s>` …) in raw text so they become single ids instead of being
/// spelled out, the way llama.cpp does: longest token first, every occurrence of it, then the next token in
/// what text remains.
struct SpecialTokenSplitter: Sendable {
    /// (token id, text, matched only when special tokens are parsed), longest text first.
    private let specials: [(id: Int, text: [UInt8], needsParseSpecial: Bool)]

    init(vocabulary: Vocabulary) {
        var list: [(id: Int, text: [UInt8], needsParseSpecial: Bool)] = []
        for (id, attributes) in vocabulary.attributes.enumerated()
        where !attributes.isDisjoint(with: [.control, .userDefined, .unknown]) {
            list.append((id, vocabulary.tokens[id], !attributes.isDisjoint(with: [.control, .unknown])))
        }
        // llama.cpp sorts by length only (unstable); equal lengths here go by id, which differs from it only
        // when two equally long special tokens overlap in the text.
        list.sort { $0.text.count != $1.text.count ? $0.text.count > $1.text.count : $0.id < $1.id }
        specials = list
    }

    /// Splits `bytes`. User-defined tokens are always matched; control tokens only with `parseSpecial`.
    func split(_ bytes: [UInt8], parseSpecial: Bool) -> [TextFragment] {
        guard !bytes.isEmpty else { return [] }
        var fragments: [TextFragment] = [.text(0..<bytes.count)]
        for special in specials where parseSpecial || !special.needsParseSpecial {
            let needle = special.text
            guard !needle.isEmpty else { continue }
            var result: [TextFragment] = []
            result.reserveCapacity(fragments.count)
            for fragment in fragments {
                guard case .text(let range) = fragment else { result.append(fragment); continue }
                var from = range.lowerBound
                while let found = Self.find(needle, in: bytes, from: from, to: range.upperBound) {
                    if found > from { result.append(.text(from..<found)) }
                    result.append(.token(special.id))
                    from = found + needle.count
                }
                if from < range.upperBound { result.append(.text(from..<range.upperBound)) }
            }
            fragments = result
        }
        return fragments
    }

    private static func find(_ needle: [UInt8], in haystack: [UInt8], from: Int, to end: Int) -> Int? {
        let first = needle[0], n = needle.count
        var i = from
        while i + n <= end {
            if haystack[i] == first {
                var k = 1
                while k < n && haystack[i + k] == needle[k] { k += 1 }
                if k == n { return i }
            }
            i += 1
        }
        return nil
    }
}
