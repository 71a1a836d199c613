import CVulkan
import Foundation

/// One compute shader made into a pipeline: its descriptor-set layout (N storage buffers at bindings
/// 0..<N), push-constant range and specialization constants, plus a descriptor pool from which bound sets
/// are made once, at load time, never per step.
public final class ComputeKernel: @unchecked Sendable {
    let device: VulkanDevice
    let name: String
    let setLayout: VkDescriptorSetLayout
    let pipelineLayout: VkPipelineLayout
    let pipeline: VkPipeline
    let bindingCount: Int
    /// Bindings read as uniform texel buffers (RGBA32 views): on lavapipe a texel fetch is a gather, several
    /// times cheaper than the bounds-checked per-lane loop an SSBO load becomes.
    let texelBindings: [Int: VkFormat]
    private var views: [VkBufferView] = []
    let pushConstantBytes: Int
    /// local_size_x of the shader: given, or the device's lane width (`VulkanDevice.Info.laneWidth`), passed to
    /// the shader as specialization constant 15 (the CPU-shaped kernels' `local_size_x_id`).
    let workgroupSize: Int
    /// Lanes that work on one item of a dispatch (`CommandStream.dispatch(items:)`): 1 where each lane works
    /// alone; where lanes cooperate (the GPU kernel family), the lanes that share an item (a 64-lane workgroup
    /// per row, per (token, head)...). The kernel says it, so no call site can pair it with another count.
    let lanesPerItem: Int
    private var pools: [VkDescriptorPool] = []
    private var poolRoom = 0
    static let setsPerPool = 256

    init(device: VulkanDevice, name: String, spirv: [UInt32], bindings: Int, pushConstantBytes: Int,
         specialization: [UInt32] = [], workgroupSize: Int? = nil, lanesPerItem: Int = 1, texelBindings: [Int: VkFormat] = [:]) throws {
        self.device = device
        self.lanesPerItem = lanesPerItem
        let workgroupSize = workgroupSize ?? device.info.laneWidth
        self.workgroupSize = workgroupSize
        self.texelBindings = texelBindings
        self.name = name
        bindingCount = bindings
        self.pushConstantBytes = pushConstantBytes
        let vk = device.device

        var module: VkShaderModule?
        try spirv.withUnsafeBufferPointer { code in
            var info = VkShaderModuleCreateInfo()
            info.sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO
            info.codeSize = code.count * 4
            info.pCode = code.baseAddress
            try check(vkCreateShaderModule(vk, &info, nil, &module), "vkCreateShaderModule(\(name))")
        }
        defer { vkDestroyShaderModule(vk, module, nil) }

        var layoutBindings = (0..<bindings).map { i -> VkDescriptorSetLayoutBinding in
            var b = VkDescriptorSetLayoutBinding()
            b.binding = UInt32(i)
            b.descriptorType = texelBindings[i] == nil ? VK_DESCRIPTOR_TYPE_STORAGE_BUFFER : VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER
            b.descriptorCount = 1
            b.stageFlags = VK_SHADER_STAGE_COMPUTE_BIT.rawValue
            return b
        }
        var setLayout: VkDescriptorSetLayout?
        try layoutBindings.withUnsafeMutableBufferPointer { pointer in
            var info = VkDescriptorSetLayoutCreateInfo()
            info.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO
            info.bindingCount = UInt32(bindings)
            info.pBindings = UnsafePointer(pointer.baseAddress)
            try check(vkCreateDescriptorSetLayout(vk, &info, nil, &setLayout), "vkCreateDescriptorSetLayout(\(name))")
        }
        self.setLayout = setLayout!

        var range = VkPushConstantRange(stageFlags: VK_SHADER_STAGE_COMPUTE_BIT.rawValue, offset: 0, size: UInt32(pushConstantBytes))
        var pipelineLayout: VkPipelineLayout?
        try withUnsafePointer(to: &range) { rangePointer in
            try withUnsafePointer(to: &setLayout) { setPointer in
                var info = VkPipelineLayoutCreateInfo()
                info.sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO
                info.setLayoutCount = 1
                info.pSetLayouts = setPointer
                info.pushConstantRangeCount = pushConstantBytes > 0 ? 1 : 0
                info.pPushConstantRanges = rangePointer
                try check(vkCreatePipelineLayout(vk, &info, nil, &pipelineLayout), "vkCreatePipelineLayout(\(name))")
            }
        }
        self.pipelineLayout = pipelineLayout!

        var entries = specialization.indices.map {
            VkSpecializationMapEntry(constantID: UInt32($0), offset: UInt32($0 * 4), size: 4)
        }
        entries.append(VkSpecializationMapEntry(constantID: Self.laneWidthConstant, offset: UInt32(specialization.count * 4), size: 4))
        var values = specialization + [UInt32(workgroupSize)]
        var pipeline: VkPipeline?
        try entries.withUnsafeMutableBufferPointer { entryPointer in
            try values.withUnsafeMutableBytes { valuePointer in
                var specializationInfo = VkSpecializationInfo(
                    mapEntryCount: UInt32(entryPointer.count), pMapEntries: UnsafePointer(entryPointer.baseAddress),
                    dataSize: valuePointer.count, pData: UnsafeRawPointer(valuePointer.baseAddress))
                try withUnsafePointer(to: &specializationInfo) { specPointer in
                    try "main".withCString { entry in
                        var stage = VkPipelineShaderStageCreateInfo()
                        stage.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO
                        stage.stage = VK_SHADER_STAGE_COMPUTE_BIT
                        stage.module = module
                        stage.pName = entry
                        stage.pSpecializationInfo = specPointer
                        var info = VkComputePipelineCreateInfo()
                        info.sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO
                        info.stage = stage
                        info.layout = pipelineLayout
                        try check(vkCreateComputePipelines(vk, nil, 1, &info, nil, &pipeline), "vkCreateComputePipelines(\(name))")
                    }
                }
            }
        }
        self.pipeline = pipeline!
    }

