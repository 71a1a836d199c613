"""The serving engine's acceptance scenarios, through Python grpcio against `kiln serve`.

  engine_acceptance.py SCHEMAS concurrent PORT          32 concurrent greedy streams equal each alone
  engine_acceptance.py SCHEMAS session PORT NOCACHE     a 10-turn session reuses its history (NOCACHE: --no-prefix-cache)
  engine_acceptance.py SCHEMAS pressure PORT PRESSED    16 x (200 prompt + 100 new) on 64 blocks equal unpressured
  engine_acceptance.py SCHEMAS cancel PORT PID          1,000 streams reset at random points leak nothing (PID: the server's)
  engine_acceptance.py SCHEMAS result-cache PORT        deterministic requests replayed from the result cache
  engine_acceptance.py SCHEMAS cut-short PORT           generations cut by a deadline are neither cached nor committed,
                                                        and GetStats counts each end under its real cause
  engine_acceptance.py SCHEMAS load-shed PORT           past --max-waiting, RESOURCE_EXHAUSTED (on --max-waiting 1 --max-batch 1)
  engine_acceptance.py SCHEMAS device-lost PORT         a server whose device is lost mid-stream (fault injected)
                                                        fails generations with UNAVAILABLE and serves the rest
"""
import concurrent.futures
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kiln_grpc import Checks, Kiln, load, seeded_random  # noqa: E402

schemas, scenario, ports = sys.argv[1], sys.argv[2], sys.argv[3:]
pb, rpc = load(schemas)
servers = [Kiln(pb, rpc, p) for p in ports]
kiln = servers[0]
check = Checks()


def concurrent_streams():
    topics = ["rivers", "mountains", "bread", "the moon", "chess", "violins", "rain", "trains", "bees", "glass",
              "copper", "winter", "owls", "maps", "salt", "clocks", "tea", "bridges", "paper", "snow", "lighthouses",
              "honey", "deserts", "kites", "coral", "ink", "volcanoes", "lanterns", "wheat", "whales", "candles", "ice"]
    prompts = [f"Write one sentence about {t}." for t in topics]
    alone = [kiln.generate(p, max_tokens=16)[0] for p in prompts]
    before = kiln.stats().steps
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        together = list(pool.map(lambda p: kiln.generate(p, max_tokens=16)[0], prompts))
    steps = kiln.stats().steps - before
    same = [i for i in range(32) if together[i] == alone[i]]
    check("32 concurrent greedy streams equal each alone", len(same) == 32,
          f"{32 - len(same)} differ: " + "; ".join(f"{prompts[i]!r}: {together[i]} vs {alone[i]}" for i in range(32) if i not in same))
    tokens = sum(len(t) for t in together)
    # Batched for real: far fewer engine steps than tokens generated.
    check("the 32 streams shared steps", steps < tokens / 4, f"{steps} steps for {tokens} tokens")


def session(nocache):
    questions = ["Hi! My name is Ada.", "What is a prime number?", "Give me an example.", "Is 21 prime?",
                 "What about 23?", "What is the smallest prime?", "Name a fruit.", "What colour is it?",
                 "Do you remember my name?", "Summarize our chat in one line."]
    sid = f"acceptance-{os.getpid()}"
    history, turns = [], []
    for q in questions:
        reply, last = kiln.chat([("user", q)], session_id=sid, max_tokens=24)
        history += [("user", q), ("assistant", reply)]
        turns.append(last.usage)
        print(f"turn {len(turns)}: prompt {last.usage.prompt_tokens} cached {last.usage.cached_prompt_tokens} "
              f"ttft {last.usage.time_to_first_token_ms:.0f} ms", flush=True)
    t10 = turns[-1]
    check("turn 10 takes >= 90% of its prompt from the cache", t10.cached_prompt_tokens >= 0.9 * t10.prompt_tokens, str(t10))
    check("every later turn reuses the history", all(u.cached_prompt_tokens > 0 for u in turns[1:]))
    # The same conversation sent in full, without a session, to a server with prefix caching off: the
    # same prompt tokens, the same reply, and a first token at least twice as slow.
    reply, last = nocache.chat(history[:-1], max_tokens=24)
    check("the session's prompt equals the full history's", last.usage.prompt_tokens == t10.prompt_tokens,
          f"{last.usage.prompt_tokens} vs {t10.prompt_tokens}")
    check("the session's reply equals the full history's", reply == history[-1][1], f"{reply!r} vs {history[-1][1]!r}")
    check("no cache reuse with prefix caching off", last.usage.cached_prompt_tokens == 0, str(last.usage))
    check("turn 10's first token under half the uncached time", t10.time_to_first_token_ms < 0.5 * last.usage.time_to_first_token_ms,
          f"{t10.time_to_first_token_ms:.0f} ms vs {last.usage.time_to_first_token_ms:.0f} ms uncached")
    check("session ends", kiln.stub.EndSession(pb.EndSessionRequest(session_id=sid)).existed)


