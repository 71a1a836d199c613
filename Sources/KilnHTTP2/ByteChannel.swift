import COpenSSL
import Glibc

/// The outcome of one non-blocking read, write or handshake step.
enum IOResult: Equatable {
    case done(Int)
    /// Try again when the socket is readable.
    case wantRead
    /// Try again when the socket is writable.
    case wantWrite
    case eof
    case failed(String)
}

/// Bytes in and out of one socket: cleartext, or TLS through OpenSSL. Loop-confined.
protocol ByteChannel: AnyObject {
    /// Advances the handshake; `.done` once application data may flow.
    func handshake() -> IOResult
    func read(into buffer: UnsafeMutableRawBufferPointer) -> IOResult
    func write(_ bytes: UnsafeRawBufferPointer) -> IOResult
    /// The negotiated ALPN protocol, if any.
    var alpn: String? { get }
    /// The subject of the certificate the peer presented and the handshake verified (mTLS), if any.
    var peerSubject: String? { get }
    /// Whether bytes may wait inside the channel (not the socket), so that epoll would not report them.
    var hasBufferedInput: Bool { get }
    func close()
}

/// A cleartext TCP socket.
final class PlainChannel: ByteChannel {
    let fd: Int32
    init(fd: Int32) { self.fd = fd }

    func handshake() -> IOResult { .done(0) }
    var alpn: String? { nil }
    var peerSubject: String? { nil }
    var hasBufferedInput: Bool { false }

    func read(into buffer: UnsafeMutableRawBufferPointer) -> IOResult {
        while true {
            let n = Glibc.read(fd, buffer.baseAddress, buffer.count)
            if n > 0 { return .done(n) }
            if n == 0 { return .eof }
            switch errno {
            case EINTR: continue
            case EAGAIN, EWOULDBLOCK: return .wantRead
            default: return .failed(String(cString: strerror(errno)))
            }
        }
    }

    func write(_ bytes: UnsafeRawBufferPointer) -> IOResult {
        while true {
            let n = send(fd, bytes.baseAddress, bytes.count, Int32(MSG_NOSIGNAL))
            if n >= 0 { return .done(n) }
            switch errno {
            case EINTR: continue
            case EAGAIN, EWOULDBLOCK: return .wantWrite
            default: return .failed(String(cString: strerror(errno)))
            }
        }
    }

    func close() {}
}

/// A TLS session over a socket.
final class TLSChannel: ByteChannel {
    private let ssl: OpaquePointer
    private let context: TLSContext  // keeps the SSL_CTX alive as long as the SSL

    init(fd: Int32, context: TLSContext, isServer: Bool, serverName: String?) throws {
        guard let ssl = SSL_new(context.ctx) else { throw HTTP2Error.tls(TLSContext.drainErrors()) }
        self.ssl = ssl
        self.context = context
        SSL_set_fd(ssl, fd)
        if isServer {
            SSL_set_accept_state(ssl)
        } else {
            SSL_set_connect_state(ssl)
            if let name = serverName {
                if Self.isIPAddress(name) {
                    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name)
                } else {
                    _ = kiln_SSL_set_tlsext_host_name(ssl, name)
                    SSL_set1_host(ssl, name)
                }
            }
        }
    }

    deinit { SSL_free(ssl) }

    static func isIPAddress(_ s: String) -> Bool {
        var v4 = in_addr()
        var v6 = in6_addr()
        return inet_pton(AF_INET, s, &v4) == 1 || inet_pton(AF_INET6, s, &v6) == 1
    }

    private func classify(_ rc: Int32) -> IOResult {
        let err = SSL_get_error(ssl, rc)
        switch err {
        case SSL_ERROR_WANT_READ: return .wantRead
        case SSL_ERROR_WANT_WRITE: return .wantWrite
        case SSL_ERROR_ZERO_RETURN: return .eof
        case SSL_ERROR_SYSCALL:
            let e = errno
            ERR_clear_error()
            return e == 0 ? .eof : .failed(String(cString: strerror(e)))
        default:
            return .failed(TLSContext.drainErrors())
        }
    }

    func handshake() -> IOResult {
        ERR_clear_error()
        let rc = SSL_do_handshake(ssl)
        return rc == 1 ? .done(0) : classify(rc)
    }

    func read(into buffer: UnsafeMutableRawBufferPointer) -> IOResult {
        ERR_clear_error()
        let n = SSL_read(ssl, buffer.baseAddress, Int32(min(buffer.count, Int(Int32.max))))
        return n > 0 ? .done(Int(n)) : classify(n)
    }

    func write(_ bytes: UnsafeRawBufferPointer) -> IOResult {
        if bytes.isEmpty { return .done(0) }
        ERR_clear_error()
        let n = SSL_write(ssl, bytes.baseAddress, Int32(min(bytes.count, Int(Int32.max))))
        return n > 0 ? .done(Int(n)) : classify(n)
    }

    var hasBufferedInput: Bool { SSL_has_pending(ssl) == 1 }

    var alpn: String? {
        var data: UnsafePointer<UInt8>?
        var len: UInt32 = 0
        SSL_get0_alpn_selected(ssl, &data, &len)
        guard let data, len > 0 else { return nil }
        return String(decoding: UnsafeBufferPointer(start: data, count: Int(len)), as: UTF8.self)
    }

    var peerSubject: String? {
        // Only a certificate the handshake verified names anyone (without --client-ca none is asked for).
        guard SSL_get_verify_result(ssl) == X509_V_OK, let certificate = SSL_get1_peer_certificate(ssl) else { return nil }
        defer { X509_free(certificate) }
        guard let name = X509_get_subject_name(certificate), let bio = BIO_new(BIO_s_mem()) else { return nil }
        defer { BIO_free(bio) }
        // RFC 2253, special characters escaped, never truncated: two different names never print alike
        // (X509_NAME_oneline truncates and leaves "/" in a value ambiguous).
        guard X509_NAME_print_ex(bio, name, 0, kiln_XN_FLAG_RFC2253()) >= 0 else { return nil }
        var bytes = [UInt8](repeating: 0, count: 4096)
        let n = BIO_read(bio, &bytes, Int32(bytes.count))
        guard n > 0, n < Int32(bytes.count) else { return nil }
        return String(decoding: bytes[..<Int(n)], as: UTF8.self)
    }

    func close() {
        // Best effort close_notify; the socket is non-blocking so this never waits.
        ERR_clear_error()
        SSL_shutdown(ssl)
        ERR_clear_error()
    }
}
