import Foundation
import KilnModel
import KilnTestSupport
import XCTest

/// The GGUF writer and `kiln make-test-model`: files in every type load in our reader and in Python's, and
/// the reference decoder runs them.
final class TestModelTests: XCTestCase {
    func testTestModelsInEveryTypeLoadEverywhere() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        for type in GGMLType.allCases {
            let path = dir.appendingPathComponent("m-\(type).gguf").path
            let r = try runTool(kilnBinary, ["make-test-model", "--layers", "2", "--dim", "256", "--ffn-dim", "512",
                                             "--heads", "4", "--kv-heads", "2", "--type", type.description, path])
            XCTAssertEqual(r.status, 0, r.stderr)
            let file = try GGUFFile(path: path)
            XCTAssertEqual(file.tensor("blk.0.attn_q.weight")?.type, type)
            let config = try ModelConfig(gguf: file)
            XCTAssertEqual(config.layerCount, 2)
            XCTAssertEqual(config.kvHeadCount, 2)

            let peer = try ggufPeer(["describe", path])
            let json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(peer.stdout.utf8)) as? [String: Any])
            let tensors = try XCTUnwrap(json["tensors"] as? [[String: Any]])
            XCTAssertEqual(tensors.map { $0["name"] as? String }, file.tensors.map(\.name))
            XCTAssertEqual(tensors.map { $0["type"] as? String }, file.tensors.map(\.type.description))
            XCTAssertEqual(tensors.map { $0["offset"] as? Int }, file.tensors.map(\.fileOffset))

            let decoder = ReferenceDecoder(weights: try ReferenceWeights(gguf: file))
            let logits = try decoder.forward([3, 4, 5], logitCount: 3)
            XCTAssertEqual(logits.count, 3)
            XCTAssertTrue(logits.allSatisfy { $0.count == config.vocabularySize && $0.allSatisfy(\.isFinite) }, "\(type)")
        }
    }

    /// Decoding a sequence in one batch or one token at a time gives the same logits (the KV cache works).
    func testIncrementalDecodingMatchesBatch() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("m.gguf").path
        try TestModelBuilder().build().write(to: path)
        let weights = try ReferenceWeights(gguf: GGUFFile(path: path))
        let tokens = [5, 80, 81, 90, 100, 3, 7]
        let batch = try ReferenceDecoder(weights: weights).forward(tokens, logitCount: tokens.count)
        let stepper = ReferenceDecoder(weights: weights)
        for (i, t) in tokens.enumerated() {
            let step = try stepper.forward([t])[0]
            for (a, b) in zip(step, batch[i]) { XCTAssertEqual(a, b, accuracy: 1e-4) }
        }
        XCTAssertEqual(stepper.position, tokens.count)
    }

    /// qwen2: Q/K/V biases are read and applied (and change the result), RoPE pairs NeoX-style, and the
    /// cache still gives the same logits incrementally as in one batch.
    func testQwen2Architecture() throws {
        var builder = TestModelBuilder()
        builder.architecture = "qwen2"
        let file = try GGUFFile(file: MappedFile(copying: builder.build().serialized()))
        let config = try ModelConfig(gguf: file)
        XCTAssertEqual(config.architecture, "qwen2")
        XCTAssertTrue(config.attentionBias)
        let weights = try ReferenceWeights(gguf: file)
        XCTAssertNotNil(weights.layers[0].queryBias)
        let tokens = [5, 80, 81, 90]
        let batch = try ReferenceDecoder(weights: weights).forward(tokens, logitCount: tokens.count)
        let stepper = ReferenceDecoder(weights: weights)
        for (i, t) in tokens.enumerated() {
            for (a, b) in zip(try stepper.forward([t])[0], batch[i]) { XCTAssertEqual(a, b, accuracy: 1e-4) }
        }
        // The same weights read as llama (no biases, adjacent-pair RoPE) give different logits.
        var llama = builder
        llama.architecture = "llama"
        let plain = try ReferenceDecoder(weights: ReferenceWeights(gguf: GGUFFile(file: MappedFile(copying: llama.build().serialized()))))
        XCTAssertNotEqual(try plain.forward(tokens)[0], batch[3])
    }

    func testTokenizerOfTestModel() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("m.gguf").path
        try TestModelBuilder().build().write(to: path)
        let file = try GGUFFile(path: path)
        let tokenizer = try Tokenizer(gguf: file)
        let ids = tokenizer.encode("<|im_start|>the theater<|im_end|>")
        XCTAssertEqual(ids.first, 1)
        XCTAssertEqual(ids.last, 2)
        XCTAssertLessThan(ids.count, 2 + "the theater".utf8.count, "merges apply")
        XCTAssertEqual(tokenizer.decode(ids, renderSpecial: true), "<|im_start|>the theater<|im_end|>")
        let template = try ChatTemplate(jinjaSource: try file.string("tokenizer.chat_template"))
        XCTAssertEqual(template.family, .chatml)
    }

    func testModelInfoCommand() throws {
        let r = try runTool(kilnBinary, ["model-info", DefaultModel.path])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("general.architecture = \"llama\""))
        XCTAssertTrue(r.stdout.contains("token_embd.weight  Q8_0  [576, 49152]"))
        let bad = try runTool(kilnBinary, ["model-info", "/etc/passwd"])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.stderr.contains("bad magic"), bad.stderr)
    }
}

/// The CPU backend behind `DecoderBackend`: paged addressing and batching change nothing.
final class ReferenceBackendTests: XCTestCase {
    func testBatchedScatteredEqualsAloneContiguous() throws {
        let weights = try ReferenceWeights(gguf: GGUFFile(file: MappedFile(copying: TestModelBuilder().build().serialized())))
        let backend = ReferenceBackend(weights: weights, blockCount: 32, blockSize: 4)
        let prompts = [[5, 80, 81, 90, 100, 3, 7], [40, 41], [200, 201, 202, 203, 204]]
        let alone = try prompts.map { try backend.logits(.sequence($0, startingAt: 0, blockTable: [0, 1])) [0] }
        var batch = DecodeBatch(tokens: [], positions: [], sequences: [], blockTables: [[30, 3], [17], [9, 22]], logitRows: [])
        for (s, p) in prompts.enumerated() {
            for (i, t) in p.enumerated() { batch.tokens.append(t); batch.positions.append(i); batch.sequences.append(s) }
            batch.logitRows.append(batch.tokens.count - 1)
        }
        XCTAssertEqual(try backend.logits(batch), alone)
        XCTAssertEqual(try backend.greedy(batch), alone.map(argmax))
        XCTAssertThrowsError(try backend.logits(.sequence([5], startingAt: 8, blockTable: [0])), "no block for position 8")
        XCTAssertThrowsError(try backend.logits(.sequence([5], startingAt: 0, blockTable: [32])), "block outside the pool")
    }
}
