"""Python grpcio (stubs made by grpcio-tools from Schemas/kiln/interop/v1/interop.proto) calls a server of
kiln.interop.v1.Interop: every call kind, deadlines, cancellation, every status, metadata with -bin, and
the 4 MiB message limit both ways.

  interop_client.py PORT SCHEMAS_DIR
"""
import os
import queue
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grpc  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402
from kiln_grpc import Checks, load_module  # noqa: E402

port, schemas = sys.argv[1], sys.argv[2]
pb, rpc = load_module(schemas, "kiln/interop/v1/interop.proto")
channel = grpc.insecure_channel(f"127.0.0.1:{port}")
grpc.channel_ready_future(channel).result(timeout=10)
stub = rpc.InteropStub(channel)
check = Checks()


def code(fn):
    try:
        fn()
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as e:
        return e.code(), e.details()


def cancelled_calls():
    return stub.Stats(pb.StatsRequest()).cancelled_calls


def wait_for_cancel(before):
    deadline = time.monotonic() + 3
    while cancelled_calls() <= before and time.monotonic() < deadline:
        time.sleep(0.02)
    return cancelled_calls() > before


check("unary", stub.Unary(pb.EchoRequest(payload=b"hello")).payload == b"hello")
check("unary, empty message", stub.Unary(pb.EchoRequest()) == pb.EchoResponse())

indices = [m.index for m in stub.Expand(pb.ExpandRequest(count=10000))]
check("server stream of 10,000 messages, in order", indices == list(range(10000)), f"{len(indices)} messages")

payloads = [b"a", b"bc", b"", b"def"]
check("client streaming", stub.Collect(iter(pb.EchoRequest(payload=p) for p in payloads)).payload == b"abcdef")

# Bidirectional, interleaved: each request is sent only after the previous answer came back.
outbox = queue.Queue()
replies = stub.Converse(iter(outbox.get, None))
answers = []
for word in [b"one", b"two", b"three"]:
    outbox.put(pb.EchoRequest(payload=word))
    answers.append(next(replies))
outbox.put(None)
rest = list(replies)
check("bidirectional, interleaved", [(a.payload, a.index) for a in answers] == [(b"one", 0), (b"two", 1), (b"three", 2)] and not rest)

before = cancelled_calls()
start = time.monotonic()
status, _ = code(lambda: stub.Unary(pb.EchoRequest(delay_ms=5000), timeout=0.3))
elapsed = time.monotonic() - start
check("deadline expires", status == grpc.StatusCode.DEADLINE_EXCEEDED and elapsed < 2, f"{status} after {elapsed:.2f} s")
check("the deadline cancelled the handler", wait_for_cancel(before))

before = cancelled_calls()
stream = stub.Expand(pb.ExpandRequest(count=100000, interval_ms=5))
first = [next(stream).index for _ in range(3)]
stream.cancel()
check("cancellation mid-stream", first == [0, 1, 2] and wait_for_cancel(before), str(first))

message = "bad 50% ünïcode\nline"
statuses = []
for c in grpc.StatusCode:
    if c == grpc.StatusCode.OK:
        continue
    got, details = code(lambda c=c: stub.Unary(pb.EchoRequest(fail_code=c.value[0], fail_message=message)))
    statuses.append((c, got, details))
bad = [(c.name, got.name, d) for c, got, d in statuses if got != c or d != message]
check("every error status, message percent-encoded", len(statuses) == 16 and not bad, str(bad))
got, _ = code(lambda: list(stub.Converse(iter([pb.EchoRequest(payload=b"x"), pb.EchoRequest(fail_code=9, fail_message="no")]))))
check("an error mid-stream", got == grpc.StatusCode.FAILED_PRECONDITION, str(got))

response, call = stub.Unary.with_call(pb.EchoRequest(payload=b"m", echo_metadata=["x-key", "x-blob-bin"]),
                                      metadata=[("x-key", "value-1"), ("x-blob-bin", b"\x00\x01\xfe")])
initial = {k: v for k, v in call.initial_metadata() if k.startswith("x-")}
trailing = {k: v for k, v in call.trailing_metadata() if k.startswith("x-")}
expected = {"x-key": "value-1", "x-blob-bin": b"\x00\x01\xfe"}
check("request and response metadata, -bin included", initial == expected and trailing == expected, f"{initial} / {trailing}")

big = bytes(range(256)) * (3 * 4096)
check("3 MiB message both ways", stub.Unary(pb.EchoRequest(payload=big)).payload == big)
status, details = code(lambda: stub.Unary(pb.EchoRequest(payload=bytes(5 << 20))))
check("5 MiB request refused", status == grpc.StatusCode.RESOURCE_EXHAUSTED, f"{status} {details}")
status, details = code(lambda: list(stub.Expand(pb.ExpandRequest(count=1, payload_bytes=5 << 20))))
check("5 MiB response refused by the client", status == grpc.StatusCode.RESOURCE_EXHAUSTED, f"{status} {details}")

check("serves afterwards", stub.Unary(pb.EchoRequest(payload=b"still-here")).payload == b"still-here")
health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
check("health SERVING", health.status == health_pb2.HealthCheckResponse.SERVING, str(health))
check.exit()
