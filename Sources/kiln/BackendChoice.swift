import ArgumentParser
import Foundation
import KilnModel
import KilnVulkan

/// `--backend vulkan|cpu` for the model commands: Vulkan (any device, lavapipe included) by default when a
/// Vulkan device exists, otherwise the CPU reference decoder.
enum BackendChoice: String, ExpressibleByArgument, CaseIterable {
    case vulkan, cpu, auto
}

/// One sequence decoded token by token on either backend: what `kiln generate` and `kiln logprobs` need.
final class SequenceDecoder {
    private let forwardBody: ([Int], Int) throws -> [[Float]]
    let description: String

    init(file: GGUFFile, backend: BackendChoice, deviceIndex: Int?) throws {
        var choice = backend
        if choice == .auto {
            choice = ((try? VulkanDevice.available()) ?? []).isEmpty ? .cpu : .vulkan
            if choice == .cpu {
                FileHandle.standardError.write(Data("kiln: no Vulkan device found (install mesa-vulkan-drivers for lavapipe); using the CPU reference decoder\n".utf8))
            }
        }
        switch choice {
        case .cpu, .auto:
            let decoder = ReferenceDecoder(weights: try ReferenceWeights(gguf: file))
            description = "CPU reference decoder"
            forwardBody = { tokens, count in try decoder.forward(tokens, logitCount: count) }
        case .vulkan:
            let device = try VulkanDevice(index: deviceIndex)
            let config = try ModelConfig(gguf: file)
            let blockSize = 16
            let blocks = (config.contextLength + blockSize - 1) / blockSize
            let decoder = try VulkanDecoder(device: device, file: file, blockCount: blocks, blockSize: blockSize,
                                            maxTokens: 512, maxSequences: 1, maxLogitRows: 512)
            description = "Vulkan on \(device.info)"
            if ProcessInfo.processInfo.environment["KILN_VULKAN_PROFILE"] == "1" {
                atexit_decoder = decoder
                atexit { if let d = atexit_decoder { FileHandle.standardError.write(Data((d.profileReport() + "\n").utf8)) } }
            }
            let table = Array(0..<blocks)
            var position = 0
            forwardBody = { tokens, count in
                var result: [[Float]] = []
                // Steps of at most 512 tokens; logits only for the last `count` tokens overall.
                var start = 0
                while start < tokens.count {
                    let chunk = Array(tokens[start..<min(start + 512, tokens.count)])
                    let firstWanted = tokens.count - count
                    let wanted = (0..<chunk.count).filter { start + $0 >= firstWanted }
                    let batch = DecodeBatch(tokens: chunk, positions: Array(position..<position + chunk.count),
                                            sequences: Array(repeating: 0, count: chunk.count), blockTables: [table], logitRows: wanted)
                    result += try decoder.logits(batch)
                    position += chunk.count
                    start += chunk.count
                }
                return result
            }
        }
    }

    /// Appends `tokens` to the sequence and returns the logits of its last `logitCount` tokens.
    func forward(_ tokens: [Int], logitCount: Int = 1) throws -> [[Float]] { try forwardBody(tokens, logitCount) }
}

/// The decoder whose kernel profile is printed at exit (KILN_VULKAN_PROFILE=1).
nonisolated(unsafe) var atexit_decoder: VulkanDecoder?

/// The decoder backend for serving: Vulkan when chosen or found, else the CPU reference.
func makeBackend(file: GGUFFile, choice: BackendChoice, deviceIndex: Int?, blocks: Int) throws -> DecoderBackend {
    var choice = choice
    if choice == .auto {
        choice = ((try? VulkanDevice.available()) ?? []).isEmpty ? .cpu : .vulkan
        if choice == .cpu {
            FileHandle.standardError.write(Data("kiln: no Vulkan device found (install mesa-vulkan-drivers for lavapipe); using the CPU reference decoder\n".utf8))
        }
    }
    if choice == .vulkan {
        return try VulkanDecoder(device: VulkanDevice(index: deviceIndex), file: file, blockCount: blocks, blockSize: 16,
                                 maxTokens: 256, maxSequences: 64, maxLogitRows: 64)
    }
    return ReferenceBackend(weights: try ReferenceWeights(gguf: file), blockCount: blocks, blockSize: 16)
}
