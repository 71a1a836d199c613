import CVulkan
import Foundation
import Synchronization

/// A Vulkan device chosen for compute: the instance, one physical device (a discrete GPU first, then an
/// integrated one, then a CPU implementation such as lavapipe), one compute queue and a command pool.
/// Used from one thread at a time (the engine's step loop).
public final class VulkanDevice: @unchecked Sendable {
    public enum Kind: String, Sendable { case discreteGPU = "discrete GPU", integratedGPU = "integrated GPU", cpu = "CPU", other }

    /// What the engine and the logs need to know about a device.
    public struct Info: Sendable, CustomStringConvertible {
        public let index: Int
        public let name: String
        public let kind: Kind
        public let maxStorageBufferRange: Int
        public let maxMemoryAllocationSize: Int
        public let maxComputeWorkGroupCount: Int
        /// Lanes per subgroup: on lavapipe the SIMD width, 8 with 256-bit vectors, 16 with 512-bit ones.
        public let subgroupSize: Int
        /// The first queue family that computes (the one Kiln uses); nil where there is none.
        public let computeQueueFamily: Int?
        /// Nanoseconds per tick of that queue's timestamps; nil where it writes none.
        public let timestampPeriod: Double?
        /// The workgroup width of the kernels whose lanes work alone (element-wise kernels, and the CPU-shaped
        /// family): one SIMD vector of lanes on a CPU device (a narrower workgroup leaves lanes of every
        /// instruction idle), 64 on a GPU (two 32-lane warps; 8 left three quarters of every warp idle).
        public var laneWidth: Int { kind == .cpu ? max(8, subgroupSize) : 64 }
        public var description: String {
            "#\(index) \(name) (\(kind.rawValue)), maxStorageBufferRange \(maxStorageBufferRange >> 20) MiB, maxMemoryAllocationSize \(maxMemoryAllocationSize >> 20) MiB"
                + (kind == .cpu ? ", \(laneWidth) lanes per workgroup" : "")
        }
    }

    let instance: VkInstance
    /// The validation layer's messenger, when `KILN_VULKAN_VALIDATION=1`.
    private let messenger: VkDebugUtilsMessengerEXT?
    let physicalDevice: VkPhysicalDevice
    let device: VkDevice
    /// The one compute queue; reached only through `submit(_:fence:)`, which serializes it.
    private let queue: VkQueue
    let queueFamily: UInt32
    let commandPool: VkCommandPool
    /// Memory for what only the device touches once loaded (weights, KV pool, activations): device-local.
    let deviceMemoryType: UInt32
    /// Host-visible, coherent memory: what the host writes each step or reads back, and upload staging.
    let hostMemoryType: UInt32
    /// Whether `deviceMemoryType` is host-visible too on a device that is not a discrete GPU (lavapipe,
    /// integrated GPUs), so that device buffers are written in place instead of staged (`MemoryTypeChoice`).
    /// KILN_VULKAN_STAGING=1 stages anyway (tests).
    public let unifiedMemory: Bool
    public let info: Info
    /// What submissions share, under one lock: vkQueueSubmit needs its queue externally synchronized, and
    /// any command stream on any thread may submit.
    private struct QueueState {
        /// Set by the first VK_ERROR_DEVICE_LOST: a lost device stays lost, so every later submission (from
        /// any command stream) fails at once with the same error (the engine fails those requests with
        /// UNAVAILABLE; the process lives on).
        var lost: VulkanError?
        /// KILN_VULKAN_FAULT_DEVICE_LOST_AFTER=N: the submission after the N-th reports VK_ERROR_DEVICE_LOST,
        /// as a driver would after a GPU reset. For testing the failure path end to end; no real device can
        /// be made to lose itself on demand.
        var submissionsBeforeFault = ProcessInfo.processInfo.environment["KILN_VULKAN_FAULT_DEVICE_LOST_AFTER"].flatMap { Int($0) }
    }
    private let queueState = Mutex(QueueState())

    /// The device's loss, once it is lost.
    var lost: VulkanError? { queueState.withLock { $0.lost } }

    /// Records a loss seen outside a submission (a fence wait); the first one stays.
    func markLost(_ error: VulkanError) {
        queueState.withLock { if $0.lost == nil { $0.lost = error } }
    }

    /// Submits one command buffer to the queue, signalling `fence`; fails at once on a lost device.
    func submit(_ commandBuffer: VkCommandBuffer, fence: VkFence?) throws {
        try queueState.withLock { state in
            if let lost = state.lost { throw lost }
            if let n = state.submissionsBeforeFault {
                guard n > 0 else {
                    let lost = VulkanError("vkQueueSubmit", VK_ERROR_DEVICE_LOST)
                    state.lost = lost
                    throw lost
                }
                state.submissionsBeforeFault = n - 1
            }
            let buffers: [VkCommandBuffer?] = [commandBuffer]
            var submit = VkSubmitInfo()
            submit.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO
            submit.commandBufferCount = 1
            let result = buffers.withUnsafeBufferPointer { pointer -> VkResult in
                submit.pCommandBuffers = pointer.baseAddress
                return vkQueueSubmit(queue, 1, &submit, fence)
            }
            do { try check(result, "vkQueueSubmit") } catch let error as VulkanError where error.isDeviceLost {
                state.lost = error
                throw error
            }
        }
    }

