import Foundation

/// How kernels are timed, from `KILN_VULKAN_PROFILE` (read once per process): not at all (unset), each dispatch
/// submitted alone and timed by the host (`1`: fair on lavapipe, where a submission is cheap; on a GPU every
/// time includes a round trip), or by GPU timestamps written inside the normal steps (`gpu`).
public enum KernelProfileMode: Sendable {
    case off, submitAlone, timestamps

    /// The mode this process runs in.
    public static let current: KernelProfileMode = switch ProcessInfo.processInfo.environment["KILN_VULKAN_PROFILE"] {
    case "1": .submitAlone
    case "gpu": .timestamps
    default: .off
    }

    /// Whether any kernel times are kept (and `VulkanDecoder.profileReport()` has something to say).
    public var isOn: Bool { self != .off }
}
