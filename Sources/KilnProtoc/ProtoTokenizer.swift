/// A position in a schema file, for error messages (`file:line:column`).
public struct SourceLocation: Sendable, Equatable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var column: Int
    public var description: String { "\(file):\(line):\(column)" }
}

/// A schema the generator cannot accept, with where and why.
public struct ProtoParseError: Error, Sendable, Equatable, CustomStringConvertible {
    public var location: SourceLocation
    public var message: String
    public var description: String { "\(location): error: \(message)" }
}

/// One lexical token of a `.proto` file.
struct ProtoToken: Equatable {
    enum Kind: Equatable {
        case identifier(String)   // may contain dots: foo.bar.Baz
        case integer(UInt64)
        case float(String)
        case string(String)
        case symbol(Character)
    }
    let kind: Kind
    let location: SourceLocation
    /// The `//` or `/* */` comment lines directly before this token, for doc comments.
    let leadingComment: String?
}

/// Splits proto3 source into tokens, keeping comments that precede declarations.
struct ProtoTokenizer {
    private let chars: [Character]
    private let file: String
    private var i = 0
    private var line = 1
    private var column = 1

    init(source: String, file: String) {
        chars = Array(source)
        self.file = file
    }

    private var location: SourceLocation { SourceLocation(file: file, line: line, column: column) }

    private mutating func advance() {
        if chars[i] == "\n" { line += 1; column = 1 } else { column += 1 }
        i += 1
    }

    mutating func tokenize() throws -> [ProtoToken] {
        var tokens: [ProtoToken] = []
        var comment: [String] = []
        var lastCommentLine = -1
        var lastTokenLine = -1
        while i < chars.count {
            let c = chars[i]
            if c.isWhitespace {
                advance()
                continue
            }
            if c == "/" && i + 1 < chars.count && chars[i + 1] == "/" {
                if lastCommentLine >= 0 && line > lastCommentLine + 1 { comment = [] }
                let sameLineAsToken = line == lastTokenLine
                var text = ""
                advance(); advance()
                while i < chars.count && chars[i] != "\n" { text.append(chars[i]); advance() }
                // A comment after a token on its line belongs to that token, not to the next declaration.
                if !sameLineAsToken {
                    comment.append(text.hasPrefix(" ") ? String(text.dropFirst()) : text)
                    lastCommentLine = line
                }
                continue
            }
            if c == "/" && i + 1 < chars.count && chars[i + 1] == "*" {
                let start = location
                advance(); advance()
                var text = ""
                while i + 1 < chars.count && !(chars[i] == "*" && chars[i + 1] == "/") { text.append(chars[i]); advance() }
                guard i + 1 < chars.count else { throw ProtoParseError(location: start, message: "unterminated /* comment") }
                advance(); advance()
                comment.append(contentsOf: text.split(separator: "\n", omittingEmptySubsequences: false).map {
                    String($0.drop(while: { $0 == " " || $0 == "*" }))
                })
                lastCommentLine = line
                continue
            }
            let start = location
            if lastCommentLine >= 0 && start.line > lastCommentLine + 1 { comment = [] }
            let doc = comment.isEmpty ? nil : comment.joined(separator: "\n")
            comment = []
            lastCommentLine = -1
            lastTokenLine = start.line
            if c.isLetter || c == "_" || (c == "." && i + 1 < chars.count && chars[i + 1].isLetter) {
                var text = ""
                while i < chars.count && (chars[i].isLetter || chars[i].isNumber || chars[i] == "_" || chars[i] == ".") {
                    text.append(chars[i]); advance()
                }
                tokens.append(ProtoToken(kind: .identifier(text), location: start, leadingComment: doc))
            } else if c.isNumber || (c == "-" && i + 1 < chars.count && chars[i + 1].isNumber) {
                var text = ""
                while i < chars.count && (chars[i].isNumber || chars[i].isLetter || chars[i] == "." || chars[i] == "-" || chars[i] == "+") {
                    // Stop at a '-' or '+' that is not an exponent sign.
                    if (chars[i] == "-" || chars[i] == "+") && !text.isEmpty && !(text.last == "e" || text.last == "E") { break }
                    text.append(chars[i]); advance()
                }
                tokens.append(ProtoToken(kind: try Self.number(text, at: start), location: start, leadingComment: doc))
            } else if c == "\"" || c == "'" {
                advance()
                var text = ""
                while i < chars.count && chars[i] != c {
                    if chars[i] == "\n" { throw ProtoParseError(location: start, message: "unterminated string") }
                    if chars[i] == "\\" && i + 1 < chars.count { advance() }
                    text.append(chars[i]); advance()
                }
                guard i < chars.count else { throw ProtoParseError(location: start, message: "unterminated string") }
                advance()
                tokens.append(ProtoToken(kind: .string(text), location: start, leadingComment: doc))
            } else if "{}[]()<>;=,:".contains(c) {
                advance()
                tokens.append(ProtoToken(kind: .symbol(c), location: start, leadingComment: doc))
            } else {
                throw ProtoParseError(location: start, message: "unexpected character '\(c)'")
            }
        }
        return tokens
    }

    private static func number(_ text: String, at location: SourceLocation) throws -> ProtoToken.Kind {
        let lower = text.lowercased()
        if lower.hasPrefix("0x"), let v = UInt64(lower.dropFirst(2), radix: 16) { return .integer(v) }
        if lower.count > 1, lower.hasPrefix("0"), lower.allSatisfy(\.isNumber), let v = UInt64(lower.dropFirst(), radix: 8) { return .integer(v) }
        if let v = UInt64(lower) { return .integer(v) }
        if Double(lower) != nil || lower == "inf" || lower == "nan" { return .float(text) }
        throw ProtoParseError(location: location, message: "malformed number '\(text)'")
    }
}
