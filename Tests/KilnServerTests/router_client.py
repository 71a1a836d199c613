"""grpcio through `kiln route` in front of three `kiln serve` workers on a tiny random-weight model.

usage: router_client.py SCHEMAS ROUTER_PORT WORKER_PORT,WORKER_PORT,... VICTIM_PID STATE_FILE [restarted]

Checks: calls relayed unchanged (tokens equal a worker's own answer); a chat session started with "new" gets
its id from the router and its later turns land where its history is cached; metadata keys keep calls on one
worker; a client deadline reaches the worker and both sides see DEADLINE_EXCEEDED; a client cancel frees the
worker's KV blocks; the router's health and reflection; and after `kill -9` of one worker (VICTIM_PID), every
call still succeeds on another one. With `restarted` (after the test has started the killed worker again on
its port), the keys it owned come back to it, and every other key stays where it was.
"""
import json
import os
import signal
import sys
import time

import grpc

from kiln_grpc import Checks, Kiln, load, load_module

schemas, router_port, worker_ports, victim_pid, state_file = sys.argv[1], int(sys.argv[2]), [int(p) for p in sys.argv[3].split(",")], int(sys.argv[4]), sys.argv[5]
restarted = sys.argv[6:] == ["restarted"]
pb, rpc = load(schemas)
check = Checks()
router = Kiln(pb, rpc, router_port)
workers = [Kiln(pb, rpc, p) for p in worker_ports]
KEYS = [f"user-{i}" for i in range(30)]


def completed(w):
    try:
        return w.stats().completed_requests
    except grpc.RpcError:
        return None   # a worker that is down


def placement(keys):
    """Which worker (index) served one call for each key, found from the workers' completed counts (each
    prompt new, so that no result cache answers it uncounted)."""
    where = {}
    nonce = time.time_ns()
    for key in keys:
        before = [completed(w) for w in workers]
        list(router.stub.Generate(pb.GenerateRequest(prompt=f"placed {key} {nonce}", sampling=pb.SamplingParameters(max_tokens=2, temperature=0)),
                                  metadata=[("x-session-id", key)], timeout=30))
        after = [completed(w) for w in workers]
        moved = [i for i, (a, b) in enumerate(zip(after, before)) if a is not None and b is not None and a > b]
        where[key] = moved[0] if len(moved) == 1 else -1
    return where


if restarted:
    owners = json.load(open(state_file))
    deadline = time.time() + 10
    while time.time() < deadline:   # the router takes the worker back on its Watch stream or next probe
        if all(b.healthy for b in router.stats().backends):
            break
        time.sleep(0.05)
    check("the restarted worker is healthy again", all(b.healthy for b in router.stats().backends))
    again = placement(KEYS)
    check("after the restart every key is where it was before the kill", again == owners, f"{again} vs {owners}")
    check.exit()


# Relayed unchanged: the same greedy tokens as a worker gives directly, streamed message by message.
direct_tokens, direct_text, direct_last = workers[0].generate("The router relays", max_tokens=16, ignore_eos=True)
tokens, text, last = router.generate("The router relays", max_tokens=16, ignore_eos=True)
check("relayed tokens equal a worker's", tokens == direct_tokens and text == direct_text, f"{tokens} vs {direct_tokens}")
check("relayed usage", last.usage.completion_tokens == 16 and last.finish_reason == direct_last.finish_reason, str(last.usage))

# Streaming: tokens come through the router as the worker makes them, not in a burst at the end. Compared by
# shape, not by milliseconds (a tiny model on the CPU backend streams 2,000 tokens in a few hundred ms): the
# first message's arrival as a share of the whole stream, and the share of messages that arrived in its first half.
def arrivals(kiln, prompt):
    started = time.time()
    return [time.time() - started for _ in kiln.stub.Generate(pb.GenerateRequest(
        prompt=prompt, sampling=pb.SamplingParameters(max_tokens=2000, temperature=0, ignore_eos=True)))]


def shape(times):
    total = times[-1]
    return times[0] / total, sum(t <= total / 2 for t in times) / len(times), total


# (Different prompts: a deterministic answer the result cache holds would be replayed at once.)
d_first, d_half, d_total = shape(arrivals(workers[0], "a steady stream, directly"))
r_first, r_half, r_total = shape(arrivals(router, "a steady stream, through the router"))
check("streamed messages arrive spread out through the router as directly",
      r_first < 0.5 and r_half >= 0.25 and abs(r_half - d_half) < 0.3,
      f"direct: first at {d_first:.0%}, {d_half:.0%} in the first half of {d_total * 1000:.0f} ms; "
      f"router: first at {r_first:.0%}, {r_half:.0%} in the first half of {r_total * 1000:.0f} ms")

