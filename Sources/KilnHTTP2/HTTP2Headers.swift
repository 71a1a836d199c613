import CNGHTTP2

/// An ordered list of header fields. Names are lower-case, as HTTP/2 requires.
public struct HTTP2Headers: Sendable, Equatable, Sequence, ExpressibleByDictionaryLiteral, CustomStringConvertible {
    /// One header field.
    public struct Field: Sendable, Equatable {
        public var name: String
        public var value: String
        public init(name: String, value: String) {
            self.name = name
            self.value = value
        }
    }

    public private(set) var fields: [Field]

    public init() { fields = [] }
    public init(_ pairs: [(String, String)]) {
        fields = pairs.map { Field(name: Self.lowercase($0.0), value: $0.1) }
    }
    public init(dictionaryLiteral elements: (String, String)...) {
        self.init(elements)
    }

    public var count: Int { fields.count }
    public var isEmpty: Bool { fields.isEmpty }

    /// Adds a field; the name is lower-cased.
    public mutating func add(_ name: String, _ value: String) {
        fields.append(Field(name: Self.lowercase(name), value: value))
    }

    /// Names are almost always written lower-case already: skip the allocation then.
    private static func lowercase(_ name: String) -> String {
        name.utf8.contains(where: { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") }) ? name.lowercased() : name
    }

    /// Appends a field whose name is already lower-case (from the wire).
    mutating func appendRaw(_ name: String, _ value: String) {
        fields.append(Field(name: name, value: value))
    }

    /// Appends every field of `other` (already lower-case).
    public mutating func append(contentsOf other: HTTP2Headers) {
        fields.append(contentsOf: other.fields)
    }

    /// Removes the fields that `shouldBeRemoved` picks.
    public mutating func removeAll(where shouldBeRemoved: (Field) throws -> Bool) rethrows {
        try fields.removeAll(where: shouldBeRemoved)
    }

    /// Replaces every field of this name with one.
    public mutating func replace(_ name: String, _ value: String) {
        let n = Self.lowercase(name)
        fields.removeAll { $0.name == n }
        fields.append(Field(name: n, value: value))
    }

    /// The first value of a field.
    public subscript(_ name: String) -> String? {
        fields.first { $0.name == name }?.value
    }

    /// Every value of a field, in order.
    public func values(_ name: String) -> [String] {
        fields.filter { $0.name == name }.map(\.value)
    }

    public func makeIterator() -> IndexingIterator<[Field]> { fields.makeIterator() }

    public var description: String {
        fields.map { "\($0.name): \($0.value)" }.joined(separator: ", ")
    }
}

/// Lays out header fields as nghttp2 name/value pairs for the duration of `body`. nghttp2 copies them.
/// One scratch allocation for the bytes and one for the pairs: this runs for every request and response.
func withNameValuePairs<R>(_ pseudo: [(String, String)], _ headers: HTTP2Headers, _ body: (UnsafePointer<nghttp2_nv>, Int) -> R) -> R {
    var total = 0
    for (n, v) in pseudo { total += n.utf8.count + v.utf8.count }
    for f in headers.fields { total += f.name.utf8.count + f.value.utf8.count }
    let count = pseudo.count + headers.count
    return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: max(1, total)) { bytes in
        withUnsafeTemporaryAllocation(of: nghttp2_nv.self, capacity: max(1, count)) { nva in
            var at = 0
            var i = 0
            func add(_ name: String, _ value: String) {
                let n0 = at
                at += UnsafeMutableBufferPointer(rebasing: bytes[at...]).initialize(fromContentsOf: name.utf8)
                let v0 = at
                at += UnsafeMutableBufferPointer(rebasing: bytes[at...]).initialize(fromContentsOf: value.utf8)
                nva[i] = nghttp2_nv(name: bytes.baseAddress! + n0, value: bytes.baseAddress! + v0, namelen: v0 - n0, valuelen: at - v0,
                                    flags: UInt8(NGHTTP2_NV_FLAG_NONE.rawValue))
                i += 1
            }
            for (n, v) in pseudo { add(n, v) }
            for f in headers.fields { add(f.name, f.value) }
            return body(UnsafePointer(nva.baseAddress!), count)
        }
    }
}

/// Header fields laid out once as nghttp2 name/value pairs, for responses sent many times.
final class PreparedHeaderBlock: @unchecked Sendable {
    // Immutable after init; nghttp2 only reads (and copies) these.
    let pairs: UnsafeMutablePointer<nghttp2_nv>
    let count: Int
    private let bytes: UnsafeMutablePointer<UInt8>

    init(pseudo: [(String, String)], headers: HTTP2Headers) {
        let all = pseudo.map { ($0.0, $0.1) } + headers.fields.map { ($0.name, $0.value) }
        let total = all.reduce(0) { $0 + $1.0.utf8.count + $1.1.utf8.count }
        bytes = .allocate(capacity: max(1, total))
        pairs = .allocate(capacity: max(1, all.count))
        count = all.count
        var at = 0
        for (i, (name, value)) in all.enumerated() {
            let n0 = at
            for b in name.utf8 { bytes[at] = b; at += 1 }
            let v0 = at
            for b in value.utf8 { bytes[at] = b; at += 1 }
            pairs[i] = nghttp2_nv(name: bytes + n0, value: bytes + v0, namelen: v0 - n0, valuelen: at - v0,
                                  flags: UInt8(NGHTTP2_NV_FLAG_NONE.rawValue))
        }
    }

    deinit {
        bytes.deallocate()
        pairs.deallocate()
    }
}

/// Header fields as they arrive, kept as bytes until someone needs them as strings: a request answered
/// by a fixed route never pays for string conversion.
struct RawHeaderBlock {
    private var bytes: [UInt8] = []
    /// For each field: where its name starts, the name's length, the value's length.
    private var spans: [(start: Int32, nameLength: Int32, valueLength: Int32)] = []

    var isEmpty: Bool { spans.isEmpty }

    mutating func append(name: UnsafeBufferPointer<UInt8>, value: UnsafeBufferPointer<UInt8>) {
        spans.append((Int32(bytes.count), Int32(name.count), Int32(value.count)))
        bytes.append(contentsOf: name)
        bytes.append(contentsOf: value)
    }

    mutating func removeAll() {
        bytes.removeAll()
        spans.removeAll()
    }

    func materialize() -> HTTP2Headers {
        var headers = HTTP2Headers()
        bytes.withUnsafeBufferPointer { b in
            for s in spans {
                let n = Int(s.start), nl = Int(s.nameLength), vl = Int(s.valueLength)
                headers.appendRaw(String(decoding: UnsafeBufferPointer(rebasing: b[n..<n + nl]), as: UTF8.self),
                                  String(decoding: UnsafeBufferPointer(rebasing: b[n + nl..<n + nl + vl]), as: UTF8.self))
            }
        }
        return headers
    }
}
