"""The official `openai` package (and curl, and raw HTTP/1.1) against Kiln's OpenAI-compatible API.

    openai_client.py SCHEMAS serve PORT      kiln serve with the real model: answers equal gRPC's
    openai_client.py SCHEMAS route PORT      kiln route in front of workers: a session's turns through it
"""
import http.client
import json
import socket
import subprocess
import sys
import threading

import openai

from kiln_grpc import Checks, Kiln, load

check = Checks()
MESSAGES = [("system", "You are brief."), ("user", "Name three colours.")]


def raw(port, method, path, body=None, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, dict((k.lower(), v) for k, v in r.getheaders()), data


def serve(schemas, port):
    pb, rpc = load(schemas)
    kiln = Kiln(pb, rpc, port)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=120)

    models = [m.id for m in client.models.list().data]
    check("models.list lists the served model", len(models) == 1, models)
    model = models[0]
    check("models.retrieve finds it", client.models.retrieve(model).id == model)

    # Greedy chat: the same text gRPC Chat returns for the same messages, streamed or not.
    grpc_text, grpc_last = kiln.chat(MESSAGES, max_tokens=24)
    messages = [{"role": r, "content": c} for r, c in MESSAGES]
    whole = client.chat.completions.create(model=model, messages=messages, max_tokens=24, temperature=0)
    check("a greedy chat equals gRPC Chat's text", whole.choices[0].message.content == grpc_text,
          f"{whole.choices[0].message.content!r} vs {grpc_text!r}")
    check("finish_reason and usage as gRPC's", whole.choices[0].finish_reason == "length"
          and whole.usage.completion_tokens == grpc_last.usage.completion_tokens == 24
          and whole.usage.prompt_tokens == grpc_last.usage.prompt_tokens
          and whole.usage.total_tokens == whole.usage.prompt_tokens + 24, f"{whole.usage}")
    chunks = list(client.chat.completions.create(model=model, messages=messages, max_tokens=24, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    check("a streamed greedy chat equals it too", text == grpc_text, f"{text!r}")
    token_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    check("one chunk per token", len(token_chunks) >= 20, f"{len(token_chunks)} chunks with text")
    check("the first chunk names the role", chunks[0].choices[0].delta.role == "assistant")
    check("the last choice chunk has finish_reason", [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length")
    check("include_usage adds a usage chunk, last, without choices",
          chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 24)

    # Seeded sampling reproduces; another seed (almost surely) does not.
    def sampled(seed):
        r = client.chat.completions.create(model=model, messages=messages, max_tokens=32, temperature=0.8, seed=seed,
                                           top_p=0.95, frequency_penalty=0.3, stop=["\n\n\n"])
        return r.choices[0].message.content
    a, b, c = sampled(7), sampled(7), sampled(8)
    check("seeded sampling reproduces", a == b, f"{a!r} vs {b!r}")
    check("another seed samples otherwise", a != c, f"{a!r}")
    grpc_seeded, _ = kiln.chat(MESSAGES, max_tokens=32, temperature=0.8, seed=7, top_p=0.95, frequency_penalty=0.3, stop=["\n\n\n"])
    check("a seeded chat equals gRPC's with the same seed", a == grpc_seeded, f"{a!r} vs {grpc_seeded!r}")

    # Completions, with log-probabilities.
    ids, grpc_completion, _ = kiln.generate("The capital of France is", max_tokens=8)
    comp = client.completions.create(model=model, prompt="The capital of France is", max_tokens=8, temperature=0, logprobs=2)
    check("a greedy completion equals gRPC Generate's text", comp.choices[0].text == grpc_completion, f"{comp.choices[0].text!r}")
    lp = comp.choices[0].logprobs
    check("completion logprobs: one per token, two alternatives each",
          len(lp.token_logprobs) == 8 and all(len(t) >= 1 for t in lp.top_logprobs) and all(x <= 0 for x in lp.token_logprobs),
          f"{lp.token_logprobs}")
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model=model, prompt="The capital of France is", max_tokens=8, temperature=0, stream=True))
    check("a streamed completion equals it", streamed == grpc_completion, f"{streamed!r}")
    chat_lp = client.chat.completions.create(model=model, messages=messages, max_tokens=4, temperature=0, logprobs=True, top_logprobs=3)
    content = chat_lp.choices[0].logprobs.content
    check("chat logprobs: a token, its logprob and three alternatives",
          len(content) == 4 and all(len(t.top_logprobs) == 3 and t.logprob <= 0 for t in content), f"{content}")
    # Its prompt was computed by the calls before (not a result-cache answer: max_tokens differs).
    details = chat_lp.usage.prompt_tokens_details
    check("usage says how many prompt tokens came from the prefix cache",
          details is not None and 0 < details.cached_tokens <= chat_lp.usage.prompt_tokens, f"{details}")

    # Errors in OpenAI's shape, with the right status and the field named.
    def error(call):
        try:
            call()
        except openai.APIStatusError as e:
            return e.status_code, (e.body or {}) if isinstance(e.body, dict) else {}
        return None, {}
    status, body = error(lambda: client.chat.completions.create(model=model, messages=messages, n=2))
    check("n=2 is 400 naming n", status == 400 and body.get("param") == "n", f"{status} {body}")
    status, body = error(lambda: client.chat.completions.create(model="nope", messages=messages))
    check("an unknown model is 404", status == 404 and body.get("code") == "model_not_found", f"{status} {body}")
    status, body = error(lambda: client.chat.completions.create(model=model, messages=messages, temperature=-1))
    check("a bad temperature is 400 naming it", status == 400 and body.get("param") == "temperature", f"{status} {body}")
    status, body = error(lambda: client.chat.completions.create(model=model, messages=messages, max_tokens=10 ** 9))
    check("max_tokens past the context is 400 naming it", status == 400 and body.get("param") == "max_tokens", f"{status} {body}")
    for name, payload, param in [
        ("invalid JSON", b'{"messages": [', None),
        ("a temperature that is a string", json.dumps({"messages": messages, "temperature": "hot"}).encode(), "temperature"),
        ("messages that are not a list", json.dumps({"messages": "hi"}).encode(), "messages"),
        ("a message without content", json.dumps({"messages": [{"role": "user"}]}).encode(), "messages[0].content"),
        ("a seed below zero", json.dumps({"messages": messages, "seed": -1}).encode(), "seed"),
        ("stop of the wrong type", json.dumps({"messages": messages, "stop": 5}).encode(), "stop"),
    ]:
        status, _, data = raw(port, "POST", "/v1/chat/completions", payload, {"content-type": "application/json"})
        err = json.loads(data).get("error", {}) if data.startswith(b"{") else {}
        check(f"{name}: 400 in OpenAI's shape naming {param}", status == 400 and err.get("param") == param
              and err.get("type") == "invalid_request_error" and "message" in err, f"{status} {data[:200]!r}")
    status, _, data = raw(port, "GET", "/v1/nothing")
    check("an unknown route is 404 in OpenAI's shape", status == 404 and b'"error"' in data, f"{status}")
    status, _, _ = raw(port, "POST", "/v1/chat/completions", b"x" * (9 << 20), {"content-type": "application/json"})
    check("a body over 8 MiB is 413", status == 413, f"{status}")

    # curl over HTTP/1.1 and HTTP/2, streaming: the same greedy text as the SDK got.
    body = json.dumps({"model": model, "messages": messages, "max_tokens": 24, "temperature": 0, "stream": True})
    for flag in ["--http1.1", "--http2-prior-knowledge"]:
        out = subprocess.run(["curl", "-sS", "-N", flag, "-H", "content-type: application/json", "-d", body,
                              f"http://127.0.0.1:{port}/v1/chat/completions"], capture_output=True, text=True, timeout=60).stdout
        events = [line[len("data: "):] for line in out.split("\n") if line.startswith("data: ")]
        text = "".join(json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1] if json.loads(e)["choices"])
        check(f"curl {flag}: SSE chunks with the same text, then [DONE]", events and events[-1] == "[DONE]" and text == grpc_text, f"{text!r}")

    # 100 SSE streams at once over 100 HTTP/1.1 keep-alive connections, twice on each (the second on the same
    # connection), each complete and equal to gRPC's answer.
    expected = {}
    results = []
    lock = threading.Lock()
    prompts = [f"Count to {i % 5 + 2}." for i in range(200)]
    for p in set(prompts):
        expected[p] = kiln.chat([("user", p)], max_tokens=8)[0]

    def worker(w):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        first_socket = None
        for i in range(w * 2, w * 2 + 2):
            c.request("POST", "/v1/chat/completions", json.dumps({"messages": [{"role": "user", "content": prompts[i]}],
                                                                  "max_tokens": 8, "temperature": 0, "stream": True}),
                      {"content-type": "application/json"})
            r = c.getresponse()
            events = [line[6:] for line in r.read().decode().split("\n") if line.startswith("data: ")]
            text = "".join(json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1])
            # The second request went on the first one's socket (http.client would quietly reconnect).
            same_connection = first_socket is None or c.sock is first_socket
            first_socket = first_socket or c.sock
            with lock:
                results.append(r.status == 200 and events[-1] == "[DONE]" and text == expected[prompts[i]]
                               and r.getheader("content-type") == "text/event-stream" and same_connection and c.sock is not None)
        c.close()
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    check("100 SSE streams at once over HTTP/1.1 keep-alive, twice each, complete and equal to gRPC's answer",
          len(results) == 200 and all(results), f"{sum(results)} of {len(results)}")


