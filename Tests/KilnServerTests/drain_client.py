"""Drain by handoff (grpcio).

usage: drain_client.py SCHEMAS ROUTER_PORT WORKER_PORT,... WORKER_PID,... OWNER SUCCESSOR HANDOFF_GRACE

Eight long streams go through `kiln route` to one worker (one session key, so one owner: OWNER, the index of
the worker the ring gives the key; SUCCESSOR is where its streams go next). They need more than 60 s more when
that worker gets SIGTERM: it must exit within HANDOFF_GRACE + 3 s, and every stream must complete through the
router with exactly the tokens of an undisturbed run, which the third worker computes at the same time (each
stream moved once: the router's `kiln-migrations` trailer).
"""
import math
import os
import signal
import sys
import threading
import time

import grpc

from kiln_grpc import Checks, Kiln, load

schemas, router_port = sys.argv[1], int(sys.argv[2])
worker_ports = [int(p) for p in sys.argv[3].split(",")]
worker_pids = [int(p) for p in sys.argv[4].split(",")]
owner, successor, grace = int(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7])
third = ({0, 1, 2} - {owner, successor}).pop()
pb, rpc = load(schemas)
check = Checks()
router = Kiln(pb, rpc, router_port)
workers = [Kiln(pb, rpc, p) for p in worker_ports]
KEY = [("x-session-id", "drain-key")]
STREAMS = 8


def exited(pid):
    """Whether the process has exited (gone, or a zombie its parent has not reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


# The key's owner is the worker whose completed count a keyed call raises.
before = [w.stats().completed_requests for w in workers]
list(router.stub.Generate(pb.GenerateRequest(prompt="which worker?", sampling=pb.SamplingParameters(max_tokens=2, temperature=0)),
                          metadata=KEY, timeout=60))
after = [w.stats().completed_requests for w in workers]
served = [i for i in range(len(workers)) if after[i] > before[i]]
check("the router sends the key to the owner the ring gives it", served == [owner], f"{served} vs {owner}")


def request(i, max_tokens):
    sampling = pb.SamplingParameters(max_tokens=max_tokens, ignore_eos=True, temperature=0.0 if i % 2 == 0 else 0.8)
    if i % 2 == 1:
        sampling.seed = 77 + i
    return pb.GenerateRequest(prompt=f"Chapter {i + 1}. It was a long night, and", sampling=sampling)


def run_all(kiln, requests, metadata=(), on_token=None):
    """Streams the requests at once: per request (token ids, error, trailing metadata)."""
    out = [None] * len(requests)

    def one(i):
        tokens = []
        try:
            call = kiln.stub.Generate(requests[i], metadata=metadata, timeout=600)
            for m in call:
                if not m.HasField("usage"):
                    tokens.append(m.token_id)
                    if on_token:
                        on_token(i, len(tokens))
            out[i] = (tokens, None, dict(call.trailing_metadata() or ()))
        except grpc.RpcError as e:
            out[i] = (tokens, f"{e.code()} {e.details()}", {})

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


# The owner's rate with eight streams: how many tokens make each stream need well over 60 s.
started = time.monotonic()
run_all(workers[owner], [request(i, 48) for i in range(STREAMS)])
rate = 48 / (time.monotonic() - started)
max_tokens = min(4000, math.ceil(rate * 100) + 48)
print(f"about {rate:.1f} tok/s per stream with {STREAMS} streams: max_tokens {max_tokens}", flush=True)
requests = [request(i, max_tokens) for i in range(STREAMS)]

# The streams through the router, and at the same time their undisturbed answers straight from the third
# worker (each worker decodes on one thread: the two runs share the machine's cores, not a core).
references, results = [None], [None]
counts = [0] * STREAMS
lock = threading.Condition()


def on_token(i, n):
    with lock:
        counts[i] = n
        lock.notify_all()


reference = threading.Thread(target=lambda: references.__setitem__(0, run_all(workers[third], requests)))
runner = threading.Thread(target=lambda: results.__setitem__(0, run_all(router, requests, metadata=KEY, on_token=on_token)))
reference.start()
runner.start()
# The drain: once every stream has 16 tokens, SIGTERM to the owner.
with lock:
    lock.wait_for(lambda: min(counts) >= 16, timeout=300)
    at = list(counts)
time.sleep(1.0)
with lock:
    now = list(counts)
per_second = (sum(now) - sum(at)) / STREAMS
need = (max_tokens - max(now)) / max(per_second, 1e-9)
check("the streams need more than 60 s more on their worker", need > 60, f"{need:.0f} s at {per_second:.1f} tok/s each")
os.kill(worker_pids[owner], signal.SIGTERM)
signalled = time.monotonic()
while not exited(worker_pids[owner]) and time.monotonic() < signalled + grace + 60:
    time.sleep(0.02)
took = time.monotonic() - signalled
print(f"BENCH drain_with_handoff_s {took:.2f} s ({STREAMS} streams that needed {need:.0f} s more)", flush=True)
check(f"the worker exited within --handoff-grace ({grace:g} s) + 3 s", exited(worker_pids[owner]) and took <= grace + 3, f"{took:.2f} s")
runner.join(timeout=600)
reference.join(timeout=600)

check("the undisturbed run completed", references[0] is not None and all(r[1] is None and len(r[0]) == max_tokens for r in references[0]))
got = results[0]
check("every stream completed through the router", got is not None and all(r[1] is None for r in got),
      "; ".join(f"stream {i}: {r[1]}" for i, r in enumerate(got or []) if r[1]))
if got and references[0]:
    same = [i for i in range(STREAMS) if got[i][0] == references[0][i][0]]
    check("every stream's tokens equal the undisturbed run", len(same) == STREAMS, f"{len(same)} of {STREAMS} equal")
    moved = [int(r[2].get("kiln-migrations", "0")) for r in got]
    check("every stream moved once (handed over, not run out)", moved == [1] * STREAMS, f"{moved}")
check.exit()
