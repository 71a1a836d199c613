"""Python grpcio (a client nobody here wrote) against Kiln's RPC server, on raw bytes.

usage: grpcio_client.py PORT ; prints one JSON object with each case's outcome.
"""
import json
import sys
import time

import grpc

port = sys.argv[1]
channel = grpc.insecure_channel(f"127.0.0.1:{port}")
grpc.channel_ready_future(channel).result(timeout=10)
out = {}


def code_of(fn):
    try:
        fn()
        return "OK"
    except grpc.RpcError as e:
        return f"{e.code().name}:{e.details()}"


unary = channel.unary_unary("/kiln.test.Echo/Unary")
out["unary"] = unary(b"hello").decode()
out["unary_empty"] = len(unary(b""))
out["unary_large"] = len(unary(b"x" * (3 << 20)))
out["unary_gzip"] = len(unary(b"z" * 100000, compression=grpc.Compression.Gzip))

expand = channel.unary_stream("/kiln.test.Echo/Expand")
out["server_streaming"] = [m.decode() for m in expand(b"5")]

msgs = [m.decode() for m in expand(b"10000")]
out["stream_10000_in_order"] = msgs == [f"m{i}" for i in range(10000)]

status = channel.unary_unary("/kiln.test.Echo/Status")
out["statuses"] = [code_of(lambda c=c: status(bytes([c]))).split(":")[0] for c in range(1, 17)]

collect = channel.stream_unary("/kiln.test.Echo/Collect")
out["client_streaming"] = collect(iter([b"a", b"bc", b"", b"def"])).decode()

chat = channel.stream_stream("/kiln.test.Echo/Chat")
out["bidi"] = [m.decode() for m in chat(iter([b"one", b"two", b"three"]))]

out["unimplemented"] = code_of(lambda: channel.unary_unary("/kiln.test.Echo/Nope")(b""))
out["unknown_service"] = code_of(lambda: channel.unary_unary("/no.Such/Thing")(b""))
out["error"] = code_of(lambda: channel.unary_unary("/kiln.test.Echo/Fail")(b""))

start = time.monotonic()
out["deadline"] = code_of(lambda: channel.unary_unary("/kiln.test.Echo/Slow")(b"", timeout=0.3)).split(":")[0]
out["deadline_seconds"] = round(time.monotonic() - start, 2)

resp, call = channel.unary_unary("/kiln.test.Echo/Meta").with_call(
    b"", metadata=[("x-key", "value-1"), ("x-blob-bin", b"\x00\x01\xfe")])
out["initial_metadata"] = {k: (v if isinstance(v, str) else list(v)) for k, v in call.initial_metadata() if k.startswith("x-")}
out["trailing_metadata"] = {k: (v if isinstance(v, str) else list(v)) for k, v in call.trailing_metadata() if k.startswith("x-")}

out["too_large"] = code_of(lambda: unary(b"y" * (5 << 20))).split(":")[0]

stream = channel.unary_stream("/kiln.test.Echo/Forever")(b"")
first = next(stream)
stream.cancel()
out["cancel_first"] = first.decode()
out["after_cancel"] = unary(b"still-here").decode()

inline = channel.unary_unary("/kiln.test.Echo/InlineUnary")
out["inline_unary"] = inline(b"hello").decode()
out["inline_large"] = len(inline(b"x" * (3 << 20)))
out["inline_gzip"] = len(inline(b"z" * 100000, compression=grpc.Compression.Gzip))
out["inline_too_large"] = code_of(lambda: inline(b"y" * (5 << 20))).split(":")[0]
inline_status = channel.unary_unary("/kiln.test.Echo/InlineStatus")
out["inline_statuses"] = [code_of(lambda c=c: inline_status(bytes([c]))).split(":")[0] for c in range(1, 17)]
out["inline_error"] = code_of(lambda: inline_status(bytes([3])))
out["inline_metadata"] = channel.unary_unary("/kiln.test.Echo/InlineMetadata")(b"hi", metadata=[("x-key", "v")]).decode()

from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

health = health_pb2_grpc.HealthStub(channel)
status_name = health_pb2.HealthCheckResponse.ServingStatus.Name
out["health"] = status_name(health.Check(health_pb2.HealthCheckRequest()).status)
out["health_unknown"] = code_of(lambda: health.Check(health_pb2.HealthCheckRequest(service="no.Such"))).split(":")[0]
watch = health.Watch(health_pb2.HealthCheckRequest(service="kiln.test.Echo"))
out["health_watch"] = status_name(next(watch).status)
watch.cancel()

print(json.dumps(out))
