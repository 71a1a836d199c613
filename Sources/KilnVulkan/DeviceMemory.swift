import CVulkan

/// A storage buffer on the device, carved out of a `MemoryArena` chunk and mapped for the host.
public struct DeviceBuffer: @unchecked Sendable {
    let buffer: VkBuffer
    public let size: Int
    /// Host address of the buffer's bytes (all of Kiln's device memory is host-visible and coherent).
    public let contents: UnsafeMutableRawPointer

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
public final class MemoryArena: @unchecked Sendable {
    let device: VulkanDevice
    private var chunks: [(memory: VkDeviceMemory, mapped: UnsafeMutableRawPointer, size: Int)] = []
    private var used = 0
    private var buffers: [VkBuffer] = []
    /// Size of each new allocation (a larger buffer gets an allocation of its own size).
    let chunkSize: Int
    public private(set) var allocatedBytes = 0

    public init(device: VulkanDevice, chunkSize: Int = 256 << 20) {
        self.device = device
        self.chunkSize = min(chunkSize, max(device.info.maxMemoryAllocationSize, 1 << 20))
    }

    deinit {
        for b in buffers { vkDestroyBuffer(device.device, b, nil) }
        for c in chunks {
            vkUnmapMemory(device.device, c.memory)
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
        let contents = chunk.mapped + offset
        contents.initializeMemory(as: UInt8.self, repeating: 0, count: size)
        return DeviceBuffer(buffer: buffer, size: size, contents: contents)
    }

    private func addChunk(_ size: Int) throws {
        var info = VkMemoryAllocateInfo()
        info.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO
        info.allocationSize = VkDeviceSize(size)
        info.memoryTypeIndex = device.memoryTypeIndex
        var memory: VkDeviceMemory?
        try check(vkAllocateMemory(device.device, &info, nil, &memory), "vkAllocateMemory(\(size >> 20) MiB)")
        guard let memory else { throw VulkanError("vkAllocateMemory", message: "no memory") }
        var mapped: UnsafeMutableRawPointer?
        try check(vkMapMemory(device.device, memory, 0, VkDeviceSize(size), 0, &mapped), "vkMapMemory")
        guard let mapped else { throw VulkanError("vkMapMemory", message: "no address") }
        chunks.append((memory, mapped, size))
        used = 0
        allocatedBytes += size
    }
}
