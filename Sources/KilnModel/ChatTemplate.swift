import Foundation

// Chat-prompt rendering that reproduces llama.cpp's built-in ("legacy", non-jinja) chat templates byte for byte:
// the family is recognised from a model's jinja `chat_template` by the substring heuristics of llama.cpp's
// `llm_chat_detect_template`, and a conversation is rendered the way `llm_chat_apply_template` renders it. Kiln
// does not evaluate jinja; the only thing it reads out of the template beyond the family is a literal default
// system prompt (see `ChatTemplate.defaultSystemPrompt`).

/// One turn of a conversation: a role (`system`, `user`, `assistant`, or whatever the caller uses) and its text.
public struct ChatMessage: Sendable, Equatable {
    /// The speaker. Roles are compared exactly, as llama.cpp compares them: `system` and `user` are special,
    /// `assistant` is special for some families, and any other role is passed through where the family prints roles.
    public var role: String
    /// The message text, inserted verbatim unless the family trims it.
    public var content: String

    public init(role: String, content: String) {
        self.role = role
        self.content = content
    }
}

/// The prompt formats Kiln renders. Each raw value is llama.cpp's own name for the template, so a template given
/// by name (as with llama.cpp's `--chat-template NAME`) is recognised too.
public enum ChatTemplateFamily: String, Sendable, CaseIterable {
    /// `<|im_start|>role\ncontent<|im_end|>\n` (Qwen, SmolLM, Hermes, ...).
    case chatml = "chatml"
    /// `<|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>`, content trimmed.
    case llama3 = "llama3"
    /// `[INST] ... [/INST]` without a system role: a system message is prepended to the next user turn.
    case llama2 = "llama2"
    /// Llama 2 with the system message wrapped in `<<SYS>>` ... `<</SYS>>`.
    case llama2System = "llama2-sys"
    /// Llama 2 with `<<SYS>>`, and a `<s>` before every `[INST]` after the first.
    case llama2SystemBOS = "llama2-sys-bos"
    /// Llama 2 with `<<SYS>>`, every message trimmed.
    case llama2SystemStrip = "llama2-sys-strip"
    /// Mistral's "v1" format: ` [INST] ` ... ` [/INST]`, assistant turns ` content</s>`.
    case mistralV1 = "mistral-v1"
    /// Mistral's "v3" format: `[INST] ` ... `[/INST]`, assistant turns ` content</s>` with content trimmed.
    case mistralV3 = "mistral-v3"
    /// Mistral's "v3-tekken" format: `[INST]` ... `[/INST]` with no spaces, assistant turns `content</s>`.
    case mistralV3Tekken = "mistral-v3-tekken"
    /// Mistral's "v7" format: `[SYSTEM_PROMPT] ...[/SYSTEM_PROMPT]`, `[INST] ...[/INST]`, ` content</s>`.
    case mistralV7 = "mistral-v7"
    /// Mistral's "v7-tekken" format: v7 without the spaces. llama.cpp only selects it by name.
    case mistralV7Tekken = "mistral-v7-tekken"
    /// `<start_of_turn>role\ncontent<end_of_turn>\n` with `assistant` spelled `model`, content trimmed, and a
    /// system message folded into the next user turn.
    case gemma = "gemma"
    /// `<|role|>\ncontent<|end|>\n`.
    case phi3 = "phi3"
    /// `<|role|>\ncontent<|endoftext|>\n`.
    case zephyr = "zephyr"
}

/// A chat template Kiln cannot render: it matches none of the supported families, or llama.cpp's heuristics would
/// take it for a template outside them. The description lists every supported family.
public struct ChatTemplateError: Error, CustomStringConvertible, Sendable, Equatable {
    /// llama.cpp's name for the template when the source names one Kiln does not render, or when llama.cpp's
    /// heuristics take it for one before reaching a supported family's check (for example `phi4`, `glmedge`,
    /// `command-r`); nil otherwise, including templates llama.cpp only recognises after its Llama 3 check.
    public let llamaCppTemplate: String?

    public init(llamaCppTemplate: String?) {
        self.llamaCppTemplate = llamaCppTemplate
    }

