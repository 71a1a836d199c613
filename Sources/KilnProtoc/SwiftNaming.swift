/// How proto names become Swift names.
enum SwiftNaming {
    static let keywords: Set<String> = [
        "associatedtype", "class", "deinit", "enum", "extension", "fileprivate", "func", "import", "init", "inout",
        "internal", "let", "open", "operator", "private", "protocol", "public", "rethrows", "static", "struct",
        "subscript", "typealias", "var", "break", "case", "continue", "default", "defer", "do", "else", "fallthrough",
        "for", "guard", "if", "in", "repeat", "return", "switch", "where", "while", "as", "catch", "false", "is", "nil",
        "super", "self", "Self", "throw", "throws", "true", "try", "Type", "Protocol", "any", "some",
    ]

    /// `max_tokens` → `maxTokens`, keywords in backticks.
    static func property(_ protoName: String) -> String {
        let parts = protoName.split(separator: "_", omittingEmptySubsequences: true)
        guard let first = parts.first else { return "_" }
        var name = first.prefix(1).lowercased() + first.dropFirst()
        for p in parts.dropFirst() { name += p.prefix(1).uppercased() + p.dropFirst() }
        if name.first?.isNumber == true { name = "_" + name }
        return keywords.contains(name) ? "`\(name)`" : name
    }

    /// `kiln.v1` → `Kiln_V1_`.
    static func packagePrefix(_ package: String) -> String {
        guard !package.isEmpty else { return "" }
        return package.split(separator: ".").map { $0.prefix(1).uppercased() + $0.dropFirst() }.joined(separator: "_") + "_"
    }

    /// `FINISH_REASON_STOP` in enum `FinishReason` → `stop`.
    static func enumCase(_ value: String, enumName: String) -> String {
        var upperSnake = ""
        for (i, c) in enumName.enumerated() {
            if c.isUppercase && i > 0 { upperSnake += "_" }
            upperSnake += c.uppercased()
        }
        var v = value
        if v.hasPrefix(upperSnake + "_") && v.count > upperSnake.count + 1 { v = String(v.dropFirst(upperSnake.count + 1)) }
        let name = property(v.lowercased())
        return name
    }
}
