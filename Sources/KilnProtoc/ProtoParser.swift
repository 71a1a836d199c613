/// Parses proto3 source into a ``ProtoFile``: syntax, package, import, option (ignored), message, enum,
/// nested types, repeated, optional, map, oneof, reserved, service and rpc with `stream`. Comments
/// before a declaration become its doc comment. Errors carry `file:line:column`.
public struct ProtoParser {
    private var tokens: [ProtoToken]
    private var i = 0
    private let file: String

    public init(source: String, file: String) throws {
        var tokenizer = ProtoTokenizer(source: source, file: file)
        tokens = try tokenizer.tokenize()
        self.file = file
    }

    public static func parse(_ source: String, file: String) throws -> ProtoFile {
        var parser = try ProtoParser(source: source, file: file)
        return try parser.parseFile()
    }

    // MARK: Token helpers

    private var atEnd: Bool { i >= tokens.count }
    private var here: SourceLocation {
        if i < tokens.count { return tokens[i].location }
        return tokens.last.map { SourceLocation(file: file, line: $0.location.line, column: $0.location.column + 1) }
            ?? SourceLocation(file: file, line: 1, column: 1)
    }

    private func fail(_ message: String) -> ProtoParseError { ProtoParseError(location: here, message: message) }

    private mutating func next() throws -> ProtoToken {
        guard i < tokens.count else { throw fail("unexpected end of file") }
        defer { i += 1 }
        return tokens[i]
    }

    private func peekIdentifier() -> String? {
        if i < tokens.count, case .identifier(let s) = tokens[i].kind { return s }
        return nil
    }

    private func peekSymbol(_ c: Character) -> Bool {
        if i < tokens.count, case .symbol(c) = tokens[i].kind { return true }
        return false
    }

    private mutating func expect(_ c: Character) throws {
        guard peekSymbol(c) else { throw fail("expected '\(c)'\(describeHere())") }
        i += 1
    }

    private func describeHere() -> String {
        guard i < tokens.count else { return " at end of file" }
        switch tokens[i].kind {
        case .identifier(let s): return ", found '\(s)'"
        case .integer(let n): return ", found \(n)"
        case .float(let s): return ", found \(s)"
        case .string(let s): return ", found \"\(s)\""
        case .symbol(let c): return ", found '\(c)'"
        }
    }

    private mutating func identifier(_ what: String) throws -> String {
        guard let s = peekIdentifier() else { throw fail("expected \(what)\(describeHere())") }
        i += 1
        return s
    }

    private mutating func keyword(_ k: String) throws {
        guard peekIdentifier() == k else { throw fail("expected '\(k)'\(describeHere())") }
        i += 1
    }

    private mutating func string() throws -> String {
        let t = try next()
        guard case .string(let s) = t.kind else { i -= 1; throw fail("expected a string\(describeHere())") }
        return s
    }

    private mutating func integer() throws -> Int {
        let t = try next()
        switch t.kind {
        case .integer(let n) where n <= UInt64(Int32.max): return Int(n)
        case .float(let s): if let n = Int(s) { return n }
        default: break
        }
        i -= 1
        throw fail("expected an integer\(describeHere())")
    }

    // MARK: Grammar

    mutating func parseFile() throws -> ProtoFile {
        var result = ProtoFile(path: file)
        if peekIdentifier() == "syntax" {
            i += 1
            try expect("=")
            let at = here
            let syntax = try string()
            guard syntax == "proto3" else { throw ProtoParseError(location: at, message: "only proto3 is supported, not \(syntax)") }
            try expect(";")
        } else {
            throw fail("expected 'syntax = \"proto3\";' first")
        }
        while !atEnd {
            if peekSymbol(";") { i += 1; continue }
            let comment = tokens[i].leadingComment
            switch try identifier("a declaration") {
            case "package":
                result.package = try identifier("a package name")
                try expect(";")
            case "import":
                if peekIdentifier() == "public" || peekIdentifier() == "weak" { i += 1 }
                result.imports.append(try string())
                try expect(";")
            case "option":
                try skipOption()
            case "message":
                result.messages.append(try parseMessage(comment: comment))
            case "enum":
                result.enums.append(try parseEnum(comment: comment))
            case "service":
                result.services.append(try parseService(comment: comment))
            case let other:
                i -= 1
                throw fail("unexpected '\(other)' at top level")
            }
        }
        return result
    }

