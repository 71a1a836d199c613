/// Puts bytes the host computes (weights, tables) into buffers of `arena`: in place when the arena is mapped,
/// else through host-visible staging buffers that `finish()` copies on the device and then releases.
final class Upload {
    let arena: MemoryArena
    private var staging: MemoryArena?
    private var copies: [(from: DeviceBuffer, to: DeviceBuffer)] = []

    init(arena: MemoryArena) { self.arena = arena }

    /// A zero-filled buffer of `arena`, and where the host writes its bytes before `finish()`.
    func buffer(_ size: Int, label: String) throws -> (buffer: DeviceBuffer, bytes: UnsafeMutableRawPointer) {
        let target = try arena.buffer(size, label: label)
        if let mapped = target.mapped { return (target, mapped) }
        if staging == nil { staging = MemoryArena(device: arena.device, chunkSize: 64 << 20, placement: .host) }
        guard let staging else { preconditionFailure("staging arena") }
        let source = try staging.buffer(size, label: label + ".staging")
        copies.append((source, target))
        return (target, source.contents)
    }

    /// Copies every staged buffer to its target and waits; the staging memory is freed.
    func finish() throws {
        guard !copies.isEmpty else { return }
        let stream = try CommandStream(device: arena.device)
        try stream.begin()
        for (from, to) in copies { stream.copy(from: from, at: 0, to: to, at: 0, bytes: min(from.size, to.size)) }
        stream.barrier()
        try stream.submitAndWait()
        copies = []
        staging = nil
    }
}
