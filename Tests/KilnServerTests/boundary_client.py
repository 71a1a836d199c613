"""Boundary values into every field of kiln.v1 that becomes a count, range, size, index or number, through
Python grpcio against `kiln serve` on a tiny model: each gets the right status (INVALID_ARGUMENT naming the
field, or OK where the value is legal), and after each class the server still answers.

  boundary_client.py PORT SCHEMAS_DIR
"""
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grpc  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402
from kiln_grpc import Checks, Kiln, load  # noqa: E402

port, schemas = sys.argv[1], sys.argv[2]
pb, rpc = load(schemas)
kiln = Kiln(pb, rpc, port)
stub = kiln.stub
check = Checks()
S = pb.SamplingParameters
MiB = 1 << 20
U32, U64 = (1 << 32) - 1, (1 << 64) - 1
NaN, Inf = math.nan, math.inf
ok = grpc.StatusCode.OK
bad = grpc.StatusCode.INVALID_ARGUMENT


def status(call):
    try:
        result = call()
        if hasattr(result, "__iter__") and not isinstance(result, (bytes, str)) and not hasattr(result, "ListFields"):
            list(result)
        return ok, ""
    except grpc.RpcError as e:
        return e.code(), e.details() or ""


def expect(name, call, code, field=None):
    got, details = status(call)
    # A status message never carries the peer's input whole (grpc-message is cut at 1 KiB).
    check(name, got == code and (field is None or field in details) and len(details.encode()) <= 1024, f"{got}: {details[:160]}")


def alive(after):
    h = health_pb2_grpc.HealthStub(grpc.insecure_channel(f"127.0.0.1:{port}")).Check(health_pb2.HealthCheckRequest())
    ids, _, _ = kiln.generate("the cat", max_tokens=2)
    check(f"alive after {after}", h.status == health_pb2.HealthCheckResponse.SERVING and len(ids) == 2)


def generate(**sampling):
    return lambda: stub.Generate(pb.GenerateRequest(prompt="hi", sampling=S(**sampling)))


# Sampling fields: every boundary value of each.
context = stub.ListModels(pb.ListModelsRequest()).models[0].context_length
for value, code in [(0, bad), (1, ok), (context - 2, ok), (context, bad), (U32, bad)]:
    expect(f"max_tokens {value}", generate(max_tokens=value, temperature=0, ignore_eos=True), code, None if code == ok else "max_tokens")
for value, code in [(0.0, ok), (1e-30, bad), (0.001, ok), (2.0, ok), (2.0001, bad), (-1.0, bad), (NaN, bad), (Inf, bad), (-Inf, bad)]:
    expect(f"temperature {value}", generate(temperature=value, max_tokens=2), code, None if code == ok else "temperature")
for value, code in [(0, ok), (1, ok), (U32, ok)]:
    expect(f"top_k {value}", generate(top_k=value, max_tokens=2), code)
for field in ["top_p", "min_p"]:
    cases = [(0.5, ok), (1.0, ok), (-1.0, bad), (1.5, bad), (NaN, bad), (Inf, bad), (-Inf, bad)] + ([(0.0, bad)] if field == "top_p" else [(0.0, ok)])
    for value, code in cases:
        expect(f"{field} {value}", generate(max_tokens=2, **{field: value}), code, None if code == ok else field)
for value, code in [(1.0, ok), (0.0, bad), (1e-38, bad), (10.0, ok), (10.5, bad), (-1.0, bad), (NaN, bad), (Inf, bad)]:
    expect(f"repetition_penalty {value}", generate(repetition_penalty=value, max_tokens=2), code, None if code == ok else "repetition_penalty")
for field in ["frequency_penalty", "presence_penalty"]:
    for value, code in [(0.0, ok), (-2.0, ok), (2.0, ok), (2.5, bad), (-3.0, bad), (NaN, bad), (Inf, bad), (-Inf, bad)]:
        expect(f"{field} {value}", generate(max_tokens=2, **{field: value}), code, None if code == ok else field)
for value, code in [(0, ok), (U64, ok)]:
    expect(f"seed {value}", generate(seed=value, temperature=0.8, max_tokens=2), code)
for value, code in [(0, ok), (20, ok), (21, bad), (U32, bad)]:
    expect(f"top_logprobs {value}", generate(top_logprobs=value, max_tokens=2), code, None if code == ok else "top_logprobs")
for name, stops, code in [("16 stop strings", [str(i) for i in range(16)], ok), ("17 stop strings", [str(i) for i in range(17)], bad),
                          ("an empty stop string", [""], bad), ("a 256-byte stop string", ["s" * 256], ok),
                          ("a 257-byte stop string", ["s" * 257], bad), ("a 1 MiB stop string", ["s" * MiB], bad)]:
    expect(name, generate(stop=stops, max_tokens=2), code, None if code == ok else "stop")
alive("the sampling fields")

