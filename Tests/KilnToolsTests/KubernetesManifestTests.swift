import Foundation
import KilnTestSupport
import XCTest

/// deploy/kubernetes/ against the official Kubernetes schemas (kubernetes-validate, strict: unknown fields fail).
final class KubernetesManifestTests: XCTestCase {
    func testManifestsValidateAgainstTheKubernetesSchemas() throws {
        let folder = repositoryRoot.appendingPathComponent("deploy/kubernetes")
        let files = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { $0.hasSuffix(".yaml") }.sorted()
        XCTAssertEqual(files, ["models-pvc.yaml", "router-deployment.yaml", "router-service.yaml", "worker-service.yaml",
                               "worker-statefulset.yaml"])
        let r = try runTool("/usr/bin/env", ["kubernetes-validate", "--strict"] + files.map { folder.appendingPathComponent($0).path }, timeout: 120)
        XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
        XCTAssertEqual(r.stdout.components(separatedBy: " passed for resource ").count - 1, files.count, r.stdout)
        // The check can fail: a misspelt field in a copy of the router's Service is refused.
        let bad = try temporaryDirectory().appendingPathComponent("bad.yaml")
        let text = try String(contentsOf: folder.appendingPathComponent("router-service.yaml"), encoding: .utf8)
            .replacingOccurrences(of: "targetPort:", with: "targetPrt:")
        try text.write(to: bad, atomically: true, encoding: .utf8)
        let refused = try runTool("/usr/bin/env", ["kubernetes-validate", "--strict", bad.path], timeout: 120)
        XCTAssertNotEqual(refused.status, 0, refused.stdout)
    }
}
