/// One tensor's description in a GGUF file; its data lives in the mapping.
public struct GGUFTensorInfo: Sendable {
    public let name: String
    /// ggml order: `dimensions[0]` is the row length (the contiguous axis).
    public let dimensions: [Int]
    public let type: GGMLType
    /// Offset of the data from the start of the file.
    public let fileOffset: Int
    public let byteCount: Int

    public var elementCount: Int { dimensions.reduce(1, *) }
    public var rowLength: Int { dimensions[0] }
    public var rowCount: Int { elementCount / rowLength }
}

/// A GGUF file (versions 2 and 3): metadata, tensor table and the memory-mapped tensor data. Opening
/// reads only the header; tensor bytes are paged in by the kernel when first touched.
public final class GGUFFile: Sendable {
    public let version: UInt32
    public let metadata: [String: GGUFValue]
    /// Keys in file order (for display).
    public let metadataKeys: [String]
    public let tensors: [GGUFTensorInfo]
    public let alignment: Int
    public let dataOffset: Int
    public let file: MappedFile
    private let tensorIndex: [String: Int]

    /// Metadata arrays may nest; deeper than this is not a model file.
    static let maximumArrayDepth = 4
    /// All array elements of a file together: real vocabularies need about 1M, this bounds a hostile file's
    /// metadata to ~100 MB of memory.
    static let maximumArrayElements = 4 << 20
    static let maximumDimensions = 4

    public convenience init(path: String) throws {
        try self.init(file: MappedFile(path: path))
    }