    public var description: String {
        let supported = ChatTemplateFamily.allCases.map(\.rawValue).joined(separator: ", ")
        if let name = llamaCppTemplate {
            return "unsupported chat template: llama.cpp recognises it as '\(name)', which Kiln does not render; "
                + "supported families: \(supported)"
        }
        return "unknown chat template: it matches none of the supported families: \(supported)"
    }
}

/// A model's prompt format: which llama.cpp built-in template it is, and the system prompt its own template adds
/// when the conversation has none.
public struct ChatTemplate: Sendable {
    /// The llama.cpp built-in template the conversation is rendered with.
    public let family: ChatTemplateFamily
    /// The system prompt the model's jinja template inserts when the conversation does not start with a system
    /// message, when the template spells it as a literal (SmolLM2, Qwen 2.5, vigogne, ...); nil when it does not.
    /// llama.cpp's built-in templates never add one; Kiln does, because a model behaves as its own template taught it.
    public let defaultSystemPrompt: String?

    /// Recognises the family of a GGUF `tokenizer.chat_template` the way llama.cpp's `llm_chat_detect_template`
    /// does: an exact llama.cpp template name (`chatml`, `llama3`, ...) first, then the same substring checks in the
    /// same order, so a template that llama.cpp would take for an unsupported family is refused rather than
    /// misread as a later one. Also extracts a literal default system prompt (see `defaultSystemPrompt`).
    /// - Throws: `ChatTemplateError` when the source is not one of the supported families.
    public init(jinjaSource: String) throws {
        if let named = ChatTemplateFamily(rawValue: jinjaSource) {
            self.init(family: named)
            return
        }
        if Self.otherLlamaCppNames.contains(jinjaSource) {
            throw ChatTemplateError(llamaCppTemplate: jinjaSource)
        }
        switch Self.detect(Array(jinjaSource.utf8)) {
        case .family(let family):
            self.init(family: family, defaultSystemPrompt: JinjaScanner.defaultSystemPrompt(in: jinjaSource, for: family))
        case .unsupported(let name):
            throw ChatTemplateError(llamaCppTemplate: name)
        case .unknown:
            throw ChatTemplateError(llamaCppTemplate: nil)
        }
    }

    /// A template of a known family, with an optional default system prompt.
    public init(family: ChatTemplateFamily, defaultSystemPrompt: String? = nil) {
        self.family = family
        self.defaultSystemPrompt = defaultSystemPrompt
    }

    /// The prompt for `messages`, exactly as llama.cpp's `llm_chat_apply_template` formats it for this family, after
    /// putting a system message with `defaultSystemPrompt` first when there is one and the conversation does not
    /// start with a system message (an empty conversation stays empty).
    ///
    /// As in llama.cpp, no BOS token is written where the tokenizer adds it (`<|begin_of_text|>`, `<bos>`, the
    /// leading `<s>`); the only BOS text emitted is `<s>` inside the history of `llama2-sys-bos`.
    /// `addGenerationPrompt` appends the assistant header for the families that have one; the Llama 2 and Mistral
    /// families end with `[/INST]` anyway and ignore it, as llama.cpp does.
    public func render(_ messages: [ChatMessage], addGenerationPrompt: Bool) -> String {
        var chat = messages
        if let system = defaultSystemPrompt, let first = chat.first, first.role != "system" {
            chat.insert(ChatMessage(role: "system", content: system), at: 0)
        }
        switch family {
        case .chatml:
            return Self.renderTagged(chat, addGenerationPrompt: addGenerationPrompt) { role, content in
                "<|im_start|>\(role)\n\(content)<|im_end|>\n"
            } generationPrompt: { "<|im_start|>assistant\n" }
        case .llama3:
            return Self.renderTagged(chat, addGenerationPrompt: addGenerationPrompt) { role, content in
                "<|start_header_id|>\(role)<|end_header_id|>\n\n\(trimmed(content))<|eot_id|>"
            } generationPrompt: { "<|start_header_id|>assistant<|end_header_id|>\n\n" }
        case .phi3:
            return Self.renderTagged(chat, addGenerationPrompt: addGenerationPrompt) { role, content in
                "<|\(role)|>\n\(content)<|end|>\n"
            } generationPrompt: { "<|assistant|>\n" }
        case .zephyr:
            return Self.renderTagged(chat, addGenerationPrompt: addGenerationPrompt) { role, content in
                "<|\(role)|>\n\(content)<|endoftext|>\n"
            } generationPrompt: { "<|assistant|>\n" }
        case .gemma:
            return Self.renderGemma(chat, addGenerationPrompt: addGenerationPrompt)
        case .llama2, .llama2System, .llama2SystemBOS, .llama2SystemStrip:
            return Self.renderLlama2(chat, family: family)
        case .mistralV1, .mistralV3, .mistralV3Tekken:
            return Self.renderMistralInstruct(chat, family: family)
        case .mistralV7, .mistralV7Tekken:
            return Self.renderMistralV7(chat, space: family == .mistralV7 ? " " : "")
        }
    }
}

