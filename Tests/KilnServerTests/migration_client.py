"""Exact mid-stream migration on the real model (grpcio).

usage: migration_client.py SCHEMAS ROUTER_PORT WORKER_PORT,WORKER_PORT,WORKER_PORT VICTIM_PID

1. Continuations straight to a worker: a request sent again with the first k tokens of its answer as
   `continuation` streams exactly the rest of that answer (tokens, text, finish reason, usage), for greedy,
   seeded, penalised, stop-sequence and chat requests and k from 1 to all; bad continuations are refused with
   INVALID_ARGUMENT.
2. 24 streams (greedy and seeded at temperature 0.8, 96 tokens, penalties and a stop sequence on some) through
   `kiln route` in front of three workers; once they are under way one worker is killed with `kill -9`. No call
   fails, every stream's tokens and text equal an undisturbed run of the same request, and the streams that
   moved (the router's `kiln-migrations` trailer) print the gap in their token stream at the move.
"""
import os
import signal
import statistics
import sys
import threading
import time

import grpc

from kiln_grpc import Checks, Kiln, load

schemas, router_port, worker_ports, victim_pid = sys.argv[1], int(sys.argv[2]), [int(p) for p in sys.argv[3].split(",")], int(sys.argv[4])
pb, rpc = load(schemas)
check = Checks()
router = Kiln(pb, rpc, router_port)
workers = [Kiln(pb, rpc, p) for p in worker_ports]
victim_index = len(worker_ports) - 1   # the test kills the last worker
reference_worker = workers[0]

TOPICS = ["the sea", "a mountain village", "bread", "the moon landing", "a lighthouse keeper", "winter in Oslo",
          "the first computer", "a red bicycle", "bees", "the river Danube", "a chess game", "rain on a tin roof"]


def request(i):
    """(method, message) of stream i: greedy and seeded at 0.8 alternating, penalties and stops on some."""
    sampling = pb.SamplingParameters(max_tokens=96, temperature=0.0 if i % 2 == 0 else 0.8)
    if i % 2 == 1:
        sampling.seed = 1000 + i
    if i % 3 == 0:
        sampling.repetition_penalty = 1.3
        sampling.frequency_penalty = 0.4
    if i % 4 == 1:
        sampling.presence_penalty = 0.5
    if i % 5 == 2:
        sampling.stop.append(".")
    if i % 6 == 5:
        sampling.logprobs = True
        sampling.top_logprobs = 2
    topic = TOPICS[i % len(TOPICS)]
    if i % 4 == 3:
        return "Chat", pb.ChatRequest(messages=[pb.ChatMessage(role="user", content=f"Tell me about {topic}.")], sampling=sampling)
    return "Generate", pb.GenerateRequest(prompt=f"Here is a short story about {topic}{'' if i < 12 else ', told again'}:", sampling=sampling)


def stream(kiln, method, message, timeout=120):
    """Streams a call: (messages, arrival times, trailing metadata)."""
    call = getattr(kiln.stub, method)(message, timeout=timeout)
    messages, times = [], []
    for m in call:
        messages.append(m)
        times.append(time.monotonic())
    return messages, times, dict(call.trailing_metadata() or ())


def continued(method, message, tokens):
    out = type(message)()
    out.CopyFrom(message)
    del out.continuation[:]
    out.continuation.extend(tokens)
    return method, out


def summary(messages):
    """(token ids, text, finish reason, completion tokens) of a whole answer."""
    last = messages[-1]
    return [m.token_id for m in messages[:-1]], "".join(m.text for m in messages), last.finish_reason, last.usage.completion_tokens


def code_of(call):
    try:
        call()
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as e:
        return e.code(), e.details()


requests = [request(i) for i in range(24)]

# Undisturbed answers, straight from one worker (batch-invariant kernels: batching does not change them).
references = [None] * len(requests)


def reference(i):
    method, message = requests[i]
    references[i] = stream(reference_worker, method, message)[0]


threads = [threading.Thread(target=reference, args=(i,)) for i in range(len(requests))]
for t in threads:
    t.start()
for t in threads:
    t.join()
lengths = [len(summary(r)[0]) for r in references]
print(f"reference answers: {lengths} tokens streamed", flush=True)
check("the references ran (some end at a stop sequence, the others run long)",
      all(n > 0 for n in lengths) and sum(n >= 40 for n in lengths) >= 12, f"{lengths}")

