"""Streaming Generate calls in flight while `kiln serve` is told to stop (the Swift test checks its exit).

  shutdown_client.py SCHEMAS PORT PID MODE
    drain      16 streams of 24 tokens, SIGTERM once each has its first token: every stream completes
    deadline   16 streams of 400 tokens, SIGTERM likewise, the drain shorter than they are: each ends UNAVAILABLE
    twice      16 streams of 400 tokens, SIGTERM twice: the process is gone at once (the Swift test times it)
"""
import concurrent.futures
import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grpc  # noqa: E402
from kiln_grpc import Checks, Kiln, load  # noqa: E402

schemas, port, pid, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
pb, rpc = load(schemas)
kiln = Kiln(pb, rpc, port)
check = Checks()
streams = 16
max_tokens = 24 if mode == "drain" else 400
started = threading.Barrier(streams + 1, timeout=120)


def one(i):
    call = kiln.stub.Generate(pb.GenerateRequest(prompt=f"Tell me a story about the number {i}.",
                                                 sampling=pb.SamplingParameters(max_tokens=max_tokens, temperature=0, ignore_eos=True)),
                              timeout=180)
    messages = []
    try:
        for m in call:
            messages.append(m)
            if len(messages) == 1:
                started.wait()
        return ("complete", messages[-1])
    except grpc.RpcError as e:
        if not messages:
            started.abort()
        return (e.code().name, e.details())


with concurrent.futures.ThreadPoolExecutor(streams) as pool:
    futures = [pool.submit(one, i) for i in range(streams)]
    started.wait()  # every stream has its first token
    os.kill(pid, signal.SIGTERM)
    if mode == "twice":
        time.sleep(0.2)
        os.kill(pid, signal.SIGTERM)
    outcomes = [f.result() for f in futures]

kinds = [o[0] for o in outcomes]
print("outcomes:", {k: kinds.count(k) for k in set(kinds)}, flush=True)
if mode == "drain":
    whole = [o for o in outcomes if o[0] == "complete" and o[1].usage.completion_tokens == max_tokens
             and o[1].finish_reason == pb.FINISH_REASON_LENGTH]
    check("every stream in flight at SIGTERM completes", len(whole) == streams, str(outcomes[:2]))
elif mode == "deadline":
    check("each stream still open at the drain deadline ends with UNAVAILABLE", kinds == ["UNAVAILABLE"] * streams, str(outcomes[:3]))
    check("the status says the server is shutting down", all("shutting down" in (o[1] or "") for o in outcomes), str(outcomes[:1]))
else:
    check("the streams end when the process goes", all(k != "complete" for k in kinds), str(kinds))
check.exit()
