import Foundation
import KilnFuzzTargets

#if FUZZING
// Built by `make fuzz` (swift build --sanitize fuzzer --sanitize address -Xswiftc -DFUZZING): libFuzzer's own
// main drives this entry point; KILN_FUZZ_TARGET names the target.
let target: FuzzTarget = {
    let name = ProcessInfo.processInfo.environment["KILN_FUZZ_TARGET"] ?? ""
    guard let target = FuzzTarget(rawValue: name) else {
        fatalError("set KILN_FUZZ_TARGET to one of \(FuzzTarget.allCases.map(\.rawValue).joined(separator: " "))")
    }
    return target
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    target.run(data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? [])
    return 0
}
#else
/// `kiln-fuzz TARGET FILE...`: runs inputs through a fuzz target without libFuzzer (to reproduce a crash
/// in a debugger, or replay a corpus by hand).
@main
struct KilnFuzz {
    static func main() throws {
        let arguments = CommandLine.arguments.dropFirst()
        guard let name = arguments.first, let target = FuzzTarget(rawValue: name) else {
            print("usage: kiln-fuzz TARGET FILE...   (targets: \(FuzzTarget.allCases.map(\.rawValue).joined(separator: " ")))")
            exit(2)
        }
        for path in arguments.dropFirst() {
            target.run(Array(try Data(contentsOf: URL(fileURLWithPath: path))))
            print("\(name) \(path): ok")
        }
    }
}
#endif
