"""Two `kiln route` replicas in front of the same three workers, with no coordination between them (grpcio).

usage: replicas_client.py SCHEMAS ROUTER_A_PORT ROUTER_B_PORT WORKER_PORT,... VICTIM_PID

1,000 keys (x-session-id on Tokenize) go to the same worker through either router, before and after one worker
is killed with `kill -9`; after the kill no key goes to it, and only its keys moved. Where a key went is read
from the router's own GetStats (keyed_picks per backend) around each call.
"""
import os
import signal
import sys
import time

from kiln_grpc import Checks, Kiln, load

schemas, port_a, port_b = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
worker_ports = [int(p) for p in sys.argv[4].split(",")]
victim_pid = int(sys.argv[5])
pb, rpc = load(schemas)
check = Checks()
routers = [Kiln(pb, rpc, port_a), Kiln(pb, rpc, port_b)]
KEYS = [f"replica-key-{i}" for i in range(1000)]


def picks(router):
    return {b.address: b.keyed_picks for b in router.stats().backends}


def placement(router):
    """The backend (address) each key's call went to."""
    where = {}
    before = picks(router)
    for key in KEYS:
        router.stub.Tokenize(pb.TokenizeRequest(text=key), metadata=[("x-session-id", key)], timeout=30)
        after = picks(router)
        moved = [a for a in after if after[a] > before.get(a, 0)]
        where[key] = moved[0] if len(moved) == 1 else None
        before = after
    return where


first = [placement(r) for r in routers]
check("every key's call was placed", all(None not in p.values() for p in first))
check("1,000 keys go to the same worker through both routers", first[0] == first[1],
      f"{sum(first[0][k] != first[1][k] for k in KEYS)} differ")
victim = f"h2c://127.0.0.1:{worker_ports[-1]}"
check("the worker to be killed owns keys", 0 < sum(v == victim for v in first[0].values()) < len(KEYS))

os.kill(victim_pid, signal.SIGKILL)
deadline = time.time() + 10
while time.time() < deadline:
    if all(not [b for b in r.stats().backends if b.address == victim][0].healthy for r in routers):
        break
    time.sleep(0.05)
second = [placement(r) for r in routers]
check("after the kill, 1,000 keys still go to the same worker through both routers", second[0] == second[1],
      f"{sum(second[0][k] != second[1][k] for k in KEYS)} differ")
check("no key goes to the killed worker", victim not in second[0].values())
check("only the killed worker's keys moved", all(second[0][k] == first[0][k] for k in KEYS if first[0][k] != victim))
check.exit()
