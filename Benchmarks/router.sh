#!/usr/bin/env bash
# make bench-router: the added cost of a router in front of two `kiln serve` workers (tiny random-weight model,
# CPU backend, result cache off), for kiln route, HAProxy (mode http, proto h2 both sides, balance
# hdr(x-session-id), hash-type consistent, hash-balance-factor 125) and nginx (grpc_pass, hash
# $http_x_session_id consistent), alternating in one run, against calling a worker directly:
#   - unary (kiln.v1.Inference/Tokenize): p50/p99 latency added at one call at a time (h2load -c1 -m1,
#     per-request log), and the router's CPU µs per call under load (-c4 -m8);
#   - streaming (Generate, 32 messages): p50 latency added per call and per streamed message, through a
#     second set of routers whose only worker is the one called directly; and the router's CPU µs per
#     streamed message under load (-c4 -m8 Generate through the two-worker routers).
# Then `kiln bench ring`: ring lookup ns/op (100 backends × 150 virtual nodes) and a bounded-load pick whose
# owner is full. Prints BENCH lines.
set -euo pipefail
cd "$(dirname "$0")/.."
KILN_BIN=${KILN_BIN:-.build/release/kiln}
ROUNDS=${ROUNDS:-3}
N_LATENCY=${N_LATENCY:-2000}
N_LOAD=${N_LOAD:-20000}
N_STREAM_LOAD=${N_STREAM_LOAD:-1000}
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "nothing on port $1" >&2; exit 1; }

"$KILN_BIN" make-test-model "$work/tiny.gguf" >/dev/null
w1=$(port); w2=$(port)
for p in $w1 $w2; do
  "$KILN_BIN" serve --model "$work/tiny.gguf" --backend cpu --threads 1 --no-tls --h2c-port "$p" --kv-blocks 256 --result-cache-mb 0 >/dev/null 2>&1 &
  pids+=($!)
done
wait_port "$w1"; wait_port "$w2"

declare -A port_of pid_of
port_of[direct]=$w1

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
# Streaming is timed through routers whose only worker is the one called directly: a 32-token Generate takes
# ~13 ms of decoding, and with two workers a router may pick the other one, whose speed differs by more than
# a router's whole cost.
start_routers _stream "$w1"
port_of[direct_stream]=$w1
for name in kiln_route haproxy nginx kiln_route_stream haproxy_stream nginx_stream; do wait_port "${port_of[$name]}"; done
sleep 1

# gRPC-framed requests: Tokenize{text: "hello router"}; Generate{prompt: "hi", sampling{max_tokens: 32, ignore_eos}}.
printf '\x00\x00\x00\x00\x0e\x12\x0chello router' > "$work/unary.bin"
printf '\x00\x00\x00\x00\x0a\x12\x02hi\x1a\x04\x08\x20\x68\x01' > "$work/stream.bin"
H=(-H 'content-type: application/grpc' -H 'te: trailers' -H 'x-session-id: bench-session')
hz=$(getconf CLK_TCK)
# CPU ticks of a router: nginx's are its worker's (the master only supervises).
cpu_ticks() {
  local pid=$1 total=0
  for q in $pid $(pgrep -P "$pid" || true); do total=$((total + $(awk '{print $14 + $15}' "/proc/$q/stat"))); done
  echo "$total"
}