    /// The specialization constant that sets the CPU-shaped kernels' workgroup width (ignored by shaders with a
    /// fixed `local_size_x`).
    static let laneWidthConstant: UInt32 = 15

    deinit {
        let vk = device.device
        for pool in pools { vkDestroyDescriptorPool(vk, pool, nil) }
        for view in views { vkDestroyBufferView(vk, view, nil) }
        vkDestroyPipeline(vk, pipeline, nil)
        vkDestroyPipelineLayout(vk, pipelineLayout, nil)
        vkDestroyDescriptorSetLayout(vk, setLayout, nil)
    }

    /// A descriptor set with `buffers` at bindings 0, 1, …, made once and reused every step.
    func bind(_ buffers: [DeviceBuffer]) throws -> VkDescriptorSet {
        precondition(buffers.count == bindingCount, "\(name) takes \(bindingCount) buffers, given \(buffers.count)")
        if poolRoom == 0 {
            var sizes = [
                VkDescriptorPoolSize(type: VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, descriptorCount: UInt32(Self.setsPerPool * bindingCount)),
                VkDescriptorPoolSize(type: VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER, descriptorCount: UInt32(Self.setsPerPool * bindingCount)),
            ]
            var pool: VkDescriptorPool?
            try sizes.withUnsafeMutableBufferPointer { sizePointer in
                var info = VkDescriptorPoolCreateInfo()
                info.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO
                info.maxSets = UInt32(Self.setsPerPool)
                info.poolSizeCount = 2
                info.pPoolSizes = UnsafePointer(sizePointer.baseAddress)
                try check(vkCreateDescriptorPool(device.device, &info, nil, &pool), "vkCreateDescriptorPool(\(name))")
            }
            pools.append(pool!)
            poolRoom = Self.setsPerPool
        }
        var set: VkDescriptorSet?
        var layout: VkDescriptorSetLayout? = setLayout
        try withUnsafePointer(to: &layout) { layoutPointer in
            var info = VkDescriptorSetAllocateInfo()
            info.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO
            info.descriptorPool = pools[pools.count - 1]
            info.descriptorSetCount = 1
            info.pSetLayouts = layoutPointer
            try check(vkAllocateDescriptorSets(device.device, &info, &set), "vkAllocateDescriptorSets(\(name))")
        }
        poolRoom -= 1
        var bufferViews = [VkBufferView?](repeating: nil, count: buffers.count)
        for (i, format) in texelBindings {
            var info = VkBufferViewCreateInfo()
            info.sType = VK_STRUCTURE_TYPE_BUFFER_VIEW_CREATE_INFO
            info.buffer = buffers[i].buffer
            info.format = format
            info.offset = 0
            info.range = VkDeviceSize(buffers[i].size / 16 * 16)
            try check(vkCreateBufferView(device.device, &info, nil, &bufferViews[i]), "vkCreateBufferView(\(name))")
            views.append(bufferViews[i]!)
        }
        var infos = buffers.map { VkDescriptorBufferInfo(buffer: $0.buffer, offset: 0, range: VkDeviceSize(VK_WHOLE_SIZE)) }
        infos.withUnsafeMutableBufferPointer { infoPointer in
            bufferViews.withUnsafeMutableBufferPointer { viewPointer in
                var writes = (0..<buffers.count).map { i -> VkWriteDescriptorSet in
                    var w = VkWriteDescriptorSet()
                    w.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET
                    w.dstSet = set
                    w.dstBinding = UInt32(i)
                    w.descriptorCount = 1
                    if texelBindings[i] != nil {
                        w.descriptorType = VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER
                        w.pTexelBufferView = UnsafePointer(viewPointer.baseAddress! + i)
                    } else {
                        w.descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER
                        w.pBufferInfo = UnsafePointer(infoPointer.baseAddress! + i)
                    }
                    return w
                }
                vkUpdateDescriptorSets(device.device, UInt32(writes.count), &writes, 0, nil)
            }
        }
        return set!
    }
}

