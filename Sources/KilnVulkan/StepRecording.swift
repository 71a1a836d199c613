import CVulkan
import Foundation
import KilnModel

/// Recording a step: the tables written into a slot, every dispatch of the forward pass recorded into the
/// slot's command buffer with the barriers between dependent dispatches, then one submission.
extension VulkanDecoder {
    /// Records y (+)= W · x for `columns` columns, choosing the kernel variant by the column count: one
    /// dispatch per slice of W (`sets` holds a slice's set each), writing disjoint rows of y.
    /// With the SwiGLU epilogue, y holds half as many values per column as W has rows. `role` says which
    /// side of a folded RMSNorm the matrix is on (see `foldsNorm`); it is ignored where the norm is not folded.
    func matmul(_ stream: CommandStream, _ m: DeviceMatrix, _ sets: [VkDescriptorSetHandle], columns: Int, accumulate: Bool,
                epilogue: Kernels.MatmulEpilogue = .store, role: NormRole = .none) throws {
        precondition(!accumulate || epilogue == .store, "the SwiGLU and QKV epilogues store; they do not add")
        let c = config
        var flags: Kernels.MatmulFlags = accumulate ? [.accumulate] : []
        if foldsNorm { flags.formUnion(role == .reads ? [.normIn] : role == .writes ? [.normOut] : []) }
        if epilogue == .qkv && kvCache == .f16 { flags.insert(.kvFloat16) }
        for (slice, set) in zip(m.slices, sets) {
            let (kernel, items) = try kernels.matmul(for: m.format, columns: columns, rows: slice.rows, epilogue: epilogue)
            let yStride = epilogue == .swiglu ? m.rows / 2 : m.rows
            var parameters = Kernels.MatmulParameters(K: UInt32(m.columns), N: UInt32(slice.rows), B: UInt32(columns), xStride: UInt32(m.columns),
                                                      yStride: UInt32(yStride), flags: flags.rawValue, rowOffset: UInt32(slice.rowStart), epsilon: c.rmsEpsilon)
            if epilogue == .qkv {
                parameters.headDim = UInt32(c.headDimension); parameters.qWidth = UInt32(c.headCount * c.headDimension)
                parameters.kvWidth = UInt32(c.kvHeadCount * c.headDimension); parameters.ropeDim = UInt32(c.ropeDimension)
                parameters.blockSize = UInt32(blockSize); parameters.maxBlocks = UInt32(maxBlocksPerSequence)
            }
            stream.dispatch(kernel, set.set, parameters, items: items)
        }
    }

    /// A matrix's side of a folded RMSNorm: it reads the norm's output (QKV, gate|up, the vocabulary
    /// projection), or writes the residual stream the next norm reads (output and down projections).
    enum NormRole { case none, reads, writes }

    /// Runs a step whose results the host reads from shared buffers (logits, candidates) and waits for it.
    func run(_ batch: DecodeBatch, output: Output, feeds: [TokenFeed]) throws {
        let step = try submit(batch, output: output, feeds: feeds)
        try retire(slots[step.serial % slots.count])
    }

    /// Waits for the step in flight from `slot`, if any; its picks, when it had them, wait in `unread`.
    func retire(_ slot: StepSlot) throws {
        guard let (serial, picks) = slot.inFlight else { return }
        slot.inFlight = nil
        try slot.stream.wait()
        if let picks {
            let ids = slot.picks.contents.assumingMemoryBound(to: UInt32.self)
            unread[serial] = (0..<picks).map { Int(ids[$0]) }
        }
    }

