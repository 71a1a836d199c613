import Foundation
import KilnTestSupport
import XCTest

/// The decoder under the Khronos validation layer (`KILN_VULKAN_VALIDATION=1`; `make deps` installs
/// vulkan-validationlayers): a prefill, single-sequence decode and every batch size of `kiln bench decode`
/// (batch-1 decode after its 512-token prompt runs attention chunks side by side; `--compare-pipeline` submits
/// steps while the previous one runs, tokens fed on the device) record no validation error, also with uploads staged (KILN_VULKAN_STAGING=1)
/// and with the GPU kernel family (shared memory and barriers; KILN_VULKAN_KERNELS=gpu). The loader's log proves the layer was inserted, so a silent run cannot pass
/// for a clean one. (This test found a 98,304-group SwiGLU dispatch over the 65,535 limit.)
final class ValidationLayerTests: XCTestCase {
    func testDecoderRunsCleanUnderTheValidationLayer() throws {
        let environment = ["KILN_VULKAN_VALIDATION": "1", "VK_LOADER_DEBUG": "layer"]
        let generate = ["generate", "--prompt", "The capital of France is", "--max-tokens", "4", "--backend", "vulkan"]
        // The third run stages every upload through host memory, as on a GPU whose memory the host cannot map;
        // the fourth runs the GPU kernel family.
        let runs: [([String], [String: String])] = [(generate, [:]), (["bench", "decode", "--backend", "vulkan", "--steps", "2", "--compare-pipeline"], [:]),
                                                    (generate, ["KILN_VULKAN_STAGING": "1"]), (generate, ["KILN_VULKAN_KERNELS": "gpu"])]
        for (arguments, extra) in runs {
            let staged = extra["KILN_VULKAN_STAGING"] != nil
            let r = try runTool(kilnReleaseBinary, arguments, timeout: 600, environment: environment.merging(extra) { a, _ in a })
            let output = r.stdout + r.stderr
            XCTAssertEqual(r.status, 0, output)
            XCTAssertTrue(output.contains("Insert instance layer \"VK_LAYER_KHRONOS_validation\""), "the layer was not loaded: \(output.suffix(2000))")
            XCTAssertTrue(output.contains("vulkan validation: 0 errors"), "\(arguments): \(output.suffix(4000))")
            XCTAssertFalse(output.contains("vulkan validation error"), "\(arguments): \(output.suffix(4000))")
            if staged { XCTAssertTrue(output.contains("staged uploads"), "the staged run did not stage: \(output.suffix(2000))") }
            if extra["KILN_VULKAN_KERNELS"] == "gpu" { XCTAssertTrue(output.contains("gpu kernel family"), "not the GPU family: \(output.suffix(2000))") }
        }
    }
}

/// A dispatch larger than maxComputeWorkGroupCount[0] folds onto y: a 512-token step of a model with a
/// 1,536-wide feed-forward layer runs SwiGLU over 786,432 elements (98,304 workgroups), and its logits must
/// still equal the CPU reference decoder's.
final class LargeDispatchTests: XCTestCase {
    func testDispatchPastTheWorkgroupLimitIsComputedInFull() throws {
        let dir = try temporaryDirectory()
        let model = dir.appendingPathComponent("wide.gguf").path
        let made = try runTool(kilnReleaseBinary, ["make-test-model", "--layers", "1", "--dim", "64", "--ffn-dim", "1536",
                                                   "--context", "1024", "--type", "F32", model])
        XCTAssertEqual(made.status, 0, made.stderr)
        var rng = TestRandom()
        let tokens = (0..<520).map { _ in String(Int.random(in: 3..<260, using: &rng)) }.joined(separator: " ")
        var logits: [[Float]] = []
        for backend in ["vulkan", "reference"] {
            let out = dir.appendingPathComponent("\(backend).bin").path
            // A float32 KV pool, so that the comparison holds the kernels to the float32 bound.
            let r = try runTool(kilnReleaseBinary, ["logprobs", "--model", model, "--backend", backend, "--kv-cache-type", "f32",
                                                    "--tokens", tokens, "--logits-out", out], timeout: 600)
            XCTAssertEqual(r.status, 0, r.stderr)
            let data = try Data(contentsOf: URL(fileURLWithPath: out))
            logits.append(data.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) })
        }
        XCTAssertEqual(logits[0].count, logits[1].count)
        XCTAssertGreaterThan(logits[0].count, 500 * 256)
        var error = 0.0, norm = 0.0
        for (a, b) in zip(logits[0], logits[1]) {
            XCTAssertFalse(a.isNaN)
            error += Double(a - b) * Double(a - b)
            norm += Double(b) * Double(b)
        }
        XCTAssertLessThanOrEqual((error / norm).squareRoot(), 1e-4)
    }
}