/// Records a step's dispatches into one command buffer, with a barrier between dependent dispatches,
/// then submits it and waits on a fence.
public final class CommandStream: @unchecked Sendable {
    let device: VulkanDevice
    let commandBuffer: VkCommandBuffer
    let fence: VkFence
    private var recording = false
    /// KILN_VULKAN_PROFILE=1: every dispatch is submitted alone and timed on the host (slow, and each time
    /// includes a submission's round trip: a fair measure on lavapipe, not on a GPU).
    let profiling = KernelProfileMode.current == .submitAlone
    /// KILN_VULKAN_PROFILE=gpu: the step's own command buffer writes a timestamp after every dispatch, and each
    /// kernel is charged the time from the previous timestamp to its own (its barrier wait included), so
    /// steps run as they always do. Needs a queue that writes timestamps (else nothing is recorded).
    private let timestamps: VkQueryPool?
    /// The kernel that ends at each timestamp after the first, in this recording.
    private var timestampNames: [String] = []
    private static let maxTimestamps = 8192
    private(set) var profile: [String: (count: Int, seconds: Double)] = [:]
    /// Whether a submission is on the device and not yet waited for.
    private var submitted = false

    init(device: VulkanDevice) throws {
        self.device = device
        var info = VkCommandBufferAllocateInfo()
        info.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO
        info.commandPool = device.commandPool
        info.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY
        info.commandBufferCount = 1
        var buffer: VkCommandBuffer?
        try check(vkAllocateCommandBuffers(device.device, &info, &buffer), "vkAllocateCommandBuffers")
        commandBuffer = buffer!
        var fenceInfo = VkFenceCreateInfo()
        fenceInfo.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO
        var fence: VkFence?
        try check(vkCreateFence(device.device, &fenceInfo, nil, &fence), "vkCreateFence")
        self.fence = fence!
        var pool: VkQueryPool?
        if KernelProfileMode.current == .timestamps, device.info.timestampPeriod != nil {
            var poolInfo = VkQueryPoolCreateInfo()
            poolInfo.sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO
            poolInfo.queryType = VK_QUERY_TYPE_TIMESTAMP
            poolInfo.queryCount = UInt32(Self.maxTimestamps)
            try check(vkCreateQueryPool(device.device, &poolInfo, nil, &pool), "vkCreateQueryPool")
        }
        timestamps = pool
    }

    deinit {
        if let timestamps { vkDestroyQueryPool(device.device, timestamps, nil) }
        vkDestroyFence(device.device, fence, nil)
        var buffer: VkCommandBuffer? = commandBuffer
        vkFreeCommandBuffers(device.device, device.commandPool, 1, &buffer)
    }

    func begin() throws {
        if let lost = device.lost { throw lost }
        precondition(!submitted, "a command buffer is re-recorded while the device may still run it")
        try check(vkResetCommandBuffer(commandBuffer, 0), "vkResetCommandBuffer")
        var info = VkCommandBufferBeginInfo()
        info.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO
        info.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT.rawValue
        try check(vkBeginCommandBuffer(commandBuffer, &info), "vkBeginCommandBuffer")
        recording = true
        if let timestamps {
            vkCmdResetQueryPool(commandBuffer, timestamps, 0, UInt32(Self.maxTimestamps))
            vkCmdWriteTimestamp(commandBuffer, VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT, timestamps, 0)
            timestampNames = []
        }
    }