    /// Writes the step's tables into the next slot, records the step and submits it without waiting.
    func submit(_ batch: DecodeBatch, output: Output, feeds: [TokenFeed]) throws -> SubmittedStep {
        let c = config
        let n = batch.tokens.count, rows = batch.logitRows.count
        guard n > 0, n <= maxTokens, rows <= maxLogitRows, batch.blockTables.count <= maxSequences,
              batch.positions.count == n, batch.sequences.count == n else {
            throw VulkanError("step", message: "batch of \(n) tokens, \(rows) logit rows, \(batch.blockTables.count) sequences is outside the decoder's limits")
        }
        // Fed tokens are the picks of the step submitted just before, which must have left them in `chosen`.
        var fed = [Bool](repeating: false, count: n)
        for feed in feeds {
            guard let latest = latestSubmission, latest.serial == submitted - 1, let picks = latest.devicePicks,
                  feed.previousRow >= 0, feed.previousRow < picks, feed.token >= 0, feed.token < n, !fed[feed.token] else {
                throw VulkanError("step", message: "token feed \(feed) names no pick of the step submitted just before")
            }
            fed[feed.token] = true
        }
        let slot = slots[submitted % slots.count]
        try retire(slot)
        // Upload the step's small tables; everything else is already on the device.
        let tokens = slot.tokens.contents.assumingMemoryBound(to: UInt32.self)
        let positions = slot.positions.contents.assumingMemoryBound(to: UInt32.self)
        let sequences = slot.sequences.contents.assumingMemoryBound(to: UInt32.self)
        for i in 0..<n {
            guard fed[i] || (batch.tokens[i] >= 0 && batch.tokens[i] < c.vocabularySize), batch.positions[i] >= 0, batch.positions[i] < c.contextLength,
                  batch.sequences[i] >= 0, batch.sequences[i] < batch.blockTables.count,
                  batch.positions[i] / blockSize < batch.blockTables[batch.sequences[i]].count else {
                throw VulkanError("step", message: "token \(i) has an id, position or block table out of range")
            }
            tokens[i] = fed[i] ? 0 : UInt32(batch.tokens[i]); positions[i] = UInt32(batch.positions[i]); sequences[i] = UInt32(batch.sequences[i])
        }
        let tables = slot.blockTables.contents.assumingMemoryBound(to: UInt32.self)
        for (s, table) in batch.blockTables.enumerated() {
            guard table.count <= maxBlocksPerSequence, table.allSatisfy({ $0 >= 0 && $0 < blockCount }) else {
                throw VulkanError("step", message: "block table \(s) is out of range")
            }
            for (i, block) in table.enumerated() { tables[s * maxBlocksPerSequence + i] = UInt32(block) }
        }
        let rowIndex = slot.rows.contents.assumingMemoryBound(to: UInt32.self)
        for (i, r) in batch.logitRows.enumerated() {
            guard r >= 0 && r < n else { throw VulkanError("step", message: "logit row \(r) is not a token of the step") }
            rowIndex[i] = UInt32(r)
        }

        let stream = slot.stream
        try stream.begin()
        // The tables into the buffers the kernels read, after the previous step's last reads of them (the
        // barrier orders this command buffer after everything submitted before it); then the fed picks,
        // over the tokens' placeholders, from where the previous step's argmax left them.
        stream.barrier()
        stream.copy(from: slot.tokens, at: 0, to: tokensBuffer, at: 0, bytes: n * 4)
        stream.copy(from: slot.positions, at: 0, to: positionsBuffer, at: 0, bytes: n * 4)
        stream.copy(from: slot.sequences, at: 0, to: sequencesBuffer, at: 0, bytes: n * 4)
        stream.copy(from: slot.blockTables, at: 0, to: blockTablesBuffer, at: 0, bytes: batch.blockTables.count * maxBlocksPerSequence * 4)
        if rows > 0 { stream.copy(from: slot.rows, at: 0, to: rowsBuffer, at: 0, bytes: rows * 4) }
        if !feeds.isEmpty {
            stream.barrier()
            stream.copy(from: chosen, to: tokensBuffer, regions: feeds.map { (source: $0.previousRow * 4, destination: $0.token * 4, bytes: 4) })
        }
        stream.barrier()
        let d = UInt32(c.embeddingWidth), f = UInt32(c.feedForwardWidth), B = UInt32(n)
        let qWidth = UInt32(c.headCount * c.headDimension), kvWidth = UInt32(c.kvHeadCount * c.headDimension)
        let qkvWidth = qWidth + 2 * kvWidth
        let eps = c.rmsEpsilon
        let stepChunks = (batch.positions.max() ?? 0) / attentionChunkKeys + 1
        let partialBytes = n * c.headCount * stepChunks * (c.headDimension / 4 + 1) * 16
        let splitsAttention = stepChunks > 1 && n * c.kvHeadCount < attentionSplitBelow && partialBytes <= attentionPartials.size
        let attentionModes: [UInt32] = splitsAttention ? [1, 2] : [0]
        if splitsAttention { attentionSplitSteps += 1 }
        let attention = Kernels.AttentionParameters(B: B, heads: UInt32(c.headCount), kvHeads: UInt32(c.kvHeadCount), blockSize: UInt32(blockSize),
                                                    maxBlocks: UInt32(maxBlocksPerSequence), qkvWidth: qkvWidth, scale: 1 / Float(c.headDimension).squareRoot(),
                                                    headStart: 0, shardHeads: 0, chunkKeys: UInt32(attentionChunkKeys), maxChunks: UInt32(stepChunks), mode: 0)
        for (slice, set) in zip(embedding.slices, embedSets) {
            stream.dispatch(kernels.embed, set.set, Kernels.EmbedParameters(K: d, B: B, format: embedding.format.rawValue,
                                                                            rowStart: UInt32(slice.rowStart), rowCount: UInt32(slice.rows), flags: foldsNorm ? 1 : 0),
                            items: n * c.embeddingWidth / 32)
        }
        stream.barrier()
        for layer in layers {
            if let set = layer.attentionNormSet {
                stream.dispatch(kernels.rmsNorm, set.set, Kernels.NormParameters(B: B, width4: d / 4, epsilon: eps), items: n)
                stream.barrier()
            }
            try matmul(stream, layer.qkv, layer.qkvSets, columns: n, accumulate: false, epilogue: fusesRope ? .qkv : .store, role: .reads)
            stream.barrier()
            for (index, (shard, set)) in zip(kvShards, layer.ropeSets).enumerated() {
                let queries = index == 0 ? c.headCount : 0
                stream.dispatch(kernels.ropeStore, set.set,
                                Kernels.RopeParameters(B: B, headDim: UInt32(c.headDimension), heads: UInt32(c.headCount), kvHeads: UInt32(c.kvHeadCount),
                                                       ropeDim: UInt32(c.ropeDimension), neox: c.architecture == "qwen2" ? 1 : 0,
                                                       blockSize: UInt32(blockSize), maxBlocks: UInt32(maxBlocksPerSequence),
                                                       headStart: UInt32(shard.headStart), shardHeads: UInt32(shard.heads), ropeQueries: index == 0 ? 1 : 0),
                                items: n * (queries + shard.heads))
            }
            if !fusesRope { stream.barrier() }
            // Attention: over all key chunks per (token, KV head), or (few tokens, long contexts) chunks side by
            // side and then merged; the same result either way.
            for mode in attentionModes {
                for (shard, set) in zip(kvShards, layer.attentionSets) {
                    var parameters = attention
                    parameters.headStart = UInt32(shard.headStart); parameters.shardHeads = UInt32(shard.heads); parameters.mode = mode
                    let items = mode == 0 ? n * shard.heads : mode == 1 ? stepChunks * n * shard.heads : n * shard.heads * (c.headCount / c.kvHeadCount)
                    stream.dispatch(kernels.attention, set.set, parameters, items: items)
                }
                if mode == 1 { stream.barrier() }
            }
            stream.barrier()
            try matmul(stream, layer.output, layer.outputSets, columns: n, accumulate: true, role: .writes)
            stream.barrier()
            if let set = layer.ffnNormSet {
                stream.dispatch(kernels.rmsNorm, set.set, Kernels.NormParameters(B: B, width4: d / 4, epsilon: eps), items: n)
                stream.barrier()
            }
            try matmul(stream, layer.gateUp, layer.gateUpSets, columns: n, accumulate: false, epilogue: layer.swigluSet == nil ? .swiglu : .store, role: .reads)
            stream.barrier()
            if let swigluSet = layer.swigluSet {
                stream.dispatch(kernels.swiglu, swigluSet.set, Kernels.SwigluParameters(B: B, width: f), items: n * Int(f) / 4)
                stream.barrier()
            }
            try matmul(stream, layer.down, layer.downSets, columns: n, accumulate: true, role: .writes)
            stream.barrier()
        }
        if rows > 0 {
            stream.dispatch(kernels.gatherRows, gatherSet.set, Kernels.GatherParameters(rows: UInt32(rows), width4: d / 4), items: rows * Int(d) / 4)
            if let set = gatherSumSquaresSet {
                stream.dispatch(kernels.gatherRows, set.set, Kernels.GatherParameters(rows: UInt32(rows), width4: d / 32), items: rows * Int(d) / 32)
            }
            stream.barrier()
            if let set = outputNormSet {
                stream.dispatch(kernels.rmsNorm, set.set, Kernels.NormParameters(B: UInt32(rows), width4: d / 4, epsilon: eps), items: rows)
                stream.barrier()
            }
            let v = UInt32(c.vocabularySize)
            try matmul(stream, outputMatrix, outputSets, columns: rows, accumulate: false, role: .reads)
            let reductions = Kernels.RowReductionParameters(rows: UInt32(rows), vocabulary: v, chunks: UInt32(Kernels.topCandidateChunks), phase: 0)
            var second = reductions
            second.phase = 1
            if output == .greedy(onDevice: true) {
                stream.barrier()
                stream.dispatch(kernels.argmax, argmaxSet.set, reductions, items: rows * Kernels.topCandidateChunks)
                stream.barrier()
                stream.dispatch(kernels.argmax, argmaxSet.set, second, items: rows)
                stream.barrier()
                stream.copy(from: chosen, at: 0, to: slot.picks, at: 0, bytes: rows * 4)
            }
            if samplesOnDevice, case .candidates = output {
                stream.barrier()
                stream.dispatch(kernels.topCandidates, topCandidatesSet.set, reductions, items: rows * Kernels.topCandidateChunks)
                stream.barrier()
                stream.dispatch(kernels.topCandidates, topCandidatesSet.set, second, items: rows)
            }
            // The host reads the logits themselves: from where the kernels wrote them when that memory is
            // host-visible, else from a copy in host memory.
            let hostReads: Bool
            switch output {
            case .logits: hostReads = true
            case .greedy(let onDevice): hostReads = !onDevice
            case .candidates(let alsoLogits): hostReads = alsoLogits || !samplesOnDevice
            }
            if hostReads && hostLogits.buffer != logitsBuffer.buffer {
                stream.barrier()
                stream.copy(from: logitsBuffer, at: 0, to: hostLogits, at: 0, bytes: rows * Int(v) * 4)
            }
        }
        try stream.submit()
        let step = SubmittedStep(serial: submitted, rows: rows)
        let picks = output == .greedy(onDevice: true) ? rows : nil
        slot.inFlight = (step.serial, picks)
        latestSubmission = (step.serial, picks)
        submitted += 1
        return step
    }
}
