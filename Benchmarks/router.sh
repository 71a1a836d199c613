#!/usr/bin/env bash
# make bench-router: the added cost of a router in front of two `kiln serve` workers (tiny random-weight model,
# CPU backend, result cache off), for kiln route, HAProxy (mode http, proto h2 both sides, balance
# hdr(x-session-id), hash-type consistent, hash-balance-factor 125) and nginx (grpc_pass, hash
# $http_x_session_id consistent), against calling a worker directly:
#   - latency added at one call at a time (h2load -c1 -m1, per-request log), p50 and p99, for a unary call
#     (kiln.v1.Inference/Tokenize) and a streamed one (Generate with a seed, 32 tokens: 33 messages, replayed from a
#     third worker's result cache so that decoding speed, which drifts by ±20% over a run here, is not
#     timed). Timed through a second set of routers whose only worker is the one called directly, in PAIRS
#     interleaved pairs of short batches (direct then routed, or the other way round), as the median of the
#     pairs' differences, which cancels the drift of the machine;
#   - the router's CPU µs per unary call and per streamed message under load (-c4 -m8, through the
#     two-worker routers; per message = the router's whole CPU over the 32,000 messages of 1,000 calls),
#     ROUNDS rounds alternating the routers, medians (CPU time from schedstat, in ns).
# Then `kiln bench ring`: ring lookup ns/op (100 backends × 150 virtual nodes) and a bounded-load pick whose
# owner is full. Prints BENCH lines.
set -euo pipefail
cd "$(dirname "$0")/.."
KILN_BIN=${KILN_BIN:-.build/release/kiln}
ROUNDS=${ROUNDS:-5}
N_LOAD=${N_LOAD:-20000}
N_STREAM_LOAD=${N_STREAM_LOAD:-1000}
PAIRS=${PAIRS:-30}
N_PAIR=${N_PAIR:-200}
N_UNARY_PAIR=${N_UNARY_PAIR:-200}
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "nothing on port $1" >&2; exit 1; }

"$KILN_BIN" make-test-model "$work/tiny.gguf" >/dev/null
w1=$(port); w2=$(port); w3=$(port)
for p in $w1 $w2; do
  "$KILN_BIN" serve --model "$work/tiny.gguf" --backend cpu --threads 1 --no-tls --h2c-port "$p" --kv-blocks 256 --result-cache-mb 0 >/dev/null 2>&1 &
  pids+=($!)
done
# The latency worker keeps its result cache: a repeated Generate is then replayed (33 messages back to back)
# instead of decoded, whose speed drifts by ±20% over a run on this machine, far more than a router adds.
"$KILN_BIN" serve --model "$work/tiny.gguf" --backend cpu --threads 1 --no-tls --h2c-port "$w3" --kv-blocks 256 --result-cache-mb 16 >/dev/null 2>&1 &
pids+=($!)
wait_port "$w1"; wait_port "$w2"; wait_port "$w3"

declare -A port_of pid_of
port_of[direct]=$w3

# start_routers SUFFIX WORKER_PORT...: kiln route, HAProxy and nginx in front of those workers.
start_routers() {
  local suffix=$1; shift
  local p backends="" servers="" upstream=""
  for w in "$@"; do
    backends+=" --backend h2c://127.0.0.1:$w"
    servers+="  server w$w 127.0.0.1:$w proto h2"$'\n'
    upstream+=" server 127.0.0.1:$w;"
  done
  p=$(port)
  # shellcheck disable=SC2086
  "$KILN_BIN" route --threads 1 --no-tls --h2c-port "$p" $backends >/dev/null 2>&1 &
  pids+=($!); pid_of[kiln_route$suffix]=$!; port_of[kiln_route$suffix]=$p

  p=$(port)
  cat > "$work/haproxy$suffix.cfg" <<CFG
global
  nbthread 1
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend grpc
  bind 127.0.0.1:$p proto h2
  default_backend workers
backend workers
  balance hdr(x-session-id)
  hash-type consistent
  hash-balance-factor 125
$servers
CFG
  haproxy -f "$work/haproxy$suffix.cfg" -db >/dev/null 2>&1 &
  pids+=($!); pid_of[haproxy$suffix]=$!; port_of[haproxy$suffix]=$p

  p=$(port)
  mkdir -p "$work/nginx$suffix"
  cat > "$work/nginx$suffix.conf" <<CFG
daemon off;
worker_processes 1;
pid $work/nginx$suffix/nginx.pid;
error_log $work/nginx$suffix/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $work/nginx$suffix;
  # A client connection (and an upstream one) may carry any number of requests, as with the others.
  keepalive_requests 10000000;
  upstream workers { hash \$http_x_session_id consistent;$upstream keepalive 16; keepalive_requests 10000000; }
  server {
    listen 127.0.0.1:$p http2;
    location / { grpc_pass grpc://workers; }
  }
}
CFG
  nginx -c "$work/nginx$suffix.conf" -p "$work/nginx$suffix" >/dev/null 2>&1 &
  pids+=($!); pid_of[nginx$suffix]=$!; port_of[nginx$suffix]=$p
}
start_routers "" "$w1" "$w2"
# Latency is timed through routers whose only worker is the one called directly: with two workers a router may
# pick the other one, whose speed differs by more than a router's whole cost.
start_routers _one "$w3"
for name in kiln_route haproxy nginx kiln_route_one haproxy_one nginx_one; do wait_port "${port_of[$name]}"; done
sleep 1

