import ArgumentParser
import Foundation
import KilnAPI
import KilnEngine
import KilnModel

/// `kiln generate`: streams a completion of a prompt to stdout — decoded here (Vulkan or the CPU reference
/// decoder), or by a Kiln server through the generated client when `--server` is given.
struct Generate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Complete a prompt and stream the text to stdout.")

    @Option(help: "GGUF model (default: the SmolLM2 model `make model` fetches).") var model = DefaultModel.path
    @Option(help: "Decoder: auto (Vulkan on a real GPU, else the native CPU backend), vulkan (any Vulkan device, lavapipe included), cpu (the native CPU backend) or reference (the float32 oracle).") var backend: BackendChoice = .auto
    @Option(help: "Threads of the CPU backend (default: one per core).") var threads: Int?
    @Option(name: .customLong("vulkan-device"), help: "Vulkan device index (default: the best one).") var vulkanDevice: Int?
    @Option(help: "The prompt.") var prompt: String?
    @Option(name: .customLong("prompt-file"), help: "Read the prompt from this file.") var promptFile: String?
    @Option(name: .customLong("max-tokens"), help: "Most tokens to generate.") var maxTokens = 128
    @Option(help: "Sampling temperature (0: greedy).") var temperature: Float = 0
    @Option(help: "Random seed for sampling.") var seed: UInt64 = 0
    @Flag(help: "Wrap the prompt as a user message in the model's chat template.") var chat = false
    @Option(help: "Generate on this Kiln server instead (h2c://HOST:PORT or https://HOST:PORT).") var server: String?
    @Option(help: "CA that the server's certificate must chain to (https).") var ca = "Certs/ca.pem"

    func validate() throws {
        guard (prompt == nil) != (promptFile == nil) else { throw ValidationError("give exactly one of --prompt and --prompt-file") }
        guard maxTokens > 0 else { throw ValidationError("--max-tokens must be positive") }
        guard temperature >= 0 && temperature.isFinite else { throw ValidationError("--temperature must be 0 or more") }
    }

    func run() async throws {
        var text: String
        if let prompt {
            text = prompt
        } else if let promptFile {
            guard let data = FileManager.default.contents(atPath: promptFile) else { throw ValidationError("cannot read \(promptFile)") }
            text = String(decoding: data, as: UTF8.self)
        } else {
            text = ""
        }
        if let server { return try await generateRemotely(text, server: RemoteServer(server)) }
        let file = try GGUFFile(path: model)
        let tokenizer = try Tokenizer(gguf: file)
        if chat {
            let source = try file.string("tokenizer.chat_template")
            let template = try ChatTemplate(jinjaSource: source)
            text = template.render([ChatMessage(role: "user", content: text)], addGenerationPrompt: true)
        }
        let promptIds = tokenizer.encode(text, addSpecial: true, parseSpecial: true)
        guard !promptIds.isEmpty else { throw ValidationError("the prompt is empty") }
        let config = try ModelConfig(gguf: file)
        guard promptIds.count + maxTokens <= config.contextLength else {
            throw ValidationError("prompt (\(promptIds.count) tokens) + --max-tokens exceeds the context (\(config.contextLength))")
        }
        let decoder = try SequenceDecoder(file: file, backend: backend, deviceIndex: vulkanDevice, threads: threads)
        // The engine's sampler, as the server samples: the same --seed gives the same text here and with --server.
        var parameters = SamplingParameters()
        parameters.temperature = temperature
        parameters.seed = seed
        let sampler = Sampler(parameters)
        var context = promptIds
        var detokenizer = StreamingDetokenizer(tokenizer: tokenizer)
        var logits = try decoder.forward(promptIds)[0]
        for index in 0..<maxTokens {
            let next = sampler.sample(logits, context: context, index: index).id
            context.append(next)
            if tokenizer.isEndOfGeneration(next) { break }
            FileHandle.standardOutput.write(Data(detokenizer.append(next).utf8))
            logits = try decoder.forward([next])[0]
        }
        FileHandle.standardOutput.write(Data((detokenizer.finish() + "\n").utf8))
    }
}

extension Generate {
    /// The server path: Generate (or Chat with one user message) streamed to stdout as it arrives.
    private func generateRemotely(_ text: String, server: RemoteServer) async throws {
        let (client, group) = try server.connect(caPath: ca)
        defer { client.channel.close(); group.shutdown() }
        var sampling = Kiln_V1_SamplingParameters()
        sampling.maxTokens = UInt32(maxTokens)
        sampling.temperature = temperature
        sampling.seed = seed
        let stream: AsyncThrowingStream<Kiln_V1_GenerateResponse, Error>
        if chat {
            var message = Kiln_V1_ChatMessage()
            message.role = "user"
            message.content = text
            var request = Kiln_V1_ChatRequest()
            request.messages = [message]
            request.sampling = sampling
            stream = try await client.chat(request)
        } else {
            var request = Kiln_V1_GenerateRequest()
            request.prompt = text
            request.sampling = sampling
            request.parseSpecialTokens = true
            stream = try await client.generate(request)
        }
        for try await message in stream {
            FileHandle.standardOutput.write(Data(message.text.utf8))
        }
        FileHandle.standardOutput.write(Data("\n".utf8))
    }
}
