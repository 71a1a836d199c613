import Foundation
@testable import KilnModel
import KilnTestSupport
import XCTest

final class TokenizerTests: XCTestCase {
    /// llama.cpp's own tokenizer suites (vocabulary-only GGUFs, inputs, expected ids): every case must match.
    func testLlamaCppVocabularySuites() throws {
        let directory = vocabularySuites
        let suites = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { $0.hasSuffix(".gguf") }.sorted()
        XCTAssertEqual(suites, ["ggml-vocab-gpt-2.gguf", "ggml-vocab-llama-bpe.gguf", "ggml-vocab-llama-spm.gguf", "ggml-vocab-qwen2.gguf"])
        for suite in suites {
            let path = directory.appendingPathComponent(suite).path
            let tokenizer = try Tokenizer(gguf: GGUFFile(path: path))
            let inputs = try splitInputs(Data(contentsOf: URL(fileURLWithPath: path + ".inp")))
            let expected = try String(contentsOfFile: path + ".out", encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false)
            XCTAssertGreaterThan(inputs.count, 40)
            var passed = 0
            for (i, input) in inputs.enumerated() {
                let want = expected[i].split(separator: " ").compactMap { Int($0) }
                let got = tokenizer.encode(bytes: input, addSpecial: false, parseSpecial: true)
                if got == want { passed += 1 } else {
                    XCTFail("\(suite) case \(i) \(String(decoding: input, as: UTF8.self).debugDescription): expected \(want), got \(got)")
                }
            }
            print("tokenizer suite \(suite): \(passed)/\(inputs.count) cases match llama.cpp")
        }
    }

    private func splitInputs(_ data: Data) -> [[UInt8]] {
        let separator = Array("\n__ggml_vocab_test__\n".utf8)
        var parts: [[UInt8]] = [], current: [UInt8] = []
        let bytes = [UInt8](data)
        var i = 0
        while i < bytes.count {
            if i + separator.count <= bytes.count && bytes[i..<i + separator.count].elementsEqual(separator) {
                parts.append(current); current = []; i += separator.count
            } else {
                current.append(bytes[i]); i += 1
            }
        }
        if !current.isEmpty { parts.append(current) }
        return parts
    }

    /// The prompts of the reference data tokenize to exactly llama.cpp's ids on the default model.
    func testReferencePromptsTokenizeExactly() throws {
        let tokenizer = try Tokenizer(gguf: defaultModelFile())
        for entry in try referenceEntries() {
            XCTAssertEqual(tokenizer.encode(entry.prompt_text, addSpecial: true, parseSpecial: true), entry.prompt_tokens, entry.name)
        }
    }

    /// Special tokens are matched whole when allowed, spelled out otherwise, never split.
    func testSpecialTokens() throws {
        let tokenizer = try Tokenizer(gguf: defaultModelFile())
        XCTAssertEqual(tokenizer.encode("<|im_start|>user\nhi<|im_end|>"), [1] + tokenizer.encode("user\nhi") + [2])
        let spelled = tokenizer.encode("<|im_start|>", parseSpecial: false)
        XCTAssertGreaterThan(spelled.count, 1)
        XCTAssertFalse(spelled.contains(1))
        XCTAssertEqual(tokenizer.decode(spelled), "<|im_start|>")
        XCTAssertTrue(tokenizer.isEndOfGeneration(2))
        XCTAssertEqual(tokenizer.decode([1, 2]), "", "control tokens are not text")
        XCTAssertEqual(tokenizer.decode([1, 2], renderSpecial: true), "<|im_start|><|im_end|>")
    }

