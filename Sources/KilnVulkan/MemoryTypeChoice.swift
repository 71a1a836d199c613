import CVulkan

/// Which Vulkan memory types a device's two arenas use, decided from the device's memory properties alone
/// (so the policy is tested on made-up tables of real devices' types, not only on the device at hand).
///
/// - The host arena (step inputs, logits, staging) takes host-visible coherent memory, cached first: the
///   host reads logits back.
/// - The device arena (weights, KV pool, activations) takes a device-local type on the largest device-local
///   heap. Where the device is not a discrete GPU (lavapipe, an integrated GPU) and that memory is
///   host-visible too, it is *unified*: buffers are written in place, never staged.
/// - A discrete GPU never counts as unified, even where a resizable BAR makes all of its memory host-visible:
///   there Kiln takes the plain device-local type and stages uploads. On an H100 (Firecracker VM, driver
///   580) decoding from the host-visible type ran 5× slower at batch 1 than from staged device-local
///   memory in the same session (BENCHMARKS.md, 2026-11-26 GPU section).
struct MemoryTypeChoice: Equatable, Sendable {
    /// One entry of VkPhysicalDeviceMemoryProperties.memoryTypes, with its heap's size.
    struct MemoryType: Sendable {
        let flags: UInt32
        let heapSize: UInt64
        init(flags: UInt32, heapSize: UInt64) { self.flags = flags; self.heapSize = heapSize }
    }

    let deviceType: Int
    let hostType: Int
    /// Whether device buffers are mapped and written in place (else `Upload` stages them).
    let unified: Bool

    static let hostBits = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT.rawValue | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT.rawValue
    static let localBit = VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT.rawValue
    static let cachedBit = VK_MEMORY_PROPERTY_HOST_CACHED_BIT.rawValue

    /// nil when the device has no host-visible coherent memory (Kiln cannot feed it).
    static func choose(_ types: [MemoryType], kind: VulkanDevice.Kind, forceStaging: Bool = false) -> MemoryTypeChoice? {
        let hostTypes = types.indices.filter { types[$0].flags & hostBits == hostBits }
        guard let host = hostTypes.first(where: { types[$0].flags & cachedBit != 0 }) ?? hostTypes.first else { return nil }
        let localTypes = types.indices.filter { types[$0].flags & localBit != 0 }
        let largest = localTypes.map { types[$0].heapSize }.max() ?? 0
        let onLargest = localTypes.filter { types[$0].heapSize == largest }
        let mappable = onLargest.first { types[$0].flags & hostBits == hostBits }
        let deviceOnly = onLargest.first { types[$0].flags & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT.rawValue == 0 }
        // No device-local type at all: everything lives in host memory (and is mapped).
        let device = (kind == .discreteGPU ? deviceOnly ?? mappable : mappable ?? deviceOnly) ?? host
        let unified = kind != .discreteGPU && types[device].flags & hostBits == hostBits && !forceStaging
        return MemoryTypeChoice(deviceType: device, hostType: host, unified: unified)
    }
}
