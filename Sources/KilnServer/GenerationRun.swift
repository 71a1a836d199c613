import Foundation
import KilnAPI
import KilnEngine
import KilnModel
import KilnRPC
import Logging
import Synchronization

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
    /// When the call's deadline passes (`DispatchTime` nanoseconds), if it has one: a call cut after it was
    /// cut by its deadline, not by its client.
    var deadline: UInt64? = nil
    /// Tokens another worker already streamed for this request (`continuation`): the generation goes on
    /// after them exactly as that worker would have.
    var continuation: [Int] = []
    /// Whether the caller can continue the stream elsewhere (`StreamHandoff`): a drain hands it over.
    var migratable = false
}

/// A response message could not be written: the call's stream is gone.
private struct ClientGone: Error {
    let cause: any Error
}

/// How generations that reached the engine ended, by real cause, for GetStats.
final class GenerationCounters: Sendable {
    enum End { case completed, cancelled, deadlineExceeded, failed, interrupted }
    private let counts = Mutex<[End: Int]>([:])

    func record(_ end: End) { counts.withLock { $0[end, default: 0] += 1 } }
    func count(_ end: End) -> Int { counts.withLock { $0[end] ?? 0 } }
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
    /// The result cache's second level, shared by every worker (Redis), if any.
    let sharedResults: SharedResultCache?

    let counters: GenerationCounters
    let handoff: StreamHandoff
    let logger: Logger

    /// Runs `plan`, streaming its messages. Only a generation that finished (a stop token, a stop string,
    /// max_tokens) returns; one cut short throws — cancelled by its client or its deadline
    /// (`CancellationError`), ended by a shutdown or a decoder failure (UNAVAILABLE), handed over by a
    /// drain (`StreamHandoff.HandedOff`) — and is neither stored in the result cache nor returned for a
    /// session to commit.
    func run(_ plan: GenerationPlan, responses: RPCTypedWriter<Kiln_V1_GenerateResponse>) async throws -> GenerationOutcome {
        let start = DispatchTime.now().uptimeNanoseconds
        if let key = plan.cacheKey {
            if let answer = results.answer(for: key) { return try await replay(answer, started: start, responses: responses) }
            if let shared = sharedResults, let answer = await shared.answer(for: key) {
                results.store(answer, for: key)
                return try await replay(answer, started: start, responses: responses)
            }
        }
        var state = RunState(detokenizer: StreamingDetokenizer(tokenizer: tokenizer), stopper: StopSequenceMatcher(plan.stops),
                             keepsSent: plan.cacheKey != nil)
        // Set once the generation has really finished; a stream that ends without it was cut short.
        var finish: Kiln_V1_FinishReason?

        // A continuation: the tokens another worker streamed go through the same detokenizer and stop
        // matcher, their text not sent again, so that what follows is exactly what that worker would have
        // sent. One that ended there (a stop token, a stop string, max_tokens) finishes without the engine.
        for (i, id) in plan.continuation.enumerated() {
            guard finish == nil else {
                throw RPCError(.invalidArgument, "continuation goes on after the generation ended (at token \(i - 1) of \(plan.continuation.count))")
            }
            state.outcome.tokens.append(id)
            state.seenBytes += tokenizer.piece(id, renderSpecial: true)
            if plan.stopTokens.contains(id) {
                finish = .stop
            } else {
                state.outcome.text += state.stopper.feed(state.detokenizer.append(id))
                if state.stopper.matched != nil { finish = .stop }
            }
        }
        if finish == nil, !plan.continuation.isEmpty, plan.continuation.count >= plan.maxTokens { finish = .length }

        if finish == nil { finish = try await generate(plan, state: &state, started: start, responses: responses) }
        guard let finish else {
            // Cancelled by the client (its stream reset) or by the deadline: nothing here is whole.
            // A client's own timer fires a little before the server's (the timeout left when it sent the
            // call), and it resets the stream: a cut within 50 ms of the deadline is the deadline's.
            let deadlinePassed = plan.deadline.map { DispatchTime.now().uptimeNanoseconds &+ 50_000_000 >= $0 } ?? false
            if !deadlinePassed, plan.migratable, handoff.isHandingOff, !Task.isCancelled {
                counters.record(.interrupted)
                throw StreamHandoff.HandedOff()
            }
            counters.record(deadlinePassed ? .deadlineExceeded : .cancelled)
            throw deadlinePassed ? RPCError(.deadlineExceeded, "deadline exceeded") : CancellationError()
        }
        state.outcome.finish = finish
        counters.record(.completed)
        state.outcome.seenText = String(decoding: state.seenBytes, as: UTF8.self)
        var last = Kiln_V1_GenerateResponse()
        last.text = state.stopper.matched == nil ? state.stopper.feed(state.detokenizer.finish()) + state.stopper.finish() : ""
        last.finishReason = finish
        var usage = Kiln_V1_Usage()
        usage.promptTokens = UInt32(plan.prompt.count)
        usage.cachedPromptTokens = UInt32(state.cached)
        usage.completionTokens = UInt32(state.outcome.tokens.count)
        usage.timeToFirstTokenMs = state.firstTokenMs
        last.usage = usage
        try await state.send(last, to: responses)
        if let key = plan.cacheKey {
            let answer = ResultCache.Answer(messages: state.sent, tokens: state.outcome.tokens, seenText: state.outcome.seenText)
            results.store(answer, for: key)
            await sharedResults?.store(answer, for: key)
        }
        return state.outcome
    }

