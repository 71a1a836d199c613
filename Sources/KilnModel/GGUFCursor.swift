/// Reads little-endian GGUF primitives from a byte range, checking every length against what is left:
/// a value that would run past the end is an error naming what was being read, never an out-of-bounds read.
struct GGUFCursor {
    let bytes: UnsafeRawBufferPointer
    private(set) var offset: Int = 0

    init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    var remaining: Int { bytes.count - offset }

    mutating func skip(_ count: Int, reading what: String) throws {
        try require(count, what)
        offset += count
    }

    private func require(_ count: Int, _ what: String) throws {
        guard count >= 0, count <= remaining else {
            throw GGUFError(.truncated(needed: count, available: remaining, reading: what), offset: offset)
        }
    }

    mutating func read<T: FixedWidthInteger>(_: T.Type, _ what: String) throws -> T {
        let size = MemoryLayout<T>.size
        try require(size, what)
        let value = bytes.loadUnaligned(fromByteOffset: offset, as: T.self)
        offset += size
        return T(littleEndian: value)
    }

    mutating func readFloat(_ what: String) throws -> Float { Float(bitPattern: try read(UInt32.self, what)) }
    mutating func readDouble(_ what: String) throws -> Double { Double(bitPattern: try read(UInt64.self, what)) }

    /// A count that will size an allocation: it must fit in the bytes left, each element taking at least
    /// `minimumBytes`, so a hostile count fails here instead of allocating gigabytes.
    mutating func readCount(_ what: String, minimumBytes: Int) throws -> Int {
        let start = offset
        let count = try read(UInt64.self, what)
        let limit = UInt64(remaining / max(minimumBytes, 1))
        guard count <= limit else {
            throw GGUFError(.absurdCount(what: what, count: count, limit: limit), offset: start)
        }
        return Int(count)
    }

    mutating func readString(_ what: String) throws -> String {
        let start = offset
        let length = try readCount("length of \(what)", minimumBytes: 1)
        let slice = UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + length])
        offset += length
        // GGUF strings are UTF-8; llama.cpp keeps the raw bytes, so invalid sequences are refused here
        // rather than silently altered by replacement characters.
        guard let string = String(validating: slice, as: UTF8.self) else {
            throw GGUFError(.invalidString(what: what), offset: start)
        }
        return string
    }
}
