/// What a request's messages must be, in one place for both server paths: the task path reads them one at a
/// time (`RPCRequestMessages`), the inline path has the whole body at once (`RPCInlineUnary`); the same bad
/// request gets the same status and message on either.
enum RequestMessageRules {
    static let noMessage = RPCError(.internal, "request has no message")
    static let moreThanOne = RPCError(.internal, "request has more than one message")
    static let truncated = RPCError(.internal, "request ended inside a message")
    static let compressedWithoutEncoding = RPCError(.internal, "compressed message without a message encoding")

    /// A message's payload as its handler reads it: inflated when flagged compressed, which needs a declared
    /// gzip encoding (identity has nothing to undo), and no larger than `limit` once inflated.
    static func payload(of message: GRPCMessage, gzip: Bool, limit: Int) throws -> [UInt8] {
        guard message.compressed else { return message.payload }
        guard gzip else { throw compressedWithoutEncoding }
        return try GzipCodec.decompress(message.payload, limit: limit)
    }

    /// The one message of a unary request whose whole body is `body`.
    static func onlyMessage(in body: [UInt8], gzip: Bool, limit: Int) throws -> [UInt8] {
        var deframer = GRPCMessageDeframer(maxMessageSize: limit)
        deframer.append(body)
        guard let message = try deframer.next() else { throw deframer.hasPartialMessage ? truncated : noMessage }
        if try deframer.next() != nil { throw moreThanOne }
        if deframer.hasPartialMessage { throw truncated }
        return try payload(of: message, gzip: gzip, limit: limit)
    }
}
