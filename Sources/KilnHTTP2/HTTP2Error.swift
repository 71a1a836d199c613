import Glibc

/// Errors the transport reports to its users.
public enum HTTP2Error: Error, Equatable, Sendable, CustomStringConvertible {
    /// A system call failed: the call's name and `errno`.
    case system(String, Int32)
    /// TLS set-up or a handshake failed; the text comes from OpenSSL.
    case tls(String)
    /// An nghttp2 call failed: the call's name and nghttp2's error text.
    case nghttp2(String, String)
    /// The connection closed before the stream finished.
    case connectionClosed
    /// The peer reset the stream with this HTTP/2 error code.
    case streamReset(UInt32)
    /// The request body passed the server's limit.
    case bodyTooLarge
    /// The peer is going away (GOAWAY) and accepts no new streams.
    case goingAway
    /// The address could not be parsed or resolved.
    case badAddress(String)
    /// The operation was used in the wrong order (e.g. writing after finishing).
    case invalidState(String)
    /// A connection attempt or handshake did not finish in time.
    case timeout

    public var description: String {
        switch self {
        case .system(let call, let err): return "\(call): \(String(cString: strerror(err)))"
        case .tls(let text): return "TLS: \(text)"
        case .nghttp2(let call, let text): return "\(call): \(text)"
        case .connectionClosed: return "connection closed"
        case .streamReset(let code): return "stream reset by peer (HTTP/2 error \(code))"
        case .bodyTooLarge: return "request body too large"
        case .goingAway: return "peer is going away"
        case .badAddress(let a): return "bad address: \(a)"
        case .invalidState(let s): return "invalid state: \(s)"
        case .timeout: return "timed out"
        }
    }
}
