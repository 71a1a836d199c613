// Float32 → float16 bits, rounded to nearest even (as Swift's Float16(x)), written out in integer arithmetic:
// packHalf2x16 leaves the rounding to the driver, and lavapipe was measured rounding the same value one way
// in one kernel and the other way in another. Every kernel that writes the float16 KV pool uses this, so a
// stored key or value never depends on which kernel stored it.
uint halfBits(float f) {
    uint x = floatBitsToUint(f);
    uint sign = (x >> 16) & 0x8000u, e = (x >> 23) & 0xFFu, m = x & 0x7FFFFFu;
    if (e == 0xFFu) return sign | 0x7C00u | (m != 0u ? 0x200u : 0u);   // infinity, NaN
    int exponent = int(e) - 112;                                       // rebiased: 127 → 15
    if (exponent >= 31) return sign | 0x7C00u;                         // too large: infinity
    uint shift = 13u, mantissa = m, base = uint(max(exponent, 0)) << 10;
    if (exponent <= 0) {                                               // subnormal in float16, or zero
        if (exponent < -10) return sign;
        mantissa = m | 0x800000u;
        shift = uint(14 - exponent);
        base = 0u;
    }
    uint kept = mantissa >> shift, rest = mantissa & ((1u << shift) - 1u), halfway = 1u << (shift - 1u);
    uint bits = base + (exponent <= 0 ? kept : (kept & 0x3FFu));
    if (rest > halfway || (rest == halfway && (bits & 1u) != 0u)) bits += 1u;   // a carry into the exponent is right
    return sign | bits;
}
uint packHalves(vec2 v) { return halfBits(v.x) | (halfBits(v.y) << 16); }
