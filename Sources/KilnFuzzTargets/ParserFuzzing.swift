import Foundation
import KilnModel
import KilnRPC

/// The parser targets: bytes in, a value or a thrown error out, never a trap.
enum ParserFuzzing {
    static func protobuf(_ bytes: [UInt8]) {
        var reader = ProtobufReader(bytes)
        do {
            while let (field, wire) = try reader.readTag() {
                switch wire {
                case .lengthDelimited:
                    // Try it as a nested message, a string and bytes, as generated code might.
                    var copy = reader
                    if var nested = try? copy.readMessage() {
                        while let (f, w) = try? nested.readTag() { _ = try? nested.skipField(tagStart: 0, f, w) }
                    }
                    _ = try? reader.readString(field: field)
                case .varint:
                    var values: [UInt64] = []
                    try reader.readVarints(wireType: wire, into: &values)
                default:
                    _ = try reader.skipField(tagStart: 0, field, wire)
                }
            }
        } catch {}
    }

    static func framer(_ bytes: [UInt8]) {
        guard let first = bytes.first else { return }
        var deframer = GRPCMessageDeframer(maxMessageSize: 1 << 16)
        let step = Int(first % 13) + 1
        var i = 1
        do {
            while i < bytes.count {
                let n = min(step, bytes.count - i)
                deframer.append(Array(bytes[i..<i + n]))
                i += n
                while let m = try deframer.next() {
                    // A message re-framed must deframe to itself.
                    var again = GRPCMessageDeframer(maxMessageSize: 1 << 16)
                    again.append(GRPCMessageFramer.frame(m.payload, compressed: m.compressed))
                    guard let back = try again.next(), back == m else { fatalError("frame/deframe round trip broke") }
                }
            }
        } catch {}
    }

    static func gguf(_ bytes: [UInt8]) {
        guard let file = try? GGUFFile(file: MappedFile(copying: bytes)) else { return }
        // A file that opens: reading its config and dequantizing its (bounded) tensors must be safe too.
        _ = try? ModelConfig(gguf: file)
        for tensor in file.tensors where tensor.elementCount <= 1 << 16 {
            _ = Dequantize.array(tensor.type, file.data(of: tensor), count: tensor.elementCount)
        }
    }

    /// A byte-level BPE vocabulary (the default model's) and a SentencePiece one (llama.cpp's llama-spm suite).
    static let tokenizers: [Tokenizer] = ["KILN_FUZZ_BPE", "KILN_FUZZ_SPM"].map { key in
        guard let path = ProcessInfo.processInfo.environment[key], let file = try? GGUFFile(path: path),
              let tokenizer = try? Tokenizer(gguf: file) else { fatalError("set \(key) to a GGUF vocabulary") }
        return tokenizer
    }

    static func tokenizer(_ bytes: [UInt8]) {
        for tokenizer in tokenizers {
            for parseSpecial in [true, false] {
                let ids = tokenizer.encode(bytes: bytes, addSpecial: true, parseSpecial: parseSpecial)
                precondition(ids.allSatisfy { $0 >= 0 && $0 < tokenizer.vocabulary.count })
                _ = tokenizer.decode(ids, renderSpecial: parseSpecial)
                var stream = StreamingDetokenizer(tokenizer: tokenizer)
                for id in ids { _ = stream.append(id) }
                _ = stream.finish()
            }
        }
    }
}
