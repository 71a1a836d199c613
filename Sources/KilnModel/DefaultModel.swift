import Foundation

/// Where Kiln finds its default model: SmolLM2-135M-Instruct (Q4_1), put there by `make model`.
public enum DefaultModel {
    public static let fileName = "SmolLM2-135M-Instruct.Q4_1.gguf"
    public static let sha256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

    /// `$KILN_MODEL` when set, else `$KILN_MODELS_DIR/<file>`, else `~/.cache/kiln/models/<file>`.
    public static var path: String {
        let env = ProcessInfo.processInfo.environment
        if let explicit = env["KILN_MODEL"], !explicit.isEmpty { return explicit }
        let directory = env["KILN_MODELS_DIR"] ?? (NSHomeDirectory() + "/.cache/kiln/models")
        return directory + "/" + fileName
    }
}
