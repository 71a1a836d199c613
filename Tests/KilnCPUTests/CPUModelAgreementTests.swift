import Foundation
import KilnModel
import KilnTestSupport
import XCTest

/// The default model on the CPU backend, teacher-forced on every entry of the llama.cpp reference with the
/// model issue's tolerances: the chosen token's |Δ logprob| mean ≤ 0.1 and max ≤ 0.5, and llama.cpp's
/// argmax wherever its top-1/top-2 gap exceeds 0.3. Runs the release `kiln logprobs --backend cpu`.
final class CPUModelAgreementTests: XCTestCase {
    struct Entry: Decodable {
        struct Candidate: Decodable { let id: Int; let logprob: Double }
        struct Position: Decodable { let id: Int; let top5: [Candidate] }
        let name: String
        let prompt_tokens: [Int]
        let greedy_tokens: [Int]
        let top5: [Position]
    }

    func testCPUBackendAgreesWithLlamaCpp() throws {
        let data = try Data(contentsOf: referenceData.appendingPathComponent("llamacpp_reference.json"))
        let entries = try JSONDecoder().decode([Entry].self, from: data)
        var differences: [Double] = [], argmaxChecked = 0
        for entry in entries {
            let ids = entry.prompt_tokens + entry.greedy_tokens
            let r = try runTool(kilnReleaseBinary, ["logprobs", "--model", DefaultModel.path, "--backend", "cpu", "--top", "5",
                                                    "--tokens", ids.map(String.init).joined(separator: " ")], timeout: 300)
            XCTAssertEqual(r.status, 0, r.stderr)
            let lines = r.stdout.split(separator: "\n")
            XCTAssertEqual(lines.count, ids.count - 1, entry.name)
            let p = entry.prompt_tokens.count
            for (i, position) in entry.top5.enumerated() where p - 1 + i < lines.count {
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
        let mean = differences.reduce(0, +) / Double(max(1, differences.count))
        print(String(format: "CPU backend vs llama.cpp: chosen-token |Δ logprob| mean %.4f max %.4f over %d positions, argmax checked at %d",
                     mean, differences.max() ?? 0, differences.count, argmaxChecked))
        XCTAssertGreaterThan(differences.count, 100)
        XCTAssertGreaterThan(argmaxChecked, 50)
        XCTAssertLessThanOrEqual(mean, 0.1)
        XCTAssertLessThanOrEqual(differences.max() ?? 1, 0.5)
    }
}
