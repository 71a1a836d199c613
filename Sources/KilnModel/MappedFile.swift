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
        guard size > 0 else {
            bytes = UnsafeRawBufferPointer(start: nil, count: 0)
            return
        }
        guard let base = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), base != MAP_FAILED else {
            throw GGUFError(.cannotOpen(path: path, reason: "mmap: " + String(cString: strerror(errno))), offset: 0)
        }
        bytes = UnsafeRawBufferPointer(start: base, count: size)
    }

    deinit {
        if let base = bytes.baseAddress { munmap(UnsafeMutableRawPointer(mutating: base), bytes.count) }
    }
}