// MARK: - Rendering

extension ChatTemplate {
    /// Families that print every message as one tagged block, in order, with an optional assistant header at the end.
    private static func renderTagged(
        _ chat: [ChatMessage], addGenerationPrompt: Bool,
        turn: (String, String) -> String, generationPrompt: () -> String
    ) -> String {
        var out = ""
        for message in chat { out += turn(message.role, message.content) }
        if addGenerationPrompt { out += generationPrompt() }
        return out
    }

    /// Gemma has no system role: system messages (trimmed, concatenated) go in front of the next non-model turn.
    private static func renderGemma(_ chat: [ChatMessage], addGenerationPrompt: Bool) -> String {
        var out = ""
        var pendingSystem = ""
        for message in chat {
            if message.role == "system" {
                pendingSystem += trimmed(message.content)
                continue
            }
            let role = message.role == "assistant" ? "model" : message.role
            out += "<start_of_turn>\(role)\n"
            if !pendingSystem.isEmpty && role != "model" {
                out += pendingSystem + "\n\n"
                pendingSystem = ""
            }
            out += trimmed(message.content) + "<end_of_turn>\n"
        }
        if addGenerationPrompt { out += "<start_of_turn>model\n" }
        return out
    }

    /// `[INST] user [/INST]assistant</s>` with its system-message, BOS and trimming variants. The prompt always
    /// opens with `[INST] `, even before a system message or an empty conversation.
    private static func renderLlama2(_ chat: [ChatMessage], family: ChatTemplateFamily) -> String {
        let supportsSystem = family != .llama2
        let bosInsideHistory = family == .llama2SystemBOS
        let strip = family == .llama2SystemStrip
        var out = "[INST] "
        var insideTurn = true
        for message in chat {
            let content = strip ? trimmed(message.content) : message.content
            if !insideTurn {
                insideTurn = true
                out += bosInsideHistory ? "<s>[INST] " : "[INST] "
            }
            switch message.role {
            case "system":
                out += supportsSystem ? "<<SYS>>\n\(content)\n<</SYS>>\n\n" : content + "\n"
            case "user":
                out += content + " [/INST]"
            default:
                out += content + "</s>"
                insideTurn = false
            }
        }
        return out
    }

    /// Mistral v1 / v3 / v3-tekken: a system message opens the turn like a user message, followed by a blank line.
    private static func renderMistralInstruct(_ chat: [ChatMessage], family: ChatTemplateFamily) -> String {
        let leading = family == .mistralV1 ? " " : ""
        let trailing = family == .mistralV3Tekken ? "" : " "
        let trimAssistant = family == .mistralV3
        var out = ""
        var insideTurn = false
        for message in chat {
            if !insideTurn {
                out += leading + "[INST]" + trailing
                insideTurn = true
            }
            switch message.role {
            case "system":
                out += message.content + "\n\n"
            case "user":
                out += message.content + leading + "[/INST]"
            default:
                out += trailing + (trimAssistant ? trimmed(message.content) : message.content) + "</s>"
                insideTurn = false
            }
        }
        return out
    }

