import CVulkan
import Foundation
import Synchronization

/// The Khronos validation layer, on request (`KILN_VULKAN_VALIDATION=1`): every instance Kiln creates
/// enables `VK_LAYER_KHRONOS_validation` and a debug-utils messenger that prints each error and warning to
/// stderr and counts them. `report` summarizes; a test runs the decoder this way and expects no errors.
public enum VulkanValidation {
    static let layerName = "VK_LAYER_KHRONOS_validation"
    public static let requested = ProcessInfo.processInfo.environment["KILN_VULKAN_VALIDATION"] == "1"
    static let errors = Atomic<Int>(0)
    static let warnings = Atomic<Int>(0)

    /// "vulkan validation: E errors, W warnings".
    public static var report: String {
        "vulkan validation: \(errors.load(ordering: .relaxed)) errors, \(warnings.load(ordering: .relaxed)) warnings"
    }

    static func layerInstalled() -> Bool {
        var count: UInt32 = 0
        guard vkEnumerateInstanceLayerProperties(&count, nil) == VK_SUCCESS else { return false }
        var layers = [VkLayerProperties](repeating: VkLayerProperties(), count: Int(count))
        guard vkEnumerateInstanceLayerProperties(&count, &layers) == VK_SUCCESS else { return false }
        return layers.contains { layer in
            withUnsafeBytes(of: layer.layerName) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) } == layerName
        }
    }

    /// Fills `info`'s layer and extension lists (pointers valid inside `body`) and calls `body`.
    static func withLayer<R>(_ info: inout VkInstanceCreateInfo, _ body: (inout VkInstanceCreateInfo) -> R) throws -> R {
        guard layerInstalled() else {
            throw VulkanError("validation", message: "KILN_VULKAN_VALIDATION=1 but \(layerName) is not installed (apt install vulkan-validationlayers)")
        }
        let layer = strdup(layerName), extensionName = strdup("VK_EXT_debug_utils")
        defer { free(layer); free(extensionName) }
        var layers: [UnsafePointer<CChar>?] = [UnsafePointer(layer)]
        var extensions: [UnsafePointer<CChar>?] = [UnsafePointer(extensionName)]
        return layers.withUnsafeMutableBufferPointer { l in
            extensions.withUnsafeMutableBufferPointer { e in
                info.enabledLayerCount = 1
                info.ppEnabledLayerNames = UnsafePointer(l.baseAddress)
                info.enabledExtensionCount = 1
                info.ppEnabledExtensionNames = UnsafePointer(e.baseAddress)
                return body(&info)
            }
        }
    }

    /// Prints `report` when the process exits (registered with the first messenger).
    private static let reportAtExit: Void = { atexit { FileHandle.standardError.write(Data((VulkanValidation.report + "\n").utf8)) } }()

    /// A messenger reporting errors and warnings for `instance`'s lifetime.
    static func installMessenger(_ instance: VkInstance) throws -> VkDebugUtilsMessengerEXT? {
        _ = reportAtExit
        guard let create = vkGetInstanceProcAddr(instance, "vkCreateDebugUtilsMessengerEXT") else {
            throw VulkanError("validation", message: "vkCreateDebugUtilsMessengerEXT is missing")
        }
        let createMessenger = unsafeBitCast(create, to: PFN_vkCreateDebugUtilsMessengerEXT.self)
        var info = VkDebugUtilsMessengerCreateInfoEXT()
        info.sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT
        info.messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT.rawValue | VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT.rawValue
        info.messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT.rawValue | VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT.rawValue
            | VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT.rawValue
        info.pfnUserCallback = { severity, _, data, _ in
            let message = data.flatMap { $0.pointee.pMessage.map { String(cString: $0) } } ?? "(no message)"
            let isError = severity.rawValue & VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT.rawValue != 0
            if isError { VulkanValidation.errors.add(1, ordering: .relaxed) } else { VulkanValidation.warnings.add(1, ordering: .relaxed) }
            FileHandle.standardError.write(Data("kiln: vulkan validation \(isError ? "error" : "warning"): \(message)\n".utf8))
            return VkBool32(VK_FALSE)
        }
        var messenger: VkDebugUtilsMessengerEXT?
        let result = createMessenger(instance, &info, nil, &messenger)
        guard result == VK_SUCCESS else { throw VulkanError("vkCreateDebugUtilsMessengerEXT", result) }
        return messenger
    }

    static func removeMessenger(_ messenger: VkDebugUtilsMessengerEXT?, from instance: VkInstance) {
        guard let messenger, let destroy = vkGetInstanceProcAddr(instance, "vkDestroyDebugUtilsMessengerEXT") else { return }
        unsafeBitCast(destroy, to: PFN_vkDestroyDebugUtilsMessengerEXT.self)(instance, messenger, nil)
    }
}
