import ArgumentParser
import Foundation
import Histogram
import KilnAPI

/// `kiln bench serve`: a load generator on the generated client (or on an OpenAI-compatible HTTP server,
/// for llama.cpp's llama-server as the anchor). Closed loop at each concurrency and completion length,
/// open-loop Poisson arrivals at each rate, and a multi-turn chat; prints latency percentiles
/// (HdrHistogram), aggregate tok/s and the share of requests meeting the `real_time_chat` SLO, as BENCH lines.
struct BenchServe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "serve", abstract: "Load-test a server: latency percentiles, tok/s, SLO goodput.")

    @Option(help: "Kiln server (h2c://HOST:PORT or https://HOST:PORT).") var server: String?
    @Option(help: "Instead: an OpenAI-compatible server (http://HOST:PORT), e.g. llama-server.") var openai: String?
    @Option(name: .customLong("openai-label"), help: "The figures' prefix for --openai (e.g. kiln_openai for Kiln's own endpoint).") var openaiLabel = "llama_server"
    @Option(help: "CA for https.") var ca = "Certs/ca.pem"
    @Option(help: "Closed-loop concurrencies.") var concurrency = "1,4,16,32"
    @Option(name: .customLong("new-tokens"), help: "Tokens generated per request.") var newTokens = "64,128"
    @Option(help: "Requests per stream at each closed-loop level.") var rounds = 1
    @Option(help: "Poisson arrival rates to try, requests/s (empty: skip).") var rates = ""
    @Option(name: .customLong("poisson-requests"), help: "Requests per Poisson rate.") var poissonRequests = 16
    @Option(name: .customLong("poisson-tokens"), help: "Tokens per Poisson request.") var poissonTokens = 64
    @Option(help: "Turns of the multi-turn chat (0: skip).") var turns = 10
    @Option(name: .customLong("turn-tokens"), help: "Reply tokens per chat turn at most.") var turnTokens = 32
    @Flag(name: .customLong("skip-closed"), help: "Skip the closed-loop levels.") var skipClosed = false

    /// The design's `real_time_chat` objective for time to first token.
    static let sloP50 = 0.2, sloP95 = 0.5, sloP99 = 1.0

    func run() async throws {
        printLineByLine()
        let target: LoadTarget
        if let openai {
            let remote = try RemoteServer(openai.replacingOccurrences(of: "http://", with: "h2c://"))
            target = OpenAITarget(host: remote.host, port: remote.port, label: openaiLabel)
        } else {
            let (client, _) = try RemoteServer(server ?? "h2c://127.0.0.1:8080").connect(caPath: ca)
            target = KilnTarget(client: client)
        }
        let label = target.name
        var promptSerial = 0
        func nextPrompt() -> String {
            promptSerial += 1
            return Self.prompt(promptSerial)
        }

        if !skipClosed {
            for tokens in try ints(newTokens) {
                for streams in try ints(concurrency) {
                    let prompts = (0..<streams * rounds).map { _ in nextPrompt() }
                    let started = monotonicSeconds()
                    let timelines = await withTaskGroup(of: [RequestTimeline].self) { group in
                        for s in 0..<streams {
                            group.addTask {
                                var mine: [RequestTimeline] = []
                                for r in 0..<rounds { mine.append(await target.complete(prompt: prompts[s * rounds + r], tokens: tokens)) }
                                return mine
                            }
                        }
                        return await group.reduce(into: []) { $0 += $1 }
                    }
                    report("\(label)_c\(streams)_n\(tokens)", timelines, wall: monotonicSeconds() - started)
                }
            }
        }

        // Open loop: arrivals at exponential intervals, whatever the server's pace.
        var goodput = 0.0
        for rate in try doubles(rates) {
            var generator = SystemRandomNumberGenerator()
            let prompts = (0..<poissonRequests).map { _ in nextPrompt() }
            let tokens = poissonTokens
            let started = monotonicSeconds()
            let timelines = await withTaskGroup(of: RequestTimeline.self) { group in
                var due = 0.0
                for p in prompts {
                    let wait = due - (monotonicSeconds() - started)
                    if wait > 0 { try? await Task.sleep(nanoseconds: UInt64(wait * 1e9)) }
                    group.addTask { await target.complete(prompt: p, tokens: tokens) }
                    due += -log(1 - Double.random(in: 0..<1, using: &generator)) / rate
                }
                return await group.reduce(into: []) { $0.append($1) }
            }
            let met = report("\(label)_poisson_\(format(rate))rps", timelines, wall: monotonicSeconds() - started)
            if met { goodput = max(goodput, rate) }
        }
        if !rates.isEmpty { print("BENCH \(label)_goodput_rps \(format(goodput)) req/s") }

        // Multi-turn chat: time to first token per turn should stay flat as the history grows.
        if turns > 0 {
            let questions = ["Hello! Can you help me plan a trip?", "I want to visit Italy.", "Which cities should I see?",
                             "How many days in Rome?", "What food should I try?", "Is the train fast?", "What about Venice?",
                             "Any museums there?", "How do I get to the airport?", "Summarize the plan in one line."]
            var history: [(role: String, content: String)] = []
            var firsts: [Double] = []
            let session = "bench-\(UUID().uuidString.prefix(8))"
            for t in 0..<turns {
                let question = (role: "user", content: questions[t % questions.count])
                let sent = target.keepsSessions ? [question] : history + [question]
                let (reply, timeline) = await target.chatTurn(messages: sent, sessionID: session, tokens: turnTokens)
                if let e = timeline.error { print("turn \(t + 1) failed: \(e)") }
                history += [question, (role: "assistant", content: reply)]
                firsts.append(timeline.timeToFirstToken ?? .nan)
                print(String(format: "turn %d: first token %.0f ms", t + 1, (timeline.timeToFirstToken ?? .nan) * 1000))
            }
            if let first = firsts.first, let last = firsts.last {
                print(String(format: "BENCH %@_chat_turn1_ttft_ms %.1f ms", label, first * 1000))
                print(String(format: "BENCH %@_chat_turn%d_ttft_ms %.1f ms", label, turns, last * 1000))
                print(String(format: "BENCH %@_chat_turn%d_over_turn1 %.2f x", label, turns, last / first))
            }
        }
    }

    /// Prints one workload's figures; returns whether its time to first token met the SLO.
    @discardableResult
    private func report(_ name: String, _ timelines: [RequestTimeline], wall: Double) -> Bool {
        let failed = timelines.filter { $0.error != nil }
        for f in failed.prefix(3) { print("\(name): request failed: \(f.error ?? "")") }
        var ttft = Histogram<UInt64>(highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .three)
        var itl = ttft, e2e = ttft
        var tokens = 0, sloMet = 0
        for t in timelines where t.error == nil {
            tokens += t.tokenTimes.count
            if let first = t.timeToFirstToken {
                _ = ttft.record(UInt64(max(0, first) * 1e6))
                if first <= Self.sloP50 { sloMet += 1 }
            }
            for gap in t.interTokenGaps { _ = itl.record(UInt64(max(0, gap) * 1e6)) }
            _ = e2e.record(UInt64(max(0, t.end - t.start) * 1e6))
        }
        func ms(_ h: Histogram<UInt64>, _ p: Double) -> Double { Double(h.valueAtPercentile(p)) / 1000 }
        let p50 = ms(ttft, 50), p95 = ms(ttft, 95), p99 = ms(ttft, 99)
        let met = failed.isEmpty && p50 <= Self.sloP50 * 1000 && p95 <= Self.sloP95 * 1000 && p99 <= Self.sloP99 * 1000
        print("BENCH \(name)_tok_s \(format(Double(tokens) / wall)) tok/s")
        print("BENCH \(name)_ttft_p50_ms \(format(p50)) ms")
        print("BENCH \(name)_ttft_p95_ms \(format(p95)) ms")
        print("BENCH \(name)_ttft_p99_ms \(format(p99)) ms")
        print("BENCH \(name)_itl_p50_ms \(format(ms(itl, 50))) ms")
        print("BENCH \(name)_itl_p99_ms \(format(ms(itl, 99))) ms")
        print("BENCH \(name)_e2e_p50_ms \(format(ms(e2e, 50))) ms")
        print("BENCH \(name)_e2e_p99_ms \(format(ms(e2e, 99))) ms")
        // Requests whose first token came within the SLO's median bound; the SLO as a whole holds when the
        // percentiles do (the last line).
        print("BENCH \(name)_slo_share \(format(100 * Double(sloMet) / Double(max(1, timelines.count)))) %")
        print("BENCH \(name)_slo_met \(met ? 1 : 0) bool")
        print("BENCH \(name)_failed \(failed.count) requests")
        fflush(nil)
        return met
    }

    /// A distinct prompt of a few dozen tokens (distinct from its first words, so no prefix is shared).
    static func prompt(_ i: Int) -> String {
        let subjects = ["lighthouses", "glaciers", "honeybees", "steam engines", "violins", "coral reefs", "comets", "bridges"]
        return "Request \(i). Write a detailed, friendly paragraph about \(subjects[i % subjects.count]), covering their history, how they work, and one surprising fact."
    }

    private func ints(_ list: String) throws -> [Int] {
        try list.split(separator: ",").map { guard let v = Int($0.trimmingCharacters(in: .whitespaces)), v > 0 else { throw ValidationError("bad number in \(list)") }; return v }
    }

    private func doubles(_ list: String) throws -> [Double] {
        try list.split(separator: ",").map { guard let v = Double($0.trimmingCharacters(in: .whitespaces)), v > 0 else { throw ValidationError("bad rate in \(list)") }; return v }
    }

    private func format(_ v: Double) -> String { String(format: v >= 100 ? "%.0f" : "%.2f", v) }
}
