/// SentencePiece-style BPE (Llama 2, TinyLlama, Mistral), as llama.cpp runs it: start from UTF-8
/// characters, repeatedly merge the adjacent pair whose concatenation is the highest-scoring vocabulary
/// token (leftmost on ties), and spell anything left outside the vocabulary as `<0xXX>` byte tokens.
struct SentencePieceEncoder: Sendable {
    private let tokenForText: [[UInt8]: Int32]
    private let scores: [Float]
    private let byteTokens: [Int32]  // byte → its <0xXX> token (or the 1-byte token), -1 if neither
    private let unknown: Int?

    init(vocabulary: Vocabulary) {
        var map: [[UInt8]: Int32] = [:]
        map.reserveCapacity(vocabulary.count)
        for (id, text) in vocabulary.tokens.enumerated() where map[text] == nil { map[text] = Int32(id) }
        tokenForText = map
        scores = vocabulary.scores
        byteTokens = (0...255).map { b in
            let hex = "<0x" + String(b, radix: 16, uppercase: true).leftPadded(to: 2) + ">"
            return map[Array(hex.utf8)] ?? map[[UInt8(b)]] ?? -1
        }
        unknown = vocabulary.unknown
    }

    private struct Candidate: Comparable {
        let score: Float, left: Int, right: Int, size: Int
        // The heap pops its minimum: the highest score, then the leftmost position.
        static func < (a: Candidate, b: Candidate) -> Bool { a.score > b.score || (a.score == b.score && a.left < b.left) }
        static func == (a: Candidate, b: Candidate) -> Bool { a.score == b.score && a.left == b.left }
    }

    /// Appends the tokens of `text` (whitespace already escaped to ▁) to `output`.
    func encode(_ text: [UInt8], into output: inout [Int]) {
        guard !text.isEmpty else { return }
        // Symbols: byte ranges of UTF-8 characters by their lead byte (not validated, as llama.cpp).
        var start: [Int] = [], length: [Int] = []
        var i = 0
        while i < text.count {
            let lead = text[i] >> 4
            let n = min(lead < 0xC ? 1 : lead < 0xE ? 2 : lead == 0xE ? 3 : 4, text.count - i)
            start.append(i); length.append(n)
            i += n
        }
        let count = start.count
        var next = (0..<count).map { $0 + 1 }, prev = (0..<count).map { $0 - 1 }
        next[count - 1] = -1
        var heap = MinHeap<Candidate>()
        func consider(_ l: Int, _ r: Int) {
            guard l >= 0, r >= 0 else { return }
            let bytes = Array(text[start[l] ..< start[l] + length[l] + length[r]])
            if let id = tokenForText[bytes] {
                heap.insert(Candidate(score: scores[Int(id)], left: l, right: r, size: bytes.count))
            }
        }
        for k in 1..<count { consider(k - 1, k) }
        while let c = heap.popMin() {
            guard length[c.left] > 0, length[c.right] > 0, length[c.left] + length[c.right] == c.size,
                  next[c.left] == c.right else { continue }
            length[c.left] += length[c.right]
            length[c.right] = 0
            next[c.left] = next[c.right]
            if next[c.right] >= 0 { prev[next[c.right]] = c.left }
            consider(prev[c.left], c.left)
            consider(c.left, next[c.left])
        }
        var k = 0
        while k >= 0 {
            let piece = Array(text[start[k] ..< start[k] + length[k]])
            if let id = tokenForText[piece] {
                output.append(Int(id))
            } else {
                for b in piece {
                    let t = byteTokens[Int(b)]
                    // llama.cpp aborts when a byte has no token; Kiln falls back to the unknown token.
                    if t >= 0 { output.append(Int(t)) } else if let unk = unknown { output.append(unk) }
                }
            }
            k = next[k]
        }
    }
}

extension String {
    func leftPadded(to width: Int, with pad: Character = "0") -> String {
        count >= width ? self : String(repeating: pad, count: width - count) + self
    }
}
