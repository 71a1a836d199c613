/// How the next token is chosen. Defaults are plain sampling at temperature 1; temperature 0 is greedy.
public struct SamplingParameters: Sendable, Equatable {
    public var temperature: Float = 1
    /// Keep only the k most likely tokens (0: off).
    public var topK = 0
    /// Keep the smallest set of most likely tokens whose probability reaches p (1: off).
    public var topP: Float = 1
    /// Drop tokens less likely than min-p times the most likely one (0: off).
    public var minP: Float = 0
    /// Divides positive logits (multiplies negative ones) of tokens seen in the last `penaltyWindow` tokens (1: off).
    public var repetitionPenalty: Float = 1
    /// Subtracted once per occurrence in the window.
    public var frequencyPenalty: Float = 0
    /// Subtracted once if the token occurs in the window at all.
    public var presencePenalty: Float = 0
    /// Tokens of context the penalties look at (llama.cpp's default).
    public var penaltyWindow = 64
    /// The random draws' seed: the same seed and request give the same tokens.
    public var seed: UInt64 = 0
    /// How many most likely alternatives to report per token (0: none).
    public var logprobs = 0

    public init() {}

    /// Greedy with nothing that needs the logits on the host (no penalties, no alternatives reported): the
    /// backend can choose the token on the device and read back one integer instead of the vocabulary.
    public var choosesOnDevice: Bool {
        temperature == 0 && repetitionPenalty == 1 && frequencyPenalty == 0 && presencePenalty == 0 && logprobs == 0
    }

    /// Sampling that never looks past a row's `count` most likely tokens: greedy or top-k within `count`, no
    /// penalties (they reorder tokens), at most `count` alternatives reported. Such rows are sampled from the
    /// backend's top candidates (a device top-k) instead of the whole vocabulary's logits.
    public func needsOnly(topCandidates count: Int) -> Bool {
        repetitionPenalty == 1 && frequencyPenalty == 0 && presencePenalty == 0 && logprobs <= count
            && (temperature == 0 || (topK > 0 && topK <= count))
    }

    /// Greedy: the most likely token every time.
    public static var greedy: SamplingParameters { var p = SamplingParameters(); p.temperature = 0; return p }

    /// Checks every field's range; the error names the field.
    public func validate() throws {
        func fail(_ field: String, _ why: String) -> SamplingError { SamplingError(field: field, reason: why) }
        // Below 0.001 the scaled logits overflow to infinity and sampling loses its meaning: use 0 (greedy).
        guard temperature.isFinite, temperature == 0 || (temperature >= 0.001 && temperature <= 2) else {
            throw fail("temperature", "must be 0 or in 0.001...2")
        }
        guard topK >= 0 else { throw fail("top_k", "must not be negative") }
        guard topP.isFinite, topP > 0, topP <= 1 else { throw fail("top_p", "must be in (0, 1]") }
        guard minP.isFinite, minP >= 0, minP <= 1 else { throw fail("min_p", "must be in [0, 1]") }
        guard repetitionPenalty.isFinite, repetitionPenalty >= 0.01, repetitionPenalty <= 10 else { throw fail("repetition_penalty", "must be in 0.01...10") }
        guard frequencyPenalty.isFinite, abs(frequencyPenalty) <= 2 else { throw fail("frequency_penalty", "must be in -2...2") }
        guard presencePenalty.isFinite, abs(presencePenalty) <= 2 else { throw fail("presence_penalty", "must be in -2...2") }
        guard penaltyWindow >= 0 else { throw fail("penalty_window", "must not be negative") }
        guard logprobs >= 0, logprobs <= 20 else { throw fail("logprobs", "must be in 0...20") }
    }
}

/// A sampling parameter out of range, by its schema field name.
public struct SamplingError: Error, CustomStringConvertible, Sendable, Equatable {
    public let field: String
    public let reason: String
    public var description: String { "\(field) \(reason)" }
}