def prompt_of(tokens, seed):
    """A text of exactly `tokens` tokens (checked by Tokenize)."""
    rng = random.Random(seed)
    words = "apple river stone cloud music paper garden silver window forest candle market engine pocket".split()
    text = f"Story {seed}:"
    while len(kiln.stub.Tokenize(pb.TokenizeRequest(text=text)).token_ids) < tokens:
        text += " " + rng.choice(words)
    return text


def pressure(pressed):
    prompts = [prompt_of(200, i) for i in range(16)]
    lengths = [len(kiln.stub.Tokenize(pb.TokenizeRequest(text=p)).token_ids) for p in prompts]
    check("prompts of 200 tokens", all(n == 200 for n in lengths), str(lengths))

    def run(server):
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            return list(pool.map(lambda p: server.generate(p, max_tokens=100, ignore_eos=True), prompts))
    start = time.time()
    free = run(kiln)
    print(f"unpressured: {time.time() - start:.0f} s", flush=True)
    start = time.time()
    pressed_results = run(pressed)
    print(f"on 64 blocks: {time.time() - start:.0f} s", flush=True)
    s = pressed.wait_idle()
    check("a pool of 64 blocks", s.kv_blocks_total == 64, str(s.kv_blocks_total))
    check("every request completed 100 tokens", all(len(r[0]) == 100 and r[2].finish_reason == pb.FINISH_REASON_LENGTH
                                                    for r in pressed_results))
    differ = [i for i in range(16) if pressed_results[i][0] != free[i][0]]
    check("tokens equal unpressured", not differ, f"requests {differ} differ")
    check("pressure was relieved by preemption", s.preemptions > 0, f"{s.preemptions} preemptions")
    check("no block leaked", s.kv_blocks_free == 64, str(s).replace("\n", " "))


