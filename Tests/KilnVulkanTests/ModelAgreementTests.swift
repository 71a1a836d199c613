import Foundation
import KilnModel
import KilnTestSupport
import KilnVulkan
import XCTest

/// The default model on Vulkan (lavapipe in CI), teacher-forced on every entry of the llama.cpp reference:
/// logits against the CPU reference decoder at every position, and log-probabilities against llama.cpp with
/// the model issue's tolerances. Runs the release `kiln logprobs` (`--backend vulkan` and `--backend reference`).
final class ModelAgreementTests: XCTestCase {
    struct Entry: Decodable {
        struct Candidate: Decodable { let id: Int; let logprob: Double }
        struct Position: Decodable { let id: Int; let top5: [Candidate] }
        let name: String
        let prompt_tokens: [Int]
        let greedy_tokens: [Int]
        let top5: [Position]
    }

    func testVulkanAgreesWithCPUAndLlamaCpp() throws {
        let data = try Data(contentsOf: referenceData.appendingPathComponent("llamacpp_reference.json"))
        let entries = try JSONDecoder().decode([Entry].self, from: data)
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        var worstL2 = 0.0, differences: [Double] = [], argmaxChecked = 0
        for entry in entries {
            let ids = entry.prompt_tokens + entry.greedy_tokens
            var logits: [String: [Float]] = [:]
            var lines: [Substring] = []
            for backend in ["vulkan", "reference"] {
                let out = dir.appendingPathComponent("\(entry.name)-\(backend).f32").path
                let r = try runTool(kilnReleaseBinary, ["logprobs", "--model", DefaultModel.path, "--backend", backend, "--top", "5",
                                                        "--logits-out", out, "--tokens", ids.map(String.init).joined(separator: " ")], timeout: 600)
                XCTAssertEqual(r.status, 0, r.stderr)
                logits[backend] = try Data(contentsOf: URL(fileURLWithPath: out)).withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
                if backend == "vulkan" { lines = r.stdout.split(separator: "\n") }
            }
            let vocabulary = 49152
            let v = try XCTUnwrap(logits["vulkan"]), c = try XCTUnwrap(logits["reference"])
            XCTAssertEqual(v.count, (ids.count - 1) * vocabulary)
            for position in 0..<ids.count - 1 {
                var e = 0.0, n = 0.0
                for i in position * vocabulary ..< (position + 1) * vocabulary {
                    e += Double(v[i] - c[i]) * Double(v[i] - c[i]); n += Double(c[i]) * Double(c[i])
                }
                let l2 = (e / n).squareRoot()
                worstL2 = max(worstL2, l2)
                XCTAssertLessThanOrEqual(l2, 1e-2, "\(entry.name) position \(position)")
            }
            let p = entry.prompt_tokens.count
            for (i, position) in entry.top5.enumerated() {
                let row = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(lines[p - 1 + i].utf8)) as? [String: Any])
                let ours = try XCTUnwrap(row["logprob"] as? Double)
                let theirs = try XCTUnwrap(position.top5.first { $0.id == position.id }?.logprob)
                differences.append(abs(ours - theirs))
                let sorted = position.top5.map(\.logprob).sorted(by: >)
                if sorted[0] - sorted[1] > 0.3 {
                    argmaxChecked += 1
                    let top = try XCTUnwrap(row["top"] as? [[Double]])
                    XCTAssertEqual(Int(top[0][0]), position.top5[0].id, "\(entry.name) position \(i)")
                }
            }
        }
        let mean = differences.reduce(0, +) / Double(differences.count)
        print(String(format: "Vulkan vs CPU: worst logits relative L2 %.2e; vs llama.cpp: chosen-token |Δ logprob| mean %.4f max %.4f over %d positions, argmax checked at %d",
                     worstL2, mean, differences.max() ?? 0, differences.count, argmaxChecked))
        XCTAssertLessThanOrEqual(mean, 0.1)
        XCTAssertLessThanOrEqual(differences.max() ?? 1, 0.5)
    }

    /// Without any Vulkan driver Kiln says so and the CPU backend still works; asking for Vulkan is a clear error.
    func testNoVulkanDriverFallsBackToCPU() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let model = dir.appendingPathComponent("tiny.gguf").path
        try TestModelBuilder().build().write(to: model)
        let noDriver = ["VK_ICD_FILENAMES": "/nonexistent.json", "VK_DRIVER_FILES": "/nonexistent.json"]
        let auto = try runTool(kilnBinary, ["generate", "--model", model, "--prompt", "the", "--max-tokens", "3"], environment: noDriver)
        XCTAssertEqual(auto.status, 0, auto.stderr)
        XCTAssertTrue(auto.stderr.contains("no Vulkan device"), auto.stderr)
        let forced = try runTool(kilnBinary, ["generate", "--model", model, "--backend", "vulkan", "--prompt", "the", "--max-tokens", "3"], environment: noDriver)
        XCTAssertNotEqual(forced.status, 0)
        XCTAssertTrue(forced.stderr.contains("Vulkan"), forced.stderr)
        // Vulkan (lavapipe when that is all there is) generates the same greedy text as the reference decoder.
        let vulkan = try runTool(kilnBinary, ["generate", "--model", model, "--backend", "vulkan", "--prompt", "the", "--max-tokens", "8"])
        let reference = try runTool(kilnBinary, ["generate", "--model", model, "--backend", "reference", "--prompt", "the", "--max-tokens", "8"])
        XCTAssertEqual(vulkan.status, 0, vulkan.stderr)
        XCTAssertEqual(vulkan.stdout, reference.stdout)
        // auto takes Vulkan only on a real GPU; with lavapipe alone it takes the native CPU backend and says why.
        let realGPU = try VulkanDevice.available().contains { $0.kind == .discreteGPU || $0.kind == .integratedGPU }
        let picked = try runTool(kilnBinary, ["generate", "--model", model, "--prompt", "the", "--max-tokens", "8"])
        let cpu = try runTool(kilnBinary, ["generate", "--model", model, "--backend", "cpu", "--prompt", "the", "--max-tokens", "8"])
        XCTAssertEqual(picked.status, 0, picked.stderr)
        XCTAssertEqual(picked.stdout, realGPU ? vulkan.stdout : cpu.stdout)
        XCTAssertTrue(picked.stderr.contains(realGPU ? "backend auto: Vulkan, on the" : "backend auto: the CPU backend (no GPU among the Vulkan devices"), picked.stderr)
    }
}
