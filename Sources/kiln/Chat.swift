import ArgumentParser
import Foundation
import KilnAPI
import KilnRPC

/// `kiln chat`: an interactive terminal chat with a Kiln server over the generated client. Each reply
/// streams as it is generated. With `--session ID` the conversation lives on the server and each turn sends
/// only the new message; without it the whole history is sent every turn (the prefix cache still applies).
struct Chat: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Chat with a Kiln server in the terminal.",
                                                    discussion: "Type a message and press return; /end (or end of input) quits, ending the session.")

    @Option(help: "The server (h2c://HOST:PORT or https://HOST:PORT).") var server = "h2c://127.0.0.1:8080"
    @Option(help: "CA that the server's certificate must chain to (https).") var ca = "Certs/ca.pem"
    @Option(help: "Keep the conversation on the server under this id (\"new\": the server issues a random one).") var session: String?
    @Option(help: "A system message to start with.") var system: String?
    @Option(name: .customLong("max-tokens"), help: "Most tokens per reply.") var maxTokens: UInt32 = 512
    @Option(help: "Sampling temperature (0: greedy).") var temperature: Float = 0.7
    @Option(help: "Random seed (default: a new one per reply).") var seed: UInt64?
    @Flag(help: "Print usage (tokens, cached prompt tokens, time to first token) after each reply.") var verbose = false

    func run() async throws {
        let (client, group) = try RemoteServer(server).connect(caPath: ca)
        defer { client.channel.close(); group.shutdown() }
        // "new" until the server names the session (x-session-id in the first reply's metadata).
        var sessionID = session
        if let sessionID, sessionID != "new" { note("session \(sessionID)") }
        var history: [Kiln_V1_ChatMessage] = []
        if let system { history.append(message("system", system)) }
        while true {
            note("> ", newline: false)
            guard let line = readLine(), line != "/end" else { break }
            guard !line.trimmingCharacters(in: .whitespaces).isEmpty else { continue }
            var request = Kiln_V1_ChatRequest()
            var sampling = Kiln_V1_SamplingParameters()
            sampling.maxTokens = maxTokens
            sampling.temperature = temperature
            sampling.seed = seed
            request.sampling = sampling
            // Without a session `history` is the whole conversation; with one the server holds it, and
            // `history` holds only what it has not seen yet (the system message before the first turn).
            history.append(message("user", line))
            request.messages = history
            if let sessionID { request.sessionId = sessionID }
            var reply = ""
            do {
                let call = try client.channel.makeTypedCall(path: "/kiln.v1.Inference/Chat", request: Kiln_V1_ChatRequest.self,
                                                            response: Kiln_V1_GenerateResponse.self)
                try await call.send(request)
                call.finish()
                if sessionID == "new", let issued = try await call.raw.initialMetadata()["x-session-id"] {
                    sessionID = issued
                    note("session \(issued)")
                }
                for try await m in call.responses {
                    reply += m.text
                    FileHandle.standardOutput.write(Data(m.text.utf8))
                    if let u = m.usage, verbose {
                        note("\n[\(u.promptTokens) prompt tokens, \(u.cachedPromptTokens) cached, \(u.completionTokens) generated, first token \(String(format: "%.0f", u.timeToFirstTokenMs)) ms\(u.fromResultCache ? ", from the result cache" : "")]", newline: false)
                    }
                }
                FileHandle.standardOutput.write(Data("\n".utf8))
                if sessionID == nil { history.append(message("assistant", reply)) } else { history.removeAll() }
            } catch let error as RPCError {
                history.removeLast()
                note("error: \(error.code) \(error.message)")
            }
        }
        if let sessionID, sessionID != "new" {
            var end = Kiln_V1_EndSessionRequest()
            end.sessionId = sessionID
            _ = try? await client.endSession(end)
        }
    }

    private func message(_ role: String, _ content: String) -> Kiln_V1_ChatMessage {
        var m = Kiln_V1_ChatMessage()
        m.role = role
        m.content = content
        return m
    }

    /// Prompts and notes go to stderr so that stdout carries only the replies.
    private func note(_ text: String, newline: Bool = true) {
        FileHandle.standardError.write(Data((text + (newline ? "\n" : "")).utf8))
    }
}
