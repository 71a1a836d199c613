import Foundation
import KilnModel
import KilnTestSupport
import XCTest

/// The CPU reference decoder (`--backend reference`; the Vulkan decoder has its own comparison in
/// ModelAgreementTests) against llama.cpp on the default model, compared as
/// Tests/Reference/README.md prescribes: teacher-forced log-probabilities, argmax where llama.cpp's choice
/// is clear, and free-running greedy output up to llama.cpp's first near-tie. Runs the release `kiln` binary
/// (`kiln logprobs`, `kiln generate`): the decoder in a debug build is tens of times slower.
final class ReferenceDecoderTests: XCTestCase {
    static let clearGap = 0.3

    func testTeacherForcedLogprobsMatchLlamaCpp() throws {
        let entries = try referenceEntries()
        var differences: [Double] = []
        var argmaxChecked = 0, argmaxAgreed = 0
        for entry in entries {
            let ids = entry.prompt_tokens + entry.greedy_tokens
            let r = try runTool(kilnReleaseBinary, ["logprobs", "--model", DefaultModel.path, "--backend", "reference", "--top", "5",
                                                    "--tokens", ids.map(String.init).joined(separator: " ")], timeout: 300)
            XCTAssertEqual(r.status, 0, r.stderr)
            let lines = r.stdout.split(separator: "\n")
            XCTAssertEqual(lines.count, ids.count - 1, entry.name)
            let rows = try lines.map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] ?? [:] }
            let p = entry.prompt_tokens.count
            for (i, position) in entry.top5.enumerated() {
                // Line k describes token k+1, predicted from tokens 0...k.
                let row = rows[p - 1 + i]
                XCTAssertEqual(row["pos"] as? Int, p + i)
                XCTAssertEqual(row["token"] as? Int, position.id)
                let ours = try XCTUnwrap(row["logprob"] as? Double)
                let theirs = try XCTUnwrap(position.top5.first { $0.id == position.id }?.logprob)
                differences.append(abs(ours - theirs))
                let sorted = position.top5.map(\.logprob).sorted(by: >)
                if sorted[0] - sorted[1] > Self.clearGap {
                    argmaxChecked += 1
                    let top = try XCTUnwrap(row["top"] as? [[Double]])
                    if Int(top[0][0]) == position.top5[0].id { argmaxAgreed += 1 } else {
                        XCTFail("\(entry.name) position \(i): our argmax \(Int(top[0][0])), llama.cpp's \(position.top5[0].id) by a gap of \(sorted[0] - sorted[1])")
                    }
                }
            }
        }
        let mean = differences.reduce(0, +) / Double(differences.count), worst = differences.max() ?? 0
        print(String(format: "reference decoder vs llama.cpp: %d positions, chosen-token |Δ logprob| mean %.4f max %.4f; argmax agrees at %d/%d clear positions",
                     differences.count, mean, worst, argmaxAgreed, argmaxChecked))
        XCTAssertGreaterThan(differences.count, 200)
        XCTAssertLessThanOrEqual(mean, 0.1)
        XCTAssertLessThanOrEqual(worst, 0.5)
    }

    func testFreeRunningGreedyMatchesUpToFirstNearTie() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let tokenizer = try Tokenizer(gguf: defaultModelFile())
        var comparedTokens = 0
        for entry in try referenceEntries() {
            // llama.cpp's greedy tokens up to (not including) the first position whose top-1/top-2 gap is small.
            let firstTie = entry.top5.firstIndex { p in
                let s = p.top5.map(\.logprob).sorted(by: >)
                return s[0] - s[1] < Self.clearGap
            } ?? entry.top5.count
            var expected: [UInt8] = []
            for i in 0..<firstTie where !tokenizer.isEndOfGeneration(entry.greedy_tokens[i]) {
                expected += entry.greedy_token_bytes[i]
            }
            expected = Array(expected[..<StreamingDetokenizerBoundary.completePrefix(expected)])
            comparedTokens += firstTie
            let promptFile = dir.appendingPathComponent("\(entry.name).txt")
            try Data(entry.prompt_text.utf8).write(to: promptFile)
            let r = try runTool(kilnReleaseBinary, ["generate", "--model", DefaultModel.path, "--backend", "reference", "--prompt-file", promptFile.path,
                                                    "--max-tokens", "\(max(firstTie, 1))", "--temperature", "0"], timeout: 300)
            XCTAssertEqual(r.status, 0, r.stderr)
            let ours = Array(r.stdout.utf8)
            XCTAssertTrue(ours.starts(with: expected),
                          "\(entry.name): expected the output to start with \(String(decoding: expected, as: UTF8.self).debugDescription), got \(r.stdout.debugDescription)")
        }
        print("free-running greedy equals llama.cpp's over \(comparedTokens) tokens (up to each prompt's first near-tie)")
        XCTAssertGreaterThan(comparedTokens, 20)
    }

    /// `kiln generate --chat` applies the model's template (with SmolLM2's default system prompt) and answers.
    func testGenerateChat() throws {
        let r = try runTool(kilnReleaseBinary, ["generate", "--model", DefaultModel.path, "--backend", "reference", "--chat", "--max-tokens", "12",
                                                "--prompt", "What is the capital of France?"], timeout: 120)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("Paris"), r.stdout)
    }
}

/// Cuts a byte string at the end of its last complete UTF-8 character.
enum StreamingDetokenizerBoundary {
    static func completePrefix(_ bytes: [UInt8]) -> Int {
        var i = bytes.count - 1
        while i >= 0 && i >= bytes.count - 4 {
            let b = bytes[i]
            if b & 0xC0 != 0x80 {
                let need = b < 0x80 ? 1 : b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : 2
                return bytes.count - i < need ? i : bytes.count
            }
            i -= 1
        }
        return bytes.count
    }
}
