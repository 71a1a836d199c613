@testable import KilnEngine
import KilnModel
import KilnTestSupport
import XCTest

final class SamplerTests: XCTestCase {
    private func randomLogits(_ n: Int, _ rng: inout TestRandom) -> [Float] {
        (0..<n).map { _ in Float.random(in: -5...5, using: &rng) }
    }

    func testGreedyAndTopKOfOneAreArgmax() {
        var rng = TestRandom(fixed: 7)
        for _ in 0..<50 {
            let logits = randomLogits(300, &rng)
            XCTAssertEqual(Sampler(.greedy).sample(logits, context: [], index: 0).id, argmax(logits))
            var p = SamplingParameters(); p.topK = 1; p.seed = 99
            XCTAssertEqual(Sampler(p).sample(logits, context: [], index: 3).id, argmax(logits))
            p = SamplingParameters(); p.topP = 1e-6
            XCTAssertEqual(Sampler(p).sample(logits, context: [], index: 5).id, argmax(logits))
            p = SamplingParameters(); p.minP = 1
            XCTAssertEqual(Sampler(p).sample(logits, context: [], index: 9).id, argmax(logits))
        }
    }

    /// Sampling from a row's top candidates gives exactly what sampling from its full logits gives, for every
    /// parameter set that `needsOnly(topCandidates:)` admits — and that predicate refuses the others.
    func testCandidatesSampleLikeFullLogits() {
        var rng = TestRandom(fixed: 11)
        var settings: [SamplingParameters] = []
        for (t, k, topP, minP, logprobs) in [(0.0, 0, 1.0, 0.0, 3), (0.7, 1, 1, 0, 0), (0.7, 5, 1, 0, 2), (1.0, 40, 0.9, 0, 5),
                                             (1.5, 64, 0.95, 0.05, 20), (1.0, 64, 1, 0, 0), (0.3, 17, 0.5, 0.1, 1)] {
            var p = SamplingParameters(); p.temperature = Float(t); p.topK = k; p.topP = Float(topP); p.minP = Float(minP); p.logprobs = logprobs
            settings.append(p)
        }
        for step in 0..<60 {
            // Coarse values give ties among the candidates.
            let logits = (0..<2000).map { _ in step % 3 == 0 ? Float(Int.random(in: -6...6, using: &rng)) : Float.random(in: -6...6, using: &rng) }
            let candidates = TopCandidates(logits: logits, count: 64)
            for var p in settings {
                p.seed = UInt64(step)
                XCTAssertTrue(p.needsOnly(topCandidates: 64))
                let full = Sampler(p).sample(logits, context: [1, 2, 3], index: step)
                let fromCandidates = Sampler(p).sample(candidates, index: step)
                XCTAssertEqual(fromCandidates.id, full.id, "step \(step), \(p)")
                XCTAssertEqual(fromCandidates.logprob, full.logprob, accuracy: 1e-9)
                XCTAssertEqual(fromCandidates.top.map(\.id), full.top.map(\.id))
            }
        }
        // A row of NaN (a broken model) leaves no candidates: token 0 like the host's argmax, no crash.
        let broken = TopCandidates(logits: [Float](repeating: .nan, count: 100), count: 64)
        XCTAssertTrue(broken.ids.isEmpty)
        XCTAssertEqual(Sampler(.greedy).sample(broken, index: 0).id, argmax([Float](repeating: .nan, count: 100)))
        var p = SamplingParameters()
        XCTAssertFalse(p.needsOnly(topCandidates: 64), "top-k off: the draw may land anywhere")
        p.topK = 65
        XCTAssertFalse(p.needsOnly(topCandidates: 64))
        p.topK = 10; p.repetitionPenalty = 1.1
        XCTAssertFalse(p.needsOnly(topCandidates: 64), "penalties reorder the tokens")
    }

    /// Same seed, same request, same tokens; the i-th draw depends only on (seed, i), so continuing a
    /// generation from its first i tokens reproduces the rest; another seed differs.
    func testSeedsReproduceAndDrawsAreCounterBased() {
        var rng = TestRandom(fixed: 1)
        let steps = (0..<40).map { _ in randomLogits(50, &rng) }
        func run(seed: UInt64, from start: Int = 0) -> [Int] {
            var p = SamplingParameters(); p.seed = seed; p.temperature = 1.3
            return (start..<steps.count).map { Sampler(p).sample(steps[$0], context: [], index: $0).id }
        }
        XCTAssertEqual(run(seed: 5), run(seed: 5))
        XCTAssertEqual(Array(run(seed: 5).suffix(25)), run(seed: 5, from: 15))
        XCTAssertNotEqual(run(seed: 5), run(seed: 6))
        XCTAssertEqual(Sampler.draw(seed: 5, index: 3), Sampler.draw(seed: 5, index: 3))
        XCTAssertNotEqual(Sampler.draw(seed: 5, index: 3), Sampler.draw(seed: 5, index: 4))
    }