# Metadata keys: 12 calls with one x-session-id all land on one worker.
before = [completed(w) for w in workers]
for i in range(12):
    list(router.stub.Generate(pb.GenerateRequest(prompt=f"keyed call {i}", sampling=pb.SamplingParameters(max_tokens=2, temperature=0)),
                              metadata=[("x-session-id", "sticky-user-42")]))
after = [completed(w) for w in workers]
deltas = [a - b for a, b in zip(after, before)]
check("a metadata key keeps its calls on one worker", sorted(deltas) == [0, 0, 12], str(deltas))

# Keyless calls spread over the workers.
before = [completed(w) for w in workers]
for i in range(30):
    list(router.stub.Generate(pb.GenerateRequest(prompt=f"keyless {i}", sampling=pb.SamplingParameters(max_tokens=2, temperature=0))))
deltas = [completed(w) - b for w, b in zip(workers, before)]
check("keyless calls spread", sum(deltas) == 30 and sum(1 for d in deltas if d > 0) >= 2, str(deltas))

# A session started with "new": the router issues the id; each later turn is served from its worker's cache.
sampling = pb.SamplingParameters(max_tokens=8, temperature=0)
replies = router.stub.Chat(pb.ChatRequest(messages=[pb.ChatMessage(role="user", content="Hello there, router")],
                                          session_id="new", sampling=sampling))
messages = list(replies)
sid = dict(replies.initial_metadata()).get("x-session-id", "")
check("\"new\" gets a 128-bit id from the router", len(sid) == 32 and all(c in "0123456789abcdef" for c in sid), repr(sid))
# Each turn's prompt begins with everything the session's worker computed before: all of it but the last
# partial 16-token block is cached there (a turn sent to another worker would find none of it).
before_total = messages[-1].usage.prompt_tokens + messages[-1].usage.completion_tokens
turns = []
for turn in range(3):
    msgs = list(router.stub.Chat(pb.ChatRequest(messages=[pb.ChatMessage(role="user", content=f"turn {turn} of the chat")],
                                                session_id=sid, sampling=sampling)))
    usage = msgs[-1].usage
    turns.append((usage.cached_prompt_tokens, before_total))
    before_total = usage.prompt_tokens + usage.completion_tokens
check("later turns find their history cached on their worker", all(c >= total - 16 for c, total in turns), str(turns))
end = router.stub.EndSession(pb.EndSessionRequest(session_id=sid))
check("EndSession reaches the session's worker", end is not None)

# Deadline: a 0.5 s deadline on a call that would run far longer (8,000 tokens: several seconds even on the
# CPU backend's tiny-model speed); both sides end it with DEADLINE_EXCEEDED.
before = [w.stats().deadline_exceeded_requests for w in workers]
started = time.time()
try:
    list(router.stub.Generate(pb.GenerateRequest(prompt="a long answer", sampling=pb.SamplingParameters(max_tokens=8000, temperature=0, ignore_eos=True)),
                              timeout=0.5))
    code = grpc.StatusCode.OK
except grpc.RpcError as e:
    code = e.code()
elapsed = time.time() - started
check("the client sees DEADLINE_EXCEEDED at its deadline", code == grpc.StatusCode.DEADLINE_EXCEEDED and elapsed < 2.5, f"{code} after {elapsed:.2f} s")
deadline = time.time() + 10
while time.time() < deadline:
    counted = sum(w.stats().deadline_exceeded_requests for w in workers) - sum(before)
    if counted >= 1:
        break
    time.sleep(0.05)
check("the worker ended the call at the deadline it was given", counted == 1, str(counted))

# Cancel: the worker's KV blocks come back after a client cancels mid-stream through the router.
baseline = [w.wait_idle() for w in workers]
stream = router.stub.Generate(pb.GenerateRequest(prompt="cancel me soon", sampling=pb.SamplingParameters(max_tokens=8000, temperature=0, ignore_eos=True)))
next(stream)
next(stream)
stream.cancel()
ok = False
deadline = time.time() + 20
while time.time() < deadline and not ok:
    now = [w.stats() for w in workers]
    ok = all(n.running_requests == 0 and n.kv_blocks_free == b.kv_blocks_free for n, b in zip(now, baseline)) \
        and sum(n.cancelled_requests for n in now) == sum(b.cancelled_requests for b in baseline) + 1
    time.sleep(0.05)
