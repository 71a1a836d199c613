import Foundation
import XCTest

/// The schemas in `Schemas/` are valid proto3 as the reference compiler (grpcio-tools' protoc) reads them.
final class SchemaTests: XCTestCase {
    func testSchemasCompileWithReferenceProtoc() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let schemas = root.appendingPathComponent("Schemas")
        let files = try FileManager.default.subpathsOfDirectory(atPath: schemas.path).filter { $0.hasSuffix(".proto") }.sorted()
        XCTAssertTrue(files.contains("kiln/v1/inference.proto"))
        XCTAssertTrue(files.contains("grpc/health/v1/health.proto"))
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-protoc-check-\(getpid())")
        try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: out) }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", "-m", "grpc_tools.protoc", "-I", schemas.path, "--python_out=\(out.path)",
                       "--grpc_python_out=\(out.path)"] + files
        let err = Pipe()
        p.standardError = err
        try p.run()
        p.waitUntilExit()
        let message = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        XCTAssertEqual(p.terminationStatus, 0, message)
        XCTAssertTrue(FileManager.default.fileExists(atPath: out.appendingPathComponent("kiln/v1/inference_pb2_grpc.py").path))
    }
}
