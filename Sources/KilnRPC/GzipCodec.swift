import CZlib

/// gzip for the `grpc-encoding: gzip` message encoding, on zlib.
public enum GzipCodec {
    /// gzip container (window bits 15, +16 for the gzip header).
    private static let gzipWindowBits: Int32 = 15 + 16

    public static func compress(_ input: [UInt8]) throws -> [UInt8] {
        var stream = z_stream()
        guard kiln_deflateInit2(&stream, Z_DEFAULT_COMPRESSION, gzipWindowBits) == Z_OK else {
            throw RPCError(.internal, "gzip: deflateInit failed")
        }
        defer { deflateEnd(&stream) }
        var output = [UInt8](repeating: 0, count: Int(deflateBound(&stream, UInt(input.count))) + 32)
        var input = input
        let rc = input.withUnsafeMutableBufferPointer { inBuf in
            output.withUnsafeMutableBufferPointer { outBuf -> Int32 in
                stream.next_in = inBuf.baseAddress
                stream.avail_in = UInt32(inBuf.count)
                stream.next_out = outBuf.baseAddress
                stream.avail_out = UInt32(outBuf.count)
                return deflate(&stream, Z_FINISH)
            }
        }
        guard rc == Z_STREAM_END else { throw RPCError(.internal, "gzip: deflate failed (\(rc))") }
        output.removeLast(Int(stream.avail_out))
        return output
    }

    /// Decompresses, refusing output larger than `limit` (a small message may inflate enormously).
    public static func decompress(_ input: [UInt8], limit: Int) throws -> [UInt8] {
        var stream = z_stream()
        guard kiln_inflateInit2(&stream, gzipWindowBits) == Z_OK else { throw RPCError(.internal, "gzip: inflateInit failed") }
        defer { inflateEnd(&stream) }
        var output: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16 * 1024)
        var input = input
        try input.withUnsafeMutableBufferPointer { inBuf in
            stream.next_in = inBuf.baseAddress
            stream.avail_in = UInt32(inBuf.count)
            while true {
                let (rc, produced) = chunk.withUnsafeMutableBufferPointer { outBuf -> (Int32, Int) in
                    stream.next_out = outBuf.baseAddress
                    stream.avail_out = UInt32(outBuf.count)
                    let rc = inflate(&stream, Z_NO_FLUSH)
                    return (rc, outBuf.count - Int(stream.avail_out))
                }
                output.append(contentsOf: chunk[0..<produced])
                if output.count > limit {
                    throw RPCError(.resourceExhausted, "decompressed message exceeds the limit of \(limit) bytes")
                }
                if rc == Z_STREAM_END { return }
                guard rc == Z_OK else { throw RPCError(.internal, "gzip: corrupt compressed message (\(rc))") }
                if produced == 0 && stream.avail_in == 0 { throw RPCError(.internal, "gzip: truncated compressed message") }
            }
        }
        return output
    }
}
