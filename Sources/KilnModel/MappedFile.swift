#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A whole file mapped read-only into memory. Model files are hundreds of megabytes to many gigabytes:
/// mapping lets the kernel page in only what is touched, and opening costs the same for any size.
public final class MappedFile: @unchecked Sendable {
    // Immutable after init and never written through (PROT_READ), so sharing across threads is safe.
    public let path: String
    public let bytes: UnsafeRawBufferPointer
    private let isMapped: Bool

    /// Maps `path`; throws `GGUFError` naming the file when it cannot be opened or mapped.
    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw GGUFError(.cannotOpen(path: path, reason: String(cString: strerror(errno))), offset: 0)
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            throw GGUFError(.cannotOpen(path: path, reason: String(cString: strerror(errno))), offset: 0)
        }
        let size = Int(info.st_size)
        isMapped = size > 0
        guard size > 0 else {
            bytes = UnsafeRawBufferPointer(start: nil, count: 0)
            return
        }
        guard let base = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), base != MAP_FAILED else {
            throw GGUFError(.cannotOpen(path: path, reason: "mmap: " + String(cString: strerror(errno))), offset: 0)
        }
        bytes = UnsafeRawBufferPointer(start: base, count: size)
    }

    /// A copy of `contents` in memory, read like a file (for fuzzing and tests).
    public init(copying contents: [UInt8], path: String = "<memory>") {
        self.path = path
        isMapped = false
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(contents.count, 1), alignment: 64)
        buffer.copyBytes(from: contents)
        bytes = UnsafeRawBufferPointer(rebasing: buffer[..<contents.count])
    }

    deinit {
        guard let base = bytes.baseAddress else { return }
        if isMapped {
            munmap(UnsafeMutableRawPointer(mutating: base), bytes.count)
        } else {
            UnsafeMutableRawPointer(mutating: base).deallocate()
        }
    }
}
