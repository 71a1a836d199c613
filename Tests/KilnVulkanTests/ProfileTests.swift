import Foundation
import KilnTestSupport
import XCTest

/// `KILN_VULKAN_PROFILE=gpu`: per-kernel times from timestamps the step's own command buffer writes after every
/// dispatch. The kernels of a step are all there, their times are real (more than nothing, less than the
/// benchmark's whole run), and the steps' results are unchanged.
final class ProfileTests: XCTestCase {
    func testTimestampProfileChargesEveryKernelOfAStep() throws {
        let arguments = ["bench", "decode", "--backend", "vulkan", "--prompt-tokens", "16", "--steps", "4", "--batches", "1"]
        let started = Date()
        let profiled = try runTool(kilnReleaseBinary, arguments, timeout: 600, environment: ["KILN_VULKAN_PROFILE": "gpu"])
        let wall = Date().timeIntervalSince(started)
        XCTAssertEqual(profiled.status, 0, profiled.stderr)
        let lines = profiled.stdout.split(separator: "\n")
        XCTAssertTrue(lines.contains { $0.hasPrefix("kernel times from GPU timestamps") }, profiled.stdout)
        var totalMs = 0.0, kernels: Set<String> = []
        for line in lines where line.contains(" dispatches, ") {
            let name = String(line.prefix { $0 != ":" })
            let fields = line.split(separator: " ")
            let dispatches = try XCTUnwrap(Int(fields[1])), ms = try XCTUnwrap(Double(fields[3]))
            XCTAssertGreaterThan(dispatches, 0, String(line))
            XCTAssertGreaterThan(ms, 0, String(line))
            totalMs += ms
            kernels.insert(name)
        }
        for kernel in ["attention_f16", "embed"] { XCTAssertTrue(kernels.contains(kernel), "\(kernel) missing from \(kernels.sorted())") }
        XCTAssertTrue(kernels.contains { $0.hasPrefix("matmul_") }, "\(kernels.sorted())")
        XCTAssertLessThan(totalMs / 1000, wall, "the kernels took longer than the whole run")
        // The profile changes no result: a greedy generation gives the same text with and without it.
        let generate = ["generate", "--prompt", "The capital of France is", "--max-tokens", "6", "--backend", "vulkan"]
        let plain = try runTool(kilnReleaseBinary, generate, timeout: 600)
        let timed = try runTool(kilnReleaseBinary, generate, timeout: 600, environment: ["KILN_VULKAN_PROFILE": "gpu"])
        XCTAssertEqual(plain.status, 0, plain.stderr)
        XCTAssertEqual(timed.stdout, plain.stdout)
        XCTAssertTrue(timed.stderr.contains("kernel times from GPU timestamps"), timed.stderr)
    }
}
