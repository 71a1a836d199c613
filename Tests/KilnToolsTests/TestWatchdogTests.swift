import Foundation
import KilnTestSupport
import XCTest

/// Tools/test_watchdog.py, which `make test` runs the tests under: a test past its time limit is named and
/// the run stops (its children too); a run within the limit passes its output and status through.
final class TestWatchdogTests: XCTestCase {
    private var watchdog: String { repositoryRoot.appendingPathComponent("Tools/test_watchdog.py").path }

    func testAStuckTestIsNamedAndTheRunStopped() throws {
        // A "test run" that starts a test, leaves a child running, and never ends.
        let script = """
        echo "Test Case 'Fast.testOne' started at now"; echo "Test Case 'Fast.testOne' passed (0.1 seconds)"
        sleep 600 &
        echo "child $!"
        echo "Test Case 'Stuck.testForever' started at now"
        sleep 600
        """
        let start = Date()
        let r = try runTool("/usr/bin/env", ["python3", watchdog, "/bin/sh", "-c", script], timeout: 60,
                            environment: ["KILN_TEST_TIME_LIMIT": "1"])
        XCTAssertEqual(r.status, 1, r.stdout + r.stderr)
        XCTAssertTrue(r.stdout.contains("TIMEOUT: test Stuck.testForever ran past 1 s"), r.stdout)
        XCTAssertTrue(r.stdout.contains("Fast.testOne' passed"), "output passes through: \(r.stdout)")
        XCTAssertLessThan(Date().timeIntervalSince(start), 30)
        // The child was stopped with the run (it may take a moment to be reaped).
        let child = try XCTUnwrap(r.stdout.split(separator: "\n").first { $0.hasPrefix("child ") }.flatMap { Int32($0.dropFirst(6)) })
        func running() -> Bool {
            // Gone, or a zombie waiting to be reaped: not running.
            guard let stat = try? String(contentsOfFile: "/proc/\(child)/stat", encoding: .utf8) else { return false }
            return !(stat.split(separator: ")").last?.trimmingCharacters(in: .whitespaces).hasPrefix("Z") ?? false)
        }
        let by = Date().addingTimeInterval(5)
        while running() && Date() < by { usleep(20_000) }
        XCTAssertFalse(running(), "a process the run started outlived it")
    }

    func testARunWithinTheLimitKeepsItsStatus() throws {
        let r = try runTool("/usr/bin/env", ["python3", watchdog, "/bin/sh", "-c", "echo \"Test Case 'A.b' started\"; echo \"Test Case 'A.b' failed (0.1 seconds)\"; exit 3"],
                            timeout: 30, environment: ["KILN_TEST_TIME_LIMIT": "5"])
        XCTAssertEqual(r.status, 3)
        XCTAssertTrue(r.stdout.contains("A.b' failed"), r.stdout)
        XCTAssertFalse(r.stdout.contains("TIMEOUT"), r.stdout)
    }
}