# Prompts, messages and text: empty and 1 MiB.
expect("empty prompt", lambda: stub.Generate(pb.GenerateRequest(prompt="")), bad, "prompt")
expect("1 MiB prompt", lambda: stub.Generate(pb.GenerateRequest(prompt="a" * MiB)), bad, "prompt")
expect("1 MiB chat message", lambda: stub.Chat(pb.ChatRequest(messages=[pb.ChatMessage(role="user", content="a" * MiB)])), bad, "messages")
expect("empty chat role", lambda: stub.Chat(pb.ChatRequest(messages=[pb.ChatMessage(role="", content="hi")])), bad, "role")
expect("1 MiB tokenize text", lambda: stub.Tokenize(pb.TokenizeRequest(text="a" * MiB)), bad, "text")
expect("empty tokenize text", lambda: stub.Tokenize(pb.TokenizeRequest(text="")), ok)
expect("a 1 MiB model name", lambda: stub.Tokenize(pb.TokenizeRequest(model="m" * MiB, text="hi")), bad, "model")
expect("a 1 MiB model name to GetModel", lambda: stub.GetModel(pb.GetModelRequest(name="m" * MiB)), grpc.StatusCode.NOT_FOUND, "model")
expect("a message over 4 MiB", lambda: stub.Generate(pb.GenerateRequest(prompt="a" * (5 * MiB))), grpc.StatusCode.RESOURCE_EXHAUSTED)
alive("the texts")

# Token ids in Detokenize: past the vocabulary, "negative" (a 10-byte varint of -1, truncated to uint32 as
# every protobuf reader does), empty, and more than the call takes.
vocabulary = stub.ListModels(pb.ListModelsRequest()).models[0].vocabulary_size
for ids, code in [([], ok), ([0], ok), ([vocabulary - 1], ok), ([vocabulary], bad), ([U32], bad), ([0] * (1 << 18), ok), ([0] * ((1 << 18) + 1), bad)]:
    expect(f"detokenize {len(ids)} ids up to {max(ids) if ids else '-'}", lambda ids=ids: stub.Detokenize(pb.DetokenizeRequest(token_ids=ids)), code,
           None if code == ok else "token_ids")
raw = grpc.insecure_channel(f"127.0.0.1:{port}").unary_unary("/kiln.v1.Inference/Detokenize")
minus_one = b"\x10" + b"\xff" * 9 + b"\x01"   # field 2, varint -1 (10 bytes)
expect("detokenize -1", lambda: raw(minus_one), bad, "token_ids")
alive("the token ids")

# Protobuf on the wire: truncated varints, lengths past the message, an 11-byte varint, wrong wire types.
generate_raw = grpc.insecure_channel(f"127.0.0.1:{port}").unary_stream("/kiln.v1.Inference/Generate")
for name, payload in [("a truncated varint", b"\x1a\x02\x08\xff"), ("a length past the message", b"\x12\xff\xff\xff\x0fhi"),
                      ("an 11-byte varint", b"\x1a\x0c\x08" + b"\xff" * 10 + b"\x01"),
                      ("invalid UTF-8 in the prompt", b"\x12\x02\xc3\x28"), ("a field number 0", b"\x00\x01")]:
    expect(f"protobuf: {name}", lambda p=payload: list(generate_raw(p)), grpc.StatusCode.INTERNAL)
# A known field number with another wire type is an unknown field, skipped, as protobuf's own readers do.
expect("protobuf: the prompt's number as a varint, then the prompt", lambda: list(generate_raw(b"\x10\x05\x12\x02hi\x1a\x02\x08\x02")), ok)
alive("the protobuf cases")

# Session ids: the longest allowed, one byte more, 1 MiB, and "new".
for sid, code in [("s" * 256, ok), ("s" * 257, bad), ("s" * MiB, bad)]:
    expect(f"session_id of {len(sid)} bytes", lambda sid=sid: stub.Chat(pb.ChatRequest(
        messages=[pb.ChatMessage(role="user", content="hi")], session_id=sid, sampling=S(max_tokens=2))), code, None if code == ok else "session_id")
replies = stub.Chat(pb.ChatRequest(messages=[pb.ChatMessage(role="user", content="hi")], session_id="new", sampling=S(max_tokens=2)))
issued = dict(replies.initial_metadata()).get("x-session-id", "")
list(replies)
check("session_id \"new\" is issued 128 random bits", len(issued) == 32 and all(c in "0123456789abcdef" for c in issued), repr(issued))
check("the issued session exists", stub.EndSession(pb.EndSessionRequest(session_id=issued)).existed)
expect("end an empty session_id", lambda: stub.EndSession(pb.EndSessionRequest(session_id="")), bad, "session_id")
check("end a 1 MiB session_id that does not exist", not stub.EndSession(pb.EndSessionRequest(session_id="s" * MiB)).existed)
alive("the session ids")
check.exit()
