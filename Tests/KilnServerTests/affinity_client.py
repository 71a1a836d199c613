"""Does session affinity pay? 30 chat sessions x 5 turns on the real model, each turn resending the whole
history (no server-side session), measured three ways on fresh prompts each:

  ideal     one worker serves every session (every turn finds its history in that worker's prefix cache)
  affinity  through `kiln route` in front of three workers, with x-session-id metadata (the ring keeps each
            session on one worker)
  round     through a `kiln route --keyless-policy round_robin`, without the metadata

The figure is the share of turn 2-5 prompt tokens served from the prefix caches; affinity must reach 95% of
the ideal.

usage: affinity_client.py SCHEMAS WORKER_PORT ROUTER_PORT ROUND_ROBIN_ROUTER_PORT
"""
import sys

from kiln_grpc import Checks, Kiln, load, seeded_random

schemas, worker_port, router_port, round_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
pb, rpc = load(schemas)
check = Checks()
SESSIONS, TURNS = 30, 5
# Sessions take their turns in a shuffled order (the same in all three runs): in a fixed order, round robin
# over 3 workers would send each of the 30 sessions to the same worker every turn, by arithmetic.
rng = seeded_random(7)
ORDERS = [rng.sample(range(SESSIONS), SESSIONS) for _ in range(TURNS)]
TOPICS = ["rivers", "castles", "owls", "bread", "comets", "violins", "glaciers", "tea", "bridges", "foxes"]


def run(kiln, tag, with_key):
    """Cached share of turn 2-5 prompt tokens: sessions advance a turn at a time."""
    histories = [[] for _ in range(SESSIONS)]
    cached = prompt = 0

    def turn(s, t):
        history = histories[s] + [("user", f"{tag} session {s}: tell me fact {t} about {TOPICS[s % len(TOPICS)]}.")]
        request = pb.ChatRequest(messages=[pb.ChatMessage(role=r, content=c) for r, c in history],
                                 sampling=pb.SamplingParameters(max_tokens=6, temperature=0))
        metadata = [("x-session-id", f"{tag}-{s}")] if with_key else []
        replies = list(kiln.stub.Chat(request, metadata=metadata, timeout=300))
        histories[s] = history + [("assistant", "".join(m.text for m in replies))]
        return replies[-1].usage

    # One call at a time: the workers' two cores are busy with one prefill anyway, and a call never finds its
    # owner at its bounded-load limit (ceil(1.25 * 1 / 3) = 1), so the figure is affinity alone, without spills.
    for t in range(TURNS):
        for s in ORDERS[t]:
            usage = turn(s, t)
            if t > 0:
                cached += usage.cached_prompt_tokens
                prompt += usage.prompt_tokens
    return cached / prompt


ideal = run(Kiln(pb, rpc, worker_port), "ideal", with_key=False)
affinity = run(Kiln(pb, rpc, router_port), "affinity", with_key=True)
round_robin = run(Kiln(pb, rpc, round_port), "round", with_key=False)
print(f"cached share of turn 2-5 prompt tokens: one worker {ideal:.3f}, kiln route by session {affinity:.3f} "
      f"({affinity / ideal:.3f} of ideal), round robin {round_robin:.3f}", flush=True)
check("affinity reaches 95% of the ideal", affinity >= 0.95 * ideal, f"{affinity:.3f} vs {ideal:.3f}")
check("round robin is well below it", round_robin < 0.9 * affinity, f"{round_robin:.3f} vs {affinity:.3f}")
check.exit()
