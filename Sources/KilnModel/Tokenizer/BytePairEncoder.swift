/// GPT-2-style byte-level BPE over pre-tokenized words, exactly as llama.cpp applies it: the pair of
/// adjacent symbols with the lowest merge rank merges first (leftmost on ties) until no ranked pair is left.
///
/// Works on raw bytes: every text (tokens, merge sides, merge results) is interned to a small integer once,
/// and the merge table maps a pair of interned symbols to (rank, merged symbol), so a merge step is one
/// dictionary lookup on two integers.
struct BytePairEncoder: Sendable {
    private let symbolToken: [Int32]          // interned symbol → token id, or -1
    private let symbolBytes: [[UInt8]]        // interned symbol → raw bytes
    private let byteSymbol: [Int32]           // byte → interned symbol of that single byte
    private let pairs: [UInt64: Merge]        // (left symbol << 32 | right symbol) → merge
    private let wordSymbol: [[UInt8]: Int32]  // raw bytes → interned symbol
    private let ignoreMerges: Bool

    struct Merge: Sendable { let rank: Int32; let merged: Int32 }

    init(vocabulary: Vocabulary) {
        var symbolBytes: [[UInt8]] = []
        var symbolToken: [Int32] = []
        var index: [[UInt8]: Int32] = [:]
        func intern(_ bytes: [UInt8]) -> Int32 {
            if let id = index[bytes] { return id }
            let id = Int32(symbolBytes.count)
            index[bytes] = id
            symbolBytes.append(bytes)
            symbolToken.append(-1)
            return id
        }
        for b in 0...255 { _ = intern([UInt8(b)]) }
        for (id, text) in vocabulary.tokens.enumerated() {
            // A token whose text has characters outside the byte alphabet can never be formed from input.
            guard let raw = ByteLevelAlphabet.decode(text) else { continue }
            let symbol = intern(raw)
            if symbolToken[Int(symbol)] < 0 { symbolToken[Int(symbol)] = Int32(id) }
        }
        var pairs: [UInt64: Merge] = [:]
        pairs.reserveCapacity(vocabulary.merges.count)
        for (rank, merge) in vocabulary.merges.enumerated() {
            guard !merge.left.isEmpty, !merge.right.isEmpty,
                  let left = ByteLevelAlphabet.decode(merge.left), let right = ByteLevelAlphabet.decode(merge.right)
            else { continue }
            let l = intern(left), r = intern(right), m = intern(left + right)
            let key = UInt64(UInt32(l)) << 32 | UInt64(UInt32(r))
            if pairs[key] == nil { pairs[key] = Merge(rank: Int32(rank), merged: m) }  // first rank wins
        }
        self.symbolBytes = symbolBytes
        self.symbolToken = symbolToken
        self.byteSymbol = (0...255).map { Int32($0) }  // interned first, in byte order
        self.pairs = pairs
        self.wordSymbol = index
        self.ignoreMerges = vocabulary.ignoreMerges
    }

    /// Appends the tokens of one pre-tokenized word (raw UTF-8 bytes) to `output`.
    func encode(word: ArraySlice<UInt8>, into output: inout [Int]) {
        if word.isEmpty { return }
        if ignoreMerges, let symbol = wordSymbol[Array(word)], symbolToken[Int(symbol)] >= 0 {
            output.append(Int(symbolToken[Int(symbol)]))
            return
        }
        var symbols = word.map { byteSymbol[Int($0)] }
        if symbols.count > 1 { merge(&symbols) }
        for symbol in symbols {
            let token = symbolToken[Int(symbol)]
            if token >= 0 { output.append(Int(token)); continue }
            // Not in the vocabulary: its bytes one by one; a byte without a token is dropped (as llama.cpp).
            for b in symbolBytes[Int(symbol)] {
                let t = symbolToken[Int(byteSymbol[Int(b)])]
                if t >= 0 { output.append(Int(t)) }
            }
        }
    }

    private struct Candidate: Comparable {
        let rank: Int32, left: Int32, right: Int32, leftSymbol: Int32, rightSymbol: Int32, merged: Int32
        static func < (a: Candidate, b: Candidate) -> Bool { (a.rank, a.left) < (b.rank, b.left) }
        static func == (a: Candidate, b: Candidate) -> Bool { (a.rank, a.left) == (b.rank, b.left) }
    }

    private func merge(_ symbols: inout [Int32]) {
        let n = symbols.count
        // A doubly linked list over positions; a merged-away position gets symbol -1.
        var next = Array(1...n).map { Int32($0) }
        var prev = (0..<n).map { Int32($0 - 1) }
        next[n - 1] = -1
        var heap = MinHeap<Candidate>()
        func consider(_ l: Int32, _ r: Int32) {
            guard l >= 0, r >= 0 else { return }
            let key = UInt64(UInt32(symbols[Int(l)])) << 32 | UInt64(UInt32(symbols[Int(r)]))
            if let m = pairs[key] {
                heap.insert(Candidate(rank: m.rank, left: l, right: r, leftSymbol: symbols[Int(l)], rightSymbol: symbols[Int(r)], merged: m.merged))
            }
        }
        for i in 1..<n { consider(Int32(i - 1), Int32(i)) }
        while let c = heap.popMin() {
            let l = Int(c.left), r = Int(c.right)
            // Stale when either side has changed since the candidate was queued.
            guard symbols[l] == c.leftSymbol, symbols[r] == c.rightSymbol, next[l] == c.right else { continue }
            symbols[l] = c.merged
            symbols[r] = -1
            next[l] = next[r]
            if next[r] >= 0 { prev[Int(next[r])] = Int32(l) }
            consider(prev[l], Int32(l))
            consider(Int32(l), next[l])
        }
        symbols.removeAll { $0 < 0 }
    }
}
