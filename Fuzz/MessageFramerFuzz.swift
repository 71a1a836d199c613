// libFuzzer target: the gRPC message deframer, fed the input in chunks whose sizes come from the input.

@_cdecl("LLVMFuzzerTestOneInput")
public func messageFramerFuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    var deframer = GRPCMessageDeframer(maxMessageSize: 1 << 16)
    let step = Int(bytes[0] % 13) + 1
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
    return 0
}