    /// decode(encode(s)) == s for 1,000 random Unicode strings, on a byte-level BPE and a SentencePiece vocabulary.
    func testRoundTripOfRandomUnicode() throws {
        let smollm = try Tokenizer(gguf: defaultModelFile())
        let spm = try Tokenizer(gguf: GGUFFile(path: vocabularySuites.appendingPathComponent("ggml-vocab-llama-spm.gguf").path))
        // SmolLM's vocabulary lacks 21 of the 256 byte tokens (0x04, 0xF1, 0xF2 …): llama.cpp drops such bytes,
        // so text using them cannot round-trip there either. Its strings avoid them; SentencePiece takes anything.
        let byteTokens = Set(smollm.vocabulary.tokens.map { String(decoding: $0, as: UTF8.self) })
        let missingBytes = Set((0...255).map(UInt8.init).filter {
            !byteTokens.contains(String(Character(Unicode.Scalar(ByteLevelAlphabet.characterForByte[Int($0)])!)))
        })
        XCTAssertEqual(missingBytes.count, 21)
        var rng = TestRandom()
        for i in 0..<1000 {
            let tokenizer = i % 2 == 0 ? smollm : spm
            var s = randomString(&rng)
            if i % 2 == 0 {
                s = String(String.UnicodeScalarView(s.unicodeScalars.filter { String($0).utf8.allSatisfy { !missingBytes.contains($0) } }))
            }
            let ids = tokenizer.encode(s, parseSpecial: false)
            XCTAssertEqual(tokenizer.decode(ids), s, "round trip of \(s.debugDescription) via \(ids)")
        }
    }

    private func randomString(_ rng: inout some RandomNumberGenerator) -> String {
        // A mix of ASCII, Latin, CJK, emoji, combining marks, whitespace and any scalar at all.
        let ranges: [ClosedRange<UInt32>] = [0x20...0x7E, 0x09...0x0D, 0xA0...0x24F, 0x300...0x36F, 0x4E00...0x9FFF,
                                             0x1F300...0x1FAFF, 0x0...0x10FFFF]
        var scalars = String.UnicodeScalarView()
        for _ in 0..<Int.random(in: 0...40, using: &rng) {
            let range = ranges.randomElement(using: &rng)!
            if let s = Unicode.Scalar(UInt32.random(in: range, using: &rng)) { scalars.append(s) }
        }
        return String(scalars)
    }

    /// The streaming detokenizer emits whole characters only, and all of them.
    func testStreamingDetokenizerNeverBreaksCharacters() throws {
        let tokenizer = try Tokenizer(gguf: defaultModelFile())
        let text = "你好，世界！ Emoji: 👩‍👩‍👧‍👦 🎉 and Ünïcödé — done."
        let ids = tokenizer.encode(text)
        var stream = StreamingDetokenizer(tokenizer: tokenizer)
        var out = ""
        var heldBack = 0
        for id in ids {
            let chunk = stream.append(id)
            if chunk.isEmpty { heldBack += 1 }
            XCTAssertFalse(chunk.unicodeScalars.contains("\u{FFFD}"), "broken character emitted after token \(id)")
            out += chunk
        }
        out += stream.finish()
        XCTAssertEqual(out, text)
        XCTAssertGreaterThan(heldBack, 0, "some CJK/emoji tokens carry partial characters and must be held back")

        // SentencePiece: the prefix space is not emitted; byte tokens reassemble characters.
        let spm = try Tokenizer(gguf: GGUFFile(path: vocabularySuites.appendingPathComponent("ggml-vocab-llama-spm.gguf").path))
        var s2 = StreamingDetokenizer(tokenizer: spm)
        let text2 = "Hello 🦙 world"
        XCTAssertEqual(spm.encode(text2).map { s2.append($0) }.joined() + s2.finish(), text2)
    }

    func testKilnTokenizeCommand() throws {
        let r = try runTool(kilnBinary, ["tokenize", "--text", "<|im_start|>user\nHello world<|im_end|>"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let tokenizer = try Tokenizer(gguf: defaultModelFile())
        XCTAssertEqual(r.stdout, tokenizer.encode("<|im_start|>user\nHello world<|im_end|>").map(String.init).joined(separator: " ") + "\n")
        // The README's example, ids as printed there.
        let example = try runTool(kilnBinary, ["tokenize", "--text", "<|im_start|>user\nHi<|im_end|>"])
        XCTAssertEqual(example.stdout, "1 4093 198 26843 2\n", example.stderr)
        let noSpecial = try runTool(kilnBinary, ["tokenize", "--no-special", "--text", "<|im_start|>"])
        XCTAssertFalse(noSpecial.stdout.split(separator: " ").contains("1"))
        // A vocabulary-only GGUF is a valid model here; SentencePiece adds BOS because its add_bos_token says so.
        let spm = try runTool(kilnBinary, ["tokenize", "--model", vocabularySuites.appendingPathComponent("ggml-vocab-llama-spm.gguf").path, "--text", "Hello"])
        XCTAssertEqual(spm.stdout, "1 15043\n")
    }
}
