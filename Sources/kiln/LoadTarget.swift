import Foundation
import KilnAPI
import KilnRPC

/// What a load generator saw of one request: when it was sent, when each token arrived, when it ended.
struct RequestTimeline: Sendable {
    var start: Double
    var tokenTimes: [Double] = []
    var end: Double = 0
    var error: String?

    var timeToFirstToken: Double? { tokenTimes.first.map { $0 - start } }
    var interTokenGaps: [Double] { zip(tokenTimes.dropFirst(), tokenTimes).map { $0 - $1 } }
}

/// A server a benchmark drives: one streamed completion at a time per call, timed per token.
protocol LoadTarget: Sendable {
    var name: String { get }
    /// A completion of `prompt` generating exactly `tokens` tokens (greedy, end-of-sequence ignored).
    func complete(prompt: String, tokens: Int) async -> RequestTimeline
    /// One chat turn: `messages` is the whole conversation so far, or only the new message when the target
    /// keeps a session (`sessionID`). Returns the reply's text with its timeline.
    func chatTurn(messages: [(role: String, content: String)], sessionID: String, tokens: Int) async -> (String, RequestTimeline)
    /// Whether `chatTurn` keeps the conversation server-side.
    var keepsSessions: Bool { get }
}

/// Monotonic seconds.
func monotonicSeconds() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

/// Kiln through its generated client: Generate with ignore_eos; Chat with a session id.
struct KilnTarget: LoadTarget {
    let client: Kiln_V1_InferenceClient
    var name: String { "kiln" }
    var keepsSessions: Bool { true }

    private func sampling(_ tokens: Int, ignoreEOS: Bool) -> Kiln_V1_SamplingParameters {
        var s = Kiln_V1_SamplingParameters()
        s.maxTokens = UInt32(tokens)
        s.temperature = 0
        s.ignoreEos = ignoreEOS
        return s
    }

    func complete(prompt: String, tokens: Int) async -> RequestTimeline {
        var request = Kiln_V1_GenerateRequest()
        request.prompt = prompt
        request.sampling = sampling(tokens, ignoreEOS: true)
        var timeline = RequestTimeline(start: monotonicSeconds())
        do {
            for try await message in try await client.generate(request) where message.usage == nil {
                timeline.tokenTimes.append(monotonicSeconds())
            }
        } catch { timeline.error = "\(error)" }
        timeline.end = monotonicSeconds()
        return timeline
    }

    func chatTurn(messages: [(role: String, content: String)], sessionID: String, tokens: Int) async -> (String, RequestTimeline) {
        var request = Kiln_V1_ChatRequest()
        request.sessionId = sessionID
        request.messages = messages.map { var m = Kiln_V1_ChatMessage(); m.role = $0.role; m.content = $0.content; return m }
        request.sampling = sampling(tokens, ignoreEOS: false)
        var timeline = RequestTimeline(start: monotonicSeconds())
        var text = ""
        do {
            for try await message in try await client.chat(request) {
                if message.usage == nil { timeline.tokenTimes.append(monotonicSeconds()) }
                text += message.text
            }
        } catch { timeline.error = "\(error)" }
        timeline.end = monotonicSeconds()
        return (text, timeline)
    }
}