    /// What a run has produced so far, and the text machinery that turns its tokens into messages.
    private struct RunState {
        var detokenizer: StreamingDetokenizer
        var stopper: StopSequenceMatcher
        /// Whether the messages sent are kept (for the result cache).
        let keepsSent: Bool
        var outcome = GenerationOutcome(finish: .unspecified, tokens: [], text: "", seenText: "")
        var seenBytes: [UInt8] = []
        var sent: [Kiln_V1_GenerateResponse] = []
        var firstTokenMs = 0.0, cached = 0

        init(detokenizer: StreamingDetokenizer, stopper: StopSequenceMatcher, keepsSent: Bool) {
            self.detokenizer = detokenizer
            self.stopper = stopper
            self.keepsSent = keepsSent
        }

        mutating func send(_ message: Kiln_V1_GenerateResponse, to responses: RPCTypedWriter<Kiln_V1_GenerateResponse>) async throws {
            do { try await responses.write(message) } catch { throw ClientGone(cause: error) }
            outcome.text += message.text
            if keepsSent { sent.append(message) }
        }
    }

    /// Runs the plan on the engine, sending a message per token; returns how it finished, or nil when it
    /// was cut short (by its client, its deadline or a handoff).
    private func generate(_ plan: GenerationPlan, state: inout RunState, started start: UInt64,
                          responses: RPCTypedWriter<Kiln_V1_GenerateResponse>) async throws -> Kiln_V1_FinishReason? {
        var engineID = 0
        let events = engine.generate { id in
            engineID = id
            return GenerationRequest(id: id, prompt: plan.prompt, parameters: plan.parameters, maxTokens: plan.maxTokens,
                                     stopTokens: plan.stopTokens, priority: plan.priority, wantsLogprob: plan.wantLogprob,
                                     resumed: plan.continuation)
        }
        if plan.migratable, !handoff.register(engineID) { engine.end(engineID, reason: .cancelled) }
        defer { if plan.migratable { handoff.unregister(engineID) } }
        var finish: Kiln_V1_FinishReason?
        do {
            for try await event in events {
                state.cached += event.cachedPromptTokens
                if let token = event.token {
                    state.outcome.tokens.append(token.id)
                    state.seenBytes += tokenizer.piece(token.id, renderSpecial: true)
                    if state.outcome.tokens.count == plan.continuation.count + 1 { state.firstTokenMs = Self.milliseconds(since: start) }
                    let isStopToken = plan.stopTokens.contains(token.id)
                    var message = Kiln_V1_GenerateResponse()
                    message.tokenId = UInt32(token.id)
                    message.text = isStopToken ? "" : state.stopper.feed(state.detokenizer.append(token.id))
                    if plan.wantLogprob || plan.parameters.logprobs > 0 { message.logprob = Float(token.logprob) }
                    message.topLogprobs = token.top.map { t in
                        var l = Kiln_V1_TokenLogprob()
                        l.tokenId = UInt32(t.id)
                        l.logprob = Float(t.logprob)
                        l.text = String(decoding: tokenizer.piece(t.id, renderSpecial: true), as: UTF8.self)
                        return l
                    }
                    // The stop token itself carries no text; it is sent only when its logprob was asked for.
                    if !isStopToken || message.logprob != nil { try await state.send(message, to: responses) }
                    if state.stopper.matched != nil {
                        // A stop string finishes the generation here: the engine ends it as completed.
                        engine.end(event.requestID, reason: .stop)
                        finish = .stop
                        break
                    }
                }
                if let f = event.finish { finish = f == .stop ? .stop : .length }
            }
        } catch let error as SchedulerError {
            switch error {
            case .queueFull: throw RPCError(.resourceExhausted, "server busy: \(error)")
            case .invalid(let why): throw RPCError(.invalidArgument, why)
            }
        } catch EngineLoopError.stopped {
            counters.record(.interrupted)
            throw RPCError(.unavailable, "the server is shutting down; retry on another replica")
        } catch is CancellationError {
            // Cut short: handled below, as is a stream that ended without a finish.
        } catch is ClientGone {
            // The response could not be written: the client reset the stream or the deadline ended it.
        } catch {
            // The decoder failed (device lost, out of memory): this replica cannot serve the request. The
            // decoder's errors are its own, written to be read (VK_ERROR_DEVICE_LOST names the loss).
            counters.record(.failed)
            logger.error("generation failed in the decoder: \(error)")
            throw RPCError(.unavailable, "the decoder failed: \(error)", cause: error)
        }
        return finish
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
