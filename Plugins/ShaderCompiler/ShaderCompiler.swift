import Foundation
import PackagePlugin

/// Compiles a target's GLSL compute shaders (`Shaders/*.comp`) to SPIR-V with glslc at build time and embeds
/// the words in a generated Swift file, so the SPIR-V the binary runs always matches the source beside it.
@main
struct ShaderCompiler: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        guard let target = target as? SourceModuleTarget else { return [] }
        let shaders = target.sourceFiles.map(\.url).filter { $0.pathExtension == "comp" || $0.pathExtension == "glsl" }
            .sorted { $0.path < $1.path }
        guard !shaders.isEmpty else { return [] }
        let output = context.pluginWorkDirectoryURL.appending(path: "EmbeddedShaders.swift")
        return [.buildCommand(
            displayName: "Compiling \(shaders.count) compute shaders with glslc",
            executable: try context.tool(named: "kiln-shader-embed").url,
            arguments: [output.path] + shaders.map(\.path),
            inputFiles: shaders,
            outputFiles: [output])]
    }
}
