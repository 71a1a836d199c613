"""make bench-router, failover part: the token-stream gap at an exact mid-stream migration, and drain time with
and without handoff, on the default model behind `kiln route` (three `kiln serve` workers on the CPU backend,
one decode thread each, result cache off).

usage: failover.py KILN_BIN MODEL SCHEMAS [MIGRATIONS]

- Gap: rounds of 12 streams (64 tokens) through the router; once every stream has 8 tokens the worker with the
  most of them is killed with `kill -9` and started again on its port. A moved stream (trailer
  `kiln-migrations`) gives the pause in its token stream across the kill. Until MIGRATIONS (50) streams moved:
  p50 and p99 of the gap, and every moved stream checked against the same request straight from a worker.
- Drain: 8 streams of 600 tokens on one worker (one session key); SIGTERM once each has 16 tokens. Through a
  router that migrates (`--handoff-grace 2`: the worker hands them over) and through one with
  `--max-migrations 0` (the streams run out on the draining worker): seconds from SIGTERM to the worker's exit.
Prints BENCH lines.
"""
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "Tests", "KilnServerTests"))
import grpc  # noqa: E402
from kiln_grpc import load  # noqa: E402

kiln, model, schemas = sys.argv[1], sys.argv[2], sys.argv[3]
wanted = int(sys.argv[4]) if len(sys.argv) > 4 else 50
pb, rpc = load(schemas)
work = tempfile.mkdtemp()
children = []


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def start(arguments, port, name):
    log = open(os.path.join(work, f"{name}.log"), "a")
    p = subprocess.Popen([kiln] + arguments, stdout=log, stderr=log)
    children.append(p)
    wait_port(port)
    return p


def worker(port, extra=()):
    return start(["serve", "--model", model, "--no-tls", "--h2c-port", str(port), "--backend", "cpu", "--decode-threads", "1",
                  "--kv-blocks", "2048", "--result-cache-mb", "0", *extra], port, f"worker-{port}")


def router(ports, extra=()):
    port = free_port()
    start(["route", "--no-tls", "--h2c-port", str(port), "--health-interval", "0.5", *[a for p in ports for a in ("--backend", f"h2c://127.0.0.1:{p}")],
           *extra], port, f"router-{port}")
    return port


def stub(port):
    return rpc.InferenceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))


def streams(target, requests, metadata=(), progress=None):
    """Runs the requests at once; per request (token ids, arrival times, trailers, error)."""
    out = [None] * len(requests)

    def one(i):
        tokens, times = [], []
        try:
            call = target.Generate(requests[i], metadata=metadata, timeout=600)
            for m in call:
                if not m.HasField("usage"):
                    tokens.append(m.token_id)
                    times.append(time.monotonic())
                    if progress:
                        progress(i, len(tokens))
            out[i] = (tokens, times, dict(call.trailing_metadata() or ()), None)
        except grpc.RpcError as e:
            out[i] = (tokens, times, {}, f"{e.code()}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    return threads, out


class Progress:
    def __init__(self, n):
        self.counts = [0] * n
        self.lock = threading.Condition()

    def __call__(self, i, n):
        with self.lock:
            self.counts[i] = n
            self.lock.notify_all()

    def wait(self, at_least, timeout=120):
        with self.lock:
            self.lock.wait_for(lambda: min(self.counts) >= at_least, timeout=timeout)


def request(i, tokens):
    sampling = pb.SamplingParameters(max_tokens=tokens, ignore_eos=True, temperature=0.0 if i % 2 == 0 else 0.8)
    if i % 2:
        sampling.seed = 500 + i
    return pb.GenerateRequest(prompt=f"Story {i}: once upon a time", sampling=sampling)


try:
    ports = [free_port() for _ in range(3)]
    procs = {p: worker(p) for p in ports}
    route = router(ports)
    # Undisturbed answers of the 12 requests, straight from one worker.
    requests = [request(i, 64) for i in range(12)]
    threads, reference = streams(stub(ports[0]), requests)
    for t in threads:
        t.join()

    gaps, wrong, failed, rounds = [], 0, 0, 0
    while len(gaps) < wanted and rounds < 60:
        rounds += 1
        progress = Progress(len(requests))
        threads, out = streams(stub(route), requests, progress=progress)
        progress.wait(8)
        stats = {p: stub(p).GetStats(pb.GetStatsRequest()) for p in ports}
        running = {p: s.running_requests + s.waiting_requests for p, s in stats.items()}
        victim = max(ports, key=lambda p: running[p])
        procs[victim].kill()
        killed_at = time.monotonic()
        procs[victim].wait()
        for t in threads:
            t.join()
        for i, (tokens, times, trailers, error) in enumerate(out):
            if error:
                failed += 1
                continue
            if tokens != reference[i][0]:
                wrong += 1
            if int(trailers.get("kiln-migrations", "0")) > 0:
                around = [times[j + 1] - times[j] for j in range(len(times) - 1) if times[j] <= killed_at <= times[j + 1]]
                if around:
                    gaps.append(around[0] * 1000)
        procs[victim] = worker(victim)
        time.sleep(1.2)   # the router's next health probe takes it back
    gaps.sort()
    print(f"BENCH migration_gap_p50_ms {statistics.median(gaps):.1f} ms ({len(gaps)} migrations in {rounds} kills)", flush=True)
    print(f"BENCH migration_gap_p99_ms {gaps[min(len(gaps) - 1, int(len(gaps) * 0.99))]:.1f} ms", flush=True)
    print(f"BENCH migration_failed_calls {failed} calls", flush=True)
    print(f"BENCH migration_streams_not_equal_to_undisturbed {wrong} streams", flush=True)

    # Drain with and without handoff: 8 keyed streams on one worker, SIGTERM once each has 16 tokens.
    for name, extra in [("with_handoff", []), ("without_handoff", ["--max-migrations", "0"])]:
        drain_ports = [free_port() for _ in range(3)]
        drain_procs = {p: worker(p, ["--handoff-grace", "2", "--drain-seconds", "600"]) for p in drain_ports}
        drain_route = router(drain_ports, ["--balance-factor", "100", *extra])
        key = [("x-session-id", "drain-bench")]
        before = {p: stub(p).GetStats(pb.GetStatsRequest()).completed_requests for p in drain_ports}
        list(stub(drain_route).Generate(pb.GenerateRequest(prompt="where?", sampling=pb.SamplingParameters(max_tokens=2, temperature=0)), metadata=key))
        owner = [p for p in drain_ports if stub(p).GetStats(pb.GetStatsRequest()).completed_requests > before[p]][0]
        progress = Progress(8)
        threads, out = streams(stub(drain_route), [request(i, 600) for i in range(8)], metadata=key, progress=progress)
        progress.wait(16)
        drain_procs[owner].send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        drain_procs[owner].wait(timeout=600)
        took = time.monotonic() - signalled
        for t in threads:
            t.join()
        bad = sum(1 for r in out if r[3] is not None or len(r[0]) != 600)
        print(f"BENCH drain_{name}_s {took:.2f} s (8 streams of 600 tokens; {bad} incomplete)", flush=True)
        for p in drain_procs.values():
            p.kill()
finally:
    for p in children:
        try:
            p.kill()
        except OSError:
            pass
