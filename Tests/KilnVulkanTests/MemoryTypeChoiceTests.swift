@testable import KilnVulkan
import XCTest

/// The memory-type policy on the memory tables of the devices Kiln meets: lavapipe writes device buffers in
/// place; a discrete GPU keeps weights, KV pool and activations in plain device-local memory and stages
/// uploads, with or without a resizable BAR; an integrated GPU maps its one pool.
final class MemoryTypeChoiceTests: XCTestCase {
    typealias T = MemoryTypeChoice.MemoryType
    let local = MemoryTypeChoice.localBit, host = MemoryTypeChoice.hostBits, cached = MemoryTypeChoice.cachedBit
    let gib: UInt64 = 1 << 30

    func testLavapipeIsUnified() {
        let types = [T(flags: local | host | cached, heapSize: 2 * gib)]
        XCTAssertEqual(MemoryTypeChoice.choose(types, kind: .cpu), MemoryTypeChoice(deviceType: 0, hostType: 0, unified: true))
        XCTAssertEqual(MemoryTypeChoice.choose(types, kind: .cpu, forceStaging: true), MemoryTypeChoice(deviceType: 0, hostType: 0, unified: false))
    }

    func testDiscreteGPUStagesEvenWithAResizableBAR() {
        // As a discrete NVIDIA GPU lists them: VRAM, system memory (uncached, cached), then VRAM through the BAR.
        let vram: UInt64 = 80 * gib, system: UInt64 = 64 * gib
        let withBAR = [T(flags: local, heapSize: vram), T(flags: host, heapSize: system), T(flags: host | cached, heapSize: system),
                       T(flags: local | host, heapSize: vram)]
        XCTAssertEqual(MemoryTypeChoice.choose(withBAR, kind: .discreteGPU), MemoryTypeChoice(deviceType: 0, hostType: 2, unified: false))
        // The BAR listed first changes nothing.
        XCTAssertEqual(MemoryTypeChoice.choose(Array(withBAR.reversed()), kind: .discreteGPU), MemoryTypeChoice(deviceType: 3, hostType: 1, unified: false))
        // Without a resizable BAR: a 256 MiB window, which is never the device arena's memory.
        let window = [T(flags: local, heapSize: vram), T(flags: host, heapSize: system), T(flags: host | cached, heapSize: system),
                      T(flags: local | host, heapSize: 256 << 20)]
        XCTAssertEqual(MemoryTypeChoice.choose(window, kind: .discreteGPU), MemoryTypeChoice(deviceType: 0, hostType: 2, unified: false))
        XCTAssertEqual(MemoryTypeChoice.choose(window, kind: .integratedGPU)?.deviceType, 0, "the window is not the largest heap")
    }

    func testIntegratedGPUMapsItsMemory() {
        let shared: UInt64 = 16 * gib
        let types = [T(flags: local, heapSize: shared), T(flags: local | host, heapSize: shared), T(flags: local | host | cached, heapSize: shared)]
        XCTAssertEqual(MemoryTypeChoice.choose(types, kind: .integratedGPU), MemoryTypeChoice(deviceType: 1, hostType: 2, unified: true))
    }

    func testNoHostVisibleMemoryIsRefused() {
        XCTAssertNil(MemoryTypeChoice.choose([T(flags: local, heapSize: gib)], kind: .discreteGPU))
        XCTAssertNil(MemoryTypeChoice.choose([], kind: .cpu))
    }
}
