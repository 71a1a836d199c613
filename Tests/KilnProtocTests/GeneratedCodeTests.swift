import Foundation
import KilnAPI
import KilnRPC
import KilnTestSupport
import XCTest
@testable import KilnProtoc

/// The generated code is current, and its wire format agrees with the reference implementation.
final class GeneratedCodeTests: XCTestCase {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    /// Every `.proto` under Schemas/, so that a new one cannot go unchecked.
    static let schemas: [String] = {
        let dir = root.appendingPathComponent("Schemas")
        let files = FileManager.default.enumerator(atPath: dir.path)?.compactMap { $0 as? String } ?? []
        return files.filter { $0.hasSuffix(".proto") }.sorted()
    }()

    func testCommittedCodeIsNotStale() throws {
        let fixture = "kiln/test/v1/everything.proto"
        try Self.checkGenerated(fixture, source: Self.root.appendingPathComponent("Tests/KilnProtocTests/Fixtures/" + fixture),
                                into: Self.root.appendingPathComponent("Tests/KilnProtocTests/Generated"))
        for schema in Self.schemas {
            try Self.checkGenerated(schema, source: Self.root.appendingPathComponent("Schemas/" + schema),
                                    into: Self.root.appendingPathComponent("Sources/KilnAPI"))
        }
        // No folder is left over from a schema that is gone.
        let folders = try FileManager.default.contentsOfDirectory(atPath: Self.root.appendingPathComponent("Sources/KilnAPI").path).sorted()
        XCTAssertEqual(folders, Self.schemas.map(SwiftEmitter.baseName(for:)).sorted(), "Sources/KilnAPI holds stale code: run `make generate`")
    }

    /// The committed folder for `proto` holds exactly what the generator emits now, byte for byte.
    static func checkGenerated(_ proto: String, source: URL, into directory: URL, file: StaticString = #filePath, line: UInt = #line) throws {
        var emitter = SwiftEmitter(file: try ProtoParser.parse(try String(contentsOf: source, encoding: .utf8), file: proto))
        let files = try emitter.emitFiles()
        let folder = SwiftEmitter.baseName(for: proto)
        let committed = (try? FileManager.default.contentsOfDirectory(atPath: directory.appendingPathComponent(folder).path)) ?? []
        XCTAssertEqual(Set(committed.map { folder + "/" + $0 }), Set(files.map(\.name)), "\(folder): files added or left over: run `make generate`",
                       file: file, line: line)
        for (name, fresh) in files {
            let old = try? String(contentsOf: directory.appendingPathComponent(name), encoding: .utf8)
            XCTAssertEqual(fresh, old, "\(name) is stale for \(proto): run `make generate`", file: file, line: line)
        }
    }

    /// The FileDescriptorProto embedded for server reflection equals protoc's for every schema and the
    /// fixture (maps, oneofs, optional fields, nested types, reserved ranges).
    func testEmbeddedDescriptorsEqualProtocs() throws {
        let script = Self.root.appendingPathComponent("Tests/KilnProtocTests/descriptor_check.py").path
        for (protoRoot, generated, files) in [("Schemas", "Sources/KilnAPI", Self.schemas),
                                              ("Tests/KilnProtocTests/Fixtures", "Tests/KilnProtocTests/Generated", ["kiln/test/v1/everything.proto"])] {
            // A difference exits nonzero (thrown, failing the test); the script prints both descriptors.
            let output = try Self.python([script, Self.root.appendingPathComponent(protoRoot).path, Self.root.appendingPathComponent(generated).path] + files)
            XCTAssertEqual(output.components(separatedBy: "PASS ").count - 1, files.count, output)
        }
    }

    // MARK: Against Python protobuf

    static let pythonOut: URL = {
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-pb-\(getpid())")
        try? FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
        _ = try? python(["-m", "grpc_tools.protoc", "-I", root.appendingPathComponent("Schemas").path, "--python_out=\(out.path)"] + schemas)
        _ = try? python(["-m", "grpc_tools.protoc", "-I", root.appendingPathComponent("Tests/KilnProtocTests/Fixtures").path,
                         "--python_out=\(out.path)", "kiln/test/v1/everything.proto"])
        return out
    }()

    @discardableResult
    static func python(_ args: [String]) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3"] + args
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        let errText = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { throw NSError(domain: "python", code: Int(p.terminationStatus), userInfo: [NSLocalizedDescriptionKey: errText]) }
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    static func peer(_ mode: String, _ message: String, _ payload: String, module: String = "kiln.v1.inference_pb2") throws -> String {
        let script = Self.root.appendingPathComponent("Tests/KilnProtocTests/protobuf_peer.py").path
        return try python([script, pythonOut.path, module, mode, message, payload])
    }