    /// Sets the driver's environment (`LavapipeVectorWidth`) now. Opening a device does it too, but a process
    /// that starts threads first (the server's event loops) calls this before them: `setenv` is not safe while
    /// another thread reads the environment.
    public static func prepareDriverEnvironment() { LavapipeVectorWidth.configure() }

    /// Every physical device the loader reports (empty when there is no Vulkan driver at all).
    public static func available() throws -> [Info] {
        let instance = try makeInstance()
        defer { vkDestroyInstance(instance, nil) }
        return try physicalDevices(instance).enumerated().map { describe($1, index: $0) }
    }

    /// Opens device `index`, or the best one: discrete GPU, integrated GPU, then CPU (lavapipe).
    public init(index: Int? = nil) throws {
        let instance = try Self.makeInstance()
        // What is made so far, undone in reverse if a later step throws (nothing leaks from a failed open).
        var undo: [() -> Void] = [{ vkDestroyInstance(instance, nil) }]
        do {
            let messenger = VulkanValidation.requested ? try VulkanValidation.installMessenger(instance) : nil
            undo.append { VulkanValidation.removeMessenger(messenger, from: instance) }
            let devices = try Self.physicalDevices(instance)
            guard !devices.isEmpty else {
                throw VulkanError("vkEnumeratePhysicalDevices", message: "no Vulkan device (install mesa-vulkan-drivers for lavapipe)")
            }
            let infos = devices.enumerated().map { Self.describe($1, index: $0) }
            let rank: (Kind) -> Int = { [.discreteGPU: 0, .integratedGPU: 1, .cpu: 2][$0] ?? 3 }
            let chosen: Int
            if let index {
                guard index >= 0 && index < devices.count else {
                    throw VulkanError("device selection", message: "no Vulkan device #\(index) (there are \(devices.count))")
                }
                chosen = index
            } else {
                chosen = infos.indices.min { rank(infos[$0].kind) < rank(infos[$1].kind) } ?? 0
            }
            let physicalDevice = devices[chosen], info = infos[chosen]
            guard let queueFamily = info.computeQueueFamily else {
                throw VulkanError("queue selection", message: "\(info.name) has no compute queue")
            }
            let device = try Self.makeDevice(physicalDevice, queueFamily: UInt32(queueFamily))
            undo.append { vkDestroyDevice(device, nil) }
            var queue: VkQueue?
            vkGetDeviceQueue(device, UInt32(queueFamily), 0, &queue)
            guard let queue else { throw VulkanError("vkGetDeviceQueue", message: "\(info.name) returned no queue") }

            var poolInfo = VkCommandPoolCreateInfo()
            poolInfo.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO
            poolInfo.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT.rawValue
            poolInfo.queueFamilyIndex = UInt32(queueFamily)
            var pool: VkCommandPool?
            try check(vkCreateCommandPool(device, &poolInfo, nil, &pool), "vkCreateCommandPool")
            guard let pool else { throw VulkanError("vkCreateCommandPool", message: "no pool returned") }
            undo.append { vkDestroyCommandPool(device, pool, nil) }

            var memory = VkPhysicalDeviceMemoryProperties()
            vkGetPhysicalDeviceMemoryProperties(physicalDevice, &memory)
            let types = withUnsafeBytes(of: memory.memoryTypes) { Array($0.bindMemory(to: VkMemoryType.self).prefix(Int(memory.memoryTypeCount))) }
            let heaps = withUnsafeBytes(of: memory.memoryHeaps) { Array($0.bindMemory(to: VkMemoryHeap.self).prefix(Int(memory.memoryHeapCount))) }
            let choice = MemoryTypeChoice.choose(types.map { MemoryTypeChoice.MemoryType(flags: $0.propertyFlags, heapSize: heaps[Int($0.heapIndex)].size) },
                                                 kind: info.kind, forceStaging: ProcessInfo.processInfo.environment["KILN_VULKAN_STAGING"] == "1")
            guard let choice else {
                throw VulkanError("memory selection", message: "\(info.name) has no host-visible coherent memory")
            }
            // Nothing throws past this point: deinit owns everything from here on.
            self.instance = instance
            self.messenger = messenger
            self.physicalDevice = physicalDevice
            self.info = info
            self.queueFamily = UInt32(queueFamily)
            self.device = device
            self.queue = queue
            commandPool = pool
            hostMemoryType = UInt32(choice.hostType)
            deviceMemoryType = UInt32(choice.deviceType)
            unifiedMemory = choice.unified
        } catch {
            for step in undo.reversed() { step() }
            throw error
        }
    }