    /// Mistral v7 / v7-tekken: every role has its own tags; anything not system or user renders as the assistant.
    private static func renderMistralV7(_ chat: [ChatMessage], space: String) -> String {
        var out = ""
        for message in chat {
            switch message.role {
            case "system": out += "[SYSTEM_PROMPT]" + space + message.content + "[/SYSTEM_PROMPT]"
            case "user": out += "[INST]" + space + message.content + "[/INST]"
            default: out += space + message.content + "</s>"
            }
        }
        return out
    }
}

/// `text` without leading and trailing ASCII whitespace (space, \t, \n, \v, \f, \r): what llama.cpp's `trim` (C
/// `isspace` in the C locale) removes, and no more, so non-ASCII spaces such as U+00A0 survive as they do there.
private func trimmed(_ text: String) -> String {
    let scalars = text.unicodeScalars
    func isSpace(_ s: Unicode.Scalar) -> Bool {
        switch s.value {
        case 0x20, 0x09, 0x0A, 0x0B, 0x0C, 0x0D: return true
        default: return false
        }
    }
    guard let first = scalars.firstIndex(where: { !isSpace($0) }) else { return "" }
    let last = scalars.lastIndex(where: { !isSpace($0) })!
    return String(scalars[first...last])
}

// MARK: - Detection

extension ChatTemplate {
    private enum Detection {
        case family(ChatTemplateFamily)
        case unsupported(String)
        case unknown
    }

    /// llama.cpp's built-in template names outside the supported families: a source equal to one of them is a
    /// request for that template by name, refused with the name.
    private static let otherLlamaCppNames: Set<String> = [
        "phi4", "falcon3", "monarch", "orion", "openchat", "vicuna", "vicuna-orca", "deepseek", "deepseek2",
        "deepseek3", "deepseek-ocr", "command-r", "chatglm3", "chatglm4", "glmedge", "minicpm", "exaone3", "exaone4",
        "exaone-moe", "rwkv-world", "granite", "granite-4.0", "granite-4.1", "gigachat", "megrez", "yandex",
        "bailing", "bailing-think", "bailing2", "llama4", "smolvlm", "hunyuan-moe", "gpt-oss", "hunyuan-dense",
        "hunyuan-vl", "kimi-k2", "seed_oss", "grok-2", "pangu-embedded", "solar-open",
    ]

    /// llama.cpp's `llm_chat_detect_template` cascade, up to and including the last supported family (Llama 3).
    /// Checks for unsupported families that llama.cpp makes before a supported one are kept, so that such a
    /// template is refused instead of being read as the later family; everything after Llama 3 is unknown to Kiln.
    /// Substrings are matched on UTF-8 bytes, as `std::string::find` matches them.
    private static func detect(_ source: [UInt8]) -> Detection {
        func has(_ needle: String) -> Bool { source.containsBytes(of: needle) }

        if has("<|im_start|>") {
            if has("<|im_sep|>") { return .unsupported("phi4") }
            if has("<end_of_utterance>") { return .unsupported("smolvlm") }  // <|im_start|> as BOS, not ChatML
            return .family(.chatml)
        }
        if source.starts(with: "mistral".utf8) || has("[INST]") {
            if has("[SYSTEM_PROMPT]") { return .family(.mistralV7) }
            // Mistral's official v1 / v3 / v3-tekken templates.
            if has("' [INST] ' + system_message") || has("[AVAILABLE_TOOLS]") {
                if has(" [INST]") { return .family(.mistralV1) }
                if has("\"[INST]\"") { return .family(.mistralV3Tekken) }
                return .family(.mistralV3)
            }
            // Llama 2 and its variants; stripping wins over BOS, which wins over <<SYS>>.
            if has("content.strip()") { return .family(.llama2SystemStrip) }
            if has("bos_token + '[INST]") { return .family(.llama2SystemBOS) }
            if has("<<SYS>>") { return .family(.llama2System) }
            return .family(.llama2)
        }
        if has("<|assistant|>") && has("<|end|>") { return .family(.phi3) }
        if has("[gMASK]<sop>") { return .unsupported("chatglm4") }
        if has("<|assistant|>") && has("<|user|>") {
            if has("<|tool_declare|>") { return .unsupported("exaone-moe") }
            return .unsupported(has("</s>") ? "falcon3" : "glmedge")
        }
        if has("<|{{ item['role'] }}|>") && has("<|begin_of_image|>") { return .unsupported("glmedge") }
        if has("<|user|>") && has("<|endoftext|>") { return .family(.zephyr) }
        if has("bos_token + message['role']") { return .unsupported("monarch") }
        if has("<start_of_turn>") { return .family(.gemma) }
        if has("'\\n\\nAssistant: ' + eos_token") { return .unsupported("orion") }
        if has("GPT4 Correct ") { return .unsupported("openchat") }
        if has("USER: ") && has("ASSISTANT: ") { return .unsupported(has("SYSTEM: ") ? "vicuna-orca" : "vicuna") }
        if has("### Instruction:") && has("<|EOT|>") { return .unsupported("deepseek") }
        if has("<|START_OF_TURN_TOKEN|>") && has("<|USER_TOKEN|>") { return .unsupported("command-r") }
        if has("<|start_header_id|>") && has("<|end_header_id|>") { return .family(.llama3) }
        return .unknown
    }
}

