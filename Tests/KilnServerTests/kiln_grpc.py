"""Shared by the grpcio test scripts: stubs made by grpcio-tools from Schemas/ at run time, and checks.

Every check prints one line, PASS or FAIL; a script exits 1 when any failed.
"""
import importlib
import subprocess
import sys
import tempfile
import time

import grpc


def load(schemas):
    """Compiles kiln/v1/inference.proto with grpcio-tools; returns (messages module, stubs module)."""
    return load_module(schemas, "kiln/v1/inference.proto")


def load_module(schemas, proto):
    """Compiles `proto` (a path under `schemas`) with grpcio-tools; returns (messages module, stubs module)."""
    out = tempfile.mkdtemp()
    subprocess.check_call([sys.executable, "-m", "grpc_tools.protoc", "-I", schemas, f"--python_out={out}",
                           f"--grpc_python_out={out}", proto])
    sys.path.insert(0, out)
    module = proto[:-len(".proto")].replace("/", ".")
    return importlib.import_module(module + "_pb2"), importlib.import_module(module + "_pb2_grpc")


def seeded_random(fixed):
    """A random.Random whose seed is printed: KILN_TEST_SEED replays a run, else `fixed`."""
    import os
    import random
    seed = int(os.environ.get("KILN_TEST_SEED", fixed))
    print(f"random seed {seed} (replay with KILN_TEST_SEED={seed})", flush=True)
    return random.Random(seed)


class Checks:
    def __init__(self):
        self.failures = 0

    def __call__(self, name, ok, detail=""):
        print(("PASS " if ok else "FAIL ") + name + (f": {detail}" if detail else ""), flush=True)
        self.failures += 0 if ok else 1
        return ok

    def exit(self):
        sys.exit(1 if self.failures else 0)


class Kiln:
    """A Kiln server reached through the generated Python stubs."""

    def __init__(self, pb, rpc, port):
        self.pb = pb
        self.stub = rpc.InferenceStub(grpc.insecure_channel(f"127.0.0.1:{port}",
                                                            options=[("grpc.max_receive_message_length", 64 << 20)]))

    def generate(self, prompt, max_tokens=12, **sampling):
        """Greedy unless told otherwise: (token ids, text, last message)."""
        sampling.setdefault("temperature", 0)
        messages = list(self.stub.Generate(self.pb.GenerateRequest(
            prompt=prompt, sampling=self.pb.SamplingParameters(max_tokens=max_tokens, **sampling))))
        return [m.token_id for m in messages[:-1]], "".join(m.text for m in messages), messages[-1]

    def chat(self, messages, session_id="", max_tokens=24, **sampling):
        """(text, last message) of a greedy Chat."""
        sampling.setdefault("temperature", 0)
        request = self.pb.ChatRequest(messages=[self.pb.ChatMessage(role=r, content=c) for r, c in messages],
                                      session_id=session_id,
                                      sampling=self.pb.SamplingParameters(max_tokens=max_tokens, **sampling))
        replies = list(self.stub.Chat(request))
        return "".join(m.text for m in replies), replies[-1]

    def stats(self):
        return self.stub.GetStats(self.pb.GetStatsRequest())

    def wait_idle(self, seconds=60):
        """The stats once nothing runs or waits (cancellations reach the engine within a step)."""
        deadline = time.time() + seconds
        while True:
            s = self.stats()
            if (s.running_requests == 0 and s.waiting_requests == 0) or time.time() > deadline:
                return s
            time.sleep(0.05)