    /// `option name = value;` — options change nothing the generator emits.
    private mutating func skipOption() throws {
        while !peekSymbol("=") { _ = try next() }
        i += 1
        try skipConstant()
        try expect(";")
    }

    private mutating func skipConstant() throws {
        if peekSymbol("{") {
            var depth = 0
            repeat {
                let t = try next()
                if case .symbol("{") = t.kind { depth += 1 }
                if case .symbol("}") = t.kind { depth -= 1 }
            } while depth > 0
        } else {
            _ = try next()
        }
    }

    /// `[default = 1, deprecated = true]` after a field.
    private mutating func skipFieldOptions() throws {
        guard peekSymbol("[") else { return }
        while !peekSymbol("]") { _ = try next() }
        i += 1
    }

    private mutating func parseMessage(comment: String?) throws -> ProtoMessage {
        let at = here
        var message = ProtoMessage(name: try identifier("a message name"), comment: comment, location: at)
        try expect("{")
        var currentOneof: String?
        var oneofDepth = 0
        while true {
            if peekSymbol("}") {
                i += 1
                if oneofDepth > 0 { oneofDepth -= 1; currentOneof = nil; continue }
                break
            }
            if peekSymbol(";") { i += 1; continue }
            guard !atEnd else { throw fail("message \(message.name) is not closed") }
            let fieldComment = tokens[i].leadingComment
            let fieldAt = here
            let word = try identifier("a field or declaration")
            switch word {
            case "message" where oneofDepth == 0:
                message.messages.append(try parseMessage(comment: fieldComment))
            case "enum" where oneofDepth == 0:
                message.enums.append(try parseEnum(comment: fieldComment))
            case "option":
                try skipOption()
            case "reserved":
                try parseReserved(into: &message)
            case "oneof" where oneofDepth == 0:
                let name = try identifier("a oneof name")
                message.oneofs.append(name)
                currentOneof = name
                oneofDepth = 1
                try expect("{")
            case "map" where peekSymbol("<"):
                i += 1
                let keyName = try identifier("a map key type")
                guard let key = ProtoFieldType.scalars[keyName], key != .double, key != .float, key != .bytes else {
                    throw ProtoParseError(location: fieldAt, message: "map key type \(keyName) is not allowed")
                }
                try expect(",")
                let value = fieldType(try identifier("a map value type"))
                try expect(">")
                var field = try parseFieldRest(type: value, label: .repeated, comment: fieldComment, at: fieldAt)
                field.mapKey = key
                message.fields.append(field)
            default:
                var label = ProtoField.Label.singular
                var typeName = word
                if word == "repeated" || word == "optional" {
                    guard oneofDepth == 0 else { throw ProtoParseError(location: fieldAt, message: "oneof fields cannot be \(word)") }
                    label = word == "repeated" ? .repeated : .optional
                    typeName = try identifier("a field type")
                } else if word == "required" {
                    throw ProtoParseError(location: fieldAt, message: "'required' does not exist in proto3")
                }
                var field = try parseFieldRest(type: fieldType(typeName), label: label, comment: fieldComment, at: fieldAt)
                field.oneof = currentOneof
                message.fields.append(field)
            }
        }
        try validate(message)
        return message
    }

    private func fieldType(_ name: String) -> ProtoFieldType {
        ProtoFieldType.scalars[name] ?? .named(name)
    }

    private mutating func parseFieldRest(type: ProtoFieldType, label: ProtoField.Label, comment: String?, at: SourceLocation) throws -> ProtoField {
        let name = try identifier("a field name")
        try expect("=")
        let numberAt = here
        let number = try integer()
        guard (1...536_870_911).contains(number), !(19000...19999).contains(number) else {
            throw ProtoParseError(location: numberAt, message: "field number \(number) is out of range or reserved")
        }
        try skipFieldOptions()
        try expect(";")
        return ProtoField(name: name, number: number, type: type, label: label, mapKey: nil, oneof: nil, comment: comment, location: at)
    }

