import CVulkan

/// A failed Vulkan call, by name: the engine turns `.deviceLost` into UNAVAILABLE for that replica's
/// requests instead of taking the process down.
public struct VulkanError: Error, CustomStringConvertible, Sendable {
    public let operation: String
    public let result: Int32

    public var isDeviceLost: Bool { result == VK_ERROR_DEVICE_LOST.rawValue }
    public var isOutOfMemory: Bool {
        result == VK_ERROR_OUT_OF_DEVICE_MEMORY.rawValue || result == VK_ERROR_OUT_OF_HOST_MEMORY.rawValue
    }

    public init(_ operation: String, _ result: VkResult) {
        self.operation = operation
        self.result = result.rawValue
    }

    public init(_ operation: String, message: String) {
        self.operation = operation + ": " + message
        self.result = 0
    }

    public var description: String {
        result == 0 ? "Vulkan: \(operation)" : "Vulkan: \(operation) failed with \(Self.name(result))"
    }

    static func name(_ code: Int32) -> String {
        switch code {
        case VK_ERROR_OUT_OF_HOST_MEMORY.rawValue: return "VK_ERROR_OUT_OF_HOST_MEMORY"
        case VK_ERROR_OUT_OF_DEVICE_MEMORY.rawValue: return "VK_ERROR_OUT_OF_DEVICE_MEMORY"
        case VK_ERROR_INITIALIZATION_FAILED.rawValue: return "VK_ERROR_INITIALIZATION_FAILED"
        case VK_ERROR_DEVICE_LOST.rawValue: return "VK_ERROR_DEVICE_LOST"
        case VK_ERROR_MEMORY_MAP_FAILED.rawValue: return "VK_ERROR_MEMORY_MAP_FAILED"
        case VK_ERROR_LAYER_NOT_PRESENT.rawValue: return "VK_ERROR_LAYER_NOT_PRESENT"
        case VK_ERROR_EXTENSION_NOT_PRESENT.rawValue: return "VK_ERROR_EXTENSION_NOT_PRESENT"
        case VK_ERROR_FEATURE_NOT_PRESENT.rawValue: return "VK_ERROR_FEATURE_NOT_PRESENT"
        case VK_ERROR_INCOMPATIBLE_DRIVER.rawValue: return "VK_ERROR_INCOMPATIBLE_DRIVER (no Vulkan driver found)"
        case VK_ERROR_TOO_MANY_OBJECTS.rawValue: return "VK_ERROR_TOO_MANY_OBJECTS"
        case VK_TIMEOUT.rawValue: return "VK_TIMEOUT"
        default: return "VkResult \(code)"
        }
    }
}

/// Throws a `VulkanError` unless `result` is VK_SUCCESS.
@inline(__always)
func check(_ result: VkResult, _ operation: @autoclosure () -> String) throws {
    guard result == VK_SUCCESS else { throw VulkanError(operation(), result) }
}
