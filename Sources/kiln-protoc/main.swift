// kiln-protoc: Kiln's schema generator.
//   kiln-protoc --proto_path Schemas [--swift_out DIR] FILE.proto ...
// Parses each file (errors as file:line:column) and, with --swift_out, writes DIR/<path_with_underscores>/:
// one <SwiftType>.pb.swift per top-level enum and message, <path_with_underscores>.descriptor.swift (for
// reflection) and, for files with services, <path_with_underscores>.rpc.swift.
import Foundation
import KilnProtoc

var protoPath = "."
var swiftOut: String?
var files: [String] = []
var args = Array(CommandLine.arguments.dropFirst())
while !args.isEmpty {
    let a = args.removeFirst()
    switch a {
    case "--proto_path", "-I": protoPath = args.isEmpty ? "." : args.removeFirst()
    case "--swift_out": swiftOut = args.isEmpty ? nil : args.removeFirst()
    case "--help", "-h":
        print("usage: kiln-protoc [--proto_path DIR] [--swift_out DIR] FILE.proto ...")
        exit(0)
    default: files.append(a)
    }
}
guard !files.isEmpty else {
    FileHandle.standardError.write(Data("kiln-protoc: no input files (see --help)\n".utf8))
    exit(2)
}
var failed = false
for relative in files {
    do {
        let source = try String(contentsOfFile: protoPath + "/" + relative, encoding: .utf8)
        let parsed = try ProtoParser.parse(source, file: relative)
        if let swiftOut {
            var emitter = SwiftEmitter(file: parsed)
            // The folder holds this proto's code only: cleared first, so a type removed from the schema
            // leaves no stale file behind.
            let folder = swiftOut + "/" + SwiftEmitter.baseName(for: relative)
            try? FileManager.default.removeItem(atPath: folder)
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            for (name, swift) in try emitter.emitFiles() {
                try swift.write(toFile: swiftOut + "/" + name, atomically: true, encoding: .utf8)
                print("\(relative) → \(swiftOut)/\(name)")
            }
        } else {
            print("\(relative): package \(parsed.package), \(parsed.messages.count) messages, \(parsed.enums.count) enums, "
                  + "\(parsed.services.count) services (\(parsed.services.flatMap(\.methods).count) methods)")
        }
    } catch {
        FileHandle.standardError.write(Data("\(error)\n".utf8))
        failed = true
    }
}
exit(failed ? 1 : 0)
