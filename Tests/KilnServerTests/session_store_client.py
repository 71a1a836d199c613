"""Chat sessions shared through Redis (grpcio), behind `kiln route`.

usage: session_store_client.py SCHEMAS ROUTER_PORT WORKER_PORT,... WORKER_PID,... REDIS_PID

0. A session's turn whose worker is killed with `kill -9` mid-stream goes on on another worker (it loads the
   history from Redis and continues the turn from the tokens streamed): the turn and the next one equal the
   same chat run undisturbed.
1. A 10-turn greedy chat with a session_id; after turn 5 its worker is killed with `kill -9`. Turns 6-10
   succeed on the ring's next worker, which loads the history from Redis, and equal the answers of the same
   chat run without the kill.
2. Redis paused with SIGSTOP, then stopped: chats go on (no call fails), each session continues from its
   worker's memory, and the workers count the store's failures.
"""
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
redis_pid = int(sys.argv[5])
pb, rpc = load(schemas)
check = Checks()
router = Kiln(pb, rpc, router_port)
workers = [Kiln(pb, rpc, p) for p in worker_ports]
alive = set(range(len(workers)))
QUESTIONS = ["What is the capital of France?", "And of Germany?", "Which of the two is larger?", "Name a river in the first.",
             "How long is it?", "What sea does it reach?", "Name a famous bridge over it.", "Who built it?",
             "When was it finished?", "Thank you. Summarise our talk in one line."]


def turn(session, question):
    """(answer text, index of the worker that served it): one turn through the router."""
    before = {i: workers[i].stats().completed_requests for i in alive}
    replies = list(router.stub.Chat(pb.ChatRequest(messages=[pb.ChatMessage(role="user", content=question)], session_id=session,
                                                   sampling=pb.SamplingParameters(max_tokens=24, temperature=0)), timeout=60))
    after = {i: workers[i].stats().completed_requests for i in alive}
    served = [i for i in alive if after[i] > before[i]]
    return "".join(m.text for m in replies), served[0] if len(served) == 1 else -1


def failures():
    return sum(workers[i].stats().store_failures for i in alive)


# 0. A turn moved mid-stream: two short turns, then a long one (ignore_eos) whose worker is killed once it has
# streamed 16 tokens, then one more.
LONG = dict(max_tokens=160, temperature=0, ignore_eos=True)


def long_turn(session, question, on_token=None):
    """(text, kiln-migrations) of a long turn through the router."""
    call = router.stub.Chat(pb.ChatRequest(messages=[pb.ChatMessage(role="user", content=question)], session_id=session,
                                           sampling=pb.SamplingParameters(**LONG)), timeout=120)
    texts = []
    for m in call:
        texts.append(m.text)
        if on_token:
            on_token(len(texts))
    return "".join(texts), int(dict(call.trailing_metadata() or ()).get("kiln-migrations", "0"))


moving_reference = [turn("moving-reference", QUESTIONS[0])[0], turn("moving-reference", QUESTIONS[1])[0],
                    long_turn("moving-reference", "Tell me everything about it.")[0], turn("moving-reference", QUESTIONS[3])[0]]
moving = [turn("moving-turn", QUESTIONS[0]), turn("moving-turn", QUESTIONS[1])]
moving_owner = moving[0][1]
fired = threading.Event()


def kill_at_16(n):
    if n >= 16 and not fired.is_set():
        fired.set()
        os.kill(worker_pids[moving_owner], signal.SIGKILL)


try:
    text, migrations = long_turn("moving-turn", "Tell me everything about it.", on_token=kill_at_16)
    alive.discard(moving_owner)
    after_text = turn("moving-turn", QUESTIONS[3])[0]
    check("a session's turn goes on on another worker when its worker is killed mid-stream", fired.is_set() and migrations == 1,
          f"killed {fired.is_set()}, kiln-migrations {migrations}")
    check("the moved turn and the next one equal the undisturbed chat", [text, after_text] == moving_reference[2:],
          f"{text[:40]!r} vs {moving_reference[2][:40]!r}")
except grpc.RpcError as e:
    alive.discard(moving_owner)
    check("a session's turn goes on on another worker when its worker is killed mid-stream", False, f"{e.code()} {e.details()}")

# 1. The undisturbed chat, then the same chat whose worker dies after turn 5.
reference = [turn("reference-chat", q)[0] for q in QUESTIONS]
check("the undisturbed chat ran", all(reference), f"{[len(a) for a in reference]}")
answers, servers = [], []
for q in QUESTIONS[:5]:
    text, server = turn("survivor-chat", q)
    answers.append(text)
    servers.append(server)
check("turns 1-5 stay on one worker", len(set(servers)) == 1 and servers[0] >= 0, f"{servers}")
owner = servers[0]
os.kill(worker_pids[owner], signal.SIGKILL)
alive.discard(owner)
print(f"killed the session's worker on port {worker_ports[owner]} after turn 5", flush=True)
later_servers = []
errors = []
for q in QUESTIONS[5:]:
    try:
        text, server = turn("survivor-chat", q)
        answers.append(text)
        later_servers.append(server)
    except grpc.RpcError as e:
        errors.append(f"{e.code()} {e.details()}")
check("turns 6-10 succeed after the worker is killed", not errors, "; ".join(errors[:3]))
check("turns 6-10 run on one other worker", len(set(later_servers)) == 1 and later_servers[0] not in (owner, -1), f"{later_servers}")
check("every answer equals the chat without the kill", answers == reference,
      next((f"turn {i + 1}: {a!r} vs {r!r}" for i, (a, r) in enumerate(zip(answers, reference)) if a != r), f"{len(answers)} answers"))

# 2. Redis paused, then stopped: chats go on from the workers' memory.
for fault, sig in [("paused (SIGSTOP)", signal.SIGSTOP), ("stopped", signal.SIGTERM)]:
    before = failures()
    os.kill(redis_pid, sig)
    session = f"chat-while-redis-{'paused' if sig == signal.SIGSTOP else 'stopped'}"
    texts, errors, started = [], [], time.time()
    for q in QUESTIONS[:4]:
        try:
            texts.append(turn(session, q)[0])
        except grpc.RpcError as e:
            errors.append(f"{e.code()} {e.details()}")
    took = time.time() - started
    check(f"with Redis {fault} no chat call fails", not errors, "; ".join(errors[:3]))
    check(f"with Redis {fault} the session continues from its worker's memory", texts == reference[:4], f"{[t[:20] for t in texts]}")
    check(f"with Redis {fault} the workers count the store's failures", failures() > before, f"{before} -> {failures()}")
    print(f"4 turns with Redis {fault}: {took:.2f} s", flush=True)
    if sig == signal.SIGSTOP:
        os.kill(redis_pid, signal.SIGCONT)
check.exit()