def route(schemas, port):
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=120)
    model = client.models.list().data[0].id
    # A session through the router: "new" is named by the router (x-session-id back), and the next turns
    # carry it; each turn's prompt starts with the session's history, which its worker has cached.
    history = [{"role": "user", "content": "Name a fruit."}]
    raw_response = client.chat.completions.with_raw_response.create(
        model=model, messages=history, max_tokens=12, temperature=0, extra_headers={"x-session-id": "new"})
    session = raw_response.headers.get("x-session-id")
    first = raw_response.parse()
    check("the router names a new session", bool(session) and session != "new", f"{session}")
    turns = [first]
    for question in ["And a vegetable?", "And a colour?"]:
        stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": question}], max_tokens=12,
                                                temperature=0, stream=True, stream_options={"include_usage": True},
                                                extra_headers={"x-session-id": session})
        chunks = list(stream)
        turns.append(chunks[-1])
        check(f"turn {len(turns)} streams through the router", chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0)
    # Each later turn's prompt holds the earlier ones: same worker, so its prefix cache serves them.
    check("the session's later turns are served from its worker's cache",
          all(t.usage.prompt_tokens_details.cached_tokens >= first.usage.prompt_tokens - 16 for t in turns[1:])
          and turns[2].usage.prompt_tokens > turns[1].usage.prompt_tokens > first.usage.prompt_tokens,
          f"{[(t.usage.prompt_tokens, t.usage.prompt_tokens_details.cached_tokens) for t in turns]}")


if __name__ == "__main__":
    schemas, mode, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    serve(schemas, port) if mode == "serve" else route(schemas, port)
    check.exit()
