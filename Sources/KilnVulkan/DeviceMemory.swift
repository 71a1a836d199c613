import CVulkan

/// A storage buffer on the device, carved out of a `MemoryArena` chunk.
public struct DeviceBuffer: @unchecked Sendable {
    let buffer: VkBuffer
    public let size: Int
    /// Host address of the buffer's bytes when its memory is host-visible (a host arena, or unified memory);
    /// nil for device-only memory, which `Upload` fills.
    public let mapped: UnsafeMutableRawPointer?

    /// The host address of a host-visible buffer's bytes.
    public var contents: UnsafeMutableRawPointer {
        guard let mapped else { preconditionFailure("a device-only buffer has no host address; fill it through Upload") }
        return mapped
    }

    public func floats(_ count: Int, at offset: Int = 0) -> UnsafeMutableBufferPointer<Float> {
        UnsafeMutableBufferPointer(start: contents.assumingMemoryBound(to: Float.self) + offset, count: count)
    }

    public func copy(_ bytes: UnsafeRawBufferPointer, at offset: Int = 0) {
        precondition(offset + bytes.count <= size)
        if let base = bytes.baseAddress { (contents + offset).copyMemory(from: base, byteCount: bytes.count) }
    }
}

/// Device memory in a few large allocations, sub-allocated by bumping an offset: buffers live as long as
/// the arena (a model's weights, its KV pool, its activations), so nothing is freed one by one.
/// No single buffer exceeds the device's maxStorageBufferRange; callers split larger tensors.
///
/// A `.device` arena holds what only the device touches once loaded, in device-local memory; a `.host` arena
/// what the host writes or reads (step inputs, logits, upload staging). On unified memory both are mapped.
public final class MemoryArena: @unchecked Sendable {
    public enum Placement: Sendable { case device, host }
    let device: VulkanDevice
    let placement: Placement
    /// Whether buffers have host addresses (else `Upload` fills them).
    var mapped: Bool { placement == .host || device.unifiedMemory }
    private var chunks: [(memory: VkDeviceMemory, mapped: UnsafeMutableRawPointer?, size: Int)] = []
    /// Records zero fills of device-only buffers (mapped ones are zeroed by the host).
    private var fillStream: CommandStream?
    private var used = 0
    private var buffers: [VkBuffer] = []
    /// Size of each new allocation (a larger buffer gets an allocation of its own size).
    let chunkSize: Int
    public private(set) var allocatedBytes = 0

    public init(device: VulkanDevice, chunkSize: Int = 256 << 20, placement: Placement = .host) {
        self.device = device
        self.placement = placement
        self.chunkSize = min(chunkSize, max(device.info.maxMemoryAllocationSize, 1 << 20))
    }

    deinit {
        for b in buffers { vkDestroyBuffer(device.device, b, nil) }
        for c in chunks {
            if c.mapped != nil { vkUnmapMemory(device.device, c.memory) }
            vkFreeMemory(device.device, c.memory, nil)
        }
    }

    /// A new zero-filled storage buffer of `size` bytes.
    public func buffer(_ size: Int, label: String) throws -> DeviceBuffer {
        let size = (max(size, 16) + 15) / 16 * 16  // whole 16-byte texels for texel-buffer views
        guard size <= device.info.maxStorageBufferRange else {
            throw VulkanError("buffer \(label)", message: "\(size) bytes exceeds maxStorageBufferRange \(device.info.maxStorageBufferRange)")
        }
        var info = VkBufferCreateInfo()
        info.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO
        info.size = VkDeviceSize(size)
        info.usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT.rawValue | VK_BUFFER_USAGE_UNIFORM_TEXEL_BUFFER_BIT.rawValue | VK_BUFFER_USAGE_TRANSFER_SRC_BIT.rawValue | VK_BUFFER_USAGE_TRANSFER_DST_BIT.rawValue
        info.sharingMode = VK_SHARING_MODE_EXCLUSIVE
        var buffer: VkBuffer?
        try check(vkCreateBuffer(device.device, &info, nil, &buffer), "vkCreateBuffer(\(label))")
        guard let buffer else { throw VulkanError("vkCreateBuffer(\(label))", message: "no buffer") }
        buffers.append(buffer)
        var requirements = VkMemoryRequirements()
        vkGetBufferMemoryRequirements(device.device, buffer, &requirements)
        let alignment = max(Int(requirements.alignment), 64)
        var offset = (used + alignment - 1) / alignment * alignment
        if chunks.isEmpty || offset + Int(requirements.size) > chunks[chunks.count - 1].size {
            try addChunk(max(chunkSize, Int(requirements.size)))
            offset = 0
        }
        let chunk = chunks[chunks.count - 1]
        try check(vkBindBufferMemory(device.device, buffer, chunk.memory, VkDeviceSize(offset)), "vkBindBufferMemory(\(label))")
        used = offset + Int(requirements.size)
        let result = DeviceBuffer(buffer: buffer, size: size, mapped: chunk.mapped.map { $0 + offset })
        if let contents = result.mapped {
            contents.initializeMemory(as: UInt8.self, repeating: 0, count: size)
        } else {
            let stream = try fillStream ?? CommandStream(device: device)
            fillStream = stream
            try stream.begin()
            stream.fill(result)
            stream.barrier()
            try stream.submitAndWait()
        }
        return result
    }

    private func addChunk(_ size: Int) throws {
        var info = VkMemoryAllocateInfo()
        info.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO
        info.allocationSize = VkDeviceSize(size)
        info.memoryTypeIndex = placement == .host ? device.hostMemoryType : device.deviceMemoryType
        var memory: VkDeviceMemory?
        try check(vkAllocateMemory(device.device, &info, nil, &memory), "vkAllocateMemory(\(size >> 20) MiB)")
        guard let memory else { throw VulkanError("vkAllocateMemory", message: "no memory") }
        var mapped: UnsafeMutableRawPointer?
        if self.mapped {
            try check(vkMapMemory(device.device, memory, 0, VkDeviceSize(size), 0, &mapped), "vkMapMemory")
            guard mapped != nil else { throw VulkanError("vkMapMemory", message: "no address") }
        }
        chunks.append((memory, mapped, size))
        used = 0
        allocatedBytes += size
    }
}