extension Array where Element == UInt8 {
    /// Whether the UTF-8 bytes of `needle` occur contiguously in these bytes.
    fileprivate func containsBytes(of needle: String) -> Bool {
        let pattern = Array(needle.utf8)
        guard let head = pattern.first else { return true }
        guard pattern.count <= count else { return false }
        var start = 0
        let lastStart = count - pattern.count
        while start <= lastStart {
            if self[start] == head && self[start..<(start + pattern.count)].elementsEqual(pattern) { return true }
            start += 1
        }
        return false
    }
}

// MARK: - Default system prompt

/// Finds a literal default system prompt in a jinja chat template without evaluating it.
///
/// Only a template that tests the role of `messages[0]` against `'system'` (`==` or `!=`, either quote, subscript or
/// attribute access) is taken to have one. The first of these, in source order, is the default:
/// - at or after that test, a string literal (or raw template text) that renders a whole system turn of the family,
///   such as `'<|im_start|>system\nYou are ...<|im_end|>\n'` for ChatML: the text between the family's system header
///   and its end-of-turn marker, jinja escapes resolved (SmolLM2, Qwen 2.5);
/// - anywhere, a statement `{% set <name containing "system"> = '<literal>' %}` whose literal is plain text (not
///   blank, no prompt markup): how Llama 2 and Mistral style templates name a default system message (vigogne,
///   Devstral).
/// Anything computed (concatenations, dates, filters) is not a literal default and yields nil.
private enum JinjaScanner {
    /// The header and end-of-turn text around a system message's content in a family's rendered prompt; nil for
    /// families whose system message has no turn of its own.
    private static func systemTurnShape(of family: ChatTemplateFamily) -> (open: String, close: String)? {
        switch family {
        case .chatml: return ("<|im_start|>system\n", "<|im_end|>")
        case .llama3: return ("<|start_header_id|>system<|end_header_id|>\n\n", "<|eot_id|>")
        case .phi3: return ("<|system|>\n", "<|end|>")
        case .zephyr: return ("<|system|>\n", "<|endoftext|>")
        case .llama2System, .llama2SystemBOS, .llama2SystemStrip: return ("<<SYS>>\n", "\n<</SYS>>")
        case .mistralV7, .mistralV7Tekken: return ("[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]")
        case .llama2, .mistralV1, .mistralV3, .mistralV3Tekken, .gemma: return nil
        }
    }

    /// The role tests a template with a default makes, as they read with whitespace removed and literals re-quoted
    /// with `'` (see `JinjaLexer.Piece.block`).
    private static let guards = [
        "messages[0]['role']!='system'", "messages[0]['role']=='system'",
        "messages[0].role!='system'", "messages[0].role=='system'",
    ]

