import Foundation
import KilnFuzzTargets
import KilnModel
import KilnTestSupport
import XCTest

/// Every committed fuzz corpus entry (`Fuzz/corpus/TARGET/`) through its target once, as `make fuzz` runs
/// them: a crash found once stays found. The server targets run against a whole server in this process.
final class FuzzCorpusTests: XCTestCase {
    override class func setUp() {
        // The tokenizer target's vocabularies: the default model's (byte-level BPE) and llama.cpp's SentencePiece suite.
        setenv("KILN_FUZZ_BPE", DefaultModel.path, 0)
        setenv("KILN_FUZZ_SPM", vocabularySuites.appendingPathComponent("ggml-vocab-llama-spm.gguf").path, 0)
    }

    private func replay(_ target: FuzzTarget, file: StaticString = #filePath, line: UInt = #line) throws {
        let folder = repositoryRoot.appendingPathComponent("Fuzz/corpus/\(target.rawValue)")
        let entries = try FileManager.default.contentsOfDirectory(atPath: folder.path).sorted()
        XCTAssertFalse(entries.isEmpty, "\(target.rawValue) has no committed corpus", file: file, line: line)
        for entry in entries {
            target.run(Array(try Data(contentsOf: folder.appendingPathComponent(entry))))
        }
        print("\(target.rawValue): \(entries.count) corpus entries replayed")
    }

    func testProtobufCorpus() throws { try replay(.protobuf) }
    func testFramerCorpus() throws { try replay(.framer) }
    func testGGUFCorpus() throws { try replay(.gguf) }
    func testTokenizerCorpus() throws { try replay(.tokenizer) }
    func testServerCorpus() throws { try replay(.server) }
    func testHTTP2FramesCorpus() throws { try replay(.h2frames) }

    /// Every target has a committed corpus folder, and nothing else is there.
    func testEachTargetHasACorpus() throws {
        let folders = try FileManager.default.contentsOfDirectory(atPath: repositoryRoot.appendingPathComponent("Fuzz/corpus").path)
        XCTAssertEqual(Set(folders), Set(FuzzTarget.allCases.map(\.rawValue)))
    }
}
