import Foundation

// Build tool for the ShaderCompiler plugin: kiln-shader-embed OUT.swift SHADER.comp... [INCLUDE.glsl...]
// Each .comp is compiled with glslc (Vulkan 1.1 target, optimised) and its SPIR-V words are written to OUT
// as `EmbeddedShaders.<name>` arrays. .glsl files are includes: they only trigger rebuilds.

let arguments = CommandLine.arguments.dropFirst()
guard let output = arguments.first else {
    FileHandle.standardError.write(Data("usage: kiln-shader-embed OUT.swift SHADER.comp...\n".utf8))
    exit(2)
}
let glslc = ["/usr/bin/glslc", "/usr/local/bin/glslc"].first { FileManager.default.isExecutableFile(atPath: $0) } ?? "glslc"
let temporary = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-shaders-\(getpid())")
try FileManager.default.createDirectory(at: temporary, withIntermediateDirectories: true)
defer { try? FileManager.default.removeItem(at: temporary) }

var swift = "// Generated at build time by kiln-shader-embed from Sources/KilnVulkan/Shaders. Do not edit.\n\n"
swift += "enum EmbeddedShaders {\n"
for path in arguments.dropFirst() where path.hasSuffix(".comp") {
    let url = URL(fileURLWithPath: path)
    let name = url.deletingPathExtension().lastPathComponent
    let spv = temporary.appendingPathComponent(name + ".spv")
    let process = Process()
    process.executableURL = URL(fileURLWithPath: glslc.hasPrefix("/") ? glslc : "/usr/bin/env")
    process.arguments = (glslc.hasPrefix("/") ? [] : [glslc]) + ["--target-env=vulkan1.1", "-O", "-I", url.deletingLastPathComponent().path, "-o", spv.path, path]
    try process.run()
    process.waitUntilExit()
    guard process.terminationStatus == 0, let data = FileManager.default.contents(atPath: spv.path), data.count % 4 == 0 else {
        FileHandle.standardError.write(Data("kiln-shader-embed: glslc failed on \(path)\n".utf8))
        exit(1)
    }
    let words = data.withUnsafeBytes { Array($0.bindMemory(to: UInt32.self)) }
    let identifier = name.split(separator: "_").enumerated().map { $0 == 0 ? String($1) : $1.prefix(1).uppercased() + $1.dropFirst() }.joined()
    swift += "    static let \(identifier): [UInt32] = [\n"
    for chunk in stride(from: 0, to: words.count, by: 8) {
        swift += "        " + words[chunk..<min(chunk + 8, words.count)].map { String(format: "0x%08x,", $0) }.joined(separator: " ") + "\n"
    }
    swift += "    ]\n"
}
swift += "}\n"
try swift.write(toFile: output, atomically: true, encoding: .utf8)