    /// A logical device with one queue of `queueFamily`.
    private static func makeDevice(_ physicalDevice: VkPhysicalDevice, queueFamily: UInt32) throws -> VkDevice {
        var priority: Float = 1
        var queueInfo = VkDeviceQueueCreateInfo()
        queueInfo.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO
        queueInfo.queueFamilyIndex = queueFamily
        queueInfo.queueCount = 1
        var device: VkDevice?
        let created = withUnsafePointer(to: &priority) { priorityPointer -> VkResult in
            queueInfo.pQueuePriorities = priorityPointer
            return withUnsafePointer(to: &queueInfo) { queuePointer in
                var createInfo = VkDeviceCreateInfo()
                createInfo.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO
                createInfo.queueCreateInfoCount = 1
                createInfo.pQueueCreateInfos = queuePointer
                return vkCreateDevice(physicalDevice, &createInfo, nil, &device)
            }
        }
        guard created == VK_SUCCESS, let device else { throw VulkanError("vkCreateDevice", created) }
        return device
    }

    deinit {
        vkDeviceWaitIdle(device)
        vkDestroyCommandPool(device, commandPool, nil)
        vkDestroyDevice(device, nil)
        VulkanValidation.removeMessenger(messenger, from: instance)
        vkDestroyInstance(instance, nil)
    }

    private static func makeInstance() throws -> VkInstance {
        LavapipeVectorWidth.configure()
        if VulkanValidation.requested && !VulkanValidation.layerInstalled() {
            throw VulkanError("validation", message: "KILN_VULKAN_VALIDATION=1 but \(VulkanValidation.layerName) is not installed (apt install vulkan-validationlayers)")
        }
        var app = VkApplicationInfo()
        app.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO
        app.apiVersion = (1 << 22) | (1 << 12)  // Vulkan 1.1
        var instance: VkInstance?
        let result = withUnsafePointer(to: &app) { appPointer -> VkResult in
            var info = VkInstanceCreateInfo()
            info.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO
            info.pApplicationInfo = appPointer
            guard VulkanValidation.requested else { return vkCreateInstance(&info, nil, &instance) }
            return (try? VulkanValidation.withLayer(&info) { vkCreateInstance(&$0, nil, &instance) }) ?? VK_ERROR_LAYER_NOT_PRESENT
        }
        guard result == VK_SUCCESS, let instance else { throw VulkanError("vkCreateInstance", result) }
        return instance
    }

    private static func physicalDevices(_ instance: VkInstance) throws -> [VkPhysicalDevice] {
        var count: UInt32 = 0
        try check(vkEnumeratePhysicalDevices(instance, &count, nil), "vkEnumeratePhysicalDevices")
        var devices = [VkPhysicalDevice?](repeating: nil, count: Int(count))
        try check(vkEnumeratePhysicalDevices(instance, &count, &devices), "vkEnumeratePhysicalDevices")
        return devices.compactMap { $0 }
    }

    private static func describe(_ device: VkPhysicalDevice, index: Int) -> Info {
        var properties = VkPhysicalDeviceProperties()
        vkGetPhysicalDeviceProperties(device, &properties)
        var maintenance3 = VkPhysicalDeviceMaintenance3Properties()
        maintenance3.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_3_PROPERTIES
        var subgroup = VkPhysicalDeviceSubgroupProperties()
        subgroup.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES
        var properties2 = VkPhysicalDeviceProperties2()
        properties2.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2
        withUnsafeMutablePointer(to: &subgroup) { subgroupPointer in
            maintenance3.pNext = UnsafeMutableRawPointer(subgroupPointer)
            withUnsafeMutablePointer(to: &maintenance3) { pointer in
                properties2.pNext = UnsafeMutableRawPointer(pointer)
                vkGetPhysicalDeviceProperties2(device, &properties2)
            }
        }
        var familyCount: UInt32 = 0
        vkGetPhysicalDeviceQueueFamilyProperties(device, &familyCount, nil)
        var families = [VkQueueFamilyProperties](repeating: VkQueueFamilyProperties(), count: Int(familyCount))
        vkGetPhysicalDeviceQueueFamilyProperties(device, &familyCount, &families)
        let compute = families.firstIndex { $0.queueFlags & VK_QUEUE_COMPUTE_BIT.rawValue != 0 }
        let ticks = compute.map { families[$0].timestampValidBits > 0 } ?? false
        let name = withUnsafeBytes(of: properties.deviceName) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
        let kind: Kind = switch properties.deviceType {
        case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: .discreteGPU
        case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: .integratedGPU
        case VK_PHYSICAL_DEVICE_TYPE_CPU: .cpu
        default: .other
        }
        return Info(index: index, name: name, kind: kind,
                    maxStorageBufferRange: Int(properties.limits.maxStorageBufferRange),
                    maxMemoryAllocationSize: Int(maintenance3.maxMemoryAllocationSize),
                    maxComputeWorkGroupCount: Int(properties.limits.maxComputeWorkGroupCount.0),
                    subgroupSize: Int(subgroup.subgroupSize), computeQueueFamily: compute,
                    timestampPeriod: ticks && properties.limits.timestampPeriod > 0 ? Double(properties.limits.timestampPeriod) : nil)
    }
}
