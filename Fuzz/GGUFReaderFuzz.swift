// libFuzzer target: the GGUF reader must turn any bytes into a model file or a GGUFError naming the problem,
// never a crash, a hang or a huge allocation. Built by `make fuzz` with -sanitize=fuzzer,address.

@_cdecl("LLVMFuzzerTestOneInput")
public func ggufReaderFuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let file = MappedFile(copying: Array(UnsafeBufferPointer(start: data, count: size)))
    guard let gguf = try? GGUFFile(file: file) else { return 0 }
    // A file that opens: reading its config and dequantizing its (bounded) tensors must be safe too.
    _ = try? ModelConfig(gguf: gguf)
    for tensor in gguf.tensors where tensor.elementCount <= 1 << 16 {
        _ = Dequantize.array(tensor.type, gguf.data(of: tensor), count: tensor.elementCount)
    }
    return 0
}
