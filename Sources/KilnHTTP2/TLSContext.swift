import COpenSSL
import Glibc

/// Server-side TLS settings: certificate chain, key and, for mTLS, the CA that client certificates must chain to.
public struct TLSServerConfiguration: Sendable {
    public var certificateChainPath: String
    public var privateKeyPath: String
    /// When set, clients must present a certificate signed by this CA (mutual TLS).
    public var clientCAPath: String?

    public init(certificateChainPath: String, privateKeyPath: String, clientCAPath: String? = nil) {
        self.certificateChainPath = certificateChainPath
        self.privateKeyPath = privateKeyPath
        self.clientCAPath = clientCAPath
    }
}

/// Client-side TLS settings.
public struct TLSClientConfiguration: Sendable {
    /// CA file the server's certificate must chain to; nil uses the system's default trust store.
    public var caPath: String?
    /// Client certificate and key for mTLS.
    public var certificateChainPath: String?
    public var privateKeyPath: String?
    /// Name sent as SNI and checked against the certificate; defaults to the host connected to.
    public var serverName: String?

    public init(caPath: String? = nil, certificateChainPath: String? = nil, privateKeyPath: String? = nil, serverName: String? = nil) {
        self.caPath = caPath
        self.certificateChainPath = certificateChainPath
        self.privateKeyPath = privateKeyPath
        self.serverName = serverName
    }
}

/// An OpenSSL `SSL_CTX`, configured once and shared by every connection that uses it.
final class TLSContext: @unchecked Sendable {
    // SSL_CTX is reference counted and safe to share across threads once configured.
    let ctx: OpaquePointer

    private init(ctx: OpaquePointer) { self.ctx = ctx }
    deinit { SSL_CTX_free(ctx) }

    /// The text of OpenSSL's error queue, emptied.
    static func drainErrors() -> String {
        var parts: [String] = []
        while true {
            let code = ERR_get_error()
            if code == 0 { break }
            var buf = [CChar](repeating: 0, count: 256)
            ERR_error_string_n(code, &buf, buf.count)
            parts.append(String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        return parts.isEmpty ? "unknown error" : parts.joined(separator: "; ")
    }

    private static func makeBase(_ method: OpaquePointer?) throws -> OpaquePointer {
        guard let ctx = SSL_CTX_new(method) else { throw HTTP2Error.tls(drainErrors()) }
        _ = kiln_SSL_CTX_set_min_proto_version(ctx, kiln_TLS1_2_VERSION())
        _ = kiln_SSL_CTX_set_mode(ctx, kiln_SSL_MODE_ENABLE_PARTIAL_WRITE() | kiln_SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER())
        SSL_CTX_set_options(ctx, kiln_SSL_OP_NO_COMPRESSION() | kiln_SSL_OP_NO_RENEGOTIATION())
        return ctx
    }

    static func server(_ config: TLSServerConfiguration) throws -> TLSContext {
        let ctx = try makeBase(TLS_server_method())
        let context = TLSContext(ctx: ctx)
        guard SSL_CTX_use_certificate_chain_file(ctx, config.certificateChainPath) == 1 else {
            throw HTTP2Error.tls("certificate \(config.certificateChainPath): \(drainErrors())")
        }
        guard SSL_CTX_use_PrivateKey_file(ctx, config.privateKeyPath, SSL_FILETYPE_PEM) == 1 else {
            throw HTTP2Error.tls("private key \(config.privateKeyPath): \(drainErrors())")
        }
        guard SSL_CTX_check_private_key(ctx) == 1 else {
            throw HTTP2Error.tls("private key does not match certificate: \(drainErrors())")
        }
        if let ca = config.clientCAPath {
            guard SSL_CTX_load_verify_locations(ctx, ca, nil) == 1 else {
                throw HTTP2Error.tls("client CA \(ca): \(drainErrors())")
            }
            SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nil)
        }
        // ALPN: h2 when the client offers it, else http/1.1; a client offering only other protocols is refused,
        // since this server speaks nothing else. A client offering no ALPN at all is let through: its first
        // bytes tell which of the two it speaks.
        SSL_CTX_set_alpn_select_cb(ctx, { _, out, outlen, input, inlen, _ in
            guard let input, let out, let outlen else { return SSL_TLSEXT_ERR_ALERT_FATAL }
            let offered = UnsafeBufferPointer(start: input, count: Int(inlen))
            for wanted in [ALPNProtocol.h2, ALPNProtocol.http11] {
                var i = 0
                while i < offered.count {
                    let len = Int(offered[i])
                    if i + 1 + len > offered.count { break }
                    if offered[(i + 1)..<(i + 1 + len)].elementsEqual(wanted) {
                        out.pointee = input + i + 1
                        outlen.pointee = UInt8(len)
                        return SSL_TLSEXT_ERR_OK
                    }
                    i += 1 + len
                }
            }
            return SSL_TLSEXT_ERR_ALERT_FATAL
        }, nil)
        return context
    }

    static func client(_ config: TLSClientConfiguration) throws -> TLSContext {
        let ctx = try makeBase(TLS_client_method())
        let context = TLSContext(ctx: ctx)
        if let ca = config.caPath {
            guard SSL_CTX_load_verify_locations(ctx, ca, nil) == 1 else {
                throw HTTP2Error.tls("CA \(ca): \(drainErrors())")
            }
        } else {
            SSL_CTX_set_default_verify_paths(ctx)
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nil)
        if let cert = config.certificateChainPath {
            guard SSL_CTX_use_certificate_chain_file(ctx, cert) == 1 else {
                throw HTTP2Error.tls("client certificate \(cert): \(drainErrors())")
            }
            guard let key = config.privateKeyPath, SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) == 1 else {
                throw HTTP2Error.tls("client key: \(drainErrors())")
            }
        }
        let alpn: [UInt8] = [2, UInt8(ascii: "h"), UInt8(ascii: "2")]
        guard SSL_CTX_set_alpn_protos(ctx, alpn, UInt32(alpn.count)) == 0 else {
            throw HTTP2Error.tls("ALPN: \(drainErrors())")
        }
        return context
    }
}

/// ALPN protocol names, as they go on the wire.
enum ALPNProtocol {
    static let h2: [UInt8] = Array("h2".utf8)
    static let http11: [UInt8] = Array("http/1.1".utf8)
}
