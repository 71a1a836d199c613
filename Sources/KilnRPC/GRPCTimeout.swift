/// The `grpc-timeout` header: at most 8 ASCII digits and one unit (H, M, S, m, u, n).
public enum GRPCTimeout {
    /// Parses a header value into nanoseconds; nil when malformed.
    public static func parse(_ value: String) -> UInt64? {
        let bytes = Array(value.utf8)
        guard bytes.count >= 2, bytes.count <= 9, let unit = bytes.last else { return nil }
        var amount: UInt64 = 0
        for d in bytes.dropLast() {
            guard d >= UInt8(ascii: "0") && d <= UInt8(ascii: "9") else { return nil }
            amount = amount * 10 + UInt64(d - UInt8(ascii: "0"))
        }
        let scale: UInt64
        switch unit {
        case UInt8(ascii: "H"): scale = 3_600_000_000_000
        case UInt8(ascii: "M"): scale = 60_000_000_000
        case UInt8(ascii: "S"): scale = 1_000_000_000
        case UInt8(ascii: "m"): scale = 1_000_000
        case UInt8(ascii: "u"): scale = 1_000
        case UInt8(ascii: "n"): scale = 1
        default: return nil
        }
        let (product, overflow) = amount.multipliedReportingOverflow(by: scale)
        return overflow ? longest : min(product, longest)
    }

    /// The longest timeout honoured (2^62 ns, about 146 years); longer ones are cut to it, so that a
    /// deadline computed from one never wraps and the timer that enforces it never sees a negative delay
    /// (99999999H, 11,000 years, used to end the call at once).
    public static let longest: UInt64 = 1 << 62

    /// Formats nanoseconds with the finest unit whose amount fits in 8 digits (rounding up, so that a
    /// deadline is never shortened).
    public static func format(nanoseconds: UInt64) -> String {
        let units: [(UInt64, Character)] = [(1, "n"), (1_000, "u"), (1_000_000, "m"), (1_000_000_000, "S"),
                                            (60_000_000_000, "M"), (3_600_000_000_000, "H")]
        for (scale, unit) in units {
            let amount = nanoseconds / scale + (nanoseconds % scale == 0 ? 0 : 1)
            if amount <= 99_999_999 { return "\(amount)\(unit)" }
        }
        return "99999999H"
    }
}