latency() {  # port path body → "p50_us p99_us" at one call at a time
  local log="$work/h2load.log"
  rm -f "$log"
  local out
  out=$(h2load "${H[@]}" -n "$N_LATENCY" -c 1 -m 1 -d "$4" --log-file "$log" "http://127.0.0.1:$1$2" 2>&1)
  grep -q ' 0 failed, 0 errored, 0 timeout' <<<"$out" || { echo "h2load failed on $1$2: $out" >&2; exit 1; }
  python3 - "$log" <<'PY'
import sys
d = sorted(int(line.split()[2]) for line in open(sys.argv[1]) if line.strip())
d = d[len(d) // 10:]  # the first tenth warms up connections and caches
print(d[len(d) // 2], d[int(len(d) * 0.99)])
PY
}

cpu_per_call() {  # name → router CPU µs per unary call under load
  local before after out
  before=$(cpu_ticks "${pid_of[$1]}")
  out=$(h2load "${H[@]}" -n "$N_LOAD" -c 4 -m 8 -d "$work/unary.bin" "http://127.0.0.1:${port_of[$1]}/kiln.v1.Inference/Tokenize" 2>&1)
  after=$(cpu_ticks "${pid_of[$1]}")
  grep -q ' 0 failed, 0 errored, 0 timeout' <<<"$out" || { echo "h2load failed on $1: $out" >&2; exit 1; }
  python3 -c "import sys; print(f'{(int(sys.argv[2]) - int(sys.argv[1])) / int(sys.argv[3]) * 1e6 / int(sys.argv[4]):.1f}')" "$before" "$after" "$hz" "$N_LOAD"
}

cpu_per_message() {  # name → router CPU µs per streamed message under load (Generate, 32 messages a call)
  local before after out
  before=$(cpu_ticks "${pid_of[$1]}")
  out=$(h2load "${H[@]}" -n "$N_STREAM_LOAD" -c 4 -m 8 -d "$work/stream.bin" "http://127.0.0.1:${port_of[$1]}/kiln.v1.Inference/Generate" 2>&1)
  after=$(cpu_ticks "${pid_of[$1]}")
  grep -q ' 0 failed, 0 errored, 0 timeout' <<<"$out" || { echo "h2load failed on $1: $out" >&2; exit 1; }
  python3 -c "import sys; print(f'{(int(sys.argv[2]) - int(sys.argv[1])) / int(sys.argv[3]) * 1e6 / (int(sys.argv[4]) * 32):.2f}')" "$before" "$after" "$hz" "$N_STREAM_LOAD"
}

declare -A acc
add() { acc[$1]="${acc[$1]:-} $2"; }
median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

names=(direct kiln_route haproxy nginx)
for round in $(seq "$ROUNDS"); do
  for name in "${names[@]}"; do
    read -r p50 p99 < <(latency "${port_of[$name]}" /kiln.v1.Inference/Tokenize x "$work/unary.bin")
    add "unary_p50_$name" "$p50"; add "unary_p99_$name" "$p99"
    stream_name=$([ "$name" = direct ] && echo direct_stream || echo "${name}_stream")
    read -r p50 p99 < <(latency "${port_of[$stream_name]}" /kiln.v1.Inference/Generate x "$work/stream.bin")
    add "stream_p50_$name" "$p50"
    if [ "$name" != direct ]; then
      add "cpu_$name" "$(cpu_per_call "$name")"
      add "cpu_message_$name" "$(cpu_per_message "$name")"
    fi
  done
  echo "round $round done" >&2
done

for name in kiln_route haproxy nginx; do
  python3 - "$name" "$(median "${acc[unary_p50_direct]}")" "$(median "${acc[unary_p50_$name]}")" \
    "$(median "${acc[unary_p99_direct]}")" "$(median "${acc[unary_p99_$name]}")" \
    "$(median "${acc[stream_p50_direct]}")" "$(median "${acc[stream_p50_$name]}")" "$(median "${acc[cpu_$name]}")" \
    "$(median "${acc[cpu_message_$name]}")" <<'PY'
import sys
name = sys.argv[1]
d50, r50, d99, r99, s_d, s_r, cpu, cpu_message = map(float, sys.argv[2:])
print(f"BENCH router_unary_added_p50_{name} {r50 - d50:.0f} us")
print(f"BENCH router_unary_added_p99_{name} {r99 - d99:.0f} us")
print(f"BENCH router_stream_added_p50_{name} {s_r - s_d:.0f} us")
print(f"BENCH router_stream_added_per_message_{name} {(s_r - s_d) / 32:.1f} us")
print(f"BENCH router_cpu_per_call_{name} {cpu:.1f} us")
print(f"BENCH router_cpu_per_message_{name} {cpu_message:.2f} us")
PY
done
echo "BENCH router_unary_p50_direct $(median "${acc[unary_p50_direct]}") us"
echo "BENCH router_stream_p50_direct $(median "${acc[stream_p50_direct]}") us"
"$KILN_BIN" bench ring
