import ArgumentParser
import Foundation
import KilnCPU
import KilnModel

extension BenchDecode {
    /// `kiln bench decode --backend cpu`: the CPU backend's prefill of one long prompt, batch-1 decode after
    /// it, decode at each batch size (median of three timed rounds each), and the batch-1 bound that memory
    /// bandwidth sets (weight bytes read per token ÷ measured read bandwidth).
    func runOnCPU() throws {
        let file = try GGUFFile(path: model)
        let sizes = batches.split(separator: ",").compactMap { Int($0) }
        let maxBatch = sizes.max() ?? 1
        let blockSize = 16
        let perSequence = (16 + 3 * steps + 1 + blockSize - 1) / blockSize
        let promptBlocks = (promptTokens + blockSize - 1) / blockSize
        let tailBlocks = (3 * steps + blockSize - 1) / blockSize + 1
        let decoder = try CPUBackend(file: file, blockCount: promptBlocks + tailBlocks + maxBatch * perSequence, blockSize: blockSize, threads: threads)
        print("backend: cpu, \(decoder.kernelFamily) kernels, \(decoder.threads) threads, \(decoder.weightBytes) weight bytes per token")
        let vocabulary = decoder.config.vocabularySize
        let prompt = (0..<promptTokens).map { (($0 * 7919) % (vocabulary - 100)) + 50 }
        func median(_ xs: [Double]) -> Double { xs.sorted()[xs.count / 2] }

        let promptTable = Array(0..<promptBlocks)
        let prefill = try median((0..<3).map { _ in try seconds { _ = try decoder.greedy(.sequence(prompt, startingAt: 0, blockTable: promptTable)) } })
        print(String(format: "BENCH cpu_prefill_tok_s %.2f tok/s", Double(promptTokens) / prefill))

        let longTable = promptTable + Array(promptBlocks + maxBatch * perSequence ..< promptBlocks + maxBatch * perSequence + tailBlocks)
        var last = try decoder.greedy(.sequence(prompt, startingAt: 0, blockTable: longTable))
        var position = promptTokens
        let longDecode = try median((0..<3).map { _ in
            try seconds {
                for _ in 0..<steps {
                    last = try decoder.greedy(.sequence(last, startingAt: position, blockTable: longTable))
                    position += 1
                }
            }
        })
        print(String(format: "BENCH cpu_decode_b1_ctx%d_tok_s %.2f tok/s", promptTokens, Double(steps) / longDecode))

        for b in sizes {
            let tables = (0..<b).map { s in Array(promptBlocks + s * perSequence ..< promptBlocks + (s + 1) * perSequence) }
            var batch = DecodeBatch(tokens: [], positions: [], sequences: [], blockTables: tables, logitRows: [])
            for s in 0..<b {
                for i in 0..<16 { batch.tokens.append(prompt[(s * 16 + i) % promptTokens]); batch.positions.append(i); batch.sequences.append(s) }
                batch.logitRows.append(batch.tokens.count - 1)
            }
            var next = try decoder.greedy(batch)
            var at = 16
            let time = try median((0..<3).map { _ in
                try seconds {
                    for _ in 0..<steps {
                        next = try decoder.greedy(DecodeBatch(tokens: next, positions: Array(repeating: at, count: b), sequences: Array(0..<b),
                                                              blockTables: tables, logitRows: Array(0..<b)))
                        at += 1
                    }
                }
            })
            print(String(format: "BENCH cpu_decode_b%d_tok_s %.2f tok/s", b, Double(b * steps) / time))
        }

        let bandwidth = decoder.measureReadBandwidth()
        print(String(format: "BENCH cpu_read_bandwidth_gb_s %.2f GB/s", bandwidth / 1e9))
        print(String(format: "BENCH cpu_decode_b1_bandwidth_bound_tok_s %.2f tok/s", bandwidth / Double(decoder.weightBytes)))
    }
}
