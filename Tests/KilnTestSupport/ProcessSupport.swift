import Foundation
import Glibc
import XCTest

// Helpers every test target uses: where the repository is, and running real programs to completion.

/// The repository root, for Certs/ and the kiln binary.
public let repositoryRoot: URL = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

public func certPath(_ name: String) -> String { repositoryRoot.appendingPathComponent("Certs/\(name)").path }

/// The kiln executable built alongside the tests.
public var kilnBinary: String {
    if let bin = ProcessInfo.processInfo.environment["KILN_BIN"] { return bin }
    return repositoryRoot.appendingPathComponent(".build/debug/kiln").path
}

/// Output of a finished process.
public struct ProcessResult {
    public let status: Int32
    public let stdout: String
    public let stderr: String
}

/// Runs a program to completion (killing it after `timeout` seconds).
public func runTool(_ executable: String, _ arguments: [String], timeout: Double = 60, stdin: Data? = nil,
                    environment: [String: String] = [:]) throws -> ProcessResult {
    let p = Process()
    if !environment.isEmpty {
        p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    }
    p.executableURL = URL(fileURLWithPath: executable.hasPrefix("/") ? executable : "/usr/bin/\(executable)")
    p.arguments = arguments
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    let input = Pipe()
    p.standardInput = input
    try p.run()
    if let stdin { input.fileHandleForWriting.write(stdin) }
    try? input.fileHandleForWriting.close()
    // Read both pipes concurrently so that a chatty child never blocks on a full pipe.
    let outData = LockedData(), errData = LockedData()
    let g = DispatchGroup()
    for (pipe, sink) in [(out, outData), (err, errData)] {
        g.enter()
        DispatchQueue.global().async {
            sink.set(pipe.fileHandleForReading.readDataToEndOfFile())
            g.leave()
        }
    }
    let deadline = Date().addingTimeInterval(timeout)
    while p.isRunning && Date() < deadline { usleep(10_000) }
    if p.isRunning {
        p.terminate()
        XCTFail("\(executable) \(arguments) timed out after \(timeout)s")
    }
    p.waitUntilExit()
    g.wait()
    return ProcessResult(status: p.terminationStatus,
                         stdout: String(decoding: outData.get(), as: UTF8.self),
                         stderr: String(decoding: errData.get(), as: UTF8.self))
}

public final class LockedData: @unchecked Sendable {
    private var data = Data()
    private let lock = NSLock()
    public init() {}
    public func set(_ d: Data) { lock.lock(); data = d; lock.unlock() }
    public func get() -> Data { lock.lock(); defer { lock.unlock() }; return data }
}


/// A release build of kiln, for tests that run the reference decoder on the real model (a debug build
/// is tens of times slower). `make test` builds it and sets KILN_RELEASE_BIN.
public var kilnReleaseBinary: String {
    if let bin = ProcessInfo.processInfo.environment["KILN_RELEASE_BIN"] { return bin }
    return repositoryRoot.appendingPathComponent(".build/release/kiln").path
}

/// `Tests/Reference/`: facts measured outside Kiln (llama.cpp's outputs on the default model), committed.
public let referenceData: URL = repositoryRoot.appendingPathComponent("Tests/Reference")

/// llama.cpp's tokenizer test suites (`ggml-vocab-NAME.gguf` with `.inp` and `.out`), which `make vocab` (run
/// by `make test`) takes from the llama-cpp-python sdist: KILN_VOCAB_DIR, else ~/.cache/kiln/vocab.
public var vocabularySuites: URL {
    if let dir = ProcessInfo.processInfo.environment["KILN_VOCAB_DIR"] { return URL(fileURLWithPath: dir) }
    return FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache/kiln/vocab")
}

/// A fresh temporary directory, removed by the caller when done.
public func temporaryDirectory() throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-test-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}