check("a cancel through the router frees the worker's KV blocks", ok,
      str([(n.running_requests, n.kv_blocks_free, n.cancelled_requests) for n in [w.stats() for w in workers]]))

# The router's own GetStats: every backend, with the picks, affinity hits and failovers so far.
rs = router.stats()
by_address = {b.address: b for b in rs.backends}
check("GetStats on the router lists every backend", sorted(by_address) == sorted(f"h2c://127.0.0.1:{p}" for p in worker_ports), str(list(by_address)))
check("GetStats counts picks and affinity", sum(b.keyed_picks for b in rs.backends) >= 17 and sum(b.keyless_picks for b in rs.backends) >= 31
      and sum(b.affinity_hits for b in rs.backends) >= 17 and all(b.healthy and b.in_flight == 0 for b in rs.backends),
      str(rs).replace("\n", " "))

# Load reports: a worker ends each Generate with its load in gRPC's ORCA format, and the router keeps the
# latest per backend (GetStats), with the connections it holds to each.
# grpcio keeps this header for its own load balancers and never shows it to the application, so the worker's
# trailers are read with nghttp, and the report parsed by Python's protobuf from the upstream schema.
orca, _ = load_module(schemas, "xds/data/orca/v3/orca_load_report.proto")
import base64
import subprocess
import tempfile
request = pb.GenerateRequest(prompt="orca report", sampling=pb.SamplingParameters(max_tokens=2, temperature=0)).SerializeToString()
with tempfile.NamedTemporaryFile(suffix=".bin") as body:
    body.write(b"\x00" + len(request).to_bytes(4, "big") + request)
    body.flush()
    shown = subprocess.run(["nghttp", "-v", "-H", "content-type: application/grpc", "-H", "te: trailers", "-d", body.name,
                            f"http://127.0.0.1:{worker_ports[0]}/kiln.v1.Inference/Generate"], capture_output=True, timeout=30).stdout
values = [line.split(b"endpoint-load-metrics-bin: ", 1)[1].strip() for line in shown.splitlines() if b"endpoint-load-metrics-bin: " in line]
report = orca.OrcaLoadReport.FromString(base64.b64decode(values[0] + b"=" * (-len(values[0]) % 4))) if len(values) == 1 else None
check("a worker's trailers carry an ORCA OrcaLoadReport (running, waiting, kv_free_blocks)",
      report is not None and set(report.named_metrics) == {"running", "waiting", "kv_free_blocks"}
      and report.named_metrics["kv_free_blocks"] > 0 and report.named_metrics["waiting"] == 0, str(report) + repr(values))
check("the router holds each backend's last report and its connections",
      all(b.connections >= 1 and 0 < b.report_age_seconds < 600 and b.reported_kv_free_blocks > 0 for b in rs.backends),
      str([(b.connections, round(b.report_age_seconds, 2), b.reported_kv_free_blocks) for b in rs.backends]))

# Bad input at the router, as the server already survives it, while a good client goes on being answered.
import socket
import struct
import threading

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def exchange(data, seconds=5):
    """Sends raw bytes; returns what came back before the router closed the connection (None: it did not)."""
    conn = socket.create_connection(("127.0.0.1", router_port), timeout=seconds)
    received = b""
    try:
        conn.sendall(data)
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                return received
            received += chunk
    except ConnectionResetError:
        return received
    except socket.timeout:
        return None
    finally:
        conn.close()


def goaway_codes(data):
    codes, at = [], 0
    while data is not None and at + 9 <= len(data):
        length = int.from_bytes(data[at:at + 3], "big")
        if data[at + 3] == 7 and length >= 8:
            codes.append(int.from_bytes(data[at + 13:at + 17], "big"))
        at += 9 + length
    return codes


good_failures = []
stop_good = threading.Event()


def good_client():
    while not stop_good.is_set():
        try:
            router.generate("still here", max_tokens=2)
        except grpc.RpcError as e:
            good_failures.append(e.code())


good = threading.Thread(target=good_client)
good.start()
check("garbage instead of the preface is closed at once", exchange(b"GARBAGE" * 100) is not None)
oversized = exchange(PREFACE + frame(4, 0, 0) + struct.pack(">I", (1 << 24) - 1)[1:] + bytes([0, 0]) + struct.pack(">I", 1))
check("an oversized frame gets GOAWAY FRAME_SIZE_ERROR", oversized is not None and 6 in goaway_codes(oversized), repr(oversized and oversized[:80]))
# Rapid reset: HEADERS (POST / over h2c, static-table HPACK) then RST_STREAM(CANCEL), a thousand times.
flood = PREFACE + frame(4, 0, 0) + b"".join(frame(1, 0x4 | 0x1, sid, bytes([0x83, 0x86, 0x84])) + frame(3, 0, sid, struct.pack(">I", 8))
                                            for sid in range(1, 2001, 2))