    /// Records `kernel` over `items` items of `kernel.lanesPerItem` lanes each (in workgroups of
    /// `kernel.workgroupSize`) with the given push constants.
    func dispatch<P>(_ kernel: ComputeKernel, _ set: VkDescriptorSet, _ constants: P, items: Int) {
        precondition(recording)
        precondition(MemoryLayout<P>.size == kernel.pushConstantBytes, "\(kernel.name): push constants are \(kernel.pushConstantBytes) bytes")
        vkCmdBindPipeline(commandBuffer, VK_PIPELINE_BIND_POINT_COMPUTE, kernel.pipeline)
        var set: VkDescriptorSet? = set
        vkCmdBindDescriptorSets(commandBuffer, VK_PIPELINE_BIND_POINT_COMPUTE, kernel.pipelineLayout, 0, 1, &set, 0, nil)
        var constants = constants
        withUnsafeBytes(of: &constants) { bytes in
            vkCmdPushConstants(commandBuffer, kernel.pipelineLayout, VK_SHADER_STAGE_COMPUTE_BIT.rawValue, 0, UInt32(bytes.count), bytes.baseAddress)
        }
        // Past the device's maxComputeWorkGroupCount[0] (65,535 on lavapipe and most GPUs: a 512-token
        // SwiGLU wants 98,304 groups) the grid folds onto y; every shader indexes by x + y · (groups in x ·
        // workgroup size) and bounds-checks, so the surplus invocations of the last row do nothing.
        let invocations = items * kernel.lanesPerItem
        let groups = max(1, (invocations + kernel.workgroupSize - 1) / kernel.workgroupSize)
        let limit = max(1, device.info.maxComputeWorkGroupCount)
        let rows = (groups + limit - 1) / limit
        vkCmdDispatch(commandBuffer, UInt32((groups + rows - 1) / rows), UInt32(rows), 1)
        if let timestamps, timestampNames.count + 1 < Self.maxTimestamps {
            vkCmdWriteTimestamp(commandBuffer, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, timestamps, UInt32(timestampNames.count + 1))
            timestampNames.append(kernel.name)
        }
        if profiling {
            let start = DispatchTime.now().uptimeNanoseconds
            try? submitAndWait()
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            let old = profile[kernel.name] ?? (0, 0)
            profile[kernel.name] = (old.count + 1, old.seconds + seconds)
            try? begin()
        }
    }

    /// The profile so far of several streams together, one line per kernel, slowest first.
    static func profileReport(_ streams: [CommandStream]) -> String {
        var profile: [String: (count: Int, seconds: Double)] = [:]
        for stream in streams {
            for (name, entry) in stream.profile {
                let old = profile[name] ?? (0, 0)
                profile[name] = (old.count + entry.count, old.seconds + entry.seconds)
            }
        }
        let how = streams.contains { $0.timestamps != nil } ? "kernel times from GPU timestamps (KILN_VULKAN_PROFILE=gpu):"
            : streams.contains { $0.profiling } ? "kernel times, each dispatch submitted alone and timed by the host (KILN_VULKAN_PROFILE=1):"
            : "no kernel times (KILN_VULKAN_PROFILE=gpu needs a queue that writes timestamps)"
        return ([how] + profile.sorted { $0.value.seconds > $1.value.seconds }.map {
            String(format: "%@: %d dispatches, %.1f ms total, %.1f µs each", $0.key, $0.value.count, $0.value.seconds * 1000, $0.value.seconds / Double($0.value.count) * 1e6)
        }).joined(separator: "\n")
    }

    /// Records a copy of `bytes` bytes between two buffers (after a barrier on earlier shader writes).
    func copy(from source: DeviceBuffer, at sourceOffset: Int, to destination: DeviceBuffer, at destinationOffset: Int, bytes: Int) {
        precondition(recording)
        var region = VkBufferCopy(srcOffset: VkDeviceSize(sourceOffset), dstOffset: VkDeviceSize(destinationOffset), size: VkDeviceSize(bytes))
        vkCmdCopyBuffer(commandBuffer, source.buffer, destination.buffer, 1, &region)
    }

