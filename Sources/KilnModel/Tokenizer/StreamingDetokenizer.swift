/// Turns tokens into text one at a time for streaming: a character split across tokens is held back until
/// it is complete, so every emitted string is whole UTF-8. Invalid bytes come out as U+FFFD.
public struct StreamingDetokenizer: Sendable {
    public let tokenizer: Tokenizer
    private var pending: [UInt8] = []
    private var first = true
    private let renderSpecial: Bool

    public init(tokenizer: Tokenizer, renderSpecial: Bool = false) {
        self.tokenizer = tokenizer
        self.renderSpecial = renderSpecial
    }

    /// The text token `id` completes (possibly empty).
    public mutating func append(_ id: Int) -> String {
        var piece = tokenizer.piece(id, renderSpecial: renderSpecial)[...]
        // SentencePiece spells the start of text with a space that is not part of it.
        if first && tokenizer.vocabulary.addSpacePrefix && id != tokenizer.vocabulary.bos && piece.first == 0x20 {
            piece = piece.dropFirst()
        }
        if id != tokenizer.vocabulary.bos { first = false }
        pending += piece
        let complete = Self.completePrefixLength(pending)
        let text = String(decoding: pending[..<complete], as: UTF8.self)
        pending.removeFirst(complete)
        return text
    }

    /// Whatever is still held back (an unfinished character becomes U+FFFD).
    public mutating func finish() -> String {
        defer { pending.removeAll() }
        return String(decoding: pending, as: UTF8.self)
    }

    /// Length of the longest prefix that does not end inside a character which later bytes could complete.
    static func completePrefixLength(_ bytes: [UInt8]) -> Int {
        let n = bytes.count
        // Look back at most 3 bytes for the lead byte of a trailing, still incomplete sequence.
        var i = n - 1
        while i >= 0 && i >= n - 4 {
            let b = bytes[i]
            if b & 0xC0 != 0x80 {  // a lead byte or ASCII
                let need = b < 0x80 ? 1 : b >= 0xF0 && b <= 0xF4 ? 4 : b >= 0xE0 && b <= 0xEF ? 3 : b >= 0xC2 && b <= 0xDF ? 2 : 1
                return n - i < need ? i : n
            }
            i -= 1
        }
        return n
    }
}
