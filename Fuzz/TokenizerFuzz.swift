import Foundation

// libFuzzer target: any bytes (valid UTF-8 or not) tokenize to in-range ids and detokenize, in one piece
// and streamed, without a crash, on a byte-level BPE vocabulary (SmolLM's, from the default model) and a
// SentencePiece one. Vocabulary paths come from KILN_FUZZ_BPE / KILN_FUZZ_SPM.

let tokenizers: [Tokenizer] = ["KILN_FUZZ_BPE", "KILN_FUZZ_SPM"].map { key in
    guard let path = ProcessInfo.processInfo.environment[key], let file = try? GGUFFile(path: path),
          let tokenizer = try? Tokenizer(gguf: file) else { fatalError("set \(key) to a GGUF vocabulary") }
    return tokenizer
}

@_cdecl("LLVMFuzzerTestOneInput")
public func tokenizerFuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    for tokenizer in tokenizers {
        for parseSpecial in [true, false] {
            let ids = tokenizer.encode(bytes: bytes, addSpecial: true, parseSpecial: parseSpecial)
            precondition(ids.allSatisfy { $0 >= 0 && $0 < tokenizer.vocabulary.count })
            _ = tokenizer.decode(ids, renderSpecial: parseSpecial)
            var stream = StreamingDetokenizer(tokenizer: tokenizer)
            for id in ids { _ = stream.append(id) }
            _ = stream.finish()
        }
    }
    return 0
}
