"""A Python grpcio server (a peer nobody here wrote) for Kiln's client channel, on raw bytes.

Prints its port, then serves until stdin closes.
"""
import sys
import threading
import time
from concurrent import futures

import grpc


def unary(request, context):
    context.set_trailing_metadata([("x-echo-key", dict(context.invocation_metadata()).get("x-key", "none"))])
    return request


def expand(request, context):
    for i in range(int(request.decode() or 0)):
        yield f"m{i}".encode()


def collect(requests, context):
    return b"".join(requests)


def chat(requests, context):
    for r in requests:
        yield b"echo:" + r


def fail(request, context):
    context.abort(grpc.StatusCode.NOT_FOUND, "no such thing: 100% ✓")


def slow(request, context):
    time.sleep(5)
    return b""


handlers = {
    "Unary": grpc.unary_unary_rpc_method_handler(unary),
    "Expand": grpc.unary_stream_rpc_method_handler(expand),
    "Collect": grpc.stream_unary_rpc_method_handler(collect),
    "Chat": grpc.stream_stream_rpc_method_handler(chat),
    "Fail": grpc.unary_unary_rpc_method_handler(fail),
    "Slow": grpc.unary_unary_rpc_method_handler(slow),
}
server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("kiln.test.Echo", handlers),))
port = server.add_insecure_port("127.0.0.1:0")
server.start()
print(port, flush=True)
sys.stdin.read()
server.stop(0)
