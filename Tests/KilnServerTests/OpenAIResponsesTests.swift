import Foundation
import KilnAPI
@testable import KilnServer
import XCTest

/// The per-token SSE event written without a dictionary says exactly what the dictionary path says.
final class OpenAIResponsesTests: XCTestCase {
    private func object(_ bytes: [UInt8]) throws -> NSDictionary {
        let text = String(decoding: bytes, as: UTF8.self)
        XCTAssertTrue(text.hasPrefix("data: ") && text.hasSuffix("\n\n"), text)
        let json = Data(text.dropFirst("data: ".count).dropLast(2).utf8)
        return try XCTUnwrap(JSONSerialization.jsonObject(with: json) as? NSDictionary)
    }

    /// Usage comes from a worker (a peer, behind `kiln route`): counts at their limit add up without a trap.
    func testUsageAtTheLimitsAddsUp() {
        var u = Kiln_V1_Usage()
        u.promptTokens = .max
        u.completionTokens = .max
        XCTAssertEqual(OpenAIResponses.usage(u)["total_tokens"] as? Int, 2 * Int(UInt32.max))
    }

    func testThePlainTokenEventEqualsTheGeneralOne() throws {
        let texts = ["", "hi", " \"quoted\" ", "back\\slash", "line\nbreak\r\t", "\u{01}\u{1f}", "héllo 世界 🙂", "</script>"]
        for endpoint in [OpenAIResponses.Endpoint.chat, .completion] {
            let shape = OpenAIResponses(endpoint: endpoint, model: "m\"odel")
            for text in texts {
                for usage in [false, true] {
                    var m = Kiln_V1_GenerateResponse()
                    m.text = text
                    let fast = try object(shape.plainTokenEvent(text, includeUsageField: usage))
                    let general = try object(OpenAIService.event(shape.chunk(m, first: false, wantLogprobs: false, includeUsageField: usage, textOffset: 0)))
                    XCTAssertEqual(fast, general, "\(endpoint) \(text.debugDescription) usage \(usage)")
                }
            }
        }
    }
}
