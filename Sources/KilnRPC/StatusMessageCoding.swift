/// `grpc-message` percent-encoding (gRPC PROTOCOL-HTTP2.md): bytes outside printable ASCII
/// (0x20–0x7E) and `%` itself are written `%XX`; decoding is lenient and keeps malformed escapes as they are.
public enum StatusMessageCoding {
    /// `message` cut to at most `maxBytes` bytes on a character boundary.
    static func capped(_ message: String) -> String {
        guard message.utf8.count > maxBytes else { return message }
        var kept = ""
        for c in message {
            guard kept.utf8.count + c.utf8.count <= maxBytes - 3 else { break }
            kept.append(c)
        }
        return kept + "…"
    }

    /// The longest message sent, in UTF-8 bytes: a message that quotes what a peer sent (a 1 MiB stop string,
    /// a model name) must not make a header larger than any peer takes. Longer ones are cut and end in "…".
    public static let maxBytes = 1024

    public static func encode(_ message: String) -> String {
        var out = ""
        out.reserveCapacity(min(message.utf8.count, maxBytes) * 3)
        let hex = Array("0123456789ABCDEF".utf8)
        for b in capped(message).utf8 {
            if b >= 0x20 && b <= 0x7E && b != UInt8(ascii: "%") {
                out.unicodeScalars.append(Unicode.Scalar(b))
            } else {
                out.unicodeScalars.append("%")
                out.unicodeScalars.append(Unicode.Scalar(hex[Int(b >> 4)]))
                out.unicodeScalars.append(Unicode.Scalar(hex[Int(b & 0xF)]))
            }
        }
        return out
    }

    public static func decode(_ text: String) -> String {
        let bytes = Array(text.utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var i = 0
        while i < bytes.count {
            if bytes[i] == UInt8(ascii: "%"), i + 2 < bytes.count,
               let hi = hexValue(bytes[i + 1]), let lo = hexValue(bytes[i + 2]) {
                out.append(hi << 4 | lo)
                i += 3
            } else {
                out.append(bytes[i])
                i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    private static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