    static func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }
    static func bytes(_ hex: String) -> [UInt8] {
        var out: [UInt8] = []
        var i = hex.startIndex
        while i < hex.endIndex, let j = hex.index(i, offsetBy: 2, limitedBy: hex.endIndex) {
            out.append(UInt8(hex[i..<j], radix: 16)!)
            i = j
        }
        return out
    }

    func testPythonReadsWhatSwiftWrites() throws {
        var request = Kiln_V1_GenerateRequest()
        request.model = "smollm2"
        request.prompt = "héllo ✓"
        var sampling = Kiln_V1_SamplingParameters()
        sampling.maxTokens = 0          // optional: present even at its default
        sampling.temperature = 0.5
        sampling.topK = 40
        sampling.frequencyPenalty = -1.25
        sampling.seed = UInt64.max
        sampling.stop = ["\n\n", "</s>"]
        request.sampling = sampling
        request.priority = .batch
        let json = try Self.peer("decode", "GenerateRequest", Self.hex(request.serializedBytes()))
        let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        XCTAssertEqual(object["model"] as? String, "smollm2")
        XCTAssertEqual(object["prompt"] as? String, "héllo ✓")
        XCTAssertEqual(object["priority"] as? String, "PRIORITY_BATCH")
        let s = try XCTUnwrap(object["sampling"] as? [String: Any])
        XCTAssertEqual(s["max_tokens"] as? Int, 0, "optional presence survives")
        XCTAssertEqual(s["temperature"] as? Double, 0.5)
        XCTAssertEqual(s["top_k"] as? Int, 40)
        XCTAssertEqual(s["frequency_penalty"] as? Double, -1.25)
        XCTAssertEqual(s["seed"] as? String, "18446744073709551615")
        XCTAssertEqual(s["stop"] as? [String], ["\n\n", "</s>"])
    }

    func testSwiftReadsWhatPythonWrites() throws {
        let json = #"{"text": "tok", "token_id": 4242, "logprob": -0.5, "top_logprobs": [{"token_id": 1, "text": "a", "logprob": -1.5}, {"token_id": 2, "text": "b", "logprob": -2.5}], "finish_reason": "FINISH_REASON_LENGTH", "usage": {"prompt_tokens": 12, "cached_prompt_tokens": 8, "completion_tokens": 3, "time_to_first_token_ms": 12.5}}"#
        let bytes = Self.bytes(try Self.peer("encode", "GenerateResponse", json))
        let r = try Kiln_V1_GenerateResponse(serializedBytes: bytes)
        XCTAssertEqual(r.text, "tok")
        XCTAssertEqual(r.tokenId, 4242)
        XCTAssertEqual(r.logprob, -0.5)
        XCTAssertEqual(r.topLogprobs.map(\.tokenId), [1, 2])
        XCTAssertEqual(r.topLogprobs.last?.logprob, -2.5)
        XCTAssertEqual(r.finishReason, .length)
        XCTAssertEqual(r.usage?.cachedPromptTokens, 8)
        XCTAssertEqual(r.usage?.timeToFirstTokenMs, 12.5)
        XCTAssertEqual(r.serializedBytes(), bytes, "same bytes back (fields in number order, like protobuf's deterministic mode)")
    }

    func testUnknownFieldsAndEnumValuesAreKept() throws {
        // Field 99 and enum value 7 are unknown to this schema version.
        var w = ProtobufWriter()
        w.write(field: 5, int32: 7)
        w.write(field: 99, string: "future")
        let r = try Kiln_V1_GenerateResponse(serializedBytes: w.bytes)
        XCTAssertEqual(r.finishReason, .unrecognized(7))
        XCTAssertEqual(r.serializedBytes(), w.bytes)
    }

    func testRandomRoundTrips() throws {
        var rng = TestRandom()
        func text() -> String { String((0..<Int.random(in: 0...12, using: &rng)).map { _ in "aé✓\n0".randomElement(using: &rng)! }) }
        for _ in 0..<500 {
            var s = Kiln_V1_SamplingParameters()
            if Bool.random(using: &rng) { s.maxTokens = UInt32.random(in: 0...UInt32.max, using: &rng) }
            if Bool.random(using: &rng) { s.temperature = Float.random(in: -2...2, using: &rng) }
            s.topK = UInt32.random(in: 0...100, using: &rng)
            s.minP = Float.random(in: 0...1, using: &rng)
            s.presencePenalty = Float.random(in: -2...2, using: &rng)
            if Bool.random(using: &rng) { s.seed = UInt64.random(in: 0...UInt64.max, using: &rng) }
            s.stop = (0..<Int.random(in: 0...3, using: &rng)).map { _ in text() }
            s.logprobs = Bool.random(using: &rng)
            var chat = Kiln_V1_ChatRequest()
            chat.model = text()
            chat.sessionId = text()
            chat.messages = (0..<Int.random(in: 0...4, using: &rng)).map { _ in
                var m = Kiln_V1_ChatMessage()
                m.role = ["system", "user", "assistant"].randomElement(using: &rng)!
                m.content = text()
                return m
            }
            chat.sampling = Bool.random(using: &rng) ? s : nil
            chat.priority = Kiln_V1_Priority(rawValue: Int32.random(in: -1...3, using: &rng))
            XCTAssertEqual(try Kiln_V1_ChatRequest(serializedBytes: chat.serializedBytes()), chat)
            var t = Kiln_V1_TokenizeResponse()
            t.tokenIds = (0..<Int.random(in: 0...50, using: &rng)).map { _ in UInt32.random(in: 0...UInt32.max, using: &rng) }
            XCTAssertEqual(try Kiln_V1_TokenizeResponse(serializedBytes: t.serializedBytes()), t)
        }
    }
}
