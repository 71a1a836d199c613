"""Python grpcio against `kiln serve` on the real model (result cache off): the API's behaviour.

  inference_client.py PORT SCHEMAS_DIR
"""
import concurrent.futures
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grpc  # noqa: E402
from kiln_grpc import Checks, Kiln, load  # noqa: E402

port, schemas = sys.argv[1], sys.argv[2]
pb, rpc = load(schemas)
kiln = Kiln(pb, rpc, port)
stub = kiln.stub
check = Checks()

# Chat with the model's template streams one message per token and ends with usage. (Germany, not France: on
# "...capital of France?" the model's first answer token is a near-tie, 0.08 in log-probability, which the CPU
# backend's quantized activations and the float32 reference break differently.)
chat = list(stub.Chat(pb.ChatRequest(messages=[pb.ChatMessage(role="user", content="What is the capital of Germany?")],
                                     sampling=pb.SamplingParameters(max_tokens=16, temperature=0))))
text = "".join(m.text for m in chat)
check("chat answers", "Berlin" in text, repr(text))
last = chat[-1]
# completion_tokens counts the end-of-turn token too; it is not sent as text.
check("final message carries usage", last.usage.prompt_tokens > 30 and last.usage.completion_tokens == len(chat)
      and last.usage.time_to_first_token_ms > 0 and last.finish_reason == pb.FINISH_REASON_STOP
      and not last.usage.from_result_cache, str(last).replace("\n", " "))

# Tokenize / Detokenize round trip; ListModels; GetModel.
ids = stub.Tokenize(pb.TokenizeRequest(text="Hello, world!")).token_ids
check("tokenize/detokenize", stub.Detokenize(pb.DetokenizeRequest(token_ids=ids)).text == "Hello, world!", str(list(ids)))
model = stub.ListModels(pb.ListModelsRequest()).models[0]
check("list models", model.architecture == "llama" and model.context_length == 8192 and model.is_default, str(model))
check("get model", stub.GetModel(pb.GetModelRequest(name=model.name)) == model)

# Concurrent greedy streams equal the same requests alone.
prompts = [f"Write a short sentence about the number {i}." for i in range(8)]
alone = [kiln.generate(p)[0] for p in prompts]
with concurrent.futures.ThreadPoolExecutor(8) as pool:
    together = list(pool.map(lambda p: kiln.generate(p)[0], prompts))
check("8 concurrent streams equal alone", together == alone, f"{together} vs {alone}")

# A second identical prompt is served from the prefix cache.
long_prompt = "The history of the printing press begins in the fifteenth century. " * 6
kiln.generate(long_prompt, max_tokens=2)
_, _, last = kiln.generate(long_prompt, max_tokens=2)
check("prefix cache reused", last.usage.cached_prompt_tokens >= 48 and not last.usage.from_result_cache, str(last.usage))

# A stop sequence spanning two tokens ends the stream; the matched text is not sent.
prompt = "Count: 1, 2, 3,"
full_ids, full, _ = kiln.generate(prompt, max_tokens=16)
pieces = [stub.Detokenize(pb.DetokenizeRequest(token_ids=[t])).text for t in full_ids]
span = None
for k in range(2, len(pieces) - 1):
    if pieces[k] and pieces[k + 1].strip():
        candidate = pieces[k][-1] + pieces[k + 1][:2]
        start = full.find(candidate)
        # The match must straddle tokens k and k+1 at its first occurrence.
        boundary = len("".join(pieces[:k + 1]))
        if start == boundary - 1:
            span = candidate
            break
if check("found a stop string spanning two tokens", span is not None, repr(pieces)):
    ids2, stopped, last = kiln.generate(prompt, max_tokens=16, stop=[span])
    check("stop sequence spanning two tokens", stopped == full[:full.index(span)] and last.finish_reason == pb.FINISH_REASON_STOP,
          f"stop {span!r}: {stopped!r} vs {full!r}")

# Seeds: the same seed gives the same tokens; another seed, other tokens.
a = kiln.generate("Once upon a time", max_tokens=24, temperature=1.0, seed=42)[0]
b = kiln.generate("Once upon a time", max_tokens=24, temperature=1.0, seed=42)[0]
c = kiln.generate("Once upon a time", max_tokens=24, temperature=1.0, seed=43)[0]
check("same seed reproduces", a == b, f"{a} vs {b}")
check("another seed differs", a != c, f"{a} vs {c}")

# Logprobs: the chosen token's and the top alternatives, most likely first.
messages = list(stub.Generate(pb.GenerateRequest(prompt="The sky is", sampling=pb.SamplingParameters(
    max_tokens=3, temperature=0, logprobs=True, top_logprobs=5))))
first = messages[0]
check("logprobs", first.HasField("logprob") and len(first.top_logprobs) == 5 and first.top_logprobs[0].token_id == first.token_id
      and abs(first.top_logprobs[0].logprob - first.logprob) < 1e-5
      and all(x.logprob >= y.logprob for x, y in zip(first.top_logprobs, first.top_logprobs[1:])), str(first).replace("\n", " "))