# Then our GOAWAY: a router that got through the flood closes the connection once its streams are done.
reply = exchange(flood + frame(7, 0, 0, struct.pack(">II", 0, 0)), seconds=10)
check("a rapid-reset flood does not hang the router", reply is not None, "no close within 10 s")
stop_good.set()
good.join(30)
check("a good client on another connection is answered throughout", not good_failures, str(good_failures[:3]))

# The router's own health and reflection.
from grpc_health.v1 import health_pb2, health_pb2_grpc
channel = grpc.insecure_channel(f"127.0.0.1:{router_port}")
status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest()).status
check("the router is SERVING", status == health_pb2.HealthCheckResponse.SERVING, str(status))
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
listing = list(reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
names = [s.name for s in listing[0].list_services_response.service]
check("reflection lists kiln.v1.Inference", "kiln.v1.Inference" in names, str(names))

# Failover: kill -9 one worker; keyed calls, some of them owned by it, all still succeed, and only its keys move.
owners = placement(KEYS)
json.dump(owners, open(state_file, "w"))
victim_index = 2
check("the victim owns some of the keys", 0 < sum(1 for w in owners.values() if w == victim_index) < len(KEYS), str(owners))
# 100 keyed streaming calls in flight (each worker decodes 4 at a time, so most wait unanswered), then the kill.
results = {}


def in_flight_call(i):
    received = 0
    try:
        for _ in router.stub.Generate(pb.GenerateRequest(prompt=f"in flight {i}", sampling=pb.SamplingParameters(max_tokens=200, temperature=0, ignore_eos=True)),
                                      metadata=[("x-session-id", f"flight-{i}")], timeout=120):
            received += 1
        results[i] = (received, None)
    except grpc.RpcError as e:
        results[i] = (received, e.code())


threads = [threading.Thread(target=in_flight_call, args=(i,)) for i in range(100)]
for t in threads:
    t.start()
victim = workers[victim_index]
deadline = time.time() + 30
while time.time() < deadline and victim.stats().waiting_requests < 10:
    time.sleep(0.01)
waiting_at_kill = victim.stats().waiting_requests
os.kill(victim_pid, signal.SIGKILL)
killed_at = time.time()
down_after = None
while time.time() < killed_at + 10:
    if not [b for b in router.stats().backends if b.address == f"h2c://127.0.0.1:{worker_ports[victim_index]}"][0].healthy:
        down_after = time.time() - killed_at
        break
    time.sleep(0.01)
for t in threads:
    t.join(150)
unanswered_failed = [(i, r) for i, r in results.items() if r[1] is not None and r[0] == 0]
mid_stream = [(i, r) for i, r in results.items() if r[1] is not None and r[0] > 0]
check("the killed worker had calls waiting, unanswered", waiting_at_kill >= 10, str(waiting_at_kill))
check("every call that had not received a message succeeds on another worker", len(results) == 100 and not unanswered_failed,
      f"{len(results)} ended; failed before any message: {unanswered_failed[:3]}; cut mid-stream (allowed): {len(mid_stream)}")
check("the dead worker is marked down within two health intervals", down_after is not None and down_after <= 1.0,
      f"{down_after} s (interval 0.5 s)")
failures = []
for key in KEYS:
    try:
        list(router.stub.Generate(pb.GenerateRequest(prompt=f"after the kill {key}", sampling=pb.SamplingParameters(max_tokens=2, temperature=0)),
                                  metadata=[("x-session-id", key)], timeout=30))
    except grpc.RpcError as e:
        failures.append((key, e.code(), e.details()))
check("every call succeeds after a worker is killed", not failures, str(failures[:3]))
moved = placement(KEYS)
check("only the killed worker's keys moved", all(moved[k] == owners[k] for k in KEYS if owners[k] != victim_index)
      and all(moved[k] not in (victim_index, -1) for k in KEYS if owners[k] == victim_index), f"{moved} vs {owners}")
victim = [b for b in router.stats().backends if b.address == f"h2c://127.0.0.1:{worker_ports[2]}"][0]
check("GetStats shows the killed worker down", not victim.healthy, str(victim).replace("\n", " "))
check.exit()
