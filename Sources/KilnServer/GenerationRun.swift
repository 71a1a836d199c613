import Foundation
import KilnAPI
import KilnEngine
import KilnModel
import KilnRPC

/// One generation as the service runs it: prompt tokens and how to sample, stop and report.
struct GenerationPlan {
    var prompt: [Int]
    var parameters: SamplingParameters
    var maxTokens: Int
    var stops: [String]
    var stopTokens: Set<Int>
    var wantLogprob: Bool
    var priority: GenerationRequest.Priority
    /// Set when the answer is fixed by the request and the result cache is on (it may come from, and go to,
    /// the cache).
    var cacheKey: ResultCache.Key?
}

/// What a generation produced, for sessions.
struct GenerationOutcome {
    var finish: Kiln_V1_FinishReason
    /// Every sampled token, stop token included.
    var tokens: [Int]
    /// The text sent to the client.
    var text: String
    /// The sampled tokens' text with special tokens written out (what the model saw).
    var seenText: String
}

/// Streams one generation from the engine loop to an RPC writer, a message per token: the text delta
/// (whole UTF-8 characters, stop strings held back and never sent), the token id, logprobs when asked; then
/// a last message with the finish reason and usage.
struct GenerationRun {
    let tokenizer: Tokenizer
    let engine: EngineLoop
    let results: ResultCache

    func run(_ plan: GenerationPlan, responses: RPCTypedWriter<Kiln_V1_GenerateResponse>) async throws -> GenerationOutcome {
        let start = DispatchTime.now().uptimeNanoseconds
        if let key = plan.cacheKey, let answer = results.answer(for: key) {
            return try await replay(answer, started: start, responses: responses)
        }
        let events = engine.generate { id in
            GenerationRequest(id: id, prompt: plan.prompt, parameters: plan.parameters, maxTokens: plan.maxTokens,
                              stopTokens: plan.stopTokens, priority: plan.priority, wantsLogprob: plan.wantLogprob)
        }
        var detokenizer = StreamingDetokenizer(tokenizer: tokenizer)
        var stopper = StopSequenceMatcher(plan.stops)
        var sent: [Kiln_V1_GenerateResponse] = []
        var outcome = GenerationOutcome(finish: .length, tokens: [], text: "", seenText: "")
        var seenBytes: [UInt8] = []
        var firstTokenMs = 0.0, cached = 0
        func send(_ message: Kiln_V1_GenerateResponse) async throws {
            try await responses.write(message)
            outcome.text += message.text
            if plan.cacheKey != nil { sent.append(message) }
        }
        do {
            for try await event in events {
                cached += event.cachedPromptTokens
                if let token = event.token {
                    outcome.tokens.append(token.id)
                    seenBytes += tokenizer.piece(token.id, renderSpecial: true)
                    if outcome.tokens.count == 1 { firstTokenMs = Self.milliseconds(since: start) }
                    let isStopToken = plan.stopTokens.contains(token.id)
                    var message = Kiln_V1_GenerateResponse()
                    message.tokenId = UInt32(token.id)
                    message.text = isStopToken ? "" : stopper.feed(detokenizer.append(token.id))
                    if plan.wantLogprob || plan.parameters.logprobs > 0 { message.logprob = Float(token.logprob) }
                    message.topLogprobs = token.top.map { t in
                        var l = Kiln_V1_TokenLogprob()
                        l.tokenId = UInt32(t.id)
                        l.logprob = Float(t.logprob)
                        l.text = String(decoding: tokenizer.piece(t.id, renderSpecial: true), as: UTF8.self)
                        return l
                    }
                    if stopper.matched != nil { outcome.finish = .stop }
                    // The stop token itself carries no text; it is sent only when its logprob was asked for.
                    if !isStopToken || message.logprob != nil { try await send(message) }
                    if stopper.matched != nil { break }  // ends the stream: the engine loop cancels the request
                }
                if let f = event.finish { outcome.finish = f == .stop ? .stop : .length }
            }
        } catch is CancellationError {
            outcome.finish = .cancelled
        } catch let error as SchedulerError {
            switch error {
            case .queueFull: throw RPCError(.resourceExhausted, "server busy: \(error)")
            case .invalid(let why): throw RPCError(.invalidArgument, why)
            }
        } catch let error as RPCError {
            throw error
        } catch {
            // The decoder failed (device lost, out of memory): this replica cannot serve the request.
            throw RPCError(.unavailable, "the decoder failed: \(error)")
        }
        outcome.seenText = String(decoding: seenBytes, as: UTF8.self)
        var last = Kiln_V1_GenerateResponse()
        last.text = stopper.matched == nil ? stopper.feed(detokenizer.finish()) + stopper.finish() : ""
        last.finishReason = outcome.finish
        var usage = Kiln_V1_Usage()
        usage.promptTokens = UInt32(plan.prompt.count)
        usage.cachedPromptTokens = UInt32(cached)
        usage.completionTokens = UInt32(outcome.tokens.count)
        usage.timeToFirstTokenMs = firstTokenMs
        last.usage = usage
        try await send(last)
        if let key = plan.cacheKey, outcome.finish == .stop || outcome.finish == .length {
            results.store(ResultCache.Answer(messages: sent, tokens: outcome.tokens, seenText: outcome.seenText), for: key)
        }
        return outcome
    }

    /// Sends a stored answer again; only its time to first token and the cache flag differ.
    private func replay(_ answer: ResultCache.Answer, started: UInt64, responses: RPCTypedWriter<Kiln_V1_GenerateResponse>) async throws -> GenerationOutcome {
        var outcome = GenerationOutcome(finish: .length, tokens: answer.tokens, text: "", seenText: answer.seenText)
        var firstTokenMs: Double?
        for var message in answer.messages {
            if firstTokenMs == nil { firstTokenMs = Self.milliseconds(since: started) }
            if message.usage != nil {
                message.usage?.timeToFirstTokenMs = firstTokenMs ?? 0
                message.usage?.fromResultCache = true
                outcome.finish = message.finishReason
            }
            try await responses.write(message)
            outcome.text += message.text
        }
        return outcome
    }

    static func milliseconds(since start: UInt64) -> Double { Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6 }
}
