import Foundation
import XCTest
@testable import KilnProtoc

final class ProtoParserTests: XCTestCase {
    let schemas = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Schemas")

    private func parse(_ relative: String) throws -> ProtoFile {
        let source = try String(contentsOf: schemas.appendingPathComponent(relative), encoding: .utf8)
        return try ProtoParser.parse(source, file: relative)
    }

    func testParsesKilnInferenceSchema() throws {
        let file = try parse("kiln/v1/inference.proto")
        XCTAssertEqual(file.package, "kiln.v1")
        let service = try XCTUnwrap(file.services.first { $0.name == "Inference" })
        let generate = try XCTUnwrap(service.methods.first { $0.name == "Generate" })
        XCTAssertFalse(generate.clientStreaming)
        XCTAssertTrue(generate.serverStreaming)
        XCTAssertEqual(generate.input, "GenerateRequest")
        XCTAssertEqual(service.methods.map(\.name), ["Generate", "Chat", "EndSession", "Tokenize", "Detokenize", "ListModels", "GetModel", "GetStats"])
        XCTAssertTrue(service.methods[0].comment?.hasPrefix("Completes a prompt.") ?? false, "comments become doc comments")
        let sampling = try XCTUnwrap(file.messages.first { $0.name == "SamplingParameters" })
        let maxTokens = try XCTUnwrap(sampling.fields.first { $0.name == "max_tokens" })
        XCTAssertEqual(maxTokens.label, .optional)
        XCTAssertEqual(maxTokens.type, .uint32)
        XCTAssertEqual(maxTokens.number, 1)
        XCTAssertEqual(sampling.fields.first { $0.name == "stop" }?.label, .repeated)
        let finish = try XCTUnwrap(file.enums.first { $0.name == "FinishReason" })
        XCTAssertEqual(finish.values.map(\.number), [0, 1, 2, 3, 4])
        XCTAssertNil(finish.values[0].comment, "a trailing comment stays with its own line")
        let response = try XCTUnwrap(file.messages.first { $0.name == "GenerateResponse" })
        XCTAssertEqual(response.fields.first { $0.name == "usage" }?.type, .named("Usage"))
    }

    func testParsesHealthSchemaWithNestedEnum() throws {
        let file = try parse("grpc/health/v1/health.proto")
        let response = try XCTUnwrap(file.messages.first { $0.name == "HealthCheckResponse" })
        XCTAssertEqual(response.enums.first?.name, "ServingStatus")
        XCTAssertEqual(response.enums.first?.values.count, 4)
        XCTAssertEqual(file.services.first?.methods.last?.serverStreaming, true)
    }

    func testMapsOneofsReservedAndOptions() throws {
        let source = """
        syntax = "proto3";
        package t;
        import "other.proto";
        option java_package = "x.y";
        /* Block
         * comment */
        message M {
          option deprecated = true;
          map<string, Inner> by_name = 1;
          oneof choice {
            string text = 2;
            int64 number = 3 [deprecated = true];
          }
          reserved 4, 8 to 10, 100 to max;
          reserved "old";
          message Inner { repeated sint64 xs = 1; }
          enum E { E_ZERO = 0; E_NEG = -1; }
        }
        service S { rpc Bidi(stream M) returns (stream M) { option idempotency_level = NO_SIDE_EFFECTS; } }
        """
        let file = try ProtoParser.parse(source, file: "t.proto")
        let m = try XCTUnwrap(file.messages.first)
        XCTAssertEqual(m.comment, "Block\ncomment ")
        XCTAssertEqual(m.fields[0].mapKey, .string)
        XCTAssertEqual(m.fields[0].type, .named("Inner"))
        XCTAssertEqual(m.oneofs, ["choice"])
        XCTAssertEqual(m.fields.filter { $0.oneof == "choice" }.map(\.name), ["text", "number"])
        XCTAssertEqual(m.reservedNumbers, [4...4, 8...10, 100...536_870_911])
        XCTAssertEqual(m.reservedNames, ["old"])
        XCTAssertEqual(m.messages.first?.fields.first?.type, .sint64)
        XCTAssertEqual(m.enums.first?.values.last?.number, -1)
        XCTAssertEqual(file.imports, ["other.proto"])
        XCTAssertEqual(file.services.first?.methods.first?.clientStreaming, true)
    }

    func testErrorsNameFileLineAndColumn() {
        func error(_ source: String) -> String {
            do {
                _ = try ProtoParser.parse(source, file: "bad.proto")
                return "no error"
            } catch {
                return String(describing: error)
            }
        }
        XCTAssertEqual(error("syntax = \"proto2\";"), "bad.proto:1:10: error: only proto3 is supported, not proto2")
        XCTAssertEqual(error("syntax = \"proto3\";\nmessage M {\n  int32 a = 1\n}"), "bad.proto:4:1: error: expected ';', found '}'")
        XCTAssertEqual(error("syntax = \"proto3\";\nmessage M {\n  int32 a = 1;\n  string b = 1;\n}"),
                       "bad.proto:4:3: error: field number 1 of b is already used by a")
        XCTAssertEqual(error("syntax = \"proto3\";\nmessage M { required int32 a = 1; }"),
                       "bad.proto:2:13: error: 'required' does not exist in proto3")
        XCTAssertEqual(error("syntax = \"proto3\";\nenum E { A = 1; }"), "bad.proto:2:6: error: the first value of enum E must be 0 in proto3")
        XCTAssertEqual(error("syntax = \"proto3\";\nmessage M { map<float, int32> m = 1; }"), "bad.proto:2:13: error: map key type float is not allowed")
        XCTAssertEqual(error("syntax = \"proto3\";\nmessage M { string s = 2; reserved 2; }"),
                       "bad.proto:2:13: error: field s = 2 uses a reserved name or number")
        XCTAssertEqual(error("syntax = \"proto3\";\nmessage M { int32 a = 0; }"), "bad.proto:2:23: error: field number 0 is out of range or reserved")
        XCTAssertEqual(error("syntax = \"proto3\";\npackage \"x;"), "bad.proto:2:9: error: unterminated string")
        XCTAssertEqual(error("syntax = \"proto3\";\nmessage M {"), "bad.proto:2:12: error: message M is not closed")
        XCTAssertEqual(error("syntax = \"proto3\";\nservice S { rpc A(X) returns Y; }"), "bad.proto:2:30: error: expected '(', found 'Y'")
        XCTAssertEqual(error("message M {}"), "bad.proto:1:1: error: expected 'syntax = \"proto3\";' first")
    }
}