    static func defaultSystemPrompt(in source: String, for family: ChatTemplateFamily) -> String? {
        let shape = systemTurnShape(of: family)

        func systemTurnContent(_ text: String) -> String? {
            guard let shape, let open = text.range(of: shape.open, options: .literal),
                let close = text.range(of: shape.close, options: .literal, range: open.upperBound..<text.endIndex)
            else { return nil }
            let content = text[open.upperBound..<close.lowerBound]
            // v7 puts a space after the tag, and llama.cpp's renderer puts it back.
            if family == .mistralV7, content.first == " " { return String(content.dropFirst()) }
            return String(content)
        }

        let pieces = Array(JinjaLexer(source))
        guard let guardIndex = pieces.firstIndex(where: isRoleGuard) else { return nil }
        for (index, piece) in pieces.enumerated() {
            switch piece {
            case .text(let text):
                if index >= guardIndex, let found = systemTurnContent(text) { return found }
            case .block(let isStatement, let skeleton, _, let literals):
                if index >= guardIndex {
                    for literal in literals {
                        if let found = systemTurnContent(literal) { return found }
                    }
                }
                if isStatement, let found = setDefault(skeleton: skeleton, literals: literals) { return found }
            }
        }
        return nil
    }

    /// Whether a block tests the role of `messages[0]` against `'system'`.
    private static func isRoleGuard(_ piece: JinjaLexer.Piece) -> Bool {
        guard case .block(_, _, let inlined, _) = piece else { return false }
        let compact = inlined.filter { !$0.isWhitespace }
        return guards.contains { compact.contains($0) }
    }

    /// Prompt markup: a `set` literal containing any of it is a piece of a turn (a header, say), not a message.
    private static let markup = ["<|", "|>", "<<SYS>>", "[INST]", "[SYSTEM_PROMPT]", "<start_of_turn>", "</s>"]

    /// The literal of `set <name> = '<literal>'` when the name mentions "system" and the literal is a plain message:
    /// not blank, and free of prompt markup.
    /// `skeleton` is the block with each literal replaced by `JinjaLexer.placeholder`.
    private static func setDefault(skeleton: String, literals: [String]) -> String? {
        guard literals.count == 1, !trimmed(literals[0]).isEmpty,
            !markup.contains(where: { literals[0].contains($0) })
        else { return nil }
        // The statement's own code, without jinja whitespace control (`{%-`, `-%}`, `{%+`).
        let codeBody = skeleton.code(trimming: { $0.isWhitespace || $0 == "-" || $0 == "+" })
        var rest = Substring(codeBody)
        guard rest.hasPrefix("set"), rest.dropFirst(3).first?.isWhitespace == true else { return nil }
        rest = rest.dropFirst(3).drop(while: \.isWhitespace)
        let name = rest.prefix { $0.isLetter || $0.isNumber || $0 == "_" || $0 == "." }
        guard name.lowercased().contains("system") else { return nil }
        rest = rest.dropFirst(name.count).drop(while: \.isWhitespace)
        guard rest.first == "=" else { return nil }
        rest = rest.dropFirst().drop(while: \.isWhitespace)
        return rest == Substring(String(JinjaLexer.placeholder)) ? literals[0] : nil
    }
}

extension String {
    /// The string without leading and trailing characters matching `isTrimmed`.
    fileprivate func code(trimming isTrimmed: (Character) -> Bool) -> String {
        guard let first = firstIndex(where: { !isTrimmed($0) }), let last = lastIndex(where: { !isTrimmed($0) })
        else { return "" }
        return String(self[first...last])
    }
}

/// Splits jinja source into raw text and `{{ }}` / `{% %}` blocks, skipping `{# #}` comments. Delimiters inside
/// string literals do not end a block.
private struct JinjaLexer: Sequence, IteratorProtocol {
    enum Piece {
        /// Template text outside any block, verbatim.
        case text(String)
        /// A `{{ }}` expression or `{% %}` statement (`isStatement`): its body with every string literal replaced by
        /// `placeholder` (`skeleton`), its body with every literal written back as `'value'` (`inlined`), and its
        /// string literals in order, escapes resolved.
        case block(isStatement: Bool, skeleton: String, inlined: String, literals: [String])
    }