    private mutating func parseReserved(into message: inout ProtoMessage) throws {
        repeat {
            if peekSymbol(",") { i += 1 }
            if i < tokens.count, case .string(let s) = tokens[i].kind {
                i += 1
                message.reservedNames.append(s)
            } else {
                let low = try integer()
                var high = low
                if peekIdentifier() == "to" {
                    i += 1
                    if peekIdentifier() == "max" { i += 1; high = 536_870_911 } else { high = try integer() }
                }
                message.reservedNumbers.append(low...max(low, high))
            }
        } while peekSymbol(",")
        try expect(";")
    }

    private func validate(_ message: ProtoMessage) throws {
        var numbers: [Int: String] = [:]
        var names = Set<String>()
        for f in message.fields {
            if let other = numbers[f.number] {
                throw ProtoParseError(location: f.location, message: "field number \(f.number) of \(f.name) is already used by \(other)")
            }
            if !names.insert(f.name).inserted {
                throw ProtoParseError(location: f.location, message: "field name \(f.name) is used twice in \(message.name)")
            }
            if message.reservedNumbers.contains(where: { $0.contains(f.number) }) || message.reservedNames.contains(f.name) {
                throw ProtoParseError(location: f.location, message: "field \(f.name) = \(f.number) uses a reserved name or number")
            }
            numbers[f.number] = f.name
        }
    }

    private mutating func parseEnum(comment: String?) throws -> ProtoEnum {
        let at = here
        var e = ProtoEnum(name: try identifier("an enum name"), comment: comment, location: at)
        try expect("{")
        while !peekSymbol("}") {
            guard !atEnd else { throw fail("enum \(e.name) is not closed") }
            if peekSymbol(";") { i += 1; continue }
            let valueComment = tokens[i].leadingComment
            let word = try identifier("an enum value")
            if word == "option" { try skipOption(); continue }
            if word == "reserved" {
                var scratch = ProtoMessage(name: e.name, location: at)
                try parseReserved(into: &scratch)
                continue
            }
            try expect("=")
            let number = try integer()
            try skipFieldOptions()
            try expect(";")
            e.values.append(ProtoEnum.Value(name: word, number: number, comment: valueComment))
        }
        i += 1
        guard e.values.first?.number == 0 else {
            throw ProtoParseError(location: at, message: "the first value of enum \(e.name) must be 0 in proto3")
        }
        return e
    }

    private mutating func parseService(comment: String?) throws -> ProtoService {
        var service = ProtoService(name: try identifier("a service name"), comment: comment)
        try expect("{")
        while !peekSymbol("}") {
            guard !atEnd else { throw fail("service \(service.name) is not closed") }
            if peekSymbol(";") { i += 1; continue }
            let methodComment = tokens[i].leadingComment
            let word = try identifier("'rpc'")
            if word == "option" { try skipOption(); continue }
            guard word == "rpc" else { i -= 1; throw fail("expected 'rpc', found '\(word)'") }
            let name = try identifier("a method name")
            try expect("(")
            var clientStreaming = false
            if peekIdentifier() == "stream" { i += 1; clientStreaming = true }
            let input = try identifier("a request type")
            try expect(")")
            try keyword("returns")
            try expect("(")
            var serverStreaming = false
            if peekIdentifier() == "stream" { i += 1; serverStreaming = true }
            let output = try identifier("a response type")
            try expect(")")
            if peekSymbol("{") {
                i += 1
                while !peekSymbol("}") {
                    guard !atEnd else { throw fail("rpc \(name) is not closed") }
                    if peekSymbol(";") { i += 1; continue }
                    try keyword("option")
                    try skipOption()
                }
                i += 1
            } else {
                try expect(";")
            }
            service.methods.append(ProtoService.Method(name: name, input: input, output: output, clientStreaming: clientStreaming,
                                                       serverStreaming: serverStreaming, comment: methodComment))
        }
        i += 1
        return service
    }
}
