/// What is wrong with a GGUF file, and where: every failure names the problem and the byte offset, so a
/// corrupt or hostile file is diagnosable and never a crash.
public struct GGUFError: Error, CustomStringConvertible, Equatable, Sendable {
    public enum Problem: Equatable, Sendable {
        case cannotOpen(path: String, reason: String)
        case badMagic(found: UInt32)
        case unsupportedVersion(UInt32)
        case truncated(needed: Int, available: Int, reading: String)
        case absurdCount(what: String, count: UInt64, limit: UInt64)
        case invalidString(what: String)
        case unknownValueType(UInt32, key: String)
        case duplicateKey(String)
        case duplicateTensor(String)
        case badAlignment(UInt64)
        case badTensorDimensions(tensor: String, dims: [UInt64])
        case unsupportedTensorType(tensor: String, type: UInt32)
        case misalignedTensor(tensor: String, offset: UInt64, alignment: Int)
        case tensorPastEnd(tensor: String, end: UInt64, fileSize: Int)
        case overlappingTensors(String, String)
        case rowNotWholeBlocks(tensor: String, rowLength: UInt64, blockSize: Int)
        case missingKey(String)
        case wrongKeyType(key: String, expected: String)
        case missingTensor(String)
        case wrongTensorShape(tensor: String, expected: [Int], found: [Int])
        case unsupportedArchitecture(String, supported: [String])
        case invalidValue(key: String, reason: String)
    }

    public let problem: Problem
    /// Byte offset in the file where the problem was found (0 when it concerns the file as a whole).
    public let offset: Int

    public init(_ problem: Problem, offset: Int) {
        self.problem = problem
        self.offset = offset
    }

    public var description: String {
        let what: String
        switch problem {
        case .cannotOpen(let path, let reason): return "cannot open \(path): \(reason)"
        case .badMagic(let found):
            what = "bad magic 0x\(String(found, radix: 16)) (a GGUF file starts with \"GGUF\")"
        case .unsupportedVersion(let v): what = "unsupported GGUF version \(v) (supported: 2, 3)"
        case .truncated(let needed, let available, let reading):
            what = "file truncated while reading \(reading): needs \(needed) bytes, \(available) left"
        case .absurdCount(let thing, let count, let limit):
            what = "absurd \(thing) \(count) (at most \(limit) fit in the file)"
        case .invalidString(let thing): what = "\(thing) is not valid UTF-8"
        case .unknownValueType(let t, let key): what = "unknown metadata value type \(t) for key \(key)"
        case .duplicateKey(let key): what = "duplicate metadata key \(key)"
        case .duplicateTensor(let name): what = "duplicate tensor \(name)"
        case .badAlignment(let a): what = "general.alignment \(a) is not a power of two"
        case .badTensorDimensions(let t, let dims): what = "tensor \(t) has invalid dimensions \(dims)"
        case .unsupportedTensorType(let t, let type):
            what = "tensor \(t) has unsupported type \(GGMLType.name(ofRawValue: type))"
        case .misalignedTensor(let t, let off, let a): what = "tensor \(t) data offset \(off) is not a multiple of \(a)"
        case .tensorPastEnd(let t, let end, let size): what = "tensor \(t) ends at \(end), past the end of the file (\(size) bytes)"
        case .overlappingTensors(let a, let b): what = "tensors \(a) and \(b) overlap"
        case .rowNotWholeBlocks(let t, let row, let block):
            what = "tensor \(t) row length \(row) is not a multiple of its block size \(block)"
        case .missingKey(let key): what = "missing metadata key \(key)"
        case .wrongKeyType(let key, let expected): what = "metadata key \(key) is not \(expected)"
        case .missingTensor(let name): what = "missing tensor \(name)"
        case .wrongTensorShape(let t, let expected, let found): what = "tensor \(t) has shape \(found), expected \(expected)"
        case .unsupportedArchitecture(let arch, let supported):
            what = "unsupported architecture \"\(arch)\" (supported: \(supported.joined(separator: ", ")))"
        case .invalidValue(let key, let reason): what = "invalid \(key): \(reason)"
        }
        return "GGUF: \(what) at offset \(offset)"
    }
}