    /// Stands in for a string literal in a block's skeleton.
    static let placeholder: Character = "\u{1}"

    private let bytes: [UInt8]
    private var index = 0

    init(_ source: String) { bytes = Array(source.utf8) }

    private static let openBrace = UInt8(ascii: "{"), closeBrace = UInt8(ascii: "}")
    private static let percent = UInt8(ascii: "%"), hash = UInt8(ascii: "#")
    private static let singleQuote = UInt8(ascii: "'"), doubleQuote = UInt8(ascii: "\""), backslash = UInt8(ascii: "\\")

    private func opensBlock(at i: Int) -> Bool {
        guard bytes[i] == Self.openBrace, i + 1 < bytes.count else { return false }
        let next = bytes[i + 1]
        return next == Self.openBrace || next == Self.percent || next == Self.hash
    }

    mutating func next() -> Piece? {
        while index < bytes.count {
            guard opensBlock(at: index) else {
                let start = index
                while index < bytes.count && !opensBlock(at: index) { index += 1 }
                return .text(String(decoding: bytes[start..<index], as: UTF8.self))
            }
            let kind = bytes[index + 1]
            index += 2
            if kind == Self.hash {
                skipPast(Self.hash)
                continue
            }
            return lexBlock(closer: kind == Self.openBrace ? Self.closeBrace : Self.percent)
        }
        return nil
    }

    /// Moves past the next `closer` `}` pair, or to the end.
    private mutating func skipPast(_ closer: UInt8) {
        while index < bytes.count {
            if bytes[index] == closer && index + 1 < bytes.count && bytes[index + 1] == Self.closeBrace {
                index += 2
                return
            }
            index += 1
        }
    }

    /// Lexes a block's body, just after its opening delimiter, up to and past `closer` `}` (or to the end).
    private mutating func lexBlock(closer: UInt8) -> Piece {
        let isStatement = closer == Self.percent
        var skeleton: [UInt8] = []
        var inlined: [UInt8] = []
        var literals: [String] = []
        let placeholderBytes = Array(String(Self.placeholder).utf8)
        while index < bytes.count {
            let c = bytes[index]
            if c == Self.singleQuote || c == Self.doubleQuote {
                let literal = lexString(quote: c)
                literals.append(literal)
                skeleton += placeholderBytes
                inlined.append(Self.singleQuote)
                inlined += Array(literal.utf8)
                inlined.append(Self.singleQuote)
                continue
            }
            if c == closer && index + 1 < bytes.count && bytes[index + 1] == Self.closeBrace {
                index += 2
                break
            }
            skeleton.append(c)
            inlined.append(c)
            index += 1
        }
        return .block(
            isStatement: isStatement,
            skeleton: String(decoding: skeleton, as: UTF8.self),
            inlined: String(decoding: inlined, as: UTF8.self),
            literals: literals)
    }

    /// Lexes a string literal starting at the opening quote and returns its value with jinja's (Python's) common
    /// escapes resolved; unknown escapes are kept as written.
    private mutating func lexString(quote: UInt8) -> String {
        index += 1
        var value: [UInt8] = []
        while index < bytes.count {
            let c = bytes[index]
            index += 1
            if c == quote { break }
            guard c == Self.backslash, index < bytes.count else {
                value.append(c)
                continue
            }
            let escaped = bytes[index]
            index += 1
            switch escaped {
            case UInt8(ascii: "n"): value.append(0x0A)
            case UInt8(ascii: "t"): value.append(0x09)
            case UInt8(ascii: "r"): value.append(0x0D)
            case UInt8(ascii: "b"): value.append(0x08)
            case UInt8(ascii: "f"): value.append(0x0C)
            case UInt8(ascii: "v"): value.append(0x0B)
            case Self.backslash, Self.singleQuote, Self.doubleQuote: value.append(escaped)
            default: value.append(c); value.append(escaped)
            }
        }
        return String(decoding: value, as: UTF8.self)
    }
}