# 1. Continuations straight to a worker (another one than the reference's: the same answer anywhere).
direct = workers[1]
for i in [0, 1, 2, 3, 5, 6, 7, 11]:
    method, message = requests[i]
    tokens, text, finish, completion = summary(references[i])
    texts = [m.text for m in references[i][:-1]]
    for k in sorted({1, len(tokens) // 2, max(1, len(tokens) - 1), len(tokens)}):
        rest, _, _ = stream(direct, *continued(method, message, tokens[:k]))
        got_tokens, got_text, got_finish, got_completion = summary(rest)
        ok = (got_tokens == tokens[k:] and "".join(texts[:k]) + got_text == text and got_finish == finish and got_completion == completion)
        check(f"stream {i} ({method}) continued after {k} of {len(tokens)} tokens goes on exactly", ok,
              "" if ok else f"tokens {got_tokens[:8]}.. vs {tokens[k:k + 8]}.., finish {got_finish} vs {finish}, usage {got_completion} vs {completion}")

vocabulary = direct.stub.GetModel(pb.GetModelRequest()).vocabulary_size
end_of_turn = direct.stub.Tokenize(pb.TokenizeRequest(text="<|im_end|>", parse_special_tokens=True)).token_ids[0]
method, message = requests[0]
for name, tokens in [("an id outside the vocabulary", [5, vocabulary]),
                     ("more tokens than max_tokens", [5] * 97),
                     ("tokens after an end-of-turn token", [5, end_of_turn, 5])]:
    code, details = code_of(lambda: stream(direct, *continued(method, message, tokens)))
    check(f"a continuation with {name} is refused with INVALID_ARGUMENT", code == grpc.StatusCode.INVALID_ARGUMENT, f"{code} {details}")

# 2. 24 streams through the router; once every one still running has streamed 12 tokens, kill -9 one worker.
results = [None] * len(requests)
progress = [0] * len(requests)
done = [False] * len(requests)
lock = threading.Condition()


def through_router(i):
    method, message = requests[i]
    messages, times = [], []
    try:
        call = getattr(router.stub, method)(message, timeout=180)
        for m in call:
            messages.append(m)
            times.append(time.monotonic())
            with lock:
                progress[i] = len(messages)
                lock.notify_all()
        results[i] = (messages, times, dict(call.trailing_metadata() or ()), None)
    except grpc.RpcError as e:
        results[i] = (messages, times, {}, f"{e.code()} {e.details()}")
    with lock:
        done[i] = True
        lock.notify_all()


threads = [threading.Thread(target=through_router, args=(i,)) for i in range(len(requests))]
for t in threads:
    t.start()
with lock:
    lock.wait_for(lambda: all(d or p >= 12 for d, p in zip(done, progress)), timeout=120)
    running_at_kill = sum(not d for d in done)
os.kill(victim_pid, signal.SIGKILL)
killed_at = time.monotonic()
print(f"killed the worker on port {worker_ports[victim_index]} with {running_at_kill} streams running", flush=True)
for t in threads:
    t.join(timeout=240)

failures = [f"stream {i}: {r[3]}" for i, r in enumerate(results) if r is None or r[3] is not None]
check("no call failed", not failures, "; ".join(failures[:4]))
mismatched = []
for i, r in enumerate(results):
    if r is None or r[3] is not None:
        continue
    got, want = summary(r[0]), summary(references[i])
    if got != want:
        mismatched.append(f"stream {i}: {len(got[0])} tokens, finish {got[2]} vs {len(want[0])}, finish {want[2]}")
check("every stream's tokens, text, finish reason and usage equal the undisturbed run", not mismatched, "; ".join(mismatched[:4]))

moved = [(i, r) for i, r in enumerate(results) if r is not None and r[3] is None and int(r[2].get("kiln-migrations", "0")) > 0]
check("streams moved off the killed worker (the router's kiln-migrations trailer)", len(moved) >= 1, f"{len(moved)} moved")
gaps = []
for i, (messages, times, _, _) in moved:
    # The gap at the move: the pause in the token stream across the kill.
    around = [times[j + 1] - times[j] for j in range(len(times) - 1) if times[j] <= killed_at <= times[j + 1]]
    if around:
        gaps.append(around[0] * 1000)
if gaps:
    print(f"BENCH migration_gap_p50_ms {statistics.median(gaps):.1f} ms ({len(gaps)} streams moved)")
    print(f"BENCH migration_gap_max_ms {max(gaps):.1f} ms")
stats = router.stats()
migrations_in = sum(b.migrations_in for b in stats.backends)
check("the router counts the migrations in GetStats", migrations_in >= len(moved), f"{migrations_in} migrations_in, {len(moved)} streams moved")
check.exit()
