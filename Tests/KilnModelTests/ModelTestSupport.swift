import Foundation
import KilnModel
import KilnTestSupport
import XCTest

/// The default model (fetched by `make model`); tests that need it fail with a clear message if absent.
func defaultModelFile() throws -> GGUFFile {
    let path = DefaultModel.path
    guard FileManager.default.fileExists(atPath: path) else {
        XCTFail("default model missing at \(path): run `make model`")
        throw CocoaError(.fileNoSuchFile)
    }
    return try GGUFFile(path: path)
}

/// Runs gguf_peer.py (the Python `gguf` package) with `arguments`.
func ggufPeer(_ arguments: [String]) throws -> ProcessResult {
    let script = repositoryRoot.appendingPathComponent("Tests/KilnModelTests/gguf_peer.py").path
    let result = try runTool("/usr/bin/env", ["python3", script] + arguments, timeout: 120)
    XCTAssertEqual(result.status, 0, "gguf_peer.py \(arguments): \(result.stderr)")
    return result
}

/// One entry of Tests/Reference/llamacpp_reference.json.
struct ReferenceEntry: Decodable {
    struct Candidate: Decodable { let id: Int; let logprob: Double }
    struct Position: Decodable { let id: Int; let top5: [Candidate] }
    let name: String
    let prompt_text: String
    let prompt_tokens: [Int]
    let greedy_tokens: [Int]
    let greedy_token_bytes: [[UInt8]]
    let top5: [Position]
}

func referenceEntries() throws -> [ReferenceEntry] {
    let data = try Data(contentsOf: referenceData.appendingPathComponent("llamacpp_reference.json"))
    return try JSONDecoder().decode([ReferenceEntry].self, from: data)
}
