import Foundation
import KilnAPI
import KilnEngine
import KilnModel
import KilnRPC

/// `kiln.v1.Inference` on one model: Generate and Chat stream one message per token from the engine loop;
/// Tokenize, Detokenize, ListModels and GetModel answer from the tokenizer and the model's metadata.
public struct InferenceService: Kiln_V1_InferenceService {
    public let modelName: String
    let tokenizer: Tokenizer
    let template: ChatTemplate?
    let info: Kiln_V1_ModelInfo
    let engine: EngineLoop
    let maxTokensLimit: Int

    public init(modelName: String, file: GGUFFile, engine: EngineLoop) throws {
        self.modelName = modelName
        tokenizer = try Tokenizer(gguf: file)
        let source = file.metadata["tokenizer.chat_template"]?.string
        template = try source.map { try ChatTemplate(jinjaSource: $0) }
        let config = try ModelConfig(gguf: file)
        var info = Kiln_V1_ModelInfo()
        info.name = modelName
        info.architecture = config.architecture
        info.contextLength = UInt32(config.contextLength)
        info.vocabularySize = UInt32(config.vocabularySize)
        info.quantization = file.tensor("blk.0.attn_q.weight")?.type.description ?? ""
        info.parameters = UInt64(file.tensors.reduce(0) { $0 + $1.elementCount })
        info.isDefault = true
        info.chatTemplate = template?.family.rawValue ?? ""
        self.info = info
        self.engine = engine
        maxTokensLimit = config.contextLength
    }

    private func checkModel(_ name: String) throws {
        guard name.isEmpty || name == modelName else { throw RPCError(.notFound, "model \"\(name)\" is not served here (this server runs \"\(modelName)\")") }
    }

    public func generate(request: Kiln_V1_GenerateRequest, responses: RPCTypedWriter<Kiln_V1_GenerateResponse>, context: RPCServerContext) async throws {
        try checkModel(request.model)
        guard !request.prompt.isEmpty else { throw RPCError(.invalidArgument, "prompt is empty") }
        let ids = tokenizer.encode(request.prompt, addSpecial: true, parseSpecial: request.parseSpecialTokens)
        try await stream(prompt: ids, sampling: request.sampling, priority: request.priority, responses: responses)
    }

    public func chat(request: Kiln_V1_ChatRequest, responses: RPCTypedWriter<Kiln_V1_GenerateResponse>, context: RPCServerContext) async throws {
        try checkModel(request.model)
        guard request.sessionId.isEmpty else { throw RPCError(.unimplemented, "session_id: server-side sessions are not implemented yet; send the full history") }
        guard !request.messages.isEmpty else { throw RPCError(.invalidArgument, "messages is empty") }
        guard let template else { throw RPCError(.failedPrecondition, "the model has no chat template") }
        let text = template.render(request.messages.map { ChatMessage(role: $0.role, content: $0.content) }, addGenerationPrompt: true)
        let ids = tokenizer.encode(text, addSpecial: true, parseSpecial: true)
        try await stream(prompt: ids, sampling: request.sampling, priority: request.priority, responses: responses)
    }

    /// Turns schema sampling fields into the engine's, naming the field on a bad value.
    func parameters(_ s: Kiln_V1_SamplingParameters?) throws -> (SamplingParameters, maxTokens: Int, stops: [String]) {
        var p = SamplingParameters()
        let s = s ?? Kiln_V1_SamplingParameters()
        p.temperature = s.temperature ?? 1
        p.topK = Int(s.topK)
        p.topP = s.topP ?? 1
        p.minP = s.minP
        p.repetitionPenalty = s.repetitionPenalty ?? 1
        p.frequencyPenalty = s.frequencyPenalty
        p.presencePenalty = s.presencePenalty
        p.seed = s.seed ?? UInt64.random(in: 0...UInt64.max)
        p.logprobs = Int(s.topLogprobs)
        do { try p.validate() } catch let e as SamplingError { throw RPCError(.invalidArgument, e.description) }
        let maxTokens = Int(s.maxTokens ?? 256)
        guard maxTokens > 0, maxTokens <= maxTokensLimit else { throw RPCError(.invalidArgument, "max_tokens must be in 1...\(maxTokensLimit)") }
        return (p, maxTokens, s.stop)
    }

