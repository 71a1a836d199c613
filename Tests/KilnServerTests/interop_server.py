"""A Python grpcio server implementing kiln.interop.v1.Interop (stubs made by grpcio-tools from Schemas/),
for Kiln's generated client to call. Prints its port, then serves until stdin closes.

  interop_server.py SCHEMAS_DIR
"""
import os
import sys
import threading
import time
from concurrent import futures

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grpc  # noqa: E402
from grpc_health.v1 import health, health_pb2, health_pb2_grpc  # noqa: E402
from kiln_grpc import load_module  # noqa: E402

pb, rpc = load_module(sys.argv[1], "kiln/interop/v1/interop.proto")
lock = threading.Lock()
cancelled = 0


def count_cancel():
    global cancelled
    with lock:
        cancelled += 1


def wait(context, seconds):
    """Sleeps, watching for the call to end; False when it was cancelled meanwhile."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not context.is_active():
            count_cancel()
            return False
        time.sleep(0.005)
    return True


def fail_if_asked(request, context):
    if request.fail_code:
        code = next(c for c in grpc.StatusCode if c.value[0] == request.fail_code)
        context.abort(code, request.fail_message)


class Interop(rpc.InteropServicer):
    def Unary(self, request, context):
        sent = [(k, v) for k, v in context.invocation_metadata() if k in request.echo_metadata]
        if sent:
            context.send_initial_metadata(sent)
            context.set_trailing_metadata(sent)
        if request.delay_ms and not wait(context, request.delay_ms / 1000):
            return pb.EchoResponse()
        fail_if_asked(request, context)
        return pb.EchoResponse(payload=request.payload)

    def Expand(self, request, context):
        # A reset while the generator is suspended never resumes it: count from the call's end instead.
        finished = []
        context.add_callback(lambda: None if finished else count_cancel())
        for i in range(request.count):
            if not context.is_active():
                return
            yield pb.EchoResponse(payload=bytes(request.payload_bytes), index=i)
            if request.interval_ms:
                time.sleep(request.interval_ms / 1000)
        finished.append(True)

    def Collect(self, request_iterator, context):
        payload = b""
        for request in request_iterator:
            fail_if_asked(request, context)
            payload += request.payload
        return pb.EchoResponse(payload=payload)

    def Converse(self, request_iterator, context):
        for i, request in enumerate(request_iterator):
            fail_if_asked(request, context)
            yield pb.EchoResponse(payload=request.payload, index=i)

    def Stats(self, request, context):
        with lock:
            return pb.StatsResponse(cancelled_calls=cancelled)


server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
rpc.add_InteropServicer_to_server(Interop(), server)
health_servicer = health.HealthServicer()
health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
port = server.add_insecure_port("127.0.0.1:0")
server.start()
print(port, flush=True)
sys.stdin.read()
server.stop(0)
