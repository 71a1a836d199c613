"""Python grpcio against `kiln serve --model`: stubs made by grpcio-tools from Schemas/ at run time.

  inference_client.py PORT SCHEMAS_DIR   runs every check, prints one line per check, exits 1 on a failure
"""
import concurrent.futures
import importlib
import subprocess
import sys
import tempfile

port, schemas = sys.argv[1], sys.argv[2]
out = tempfile.mkdtemp()
subprocess.check_call([sys.executable, "-m", "grpc_tools.protoc", "-I", schemas, f"--python_out={out}",
                       f"--grpc_python_out={out}", "kiln/v1/inference.proto"])
sys.path.insert(0, out)
import grpc  # noqa: E402
pb = importlib.import_module("kiln.v1.inference_pb2")
rpc = importlib.import_module("kiln.v1.inference_pb2_grpc")

stub = rpc.InferenceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
failures = 0


def check(name, ok, detail=""):
    global failures
    print(("PASS " if ok else "FAIL ") + name + (f": {detail}" if detail else ""), flush=True)
    failures += 0 if ok else 1


def generate(prompt, max_tokens=12, **sampling):
    messages = list(stub.Generate(pb.GenerateRequest(prompt=prompt, sampling=pb.SamplingParameters(
        max_tokens=max_tokens, temperature=0, **sampling))))
    return [m.token_id for m in messages[:-1]], "".join(m.text for m in messages), messages[-1]


# Chat with the model's template streams one message per token and ends with usage.
chat = list(stub.Chat(pb.ChatRequest(messages=[pb.ChatMessage(role="user", content="What is the capital of France?")],
                                     sampling=pb.SamplingParameters(max_tokens=16, temperature=0))))
text = "".join(m.text for m in chat)
check("chat answers", "Paris" in text, repr(text))
last = chat[-1]
# completion_tokens counts the end-of-turn token too; it is not sent as text.
check("final message carries usage", last.usage.prompt_tokens > 30 and last.usage.completion_tokens == len(chat)
      and last.usage.time_to_first_token_ms > 0 and last.finish_reason == pb.FINISH_REASON_STOP, str(last).replace("\n", " "))

# Tokenize / Detokenize round trip; ListModels.
ids = stub.Tokenize(pb.TokenizeRequest(text="Hello, world!")).token_ids
check("tokenize/detokenize", stub.Detokenize(pb.DetokenizeRequest(token_ids=ids)).text == "Hello, world!", str(list(ids)))
check("list models", stub.ListModels(pb.ListModelsRequest()).models[0].architecture == "llama")

# Concurrent greedy streams equal the same requests alone.
prompts = [f"Write a short sentence about the number {i}." for i in range(8)]
alone = [generate(p)[0] for p in prompts]
with concurrent.futures.ThreadPoolExecutor(8) as pool:
    together = list(pool.map(lambda p: generate(p)[0], prompts))
check("8 concurrent streams equal alone", together == alone, f"{together} vs {alone}")

# A second identical prompt is served from the prefix cache.
long_prompt = "The history of the printing press begins in the fifteenth century. " * 6
generate(long_prompt, max_tokens=2)
_, _, last = generate(long_prompt, max_tokens=2)
check("prefix cache reused", last.usage.cached_prompt_tokens >= 48, str(last.usage))

# Stop sequences end the stream without emitting the match.
_, full, _ = generate("Count: 1, 2, 3,", max_tokens=12)
if " 5" in full:
    _, stopped, last = generate("Count: 1, 2, 3,", max_tokens=12, stop=[" 5"])
    check("stop sequence", stopped == full[:full.index(" 5")] and last.finish_reason == pb.FINISH_REASON_STOP, repr(stopped))

# Cancelling mid-stream leaves the server serving.
call = stub.Generate(pb.GenerateRequest(prompt="Tell me a long story.", sampling=pb.SamplingParameters(max_tokens=200)))
for i, _ in enumerate(call):
    if i == 2:
        call.cancel()
        break
check("serves after a cancel", len(generate("Hi", max_tokens=2)[0]) == 2)

# Bad requests get INVALID_ARGUMENT (naming the field) or NOT_FOUND.
for name, request, code in [
    ("empty prompt", pb.GenerateRequest(prompt=""), grpc.StatusCode.INVALID_ARGUMENT),
    ("top_p out of range", pb.GenerateRequest(prompt="hi", sampling=pb.SamplingParameters(top_p=2)), grpc.StatusCode.INVALID_ARGUMENT),
    ("max_tokens absurd", pb.GenerateRequest(prompt="hi", sampling=pb.SamplingParameters(max_tokens=10**9)), grpc.StatusCode.INVALID_ARGUMENT),
    ("unknown model", pb.GenerateRequest(model="gpt-9", prompt="hi"), grpc.StatusCode.NOT_FOUND),
]:
    try:
        list(stub.Generate(request))
        check(name, False, "no error")
    except grpc.RpcError as e:
        check(name, e.code() == code, f"{e.code()} {e.details()}")

sys.exit(1 if failures else 0)