    private func stream(prompt: [Int], sampling: Kiln_V1_SamplingParameters?, priority: Kiln_V1_Priority,
                        responses: RPCTypedWriter<Kiln_V1_GenerateResponse>) async throws {
        let (p, maxTokens, stops) = try parameters(sampling)
        guard prompt.count + maxTokens <= maxTokensLimit else {
            throw RPCError(.invalidArgument, "prompt (\(prompt.count) tokens) + max_tokens (\(maxTokens)) exceeds the context (\(maxTokensLimit))")
        }
        let wantLogprobs = sampling?.logprobs ?? false
        let stopTokens = tokenizer.vocabulary.endOfGeneration
        let events = engine.generate { id in
            GenerationRequest(id: id, prompt: prompt, parameters: p, maxTokens: maxTokens, stopTokens: stopTokens,
                              priority: priority == .batch ? .batch : .interactive)
        }
        var detokenizer = StreamingDetokenizer(tokenizer: tokenizer)
        var stopper = StopSequenceMatcher(stops)
        let start = DispatchTime.now().uptimeNanoseconds
        var firstTokenMs = 0.0, completion = 0, cached = 0
        var finish = Kiln_V1_FinishReason.length
        do {
            for try await event in events {
                cached += event.cachedPromptTokens
                if let token = event.token {
                    completion += 1
                    if completion == 1 { firstTokenMs = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6 }
                    let isStopToken = stopTokens.contains(token.id)
                    var message = Kiln_V1_GenerateResponse()
                    message.tokenId = UInt32(token.id)
                    message.text = isStopToken ? "" : stopper.feed(detokenizer.append(token.id))
                    if wantLogprobs {
                        message.logprob = Float(token.logprob)
                        message.topLogprobs = token.top.map { t in
                            var l = Kiln_V1_TokenLogprob()
                            l.tokenId = UInt32(t.id); l.logprob = Float(t.logprob)
                            l.text = String(decoding: tokenizer.piece(t.id, renderSpecial: true), as: UTF8.self)
                            return l
                        }
                    }
                    if stopper.matched != nil { finish = .stop }
                    if !isStopToken || wantLogprobs { try await responses.write(message) }
                    if stopper.matched != nil { break }  // ends the stream: the engine loop cancels the request
                }
                if let f = event.finish { finish = f == .stop ? .stop : .length }
            }
        } catch is CancellationError {
            finish = .cancelled
        }
        var last = Kiln_V1_GenerateResponse()
        last.text = stopper.matched == nil ? stopper.feed(detokenizer.finish()) + stopper.finish() : ""
        last.finishReason = finish
        var usage = Kiln_V1_Usage()
        usage.promptTokens = UInt32(prompt.count)
        usage.cachedPromptTokens = UInt32(cached)
        usage.completionTokens = UInt32(completion)
        usage.timeToFirstTokenMs = firstTokenMs
        last.usage = usage
        try await responses.write(last)
    }

    public func endSession(request: Kiln_V1_EndSessionRequest, context: RPCServerContext) async throws -> Kiln_V1_EndSessionResponse {
        throw RPCError(.unimplemented, "server-side sessions are not implemented yet")
    }

    public func tokenize(request: Kiln_V1_TokenizeRequest, context: RPCServerContext) async throws -> Kiln_V1_TokenizeResponse {
        try checkModel(request.model)
        var response = Kiln_V1_TokenizeResponse()
        response.tokenIds = tokenizer.encode(request.text, addSpecial: request.addSpecialTokens, parseSpecial: request.parseSpecialTokens).map { UInt32($0) }
        return response
    }

    public func detokenize(request: Kiln_V1_DetokenizeRequest, context: RPCServerContext) async throws -> Kiln_V1_DetokenizeResponse {
        try checkModel(request.model)
        if let bad = request.tokenIds.first(where: { Int($0) >= tokenizer.vocabulary.count }) {
            throw RPCError(.invalidArgument, "token_ids: \(bad) is outside the vocabulary (\(tokenizer.vocabulary.count))")
        }
        var response = Kiln_V1_DetokenizeResponse()
        response.text = tokenizer.decode(request.tokenIds.map { Int($0) })
        return response
    }

    public func listModels(request: Kiln_V1_ListModelsRequest, context: RPCServerContext) async throws -> Kiln_V1_ListModelsResponse {
        var response = Kiln_V1_ListModelsResponse()
        response.models = [info]
        return response
    }

    public func getModel(request: Kiln_V1_GetModelRequest, context: RPCServerContext) async throws -> Kiln_V1_ModelInfo {
        try checkModel(request.name)
        return info
    }
}
