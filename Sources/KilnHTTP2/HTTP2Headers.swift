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
        fields = pairs.map { Field(name: $0.0.lowercased(), value: $0.1) }
    }
    public init(dictionaryLiteral elements: (String, String)...) {
        self.init(elements)
    }

    public var count: Int { fields.count }
    public var isEmpty: Bool { fields.isEmpty }

    /// Adds a field; the name is lower-cased.
    public mutating func add(_ name: String, _ value: String) {
        fields.append(Field(name: name.lowercased(), value: value))
    }

    /// Appends a field whose name is already lower-case (from the wire).
    mutating func appendRaw(_ name: String, _ value: String) {
        fields.append(Field(name: name, value: value))
    }

    /// Replaces every field of this name with one.
    public mutating func replace(_ name: String, _ value: String) {
        let n = name.lowercased()
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
func withNameValuePairs<R>(_ pseudo: [(String, String)], _ headers: HTTP2Headers, _ body: (UnsafePointer<nghttp2_nv>, Int) -> R) -> R {
    var bytes: [UInt8] = []
    var spans: [(Int, Int, Int, Int)] = []
    spans.reserveCapacity(pseudo.count + headers.count)
    func add(_ name: String, _ value: String) {
        let n0 = bytes.count
        bytes.append(contentsOf: name.utf8)
        let v0 = bytes.count
        bytes.append(contentsOf: value.utf8)
        spans.append((n0, v0 - n0, v0, bytes.count - v0))
    }
    for (n, v) in pseudo { add(n, v) }
    for f in headers.fields { add(f.name, f.value) }
    if bytes.isEmpty { bytes.append(0) }
    return bytes.withUnsafeMutableBufferPointer { buf in
        let base = buf.baseAddress!
        var nva = spans.map { s in
            nghttp2_nv(name: base + s.0, value: base + s.2, namelen: s.1, valuelen: s.3, flags: UInt8(NGHTTP2_NV_FLAG_NONE.rawValue))
        }
        return nva.withUnsafeMutableBufferPointer { nvs in
            body(UnsafePointer(nvs.baseAddress!), nvs.count)
        }
    }
}
