/// Encodes a parsed file as a serialized `google.protobuf.FileDescriptorProto`: what gRPC server reflection
/// hands to grpcurl and other clients that have no `.proto` files. Follows protoc's conventions: fully
/// qualified type names with a leading dot, `json_name` in lowerCamelCase, a `<Field>Entry` nested message per
/// map field, and a synthetic oneof `_<field>` per proto3 `optional` field.
public struct DescriptorEncoder {
    private let file: ProtoFile
    /// Fully-qualified proto name (no leading dot) → whether it is an enum.
    private var types: [String: Bool] = [:]

    public init(file: ProtoFile) {
        self.file = file
        let base = file.package.isEmpty ? "" : file.package + "."
        func register(_ m: ProtoMessage, _ name: String) {
            types[name] = false
            for n in m.messages { register(n, name + "." + n.name) }
            for e in m.enums { types[name + "." + e.name] = true }
        }
        for m in file.messages { register(m, base + m.name) }
        for e in file.enums { types[base + e.name] = true }
    }

    /// Fully-qualified names of everything the file declares — messages, enums, services and methods — for
    /// reflection's symbol lookup.
    public var symbols: [String] {
        let base = file.package.isEmpty ? "" : file.package + "."
        let services = file.services.flatMap { s in [base + s.name] + s.methods.map { base + s.name + "." + $0.name } }
        return types.keys.sorted() + services
    }

    public func encode() throws -> [UInt8] {
        var w = DescriptorWriter()
        w.string(1, file.path)
        if !file.package.isEmpty { w.string(2, file.package) }
        for i in file.imports { w.string(3, i) }
        let base = file.package.isEmpty ? "" : file.package + "."
        for m in file.messages { w.message(4, try message(m, name: base + m.name)) }
        for e in file.enums { w.message(5, enumeration(e)) }
        for s in file.services { w.message(6, try service(s)) }
        w.string(12, "proto3")
        return w.bytes
    }

    private func message(_ m: ProtoMessage, name: String) throws -> [UInt8] {
        var w = DescriptorWriter()
        w.string(1, m.name)
        // Real oneofs first, then one synthetic oneof per proto3 `optional` field, as protoc orders them.
        let optionals = m.fields.filter { $0.label == .optional && $0.oneof == nil }.map(\.name)
        let oneofs = m.oneofs + optionals.map { "_" + $0 }
        for f in m.fields { w.message(2, try field(f, in: name, oneofs: oneofs)) }
        // Nested messages and map entries in declaration order, as protoc creates them while parsing.
        var nested: [(SourceLocation, [UInt8])] = []
        for n in m.messages { nested.append((n.location, try message(n, name: name + "." + n.name))) }
        for f in m.fields where f.mapKey != nil { nested.append((f.location, try mapEntry(f, in: name))) }
        for (_, bytes) in nested.sorted(by: { ($0.0.line, $0.0.column) < ($1.0.line, $1.0.column) }) { w.message(3, bytes) }
        for e in m.enums { w.message(4, enumeration(e)) }
        for o in oneofs {
            var d = DescriptorWriter()
            d.string(1, o)
            w.message(8, d.bytes)
        }
        for r in m.reservedNumbers {
            var d = DescriptorWriter()
            d.varint(1, UInt64(r.lowerBound))
            d.varint(2, UInt64(r.upperBound) + 1)   // DescriptorProto.ReservedRange's end is exclusive
            w.message(9, d.bytes)
        }
        for r in m.reservedNames { w.string(10, r) }
        return w.bytes
    }

    private func field(_ f: ProtoField, in scope: String, oneofs: [String]) throws -> [UInt8] {
        var w = DescriptorWriter()
        w.string(1, f.name)
        w.varint(3, UInt64(f.number))
        w.varint(4, f.label == .repeated || f.mapKey != nil ? 3 : 1)
        if f.mapKey != nil {
            w.varint(5, 11)
            w.string(6, "." + scope + "." + Self.mapEntryName(f.name))
        } else {
            try type(f.type, scope: scope, into: &w)
        }
        let oneof = f.oneof ?? (f.label == .optional ? "_" + f.name : nil)
        if let oneof, let index = oneofs.firstIndex(of: oneof) { w.varint(9, UInt64(index)) }
        w.string(10, Self.jsonName(f.name))
        if f.label == .optional && f.oneof == nil { w.varint(17, 1) }
        return w.bytes
    }

