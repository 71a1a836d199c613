import Foundation

/// Mesa's lavapipe compiles compute shaders for 256-bit vectors (8 lanes) even on a CPU with AVX-512. On such
/// a CPU Kiln asks it for 512-bit vectors (16 lanes) through Mesa's `LP_NATIVE_VECTOR_WIDTH`, which the
/// driver reads once, when it first loads; the CPU-shaped kernels then run 16-lane workgroups
/// (`VulkanDevice.Info.laneWidth`). Measured on a 2-vCPU Xeon with AVX-512: prefill ~20% faster, batched
/// decode ~10%, batch 1 within noise (BENCHMARKS.md). Lanes never cooperate in those kernels, so the width
/// changes no result (`LaneWidthTests`). An `LP_NATIVE_VECTOR_WIDTH` already in the environment is left as it
/// is: set it to 256 to keep Mesa's default.
enum LavapipeVectorWidth {
    /// Sets `LP_NATIVE_VECTOR_WIDTH=512` where it is unset and the CPU has the AVX-512 subsets lavapipe's
    /// 512-bit code uses. Runs once per process, before the first Vulkan instance (the driver reads the
    /// variable when it loads, so setting it later would change nothing).
    static func configure() { _ = configured }

    private static let configured: Bool = {
        guard ProcessInfo.processInfo.environment["LP_NATIVE_VECTOR_WIDTH"] == nil, cpuHasAVX512() else { return false }
        return setenv("LP_NATIVE_VECTOR_WIDTH", "512", 0) == 0
    }()

    /// Whether /proc/cpuinfo's flags include AVX-512 F, BW, DQ and VL (false where there is no such file).
    static func cpuHasAVX512() -> Bool {
        guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return false }
        let flags = Set(line.split(separator: " ").map(String.init))
        return ["avx512f", "avx512bw", "avx512dq", "avx512vl"].allSatisfy(flags.contains)
    }
}
