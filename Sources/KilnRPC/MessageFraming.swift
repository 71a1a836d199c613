/// One gRPC length-prefixed message: a compressed flag and the payload.
public struct GRPCMessage: Sendable, Equatable {
    public var compressed: Bool
    public var payload: [UInt8]
    public init(compressed: Bool = false, payload: [UInt8]) {
        self.compressed = compressed
        self.payload = payload
    }
}

/// Writes gRPC's 5-byte message prefix: the compressed flag, then the length as big-endian UInt32.
public enum GRPCMessageFramer {
    public static func frame(_ payload: [UInt8], compressed: Bool = false) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(payload.count + 5)
        let n = UInt32(payload.count)
        out.append(compressed ? 1 : 0)
        out.append(UInt8(n >> 24)); out.append(UInt8(n >> 16 & 0xFF)); out.append(UInt8(n >> 8 & 0xFF)); out.append(UInt8(n & 0xFF))
        out.append(contentsOf: payload)
        return out
    }
}

/// Cuts a stream of DATA chunks into gRPC messages. A declared length over the limit is refused with
/// RESOURCE_EXHAUSTED before anything is buffered for it.
public struct GRPCMessageDeframer: Sendable {
    public let maxMessageSize: Int
    private var buffer: [UInt8] = []
    private var start = 0

    public init(maxMessageSize: Int = 4 * 1024 * 1024) {
        self.maxMessageSize = maxMessageSize
    }

    /// Bytes held that do not yet make a whole message: at end of stream this means a truncated message.
    public var hasPartialMessage: Bool { buffer.count > start }

    public mutating func append(_ chunk: [UInt8]) {
        if start > 0 && start == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            start = 0
        }
        buffer.append(contentsOf: chunk)
    }

    /// The next complete message, or nil when more bytes are needed.
    public mutating func next() throws(RPCError) -> GRPCMessage? {
        guard buffer.count - start >= 5 else { return nil }
        let flag = buffer[start]
        guard flag <= 1 else { throw RPCError(.internal, "invalid compressed flag \(flag) in message prefix") }
        let length = Int(buffer[start + 1]) << 24 | Int(buffer[start + 2]) << 16 | Int(buffer[start + 3]) << 8 | Int(buffer[start + 4])
        guard length <= maxMessageSize else {
            throw RPCError(.resourceExhausted, "message of \(length) bytes exceeds the limit of \(maxMessageSize)")
        }
        guard buffer.count - start - 5 >= length else { return nil }
        let payload = Array(buffer[start + 5..<start + 5 + length])
        start += 5 + length
        if start > 64 * 1024 && start * 2 > buffer.count {
            buffer.removeFirst(start)
            start = 0
        }
        return GRPCMessage(compressed: flag == 1, payload: payload)
    }
}
