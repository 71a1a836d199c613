import Foundation
import KilnAPI
import KilnEngine

/// The first cache level: whole answers to deterministic requests (temperature 0, or an explicit seed),
/// keyed by everything that decides the tokens — model, prompt tokens, sampling parameters, limits and stop
/// strings — and replayed as a stream. Least recently used answers go first once the byte budget is spent;
/// every answer expires after the time-to-live. Only answers that ran to completion are stored.
final class ResultCache: @unchecked Sendable {
    struct Key: Hashable {
        let model: String
        let prompt: [Int]
        let temperature: Float, topK: Int, topP: Float, minP: Float
        let repetitionPenalty: Float, frequencyPenalty: Float, presencePenalty: Float
        let seed: UInt64
        let logprobs: Int, wantLogprob: Bool
        let maxTokens: Int
        let stops: [String]
        let stopTokens: [Int]

        /// The key of a request whose answer is fixed by its inputs; nil for a request sampled with a
        /// random seed, which must not be replayed.
        init?(model: String, prompt: [Int], parameters p: SamplingParameters, seeded: Bool, wantLogprob: Bool,
              maxTokens: Int, stops: [String], stopTokens: Set<Int>) {
            guard p.temperature == 0 || seeded else { return nil }
            self.model = model
            self.prompt = prompt
            temperature = p.temperature; topK = p.topK; topP = p.topP; minP = p.minP
            repetitionPenalty = p.repetitionPenalty; frequencyPenalty = p.frequencyPenalty; presencePenalty = p.presencePenalty
            seed = p.temperature == 0 ? 0 : p.seed   // greedy ignores the seed
            logprobs = p.logprobs
            self.wantLogprob = wantLogprob
            self.maxTokens = maxTokens
            self.stops = stops
            self.stopTokens = stopTokens.sorted()
        }
    }

    /// A stored answer: every message as first sent (the last one carries finish reason and usage).
    struct Answer {
        let messages: [Kiln_V1_GenerateResponse]
        /// The sampled tokens and their text as the model saw them (for a session continued from a replay).
        let tokens: [Int]
        let seenText: String
    }

    // `entries`, `hits` and `misses` are read and written only under `lock`.
    private let lock = NSLock()
    private var entries: LRUCache<Key, Answer>
    private var hits = 0, misses = 0
    /// Whether the cache keeps anything (a budget above 0); fixed at init, so read without the lock.
    let isEnabled: Bool

    /// `bytes` 0 disables the cache.
    init(bytes: Int, timeToLive: Double) {
        entries = LRUCache(budget: bytes, timeToLive: timeToLive)
        isEnabled = bytes > 0
    }

    var counts: (hits: Int, misses: Int) {
        lock.lock(); defer { lock.unlock() }
        return (hits, misses)
    }

    /// The stored answer for `key`, counting a hit or a miss.
    func answer(for key: Key) -> Answer? {
        lock.lock(); defer { lock.unlock() }
        let found = entries.value(for: key, now: Self.now())
        if found == nil { misses += 1 } else { hits += 1 }
        return found
    }

    func store(_ answer: Answer, for key: Key) {
        // What the entry holds: the messages' encoded size plus the key's tokens and some bookkeeping.
        let cost = answer.messages.reduce(0) { $0 + $1.serializedBytes().count + 32 } + (key.prompt.count + answer.tokens.count) * 8 + answer.seenText.utf8.count + 256
        lock.lock(); defer { lock.unlock() }
        entries.insert(answer, for: key, cost: cost, now: Self.now())
    }

    private static func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }
}