# gRPC-framed requests: Tokenize{text: "hello router"}; Generate{prompt: "hi", sampling{max_tokens: 32, ignore_eos}}.
printf '\x00\x00\x00\x00\x0e\x12\x0chello router' > "$work/unary.bin"
printf '\x00\x00\x00\x00\x0a\x12\x02hi\x1a\x04\x08\x20\x68\x01' > "$work/stream.bin"
# The same with seed 7: deterministic, so the latency worker replays it from its result cache.
printf '\x00\x00\x00\x00\x0c\x12\x02hi\x1a\x06\x08\x20\x68\x01\x48\x07' > "$work/cached.bin"
H=(-H 'content-type: application/grpc' -H 'te: trailers' -H 'x-session-id: bench-session')
# CPU nanoseconds a router has run, every thread of it (and nginx's worker processes): schedstat's run time,
# exact where /proc/PID/stat's ticks are 10 ms apart.
cpu_ns() {
  local pid=$1 total=0 q t
  for q in $pid $(pgrep -P "$pid" || true); do
    for t in /proc/"$q"/task/*/schedstat; do total=$((total + $(cut -d' ' -f1 "$t"))); done
  done
  echo "$total"
}

latency() {  # port path body calls → "p50_us p99_us" at one call at a time
  local log="$work/h2load.log"
  rm -f "$log"
  local out
  out=$(h2load "${H[@]}" -n "$5" -c 1 -m 1 -d "$4" --log-file "$log" "http://127.0.0.1:$1$2" 2>&1)
  grep -q ' 0 failed, 0 errored, 0 timeout' <<<"$out" || { echo "h2load failed on $1$2: $out" >&2; exit 1; }
  python3 - "$log" <<'PY'
import sys
d = sorted(int(line.split()[2]) for line in open(sys.argv[1]) if line.strip())
d = d[len(d) // 10:]  # the first tenth warms up connections and caches
print(d[len(d) // 2], d[int(len(d) * 0.99)])
PY
}

added() {  # name path body calls → "p50 p99" added by the router, µs: the medians over PAIRS interleaved
  # pairs of batches (the worker called directly, then through the router's one-worker copy, or the other way
  # round) of the batches' differences. Pairing cancels the drift of the worker's own speed, which over a
  # run is larger than what a router adds.
  local d50s="" d99s="" d r d99 r99
  for pair in $(seq "$PAIRS"); do
    if (( pair % 2 )); then
      read -r d d99 < <(latency "${port_of[direct]}" "$2" x "$3" "$4")
      read -r r r99 < <(latency "${port_of[${1}_one]}" "$2" x "$3" "$4")
    else
      read -r r r99 < <(latency "${port_of[${1}_one]}" "$2" x "$3" "$4")
      read -r d d99 < <(latency "${port_of[direct]}" "$2" x "$3" "$4")
    fi
    d50s+=" $((r - d))"; d99s+=" $((r99 - d99))"
  done
  echo "$(median "$d50s") $(median "$d99s")"
}

cpu_under_load() {  # name path body calls messages-per-call → router CPU µs per message under -c4 -m8
  local before after out
  before=$(cpu_ns "${pid_of[$1]}")
  out=$(h2load "${H[@]}" -n "$4" -c 4 -m 8 -d "$3" "http://127.0.0.1:${port_of[$1]}$2" 2>&1)
  after=$(cpu_ns "${pid_of[$1]}")
  grep -q ' 0 failed, 0 errored, 0 timeout' <<<"$out" || { echo "h2load failed on $1: $out" >&2; exit 1; }
  python3 -c "import sys; print(f'{(int(sys.argv[2]) - int(sys.argv[1])) / 1e3 / (int(sys.argv[3]) * int(sys.argv[4])):.2f}')" "$before" "$after" "$4" "$5"
}

declare -A acc
add() { acc[$1]="${acc[$1]:-} $2"; }
median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

for round in $(seq "$ROUNDS"); do
  for name in kiln_route haproxy nginx; do
    add "cpu_$name" "$(cpu_under_load "$name" /kiln.v1.Inference/Tokenize "$work/unary.bin" "$N_LOAD" 1)"
    # Generate, 32 tokens: 32 messages a call as the figure has always counted them.
    add "cpu_message_$name" "$(cpu_under_load "$name" /kiln.v1.Inference/Generate "$work/stream.bin" "$N_STREAM_LOAD" 32)"
  done
  echo "round $round (CPU µs per call):$(for n in kiln_route haproxy nginx; do echo -n " $n $(tr ' ' '\n' <<<"${acc[cpu_$n]}" | tail -1)"; done)" >&2
done
for name in kiln_route haproxy nginx; do
  read -r u50 u99 < <(added "$name" /kiln.v1.Inference/Tokenize "$work/unary.bin" "$N_UNARY_PAIR")
  read -r s50 s99 < <(added "$name" /kiln.v1.Inference/Generate "$work/cached.bin" "$N_PAIR")
  echo "BENCH router_unary_added_p50_$name $u50 us"
  echo "BENCH router_unary_added_p99_$name $u99 us"
  # The whole 32-message call's added p50; its messages are pipelined, so each is shifted by about as much.
  echo "BENCH router_stream_added_p50_$name $s50 us"
  echo "BENCH router_stream_added_p99_$name $s99 us"
  echo "BENCH router_cpu_per_call_$name $(median "${acc[cpu_$name]}") us"
  echo "BENCH router_cpu_per_message_$name $(median "${acc[cpu_message_$name]}") us"
done
read -r p50 _ < <(latency "${port_of[direct]}" /kiln.v1.Inference/Tokenize x "$work/unary.bin" "$N_UNARY_PAIR")
echo "BENCH router_unary_p50_direct $p50 us"
read -r p50 _ < <(latency "${port_of[direct]}" /kiln.v1.Inference/Generate x "$work/cached.bin" "$N_PAIR")
echo "BENCH router_stream_p50_direct $p50 us"
"$KILN_BIN" bench ring
