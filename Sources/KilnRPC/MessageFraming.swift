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
/// RESOURCE_EXHAUSTED before anything is buffered for it. Once a message's length is known its payload is
/// allocated at exactly that size and filled as bytes arrive, so what it holds is what was received: no
/// array grown by doubling, and no second copy of a finished message.
public struct GRPCMessageDeframer: Sendable {
    public let maxMessageSize: Int
    /// Chunks not yet parsed; the first in use, and the bytes of it already parsed.
    private var chunks: [[UInt8]] = []
    private var head = 0, offset = 0
    /// The message being assembled: its prefix so far, its declared length once the prefix is whole, and
    /// its payload so far.
    private var prefix: [UInt8] = []
    private var length: Int?
    private var payload: [UInt8] = []

    public init(maxMessageSize: Int = 4 * 1024 * 1024) {
        self.maxMessageSize = maxMessageSize
    }

    /// Bytes held that do not yet make a whole message: at end of stream this means a truncated message.
    public var hasPartialMessage: Bool { !prefix.isEmpty || head < chunks.count }

    public mutating func append(_ chunk: [UInt8]) {
        guard !chunk.isEmpty else { return }
        chunks.append(chunk)
    }

    /// The next complete message, or nil when more bytes are needed.
    public mutating func next() throws(RPCError) -> GRPCMessage? {
        while prefix.count < 5 {
            guard head < chunks.count else { return nil }
            let n = min(5 - prefix.count, chunks[head].count - offset)
            prefix += chunks[head][offset..<offset + n]
            advance(by: n)
        }
        if length == nil {
            guard prefix[0] <= 1 else { throw RPCError(.internal, "invalid compressed flag \(prefix[0]) in message prefix") }
            let declared = Int(prefix[1]) << 24 | Int(prefix[2]) << 16 | Int(prefix[3]) << 8 | Int(prefix[4])
            guard declared <= maxMessageSize else {
                throw RPCError(.resourceExhausted, "message of \(declared) bytes exceeds the limit of \(maxMessageSize)")
            }
            length = declared
            payload.reserveCapacity(declared)
        }
        let length = self.length ?? 0
        while payload.count < length {
            guard head < chunks.count else { return nil }
            let n = min(length - payload.count, chunks[head].count - offset)
            if payload.isEmpty && offset == 0 && n == chunks[head].count {
                payload = chunks[head]   // the whole payload in one chunk: no copy
            } else {
                payload += chunks[head][offset..<offset + n]
            }
            advance(by: n)
        }
        let message = GRPCMessage(compressed: prefix[0] == 1, payload: payload)
        prefix = []
        self.length = nil
        payload = []
        return message
    }

    /// Marks `count` bytes of the first chunk parsed, letting the chunk go once it is used up.
    private mutating func advance(by count: Int) {
        offset += count
        guard offset == chunks[head].count else { return }
        chunks[head] = []
        head += 1
        offset = 0
        if head == chunks.count {
            chunks.removeAll(keepingCapacity: true)
            head = 0
        } else if head >= 32 {
            chunks.removeFirst(head)
            head = 0
        }
    }
}