    public init(file: MappedFile) throws {
        self.file = file
        var cursor = GGUFCursor(file.bytes)
        let magic = try cursor.read(UInt32.self, "magic")
        guard magic == 0x4655_4747 else { throw GGUFError(.badMagic(found: magic), offset: 0) }
        version = try cursor.read(UInt32.self, "version")
        guard version == 2 || version == 3 else { throw GGUFError(.unsupportedVersion(version), offset: 4) }
        // Each tensor info takes at least 8 (name length) + 4 (dims) + 8 (a dim) + 4 (type) + 8 (offset).
        let tensorCount = try cursor.read(UInt64.self, "tensor count")
        let keyCount = try cursor.read(UInt64.self, "metadata key count")
        guard tensorCount <= UInt64(cursor.remaining / 32) else {
            throw GGUFError(.absurdCount(what: "tensor count", count: tensorCount, limit: UInt64(cursor.remaining / 32)), offset: 8)
        }
        guard keyCount <= UInt64(cursor.remaining / 13) else {
            throw GGUFError(.absurdCount(what: "metadata key count", count: keyCount, limit: UInt64(cursor.remaining / 13)), offset: 16)
        }

        var metadata: [String: GGUFValue] = [:]
        var keys: [String] = []
        var elementBudget = Self.maximumArrayElements
        for _ in 0..<Int(keyCount) {
            let keyOffset = cursor.offset
            let key = try cursor.readString("metadata key")
            let rawType = try cursor.read(UInt32.self, "type of \(key)")
            guard let type = GGUFValueType(rawValue: rawType) else {
                throw GGUFError(.unknownValueType(rawType, key: key), offset: cursor.offset - 4)
            }
            let value = try Self.readValue(type, key: key, depth: 0, cursor: &cursor, budget: &elementBudget)
            guard metadata.updateValue(value, forKey: key) == nil else {
                throw GGUFError(.duplicateKey(key), offset: keyOffset)
            }
            keys.append(key)
        }
        self.metadata = metadata
        metadataKeys = keys

        var alignment = 32
        if let value = metadata["general.alignment"] {
            guard let a = value.integer, a > 0, a & (a - 1) == 0, a <= 1 << 20 else {
                throw GGUFError(.badAlignment(UInt64(truncatingIfNeeded: value.integer ?? 0)), offset: 0)
            }
            alignment = a
        }
        self.alignment = alignment

        struct RawTensor { let name: String; let dims: [Int]; let type: GGMLType; let offset: UInt64; let at: Int }
        var raw: [RawTensor] = []
        var seen: Set<String> = []
        for _ in 0..<Int(tensorCount) {
            let at = cursor.offset
            let name = try cursor.readString("tensor name")
            guard seen.insert(name).inserted else { throw GGUFError(.duplicateTensor(name), offset: at) }
            let dimCount = try cursor.read(UInt32.self, "dimension count of \(name)")
            var dims: [UInt64] = []
            if dimCount >= 1 && dimCount <= UInt32(Self.maximumDimensions) {
                for _ in 0..<dimCount { dims.append(try cursor.read(UInt64.self, "dimensions of \(name)")) }
            }
            // Every dimension positive and the element count far from overflowing.
            var product: UInt64 = 1
            var valid = !dims.isEmpty
            for d in dims {
                let (p, overflow) = product.multipliedReportingOverflow(by: d)
                if d == 0 || overflow || p > 1 << 48 { valid = false; break }
                product = p
            }
            guard valid else { throw GGUFError(.badTensorDimensions(tensor: name, dims: dims), offset: at) }
            let rawType = try cursor.read(UInt32.self, "type of \(name)")
            guard let type = GGMLType(rawValue: rawType) else {
                throw GGUFError(.unsupportedTensorType(tensor: name, type: rawType), offset: cursor.offset - 4)
            }
            guard dims[0] % UInt64(type.blockSize) == 0 else {
                throw GGUFError(.rowNotWholeBlocks(tensor: name, rowLength: dims[0], blockSize: type.blockSize), offset: at)
            }
            let offset = try cursor.read(UInt64.self, "data offset of \(name)")
            guard offset % UInt64(alignment) == 0 else {
                throw GGUFError(.misalignedTensor(tensor: name, offset: offset, alignment: alignment), offset: cursor.offset - 8)
            }
            raw.append(RawTensor(name: name, dims: dims.map { Int($0) }, type: type, offset: offset, at: at))
        }

        let dataOffset = (cursor.offset + alignment - 1) / alignment * alignment
        self.dataOffset = dataOffset
        let fileSize = file.bytes.count
        var infos: [GGUFTensorInfo] = []
        infos.reserveCapacity(raw.count)
        for t in raw {
            let elements = t.dims.reduce(1, *)
            let bytes = t.type.byteCount(elements: elements)
            let (start, overflow) = UInt64(dataOffset).addingReportingOverflow(t.offset)
            let end = start &+ UInt64(bytes)
            guard !overflow, end >= start, end <= UInt64(fileSize) else {
                throw GGUFError(.tensorPastEnd(tensor: t.name, end: overflow ? .max : end, fileSize: fileSize), offset: t.at)
            }
            infos.append(GGUFTensorInfo(name: t.name, dimensions: t.dims, type: t.type, fileOffset: Int(start), byteCount: bytes))
        }
        let byStart = infos.indices.sorted { infos[$0].fileOffset < infos[$1].fileOffset }
        for (a, b) in zip(byStart, byStart.dropFirst()) where infos[a].fileOffset + infos[a].byteCount > infos[b].fileOffset {
            throw GGUFError(.overlappingTensors(infos[a].name, infos[b].name), offset: raw[b].at)
        }
        tensors = infos
        tensorIndex = Dictionary(uniqueKeysWithValues: infos.enumerated().map { ($1.name, $0) })
    }