# ignore_eos runs to max_tokens.
_, _, last = kiln.generate("Say hi.", max_tokens=40, ignore_eos=True)
check("ignore_eos generates max_tokens", last.usage.completion_tokens == 40 and last.finish_reason == pb.FINISH_REASON_LENGTH, str(last.usage))

# Cancelling mid-stream leaves the server serving; a deadline ends the call with DEADLINE_EXCEEDED. (The
# cancelled call cannot finish first: greedy, 200 tokens, end of sequence ignored.)
call = stub.Generate(pb.GenerateRequest(prompt="Tell me a long story.", sampling=pb.SamplingParameters(
    max_tokens=200, temperature=0, ignore_eos=True)))
for i, _ in enumerate(call):
    if i == 2:
        call.cancel()
        break
try:
    list(stub.Generate(pb.GenerateRequest(prompt="Tell me a long story.", sampling=pb.SamplingParameters(
        max_tokens=500, temperature=0, ignore_eos=True)), timeout=1.5))
    check("deadline", False, "no error")
except grpc.RpcError as e:
    check("deadline", e.code() == grpc.StatusCode.DEADLINE_EXCEEDED, f"{e.code()} {e.details()}")
check("serves after a cancel and a deadline", len(kiln.generate("Hi", max_tokens=2)[0]) == 2)

# Each bad request gets INVALID_ARGUMENT with a message naming the field.
long_text = "word " * 9000
S = pb.SamplingParameters
for name, rpc_name, request, field in [
    ("empty prompt", "Generate", pb.GenerateRequest(prompt=""), "prompt"),
    ("prompt longer than the context", "Generate", pb.GenerateRequest(prompt=long_text), "prompt"),
    ("max_tokens 0", "Generate", pb.GenerateRequest(prompt="hi", sampling=S(max_tokens=0)), "max_tokens"),
    ("max_tokens absurd", "Generate", pb.GenerateRequest(prompt="hi", sampling=S(max_tokens=10**9)), "max_tokens"),
    ("temperature out of range", "Generate", pb.GenerateRequest(prompt="hi", sampling=S(temperature=5)), "temperature"),
    ("top_p out of range", "Generate", pb.GenerateRequest(prompt="hi", sampling=S(top_p=2)), "top_p"),
    ("min_p out of range", "Generate", pb.GenerateRequest(prompt="hi", sampling=S(min_p=-0.5)), "min_p"),
    ("repetition_penalty out of range", "Generate", pb.GenerateRequest(prompt="hi", sampling=S(repetition_penalty=0)), "repetition_penalty"),
    ("frequency_penalty out of range", "Generate", pb.GenerateRequest(prompt="hi", sampling=S(frequency_penalty=3)), "frequency_penalty"),
    ("presence_penalty out of range", "Generate", pb.GenerateRequest(prompt="hi", sampling=S(presence_penalty=-3)), "presence_penalty"),
    ("top_logprobs out of range", "Generate", pb.GenerateRequest(prompt="hi", sampling=S(top_logprobs=50)), "top_logprobs"),
    ("too many stop strings", "Generate", pb.GenerateRequest(prompt="hi", sampling=S(stop=[str(i) for i in range(17)])), "stop"),
    ("unknown model", "Generate", pb.GenerateRequest(model="gpt-9", prompt="hi"), "model"),
    ("chat without messages", "Chat", pb.ChatRequest(), "messages"),
    ("chat with an unknown model", "Chat", pb.ChatRequest(model="gpt-9", messages=[pb.ChatMessage(role="user", content="hi")]), "model"),
]:
    try:
        list(getattr(stub, rpc_name)(request))
        check(name, False, "no error")
    except grpc.RpcError as e:
        check(name, e.code() == grpc.StatusCode.INVALID_ARGUMENT and field in e.details(), f"{e.code()} {e.details()}")
try:
    stub.GetModel(pb.GetModelRequest(name="gpt-9"))
    check("get unknown model", False, "no error")
except grpc.RpcError as e:
    check("get unknown model", e.code() == grpc.StatusCode.NOT_FOUND, f"{e.code()} {e.details()}")

# Sessions: EndSession reports whether one existed.
kiln.chat([("user", "Hello!")], session_id="end-me", max_tokens=4)
check("end an existing session", stub.EndSession(pb.EndSessionRequest(session_id="end-me")).existed)
check("end a missing session", not stub.EndSession(pb.EndSessionRequest(session_id="end-me")).existed)

# Afterwards nothing runs and every block is free again.
s = kiln.wait_idle()
check("all blocks free when idle", s.kv_blocks_free == s.kv_blocks_total and s.running_requests == 0
      and s.completed_requests > 0 and s.cancelled_requests == 1 and s.deadline_exceeded_requests == 1,
      str(s).replace("\n", " "))
check.exit()
