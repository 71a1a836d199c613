import CVulkan
import Foundation

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
    private var messenger: VkDebugUtilsMessengerEXT?
    let physicalDevice: VkPhysicalDevice
    let device: VkDevice
    let queue: VkQueue
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
    /// Nanoseconds per tick of the compute queue's timestamps; nil where that queue writes none.
    let timestampPeriod: Double?
    /// Set by the first VK_ERROR_DEVICE_LOST: a lost device stays lost, so every later submission (from any
    /// command stream) fails at once with the same error (the engine fails those requests with
    /// UNAVAILABLE; the process lives on). Touched only by the thread that submits.
    var lost: VulkanError?
    /// KILN_VULKAN_FAULT_DEVICE_LOST_AFTER=N: the submission after the N-th reports VK_ERROR_DEVICE_LOST, as a
    /// driver would after a GPU reset. For testing the failure path end to end; no real device can be made
    /// to lose itself on demand.
    var submissionsBeforeFault = ProcessInfo.processInfo.environment["KILN_VULKAN_FAULT_DEVICE_LOST_AFTER"].flatMap { Int($0) }

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
        instance = try Self.makeInstance()
        if VulkanValidation.requested {
            do {
                messenger = try VulkanValidation.installMessenger(instance)
            } catch {
                vkDestroyInstance(instance, nil)
                throw error
            }
        }
        let devices = try Self.physicalDevices(instance)
        guard !devices.isEmpty else {
            vkDestroyInstance(instance, nil)
            throw VulkanError("vkEnumeratePhysicalDevices", message: "no Vulkan device (install mesa-vulkan-drivers for lavapipe)")
        }
        let infos = devices.enumerated().map { Self.describe($1, index: $0) }
        let rank: (Kind) -> Int = { [.discreteGPU: 0, .integratedGPU: 1, .cpu: 2][$0] ?? 3 }
        let chosen: Int
        if let index {
            guard index >= 0 && index < devices.count else {
                vkDestroyInstance(instance, nil)
                throw VulkanError("device selection", message: "no Vulkan device #\(index) (there are \(devices.count))")
            }
            chosen = index
        } else {
            chosen = infos.indices.min { rank(infos[$0].kind) < rank(infos[$1].kind) } ?? 0
        }
        let physicalDevice = devices[chosen]
        self.physicalDevice = physicalDevice
        info = infos[chosen]

        var familyCount: UInt32 = 0
        vkGetPhysicalDeviceQueueFamilyProperties(physicalDevice, &familyCount, nil)
        var families = [VkQueueFamilyProperties](repeating: VkQueueFamilyProperties(), count: Int(familyCount))
        vkGetPhysicalDeviceQueueFamilyProperties(physicalDevice, &familyCount, &families)
        guard let family = families.firstIndex(where: { $0.queueFlags & VK_QUEUE_COMPUTE_BIT.rawValue != 0 }) else {
            vkDestroyInstance(instance, nil)
            throw VulkanError("queue selection", message: "\(info.name) has no compute queue")
        }
        queueFamily = UInt32(family)
        var limits = VkPhysicalDeviceProperties()
        vkGetPhysicalDeviceProperties(physicalDevice, &limits)
        timestampPeriod = families[family].timestampValidBits > 0 && limits.limits.timestampPeriod > 0 ? Double(limits.limits.timestampPeriod) : nil

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
        guard created == VK_SUCCESS, let device else {
            vkDestroyInstance(instance, nil)
            throw VulkanError("vkCreateDevice", created)
        }
        self.device = device
        var queue: VkQueue?
        vkGetDeviceQueue(device, queueFamily, 0, &queue)
        self.queue = queue!

        var poolInfo = VkCommandPoolCreateInfo()
        poolInfo.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO
        poolInfo.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT.rawValue
        poolInfo.queueFamilyIndex = queueFamily
        var pool: VkCommandPool?
        try check(vkCreateCommandPool(device, &poolInfo, nil, &pool), "vkCreateCommandPool")
        commandPool = pool!

        var memory = VkPhysicalDeviceMemoryProperties()
        vkGetPhysicalDeviceMemoryProperties(physicalDevice, &memory)
        let types = withUnsafeBytes(of: memory.memoryTypes) { Array($0.bindMemory(to: VkMemoryType.self).prefix(Int(memory.memoryTypeCount))) }
        let heaps = withUnsafeBytes(of: memory.memoryHeaps) { Array($0.bindMemory(to: VkMemoryHeap.self).prefix(Int(memory.memoryHeapCount))) }
        let choice = MemoryTypeChoice.choose(types.map { MemoryTypeChoice.MemoryType(flags: $0.propertyFlags, heapSize: heaps[Int($0.heapIndex)].size) },
                                             kind: info.kind, forceStaging: ProcessInfo.processInfo.environment["KILN_VULKAN_STAGING"] == "1")
        guard let choice else {
            throw VulkanError("memory selection", message: "\(info.name) has no host-visible coherent memory")
        }
        hostMemoryType = UInt32(choice.hostType)
        deviceMemoryType = UInt32(choice.deviceType)
        unifiedMemory = choice.unified
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
                    subgroupSize: Int(subgroup.subgroupSize))
    }
}
