import ArgumentParser
import Foundation
import KilnCPU
import KilnModel
import KilnVulkan

/// `--backend` for the model commands:
/// - `auto` (default): Vulkan on a real GPU (discrete or integrated), otherwise the native CPU backend;
/// - `vulkan`: Vulkan on any device, Mesa's lavapipe included (what CI runs the shaders on);
/// - `cpu`: the native CPU backend (SIMD kernels, `KilnCPU`);
/// - `reference`: the float32 CPU reference decoder, the tests' oracle.
enum BackendChoice: String, ExpressibleByArgument, CaseIterable {
    case vulkan, cpu, reference, auto
}

/// One sequence decoded on either backend (what `kiln generate` and `kiln logprobs` need): its KV blocks
/// are 0, 1, 2, … and tokens go through in steps of at most `maxStep`.
final class SequenceDecoder {
    private let backend: DecoderBackend
    private let table: [Int]
    private let maxStep: Int
    private var position = 0

    init(file: GGUFFile, backend choice: BackendChoice, deviceIndex: Int?, kvCache: KVCacheType = .f16, threads: Int? = nil) throws {
        let config = try ModelConfig(gguf: file)
        let blocks = (config.contextLength + 15) / 16
        backend = try makeBackend(file: file, choice: choice, deviceIndex: deviceIndex, blocks: blocks,
                                  maxTokens: 512, maxSequences: 1, maxLogitRows: 512, kvCache: kvCache, threads: threads)
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

/// The decoder backend `choice` names; for `auto`, Vulkan on a real GPU that can run the model, else the
/// native CPU backend (else, for a model neither runs, the reference decoder). Says on stderr which and why.
func makeBackend(file: GGUFFile, choice: BackendChoice, deviceIndex: Int?, blocks: Int, maxTokens: Int = 256, maxSequences: Int = 64,
                 maxLogitRows: Int = 64, kvCache: KVCacheType = .f16, threads: Int? = nil) throws -> DecoderBackend {
    func say(_ line: String) { FileHandle.standardError.write(Data("kiln: \(line)\n".utf8)) }
    let config = try ModelConfig(gguf: file)
    var choice = choice
    if choice == .auto {
        let devices = (try? VulkanDevice.available()) ?? []
        let gpu = deviceIndex.map { i in devices.indices.contains(i) ? devices[i] : nil } ?? devices.first { $0.kind == .discreteGPU || $0.kind == .integratedGPU }
        if let gpu, gpu.kind == .discreteGPU || gpu.kind == .integratedGPU, VulkanDecoder.unsupported(config) == nil {
            choice = .vulkan
            say("backend auto: Vulkan, on the \(gpu.kind.rawValue) \(gpu.name)")
        } else if let why = CPUBackend.unsupported(config) {
            choice = .reference
            say("backend auto: the CPU reference decoder (the CPU backend cannot run this model: \(why))")
        } else {
            choice = .cpu
            let why: String
            if devices.isEmpty {
                why = "no Vulkan device found"
            } else if let gpu, gpu.kind == .discreteGPU || gpu.kind == .integratedGPU, let unsupported = VulkanDecoder.unsupported(config) {
                why = "the Vulkan kernels cannot run this model: \(unsupported)"
            } else {
                why = "no GPU among the Vulkan devices (\(devices.map { "\($0.name): \($0.kind.rawValue)" }.joined(separator: ", ")); --backend vulkan uses them anyway)"
            }
            say("backend auto: the CPU backend (\(why))")
        }
    }
    switch choice {
    case .reference, .auto:
        return ReferenceBackend(weights: try ReferenceWeights(gguf: file), blockCount: blocks, blockSize: 16)
    case .cpu:
        let backend = try CPUBackend(file: file, blockCount: blocks, blockSize: 16, threads: threads)
        say("CPU backend: \(backend.kernelFamily) kernels, \(backend.threads) threads, f16 KV pool of \(blocks) blocks")
        return backend
    case .vulkan:
        let decoder = try VulkanDecoder(device: VulkanDevice(index: deviceIndex), file: file, blockCount: blocks, blockSize: 16,
                                        maxTokens: maxTokens, maxSequences: maxSequences, maxLogitRows: maxLogitRows, kvCache: kvCache)
        let memory = decoder.device.unifiedMemory ? "unified memory" : "device-local memory (staged uploads)"
        say("Vulkan on \(decoder.device.info.name): \(decoder.kernelFamily) kernel family, \(decoder.kvCache) KV pool, \(memory)")
        if KernelProfileMode.current.isOn {
            atexit_decoder = decoder
            atexit { if let d = atexit_decoder { FileHandle.standardError.write(Data((d.profileReport() + "\n").utf8)) } }
        }
        return decoder
    }
}

extension KVCacheType: ExpressibleByArgument {}
