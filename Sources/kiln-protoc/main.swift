// kiln-protoc: Kiln's schema generator. Today it parses and checks proto3 files (errors as
// file:line:column); emitting Swift comes next (see Schemas/README.md).
import Foundation
import KilnProtoc

let arguments = Array(CommandLine.arguments.dropFirst())
guard !arguments.isEmpty, !arguments.contains("--help") else {
    print("usage: kiln-protoc FILE.proto ...   (checks each file; prints its messages, enums and services)")
    exit(arguments.isEmpty ? 2 : 0)
}
var failed = false
for path in arguments {
    do {
        let source = try String(contentsOfFile: path, encoding: .utf8)
        let file = try ProtoParser.parse(source, file: path)
        print("\(path): package \(file.package), \(file.messages.count) messages, \(file.enums.count) enums, "
              + "\(file.services.count) services (\(file.services.flatMap(\.methods).count) methods)")
    } catch let error as ProtoParseError {
        FileHandle.standardError.write(Data("\(error)\n".utf8))
        failed = true
    } catch {
        FileHandle.standardError.write(Data("\(path): error: \(error)\n".utf8))
        failed = true
    }
}
exit(failed ? 1 : 0)
