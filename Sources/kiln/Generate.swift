import ArgumentParser
import Foundation
import KilnModel

/// `kiln generate`: streams a completion of a prompt to stdout, on the CPU reference decoder.
struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Complete a prompt and stream the text to stdout.")

    @Option(help: "GGUF model (default: the SmolLM2 model `make model` fetches).") var model = DefaultModel.path
    @Option(help: "Decoder: vulkan, cpu, or auto (Vulkan when a device exists).") var backend: BackendChoice = .auto
    @Option(name: .customLong("vulkan-device"), help: "Vulkan device index (default: the best one).") var vulkanDevice: Int?
    @Option(help: "The prompt.") var prompt: String?
    @Option(name: .customLong("prompt-file"), help: "Read the prompt from this file.") var promptFile: String?
    @Option(name: .customLong("max-tokens"), help: "Most tokens to generate.") var maxTokens = 128
    @Option(help: "Sampling temperature (0: greedy).") var temperature: Float = 0
    @Option(help: "Random seed for sampling.") var seed: UInt64 = 0
    @Flag(help: "Wrap the prompt as a user message in the model's chat template.") var chat = false

    func validate() throws {
        guard (prompt == nil) != (promptFile == nil) else { throw ValidationError("give exactly one of --prompt and --prompt-file") }
        guard maxTokens > 0 else { throw ValidationError("--max-tokens must be positive") }
        guard temperature >= 0 && temperature.isFinite else { throw ValidationError("--temperature must be 0 or more") }
    }

    func run() throws {
        var text: String
        if let prompt {
            text = prompt
        } else if let promptFile {
            guard let data = FileManager.default.contents(atPath: promptFile) else { throw ValidationError("cannot read \(promptFile)") }
            text = String(decoding: data, as: UTF8.self)
        } else {
            text = ""
        }
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
        let decoder = try SequenceDecoder(file: file, backend: backend, deviceIndex: vulkanDevice)
        var sampler = SimpleSampler(temperature: temperature, seed: seed)
        var detokenizer = StreamingDetokenizer(tokenizer: tokenizer)
        var logits = try decoder.forward(promptIds)[0]
        for _ in 0..<maxTokens {
            let next = sampler.sample(logits)
            if tokenizer.isEndOfGeneration(next) { break }
            FileHandle.standardOutput.write(Data(detokenizer.append(next).utf8))
            logits = try decoder.forward([next])[0]
        }
        FileHandle.standardOutput.write(Data((detokenizer.finish() + "\n").utf8))
    }
}