    /// Records copies of several byte ranges from one buffer to another.
    func copy(from source: DeviceBuffer, to destination: DeviceBuffer, regions: [(source: Int, destination: Int, bytes: Int)]) {
        precondition(recording)
        let copies = regions.map { VkBufferCopy(srcOffset: VkDeviceSize($0.source), dstOffset: VkDeviceSize($0.destination), size: VkDeviceSize($0.bytes)) }
        copies.withUnsafeBufferPointer { vkCmdCopyBuffer(commandBuffer, source.buffer, destination.buffer, UInt32($0.count), $0.baseAddress) }
    }

    /// Records filling a buffer with zeros.
    func fill(_ buffer: DeviceBuffer) {
        precondition(recording)
        vkCmdFillBuffer(commandBuffer, buffer.buffer, 0, VkDeviceSize(buffer.size), 0)
    }

    /// Makes every earlier dispatch's writes visible to later dispatches.
    func barrier() {
        var memory = VkMemoryBarrier()
        memory.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER
        memory.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT.rawValue | VK_ACCESS_TRANSFER_WRITE_BIT.rawValue
        memory.dstAccessMask = VK_ACCESS_SHADER_READ_BIT.rawValue | VK_ACCESS_SHADER_WRITE_BIT.rawValue | VK_ACCESS_TRANSFER_READ_BIT.rawValue
        vkCmdPipelineBarrier(commandBuffer, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT.rawValue | VK_PIPELINE_STAGE_TRANSFER_BIT.rawValue,
                             VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT.rawValue | VK_PIPELINE_STAGE_TRANSFER_BIT.rawValue,
                             0, 1, &memory, 0, nil, 0, nil)
    }

    /// Ends recording, submits, and waits until the device is done (host reads after this see the results).
    func submitAndWait() throws {
        try submit()
        try wait()
    }

    /// Ends recording and submits the command buffer; `wait()` blocks until the device has run it. Work
    /// submitted from any stream runs in submission order (one queue).
    func submit() throws {
        recording = false
        if let lost = device.lost { throw lost }
        try recordingDeviceLoss {
            var memory = VkMemoryBarrier()
            memory.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER
            memory.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT.rawValue | VK_ACCESS_TRANSFER_WRITE_BIT.rawValue
            memory.dstAccessMask = VK_ACCESS_HOST_READ_BIT.rawValue
            vkCmdPipelineBarrier(commandBuffer, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT.rawValue | VK_PIPELINE_STAGE_TRANSFER_BIT.rawValue, VK_PIPELINE_STAGE_HOST_BIT.rawValue,
                                 0, 1, &memory, 0, nil, 0, nil)
            try check(vkEndCommandBuffer(commandBuffer), "vkEndCommandBuffer")
            try device.submit(commandBuffer, fence: fence)
        }
        submitted = true
    }

    /// Waits until the device has run the submitted command buffer (host reads after this see its results);
    /// returns at once when nothing is submitted.
    func wait() throws {
        guard submitted else { return }
        submitted = false
        try recordingDeviceLoss {
            var fences: [VkFence?] = [fence]
            try check(vkWaitForFences(device.device, 1, &fences, VkBool32(VK_TRUE), UInt64.max), "vkWaitForFences")
            try check(vkResetFences(device.device, 1, &fences), "vkResetFences")
        }
        if let timestamps, let period = device.info.timestampPeriod, !timestampNames.isEmpty {
            var ticks = [UInt64](repeating: 0, count: timestampNames.count + 1)
            let read = ticks.withUnsafeMutableBytes { bytes in
                vkGetQueryPoolResults(device.device, timestamps, 0, UInt32(bytes.count / 8), bytes.count, bytes.baseAddress, 8,
                                      VK_QUERY_RESULT_64_BIT.rawValue | VK_QUERY_RESULT_WAIT_BIT.rawValue)
            }
            if read == VK_SUCCESS {
                for (i, name) in timestampNames.enumerated() where ticks[i + 1] >= ticks[i] {
                    let old = profile[name] ?? (0, 0)
                    profile[name] = (old.count + 1, old.seconds + Double(ticks[i + 1] - ticks[i]) * period / 1e9)
                }
            }
            timestampNames = []
        }
    }

    private func recordingDeviceLoss(_ body: () throws -> Void) throws {
        do {
            try body()
        } catch let error as VulkanError where error.isDeviceLost {
            device.markLost(error)
            throw error
        }
    }
}
