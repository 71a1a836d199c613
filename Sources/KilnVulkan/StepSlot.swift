import CVulkan

/// What one step in flight owns: a command buffer and fence, the small tables the host writes for the step
/// (its tokens, positions, sequence indices, block tables, logit rows), and where its greedy picks are
/// copied for the host to read.
///
/// The kernels read one shared copy of the tables; each step's command buffer starts by copying its slot's
/// tables there. With two slots the host fills one and submits its step while the other's step still runs
/// (the queue runs steps in order, and the copy waits for the earlier step's reads).
final class StepSlot {
    let stream: CommandStream
    let tokens, positions, sequences, blockTables, rows: DeviceBuffer
    /// The step's greedy picks (one 32-bit id per logit row), copied from the device's pick buffer.
    let picks: DeviceBuffer
    /// The step submitted from this slot and not yet waited for: its serial, and its logit-row count when
    /// its picks are copied to `picks`.
    var inFlight: (serial: Int, picks: Int?)?

    init(device: VulkanDevice, hostArena: MemoryArena, index: Int, maxTokens: Int, tableWords: Int, maxLogitRows: Int) throws {
        stream = try CommandStream(device: device)
        tokens = try hostArena.buffer(maxTokens * 4, label: "tokens.\(index)")
        positions = try hostArena.buffer(maxTokens * 4, label: "positions.\(index)")
        sequences = try hostArena.buffer(maxTokens * 4, label: "sequences.\(index)")
        blockTables = try hostArena.buffer(tableWords * 4, label: "block_tables.\(index)")
        rows = try hostArena.buffer(maxLogitRows * 4, label: "logit_rows.\(index)")
        picks = try hostArena.buffer(maxLogitRows * 4, label: "picks.\(index)")
    }
}