    private static func readValue(_ type: GGUFValueType, key: String, depth: Int, cursor: inout GGUFCursor,
                                  budget: inout Int) throws -> GGUFValue {
        switch type {
        case .uint8: return .uint8(try cursor.read(UInt8.self, key))
        case .int8: return .int8(try cursor.read(Int8.self, key))
        case .uint16: return .uint16(try cursor.read(UInt16.self, key))
        case .int16: return .int16(try cursor.read(Int16.self, key))
        case .uint32: return .uint32(try cursor.read(UInt32.self, key))
        case .int32: return .int32(try cursor.read(Int32.self, key))
        case .uint64: return .uint64(try cursor.read(UInt64.self, key))
        case .int64: return .int64(try cursor.read(Int64.self, key))
        case .float32: return .float32(try cursor.readFloat(key))
        case .float64: return .float64(try cursor.readDouble(key))
        case .bool:
            let at = cursor.offset
            let b = try cursor.read(UInt8.self, key)
            guard b <= 1 else { throw GGUFError(.invalidValue(key: key, reason: "bool byte \(b)"), offset: at) }
            return .bool(b == 1)
        case .string: return .string(try cursor.readString(key))
        case .array:
            let at = cursor.offset
            let rawType = try cursor.read(UInt32.self, "element type of \(key)")
            guard let elementType = GGUFValueType(rawValue: rawType) else {
                throw GGUFError(.unknownValueType(rawType, key: key), offset: at)
            }
            guard depth < maximumArrayDepth || elementType != .array else {
                throw GGUFError(.invalidValue(key: key, reason: "arrays nested deeper than \(maximumArrayDepth)"), offset: at)
            }
            let countAt = cursor.offset
            let count = try cursor.readCount("element count of \(key)", minimumBytes: elementType.minimumBytes)
            guard count <= budget else {
                throw GGUFError(.absurdCount(what: "array elements in metadata", count: UInt64(count), limit: UInt64(budget)), offset: countAt)
            }
            budget -= count
            var items: [GGUFValue] = []
            items.reserveCapacity(count)
            for _ in 0..<count {
                items.append(try readValue(elementType, key: key, depth: depth + 1, cursor: &cursor, budget: &budget))
            }
            return .array(elementType, items)
        }
    }

    /// The tensor called `name`, if the file has one.
    public func tensor(_ name: String) -> GGUFTensorInfo? { tensorIndex[name].map { tensors[$0] } }

    /// The tensor called `name`, which must exist with exactly `dimensions` (ggml's order: row length first).
    public func tensor(_ name: String, dimensions: [Int]) throws -> GGUFTensorInfo {
        guard let info = tensor(name) else { throw GGUFError(.missingTensor(name), offset: 0) }
        guard info.dimensions == dimensions else {
            throw GGUFError(.wrongTensorShape(tensor: name, expected: dimensions, found: info.dimensions), offset: 0)
        }
        return info
    }

    /// The vector tensor `name` of `count` values, dequantized to float32.
    public func floats(_ name: String, count: Int) throws -> [Float] {
        let info = try tensor(name, dimensions: [count])
        return Dequantize.array(info.type, data(of: info), count: count)
    }

    /// Like `floats`, or nil when the file has no such tensor (optional biases).
    public func optionalFloats(_ name: String, count: Int) throws -> [Float]? {
        tensor(name) == nil ? nil : try floats(name, count: count)
    }

    /// The raw bytes of a tensor, inside the mapping.
    public func data(of tensor: GGUFTensorInfo) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: file.bytes[tensor.fileOffset..<tensor.fileOffset + tensor.byteCount])
    }

    // MARK: typed metadata access

    public func string(_ key: String) throws -> String {
        guard let value = metadata[key] else { throw GGUFError(.missingKey(key), offset: 0) }
        guard let s = value.string else { throw GGUFError(.wrongKeyType(key: key, expected: "a string"), offset: 0) }
        return s
    }

    public func integer(_ key: String) throws -> Int {
        guard let value = metadata[key] else { throw GGUFError(.missingKey(key), offset: 0) }
        guard let i = value.integer else { throw GGUFError(.wrongKeyType(key: key, expected: "an integer"), offset: 0) }
        return i
    }

    public func double(_ key: String) throws -> Double {
        guard let value = metadata[key] else { throw GGUFError(.missingKey(key), offset: 0) }
        guard let d = value.double else { throw GGUFError(.wrongKeyType(key: key, expected: "a number"), offset: 0) }
        return d
    }

    /// An optional key: nil when absent, an error when present with the wrong type.
    public func optionalInteger(_ key: String) throws -> Int? { metadata[key] == nil ? nil : try integer(key) }
    public func optionalDouble(_ key: String) throws -> Double? { metadata[key] == nil ? nil : try double(key) }
    public func optionalBool(_ key: String) throws -> Bool? {
        guard let value = metadata[key] else { return nil }
        guard let b = value.bool else { throw GGUFError(.wrongKeyType(key: key, expected: "a bool"), offset: 0) }
        return b
    }
}