def process_state(pid):
    """(open descriptors, anonymous resident KiB) of the server process."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    with open(f"/proc/{pid}/status") as f:
        anon = next(int(line.split()[1]) for line in f if line.startswith("RssAnon:"))
    return fds, anon


def settled_state(pid, seconds=5):
    """The process state once its descriptor count stops falling (connections closing)."""
    deadline = time.time() + seconds
    fds, anon = process_state(pid)
    while time.time() < deadline:
        time.sleep(0.1)
        now = process_state(pid)
        if now[0] >= fds:
            return now
        fds, anon = now
    return fds, anon


def cancel(pid):
    rng = seeded_random(7)
    words = "the a of cat dog sun moon red blue one two three".split()

    def one(plan):
        prompt_words, max_tokens, cancel_after = plan
        prompt = " ".join(rng.choice(words) for _ in range(prompt_words))
        call = kiln.stub.Generate(pb.GenerateRequest(prompt=prompt, sampling=pb.SamplingParameters(max_tokens=max_tokens)))
        received = 0
        try:
            if cancel_after == 0:
                call.cancel()  # before any message arrives
                return "early"
            for _ in call:
                received += 1
                if received == cancel_after:
                    call.cancel()  # RST_STREAM from the client mid-stream
                    return "cancelled"
            return "finished"
        except Exception as e:  # a cancelled call raises on its next read
            return "cancelled" if "CANCELLED" in str(e) else f"error {e}"

    def run(count):
        plans = [(rng.randrange(1, 60), rng.randrange(1, 64), rng.randrange(0, 24)) for _ in range(count)]
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            return list(pool.map(one, plans))

    run(100)  # warm-up: the allocator's pools, first-use caches, connections
    start_stats = kiln.wait_idle()
    start_fds, start_anon = settled_state(pid)
    outcomes = run(1000)
    errors = [o for o in outcomes if o.startswith("error")]
    check("no call failed", not errors, str(errors[:3]))
    counts = {k: outcomes.count(k) for k in ("early", "cancelled", "finished")}
    print(f"outcomes: {counts}", flush=True)
    s = kiln.wait_idle()
    fds, anon = settled_state(pid)
    check("1,000 streams: most reset mid-stream", counts["cancelled"] + counts["early"] >= 500, str(counts))
    check("free blocks back to the start", s.kv_blocks_free == start_stats.kv_blocks_free == s.kv_blocks_total,
          f"{s.kv_blocks_free} free of {s.kv_blocks_total}, {start_stats.kv_blocks_free} at the start")
    ended = (s.cancelled_requests - start_stats.cancelled_requests) + (s.completed_requests - start_stats.completed_requests)
    # Every call that got a message reached the engine and ended there exactly once, cancelled (or completed,
    # when the engine finished before the reset arrived); a call cancelled before any message may not have.
    check("every mid-stream cancel reached the engine", counts["cancelled"] + counts["finished"] <= ended <= 1000
          and s.completed_requests - start_stats.completed_requests >= counts["finished"], f"{ended} ended; {counts}")
    check("no engine stream left", s.engine_streams == 0 and s.running_requests == 0 and s.waiting_requests == 0,
          str(s).replace("\n", " "))
    check("sessions as before", s.sessions == start_stats.sessions, f"{start_stats.sessions} -> {s.sessions}")
    check("descriptors back to the start", fds <= start_fds, f"{start_fds} -> {fds}")
    check("memory back near the start", anon - start_anon < 16 * 1024, f"anonymous RSS {start_anon} KiB -> {anon} KiB")
    check("serves afterwards", len(kiln.generate("the cat", max_tokens=3)[0]) == 3)


def result_cache():
    before = kiln.stats()
    a = kiln.generate("the red sun", max_tokens=20)
    b = kiln.generate("the red sun", max_tokens=20)
    check("greedy answer replayed", b[0] == a[0] and b[1] == a[1] and b[2].usage.from_result_cache and not a[2].usage.from_result_cache,
          f"{a[2].usage} / {b[2].usage}")
    check("replay keeps usage", b[2].usage.completion_tokens == a[2].usage.completion_tokens and b[2].finish_reason == a[2].finish_reason)
    c = kiln.generate("the red sun", max_tokens=21)
    check("other parameters miss", not c[2].usage.from_result_cache)
    s1 = kiln.generate("blue moon", max_tokens=20, temperature=0.9, seed=5)
    s2 = kiln.generate("blue moon", max_tokens=20, temperature=0.9, seed=5)
    check("seeded answer replayed", s2[0] == s1[0] and s2[2].usage.from_result_cache)
    r1 = kiln.generate("blue moon", max_tokens=20, temperature=0.9)
    r2 = kiln.generate("blue moon", max_tokens=20, temperature=0.9)
    check("unseeded sampling never replayed", not r1[2].usage.from_result_cache and not r2[2].usage.from_result_cache)
    after = kiln.stats()
    check("hits and misses counted", after.result_cache_hits - before.result_cache_hits == 2
          and after.result_cache_misses - before.result_cache_misses == 3, str(after).replace("\n", " "))


def cut_short():
    import grpc
    before = kiln.wait_idle()
    long = dict(max_tokens=1500, temperature=0, ignore_eos=True)
    prompt = "the red sun and the blue moon"

    def generate(timeout=None, **sampling):
        call = kiln.stub.Generate(pb.GenerateRequest(prompt=prompt, sampling=pb.SamplingParameters(**sampling)), timeout=timeout)
        return list(call)

    # A deterministic call cut by its deadline, then the same call without one: computed fresh and whole.
    try:
        cut = generate(timeout=0.3, **long)
        check("the long call is cut by its deadline", False, f"{len(cut)} messages and a normal end")
    except grpc.RpcError as e:
        check("the long call is cut by its deadline", e.code() == grpc.StatusCode.DEADLINE_EXCEEDED, f"{e.code()}: {e.details()}")
    whole = generate(**long)
    last = whole[-1]
    check("the same call without a deadline is computed, not replayed", not last.usage.from_result_cache, str(last.usage))
    check("and it is whole", last.usage.completion_tokens == 1500 and last.finish_reason == pb.FINISH_REASON_LENGTH, str(last).replace("\n", " "))
    again = generate(**long)
    check("a whole answer is replayed", again[-1].usage.from_result_cache and [m.token_id for m in again] == [m.token_id for m in whole])

    # A chat turn cut by its deadline leaves the session's history as it was.
    sid = f"cut-short-{os.getpid()}"
    kiln.chat([("user", "hello")], session_id=sid, max_tokens=4)
    try:
        list(kiln.stub.Chat(pb.ChatRequest(messages=[pb.ChatMessage(role="user", content="tell me everything")], session_id=sid,
                                           sampling=pb.SamplingParameters(**long)), timeout=0.3))
        check("the long chat turn is cut by its deadline", False)
    except grpc.RpcError as e:
        check("the long chat turn is cut by its deadline", e.code() == grpc.StatusCode.DEADLINE_EXCEEDED, f"{e.code()}: {e.details()}")
    _, cut_turn = kiln.chat([("user", "and then?")], session_id=sid, max_tokens=4)
    sid2 = f"uncut-{os.getpid()}"
    kiln.chat([("user", "hello")], session_id=sid2, max_tokens=4)
    _, clean_turn = kiln.chat([("user", "and then?")], session_id=sid2, max_tokens=4)
    check("the cut turn left no trace in the session", cut_turn.usage.prompt_tokens == clean_turn.usage.prompt_tokens,
          f"{cut_turn.usage.prompt_tokens} prompt tokens after the cut turn, {clean_turn.usage.prompt_tokens} without it")

    # A stop string ends a generation as completed, not cancelled.
    mid = kiln.stats()
    _, text, _ = kiln.generate(prompt, max_tokens=40, ignore_eos=True)
    stop = text[len(text) // 2:len(text) // 2 + 2]
    _, stopped_text, stopped = kiln.generate(prompt, max_tokens=40, ignore_eos=True, stop=[stop])
    check("the stop string finished the generation", len(stop) == 2 and stopped.finish_reason == pb.FINISH_REASON_STOP
          and stop not in stopped_text and text.startswith(stopped_text), f"{stop!r}: {stopped_text!r} of {text!r}")
    after = kiln.wait_idle()
    check("a stop-string finish is no cancellation", after.cancelled_requests == mid.cancelled_requests
          and after.completed_requests >= mid.completed_requests + 2, str(after).replace("\n", " "))
    check("deadline cuts counted as such", after.deadline_exceeded_requests - before.deadline_exceeded_requests == 2
          and after.cancelled_requests == before.cancelled_requests, str(after).replace("\n", " "))
    check("no block leaked", after.kv_blocks_free == after.kv_blocks_total, str(after).replace("\n", " "))


def load_shed():
    """On `kiln serve --max-waiting 1 --max-batch 1`: past one running and one queued request, the rest are
    refused with RESOURCE_EXHAUSTED at once, and GetStats counts them."""
    import grpc
    before = kiln.stats()

    def one(i):
        try:
            list(kiln.stub.Generate(pb.GenerateRequest(prompt=f"the cat {i}", sampling=pb.SamplingParameters(
                max_tokens=60, temperature=0, ignore_eos=True))))
            return "ok"
        except grpc.RpcError as e:
            return f"{e.code().name}: {e.details()}"
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(one, range(8)))
    refused = [o for o in outcomes if o.startswith("RESOURCE_EXHAUSTED")]
    print("outcomes:", outcomes, flush=True)
    check("past --max-waiting, requests are refused with RESOURCE_EXHAUSTED", len(refused) >= 1 and all("server busy" in o for o in refused)
          and all(o == "ok" or o in refused for o in outcomes), str(outcomes))
    check("at least one request was served", "ok" in outcomes, str(outcomes))
    after = kiln.wait_idle()
    check("GetStats counts the refusals", after.refused_requests - before.refused_requests == len(refused),
          f"{after.refused_requests - before.refused_requests} counted, {len(refused)} refused")


def device_lost():
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(f"127.0.0.1:{ports[0]}"))
    status = lambda service: health.Check(health_pb2.HealthCheckRequest(service=service)).status
    check("healthy before the loss", status("") == health_pb2.HealthCheckResponse.SERVING
          and status("kiln.v1.Inference") == health_pb2.HealthCheckResponse.SERVING)
    # The server's device reports VK_ERROR_DEVICE_LOST after a few submissions (KILN_VULKAN_FAULT_DEVICE_LOST_AFTER).
    received = []
    try:
        for m in kiln.stub.Generate(kiln.pb.GenerateRequest(prompt="Tell me about rivers.",
                                                            sampling=kiln.pb.SamplingParameters(max_tokens=64, temperature=0))):
            received.append(m)
        check("the stream fails when the device is lost", False, f"{len(received)} messages and a normal end")
    except grpc.RpcError as e:
        check("a lost device fails the stream with UNAVAILABLE", e.code() == grpc.StatusCode.UNAVAILABLE, f"{e.code()}: {e.details()}")
        check("the status names the device loss", "VK_ERROR_DEVICE_LOST" in (e.details() or ""), e.details())
        check("tokens before the loss were streamed", len(received) > 0, f"{len(received)} messages")
    t = kiln.stub.Tokenize(kiln.pb.TokenizeRequest(text="hello world"))
    check("the process still serves other RPCs", len(t.token_ids) > 0, str(t))
    started = time.time()
    try:
        kiln.generate("Another request.", max_tokens=8)
        check("a later generation fails too", False)
    except grpc.RpcError as e:
        check("a later generation fails with UNAVAILABLE at once", e.code() == grpc.StatusCode.UNAVAILABLE
              and time.time() - started < 10, f"{e.code()} after {time.time() - started:.1f} s")
    check("health reports NOT_SERVING after the loss", status("") == health_pb2.HealthCheckResponse.NOT_SERVING
          and status("kiln.v1.Inference") == health_pb2.HealthCheckResponse.NOT_SERVING, str(status("")))
    s = kiln.wait_idle()
    check("nothing is left running or waiting", s.running_requests == 0 and s.waiting_requests == 0, str(s).replace("\n", " "))


if scenario == "concurrent":
    concurrent_streams()
elif scenario == "session":
    session(servers[1])
elif scenario == "pressure":
    pressure(servers[1])
elif scenario == "cancel":
    cancel(int(ports[1]))
elif scenario == "cut-short":
    cut_short()
elif scenario == "result-cache":
    result_cache()
elif scenario == "load-shed":
    load_shed()
elif scenario == "device-lost":
    device_lost()
else:
    sys.exit(f"unknown scenario {scenario}")
check.exit()
