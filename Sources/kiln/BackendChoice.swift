import ArgumentParser
import Foundation
import KilnModel
import KilnVulkan

/// `--backend vulkan|cpu` for the model commands: Vulkan (any device, lavapipe included) by default when a
/// Vulkan device exists, otherwise the CPU reference decoder.
enum BackendChoice: String, ExpressibleByArgument, CaseIterable {
    case vulkan, cpu, auto
}

/// One sequence decoded on either backend (what `kiln generate` and `kiln logprobs` need): its KV blocks
/// are 0, 1, 2, … and tokens go through in steps of at most `maxStep`.
final class SequenceDecoder {
    private let backend: DecoderBackend
    private let table: [Int]
    private let maxStep: Int
    private var position = 0

    init(file: GGUFFile, backend choice: BackendChoice, deviceIndex: Int?, kvCache: KVCacheType = .f16) throws {
        let config = try ModelConfig(gguf: file)
        let blocks = (config.contextLength + 15) / 16
        backend = try makeBackend(file: file, choice: choice, deviceIndex: deviceIndex, blocks: blocks,
                                  maxTokens: 512, maxSequences: 1, maxLogitRows: 512, kvCache: kvCache)
        // Every token of a step may want its logits (`kiln logprobs`): steps of at most the logit rows the
        // decoder holds.
        maxStep = min(512, backend.maxLogitRows)
        table = Array(0..<blocks)
    }

    /// Appends `tokens` to the sequence and returns the logits of its last `logitCount` tokens.
    func forward(_ tokens: [Int], logitCount: Int = 1) throws -> [[Float]] {
        var result: [[Float]] = []
        let firstWanted = tokens.count - logitCount
        var start = 0
        while start < tokens.count {
            let chunk = Array(tokens[start..<min(start + maxStep, tokens.count)])
            let wanted = (0..<chunk.count).filter { start + $0 >= firstWanted }
            let batch = DecodeBatch(tokens: chunk, positions: Array(position..<position + chunk.count),
                                    sequences: Array(repeating: 0, count: chunk.count), blockTables: [table], logitRows: wanted)
            result += try backend.logits(batch)
            position += chunk.count
            start += chunk.count
        }
        return result
    }
}

/// The decoder whose kernel profile is printed at exit (KILN_VULKAN_PROFILE=1 or gpu).
nonisolated(unsafe) var atexit_decoder: VulkanDecoder?

/// The decoder backend: Vulkan when chosen or found (lavapipe included), else the CPU reference decoder.
/// `auto` also takes the CPU for a model the Vulkan kernels cannot run (qwen2's QKV biases), and says so.
func makeBackend(file: GGUFFile, choice: BackendChoice, deviceIndex: Int?, blocks: Int,
                 maxTokens: Int = 256, maxSequences: Int = 64, maxLogitRows: Int = 64, kvCache: KVCacheType = .f16) throws -> DecoderBackend {
    var choice = choice
    if choice == .auto, let why = VulkanDecoder.unsupported(try ModelConfig(gguf: file)) {
        FileHandle.standardError.write(Data("kiln: \(why); using the CPU reference decoder\n".utf8))
        choice = .cpu
    }
    if choice == .auto {
        choice = ((try? VulkanDevice.available()) ?? []).isEmpty ? .cpu : .vulkan
        if choice == .cpu {
            FileHandle.standardError.write(Data("kiln: no Vulkan device found (install mesa-vulkan-drivers for lavapipe); using the CPU reference decoder\n".utf8))
        }
    }
    guard choice == .vulkan else { return ReferenceBackend(weights: try ReferenceWeights(gguf: file), blockCount: blocks, blockSize: 16) }
    let decoder = try VulkanDecoder(device: VulkanDevice(index: deviceIndex), file: file, blockCount: blocks, blockSize: 16,
                                    maxTokens: maxTokens, maxSequences: maxSequences, maxLogitRows: maxLogitRows, kvCache: kvCache)
    let memory = decoder.device.unifiedMemory ? "unified memory" : "device-local memory (staged uploads)"
    FileHandle.standardError.write(Data("kiln: Vulkan on \(decoder.device.info.name): \(decoder.kernelFamily) kernel family, \(decoder.kvCache) KV pool, \(memory)\n".utf8))
    if KernelProfileMode.current.isOn {
        atexit_decoder = decoder
        atexit { if let d = atexit_decoder { FileHandle.standardError.write(Data((d.profileReport() + "\n").utf8)) } }
    }
    return decoder
}

extension KVCacheType: ExpressibleByArgument {}
