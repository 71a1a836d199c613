import CXXHash

/// The router's 64-bit hash: XXH64 from Debian's libxxhash.
///
/// Why XXH64: it passes SMHasher's distribution tests, hashes a short key in a few nanoseconds, and is the same
/// function in every process and on every machine (unlike Swift's `Hasher`, seeded per process), so every
/// router replica places the same virtual nodes and computes the same probe order for the same key. Keys come
/// from clients, but a client that crafts colliding session ids only piles its own sessions onto one backend,
/// and bounded loads cap that; a keyed hash (SipHash) would buy nothing here and cost replicas their agreement.
public enum StableHash {
    /// XXH64 of `bytes` with `seed`.
    @inlinable
    public static func hash(_ bytes: UnsafeRawBufferPointer, seed: UInt64 = 0) -> UInt64 {
        XXH64(bytes.baseAddress, bytes.count, seed)
    }

    /// XXH64 of a string's UTF-8 bytes.
    public static func hash(_ string: String, seed: UInt64 = 0) -> UInt64 {
        var string = string
        return string.withUTF8 { XXH64($0.baseAddress, $0.count, seed) }
    }

    /// XXH64 of a 64-bit value's little-endian bytes: mixes a key's hash with a seed or another hash.
    public static func hash(_ value: UInt64, seed: UInt64) -> UInt64 {
        withUnsafeBytes(of: value.littleEndian) { XXH64($0.baseAddress, $0.count, seed) }
    }
}
