import Foundation

/// Kiln's fuzz targets, each a function of one input's bytes that must not crash, hang or allocate without
/// bound. `make fuzz` links them into libFuzzer (`kiln-fuzz`, built with -sanitize=fuzzer,address from the
/// package's own targets, so their sources cannot drift); `make test` replays every committed corpus entry
/// through the same functions (`FuzzCorpusTests`).
public enum FuzzTarget: String, CaseIterable, Sendable {
    /// The protobuf reader on any bytes.
    case protobuf
    /// The gRPC message deframer on any bytes, chunked as the input says.
    case framer
    /// The GGUF reader (and the config and dequantizers of a file that opens) on any bytes.
    case gguf
    /// Both tokenizer families on any bytes (vocabularies from KILN_FUZZ_BPE and KILN_FUZZ_SPM).
    case tokenizer
    /// Raw bytes into an h2c connection of a whole in-process server: nghttp2, the router, the demo routes
    /// and the inference service on a tiny random-weight model.
    case server
    /// The same server, fed well-formed HTTP/2 written from the input: preface, SETTINGS, HEADERS with
    /// paths, query strings and headers, gRPC-framed bodies (random or structured requests).
    case h2frames

    /// Runs one input.
    public func run(_ bytes: [UInt8]) {
        switch self {
        case .protobuf: ParserFuzzing.protobuf(bytes)
        case .framer: ParserFuzzing.framer(bytes)
        case .gguf: ParserFuzzing.gguf(bytes)
        case .tokenizer: ParserFuzzing.tokenizer(bytes)
        case .server: ServerFuzzHarness.shared.exchange(bytes)
        case .h2frames: ServerFuzzHarness.shared.exchange(HTTP2SessionWriter.session(from: bytes))
        }
    }
}