    private func mapEntry(_ f: ProtoField, in scope: String) throws -> [UInt8] {
        var w = DescriptorWriter()
        w.string(1, Self.mapEntryName(f.name))
        for (name, number, t) in [("key", 1, f.mapKey ?? .string), ("value", 2, f.type)] {
            var d = DescriptorWriter()
            d.string(1, name)
            d.varint(3, UInt64(number))
            d.varint(4, 1)
            try type(t, scope: scope, into: &d)
            d.string(10, name)
            w.message(2, d.bytes)
        }
        var options = DescriptorWriter()
        options.varint(7, 1)   // MessageOptions.map_entry
        w.message(7, options.bytes)
        return w.bytes
    }

    /// FieldDescriptorProto.type (5) and, for messages and enums, type_name (6).
    private func type(_ t: ProtoFieldType, scope: String, into w: inout DescriptorWriter) throws {
        let code: UInt64
        switch t {
        case .double: code = 1
        case .float: code = 2
        case .int64: code = 3
        case .uint64: code = 4
        case .int32: code = 5
        case .fixed64: code = 6
        case .fixed32: code = 7
        case .bool: code = 8
        case .string: code = 9
        case .bytes: code = 12
        case .uint32: code = 13
        case .sfixed32: code = 15
        case .sfixed64: code = 16
        case .sint32: code = 17
        case .sint64: code = 18
        case .named(let n):
            let (full, isEnum) = try resolve(n, scope: scope)
            w.varint(5, isEnum ? 14 : 11)
            w.string(6, "." + full)
            return
        }
        w.varint(5, code)
    }

    private func enumeration(_ e: ProtoEnum) -> [UInt8] {
        var w = DescriptorWriter()
        w.string(1, e.name)
        for v in e.values {
            var d = DescriptorWriter()
            d.string(1, v.name)
            d.varint(2, UInt64(bitPattern: Int64(v.number)))
            w.message(2, d.bytes)
        }
        return w.bytes
    }

    private func service(_ s: ProtoService) throws -> [UInt8] {
        var w = DescriptorWriter()
        w.string(1, s.name)
        let scope = file.package
        for m in s.methods {
            var d = DescriptorWriter()
            d.string(1, m.name)
            d.string(2, "." + (try resolve(m.input, scope: scope)).0)
            d.string(3, "." + (try resolve(m.output, scope: scope)).0)
            if m.clientStreaming { d.varint(5, 1) }
            if m.serverStreaming { d.varint(6, 1) }
            w.message(2, d.bytes)
        }
        return w.bytes
    }

    /// A type name as written, resolved innermost scope first (proto scoping).
    private func resolve(_ name: String, scope: String) throws -> (String, Bool) {
        if name.hasPrefix(".") {
            if let isEnum = types[String(name.dropFirst())] { return (String(name.dropFirst()), isEnum) }
        } else {
            var parts = scope.split(separator: ".").map(String.init)
            while true {
                let candidate = (parts + [name]).joined(separator: ".")
                if let isEnum = types[candidate] { return (candidate, isEnum) }
                if parts.isEmpty { break }
                parts.removeLast()
            }
        }
        throw ProtoParseError(location: SourceLocation(file: file.path, line: 0, column: 0), message: "unknown type \(name) in \(scope)")
    }

    /// protoc's name for a map field's entry message: the field name in UpperCamelCase plus "Entry".
    static func mapEntryName(_ field: String) -> String {
        let camel = jsonName(field)
        return camel.prefix(1).uppercased() + camel.dropFirst() + "Entry"
    }

    /// protoc's default JSON name: underscores dropped, the letter after each one upper-cased.
    static func jsonName(_ field: String) -> String {
        var out = "", upper = false
        for c in field {
            if c == "_" { upper = true; continue }
            out += upper ? c.uppercased() : String(c)
            upper = false
        }
        return out
    }
}

/// Just enough of the protobuf wire format to write descriptors (KilnProtoc depends on nothing).
struct DescriptorWriter {
    private(set) var bytes: [UInt8] = []

    mutating func varint(_ field: Int, _ value: UInt64) {
        raw(UInt64(field) << 3)
        raw(value)
    }

    mutating func string(_ field: Int, _ value: String) { message(field, Array(value.utf8)) }

    mutating func message(_ field: Int, _ value: [UInt8]) {
        raw(UInt64(field) << 3 | 2)
        raw(UInt64(value.count))
        bytes += value
    }

    private mutating func raw(_ value: UInt64) {
        var v = value
        while v >= 0x80 {
            bytes.append(UInt8(v & 0x7F) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }
}
