import Foundation
import KilnModel
import KilnTestSupport
import XCTest

/// lavapipe's vector width (256 bits: 8-lane workgroups; 512 bits: 16-lane ones, which Kiln picks on AVX-512
/// CPUs) changes no result: the CPU-shaped kernels' lanes never cooperate, so each output is reduced in the
/// same order either way. Mesa reads `LP_NATIVE_VECTOR_WIDTH` once per process, so each width runs the release
/// `kiln` in a process of its own. (On a CPU without AVX-512, LLVM splits the 512-bit vectors in two: slower,
/// the same results.)
final class LaneWidthTests: XCTestCase {
    private let widths = [256, 512]

    /// Teacher-forced logits of a 40-token prompt (one prefill step: the tiled matrix frame) are bit-identical.
    func testPrefillLogitsDoNotDependOnTheVectorWidth() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let ids = (0..<40).map { String(($0 * 977 + 31) % 49152) }.joined(separator: " ")
        var logits: [Data] = []
        for width in widths {
            let out = dir.appendingPathComponent("logits-\(width).f32").path
            let r = try runTool(kilnReleaseBinary, ["logprobs", "--model", DefaultModel.path, "--backend", "vulkan", "--top", "1",
                                                    "--logits-out", out, "--tokens", ids],
                                timeout: 600, environment: ["LP_NATIVE_VECTOR_WIDTH": String(width)])
            XCTAssertEqual(r.status, 0, r.stderr)
            try requireLavapipe(r.stderr, width: width)
            logits.append(try Data(contentsOf: URL(fileURLWithPath: out)))
        }
        XCTAssertEqual(logits[0].count, 39 * 49152 * 4)
        XCTAssertTrue(logits[0] == logits[1], "logits differ between 256-bit and 512-bit lavapipe")
    }

    /// Greedy decoding (the single-column frame, one token per step) picks the same 24 tokens.
    func testGreedyDecodeDoesNotDependOnTheVectorWidth() throws {
        var texts: [String] = []
        for width in widths {
            let r = try runTool(kilnReleaseBinary, ["generate", "--model", DefaultModel.path, "--backend", "vulkan", "--max-tokens", "24",
                                                    "--prompt", "The three primary colours are"],
                                timeout: 600, environment: ["LP_NATIVE_VECTOR_WIDTH": String(width)])
            XCTAssertEqual(r.status, 0, r.stderr)
            try requireLavapipe(r.stderr, width: width)
            texts.append(r.stdout)
        }
        XCTAssertFalse(texts[0].isEmpty)
        XCTAssertEqual(texts[0], texts[1])
    }

    /// The run used lavapipe at `width` bits (a GPU, or a width the driver ignored, would prove nothing).
    private func requireLavapipe(_ stderr: String, width: Int) throws {
        guard stderr.contains("llvmpipe") else { throw XCTSkip("the Vulkan device is not lavapipe: \(stderr.prefix(200))") }
        XCTAssertTrue(stderr.contains("\(width) bits"), "expected a \(width)-bit lavapipe: \(stderr.prefix(300))")
    }
}
