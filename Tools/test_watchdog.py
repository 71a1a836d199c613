#!/usr/bin/env python3
"""Runs a test command (`make test`'s swift test) with a time limit per test, so that no test can hang CI.

  test_watchdog.py COMMAND [ARG...]

The command's output passes through unchanged. XCTest announces each test ("Test Case 'X.y' started") and
its end ("... passed" / "... failed"); when one test runs past KILN_TEST_TIME_LIMIT seconds (default 600),
this prints its name, stops the whole run (the command and every process it started) and exits 1.
Otherwise it exits with the command's status.
"""
import os
import re
import signal
import subprocess
import sys
import threading
import time

limit = float(os.environ.get("KILN_TEST_TIME_LIMIT", "600"))
started = re.compile(r"Test Case '([^']+)' started")
ended = re.compile(r"Test Case '([^']+)' (passed|failed|skipped)")

process = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
state = {"test": None, "since": 0.0}
lock = threading.Lock()


def relay():
    for raw in iter(process.stdout.readline, b""):
        sys.stdout.buffer.write(raw)
        sys.stdout.buffer.flush()
        line = raw.decode("utf-8", "replace")
        with lock:
            if m := started.search(line):
                state["test"], state["since"] = m.group(1), time.monotonic()
            elif ended.search(line):
                state["test"] = None


reader = threading.Thread(target=relay, daemon=True)
reader.start()
while process.poll() is None:
    time.sleep(0.5)
    with lock:
        test, since = state["test"], state["since"]
    if test is not None and time.monotonic() - since > limit:
        print(f"\nTIMEOUT: test {test} ran past {limit:.0f} s (KILN_TEST_TIME_LIMIT); the run is stopped", flush=True)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        reader.join(timeout=5)
        sys.exit(1)
reader.join(timeout=5)
sys.exit(process.returncode)