    /// Sampling follows the softmax: frequencies over many seeds match probabilities at temperature 1.
    func testDistributionFollowsTheLogits() {
        let logits: [Float] = [0, 1, 2, -1]
        var counts = [0, 0, 0, 0]
        for seed in 0..<20_000 {
            var p = SamplingParameters(); p.seed = UInt64(seed)
            counts[Sampler(p).sample(logits, context: [], index: 0).id] += 1
        }
        let e = logits.map { exp(Double($0)) }, total = e.reduce(0, +)
        for i in 0..<4 { XCTAssertEqual(Double(counts[i]) / 20_000, e[i] / total, accuracy: 0.015) }
    }

    func testPenaltiesAndLogprobs() {
        let logits: [Float] = [2.0, 1.9, -1, 0.5]
        var p = SamplingParameters.greedy
        XCTAssertEqual(Sampler(p).sample(logits, context: [0], index: 0).id, 0)
        p.repetitionPenalty = 1.5
        XCTAssertEqual(Sampler(p).sample(logits, context: [0], index: 0).id, 1, "2.0 / 1.5 falls below 1.9")
        p = .greedy; p.frequencyPenalty = 0.1
        XCTAssertEqual(Sampler(p).sample(logits, context: [0, 0], index: 0).id, 1)
        p = .greedy; p.presencePenalty = 0.05
        XCTAssertEqual(Sampler(p).sample(logits, context: [0, 0, 0], index: 0).id, 0, "presence counts once")
        p = .greedy; p.logprobs = 2
        let s = Sampler(p).sample(logits, context: [], index: 0)
        XCTAssertEqual(s.top.map(\.id), [0, 1])
        XCTAssertEqual(s.logprob, logSoftmax(logits)[0], accuracy: 1e-12)
    }

    func testValidationNamesTheField() {
        var p = SamplingParameters(); p.temperature = -1
        XCTAssertThrowsError(try p.validate()) { XCTAssertEqual(($0 as? SamplingError)?.field, "temperature") }
        p = SamplingParameters(); p.topP = 0
        XCTAssertThrowsError(try p.validate()) { XCTAssertEqual(($0 as? SamplingError)?.field, "top_p") }
        p = SamplingParameters(); p.logprobs = 100
        XCTAssertThrowsError(try p.validate()) { XCTAssertEqual(($0 as? SamplingError)?.field, "logprobs") }
        XCTAssertNoThrow(try SamplingParameters().validate())
    }
}

final class StopSequenceMatcherTests: XCTestCase {
    private func run(_ stops: [String], _ chunks: [String]) -> (String, String?) {
        var m = StopSequenceMatcher(stops)
        var out = ""
        for c in chunks { out += m.feed(c); if m.matched != nil { break } }
        return (out + m.finish(), m.matched)
    }

    func testStopSpanningTokensIsNotEmitted() {
        XCTAssertEqual(run(["\n\nUser:"], ["Hello", " there.", "\n", "\nUs", "er:", " more"]).0, "Hello there.")
        XCTAssertEqual(run(["\n\nUser:"], ["Hello", " there.", "\n", "\nUs", "er:", " more"]).1, "\n\nUser:")
        // A partial match that turns out not to be one is emitted in full.
        XCTAssertEqual(run(["STOP"], ["ST", "OP"]).0, "")
        XCTAssertEqual(run(["STOP"], ["ST", "ONE", " end"]).0, "STONE end")
        XCTAssertEqual(run(["STOP"], ["text ST"]).0, "text ST")
        // The earliest of several stop sequences wins; text before it in the same chunk is kept.
        XCTAssertEqual(run(["b", "abc"], ["xxab", "c"]).0, "xxa")
        XCTAssertEqual(run(["。"], ["你好", "。再见"]).0, "你好")
    }

    func testHeldBackTextIsReleasedAsSoonAsItCannotMatch() {
        var m = StopSequenceMatcher(["END"])
        XCTAssertEqual(m.feed("the E"), "the ")
        XCTAssertEqual(m.feed("x"), "Ex")
        XCTAssertNil(m.matched)
    }
}

/// The sampler sorts only as long a prefix of the candidates as its filters and draw reach; it must pick
/// what the same filters over a full sort of the vocabulary pick, on every case.
final class PartialSortSamplerTests: XCTestCase {
    func testPicksWhatAFullSortPicks() {
        var rng = TestRandom(fixed: 11)
        for trial in 0..<600 {
            let n = [50, 3000, 20_000][trial % 3]
            // Peaked (a few likely tokens) and flat distributions; ties in some.
            let spread: Float = trial % 2 == 0 ? 8 : 0.5
            var scores = (0..<n).map { _ in Float.random(in: -1...1, using: &rng) * spread }
            if trial % 5 == 0 { for i in stride(from: 0, to: n, by: 7) { scores[i] = scores[0] } }
            var p = SamplingParameters()
            p.temperature = [0.3, 0.7, 1, 1.5][trial % 4]
            p.topK = [0, 0, 40, 1, 200][trial % 5]
            p.topP = [1, 0.9, 0.5, 1, 0.99][(trial / 5) % 5]
            p.minP = [0, 0, 0.05, 0.2][(trial / 3) % 4]
            let u = Float.random(in: 0..<1, using: &rng)
            let partial = Sampler(p).sampleFiltered(scores, draw: u)
            let full = Sampler(p).sampleFiltered(scores, draw: u, firstPrefix: n)
            XCTAssertEqual(partial, full, "trial \(trial): n \(n), \(p), draw \(u)")
        }
    }
}
