/// Which protocol a server connection speaks.
enum NegotiatedProtocol: Equatable {
    case h2
    case http1
    /// Not known yet: more bytes must come.
    case undecided
    case refused(String)
}

/// Tells HTTP/2 with prior knowledge from HTTP/1.1 by a connection's first bytes, for a listener that
/// serves both without ALPN (the cleartext port).
enum ProtocolSniffer {
    /// The start of HTTP/2's connection preface (RFC 9113 §3.4). `PRI` is reserved as an HTTP/1.1 method
    /// for this purpose, so four bytes decide.
    static let prefacePrefix: [UInt8] = Array("PRI ".utf8)

    static func classify(_ bytes: [UInt8]) -> NegotiatedProtocol {
        let n = min(bytes.count, prefacePrefix.count)
        guard bytes[..<n].elementsEqual(prefacePrefix[..<n]) else { return .http1 }
        return n == prefacePrefix.count ? .h2 : .undecided
    }
}
