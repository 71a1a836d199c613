"""The result cache's second level in Redis (grpcio), straight to two workers.

usage: result_store_client.py SCHEMAS WORKER_A_PORT WORKER_B_PORT REDIS_PID

A deterministic request answered by worker A is answered from Redis by worker B (usage.from_result_cache),
with the same messages; a seeded one too, and one with other parameters is not. With Redis stopped, B still
answers (a miss) and counts the store's failure.
"""
import os
import signal
import sys
import time

from kiln_grpc import Checks, Kiln, load

schemas, port_a, port_b, redis_pid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
pb, rpc = load(schemas)
check = Checks()
a, b = Kiln(pb, rpc, port_a), Kiln(pb, rpc, port_b)
nonce = time.time_ns()


def answer(kiln, prompt, **sampling):
    sampling.setdefault("max_tokens", 16)
    messages = list(kiln.stub.Generate(pb.GenerateRequest(prompt=prompt, sampling=pb.SamplingParameters(**sampling)), timeout=60))
    return [(m.token_id, m.text) for m in messages[:-1]], messages[-1]


for name, sampling in [("greedy", {"temperature": 0}), ("seeded", {"temperature": 0.9, "seed": 7})]:
    prompt = f"shared {name} answer {nonce}"
    first, last_a = answer(a, prompt, **sampling)
    second, last_b = answer(b, prompt, **sampling)
    check(f"a {name} answer computed by A", not last_a.usage.from_result_cache)
    check(f"B answers the same {name} request from Redis, with A's messages", last_b.usage.from_result_cache and second == first,
          f"from_result_cache {last_b.usage.from_result_cache}")
    other, last_other = answer(b, prompt, **dict(sampling, max_tokens=15))
    check(f"a {name} request with other parameters is not", not last_other.usage.from_result_cache)

before = b.stats().store_failures
os.kill(redis_pid, signal.SIGTERM)
time.sleep(0.2)
tokens, last = answer(b, f"with redis gone {nonce}", temperature=0)
check("with Redis stopped B answers all the same (a miss)", len(tokens) > 0 and not last.usage.from_result_cache)
check("and counts the store's failure", b.stats().store_failures > before, f"{before} -> {b.stats().store_failures}")
check.exit()
