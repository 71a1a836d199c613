#!/usr/bin/env bash
# make bench-rpc: gRPC unary echo and server streaming through h2load, against Kiln's RPC layer and, in
# the same run and interleaved, the bare-C libnghttp2 echo server (the floor) and, when built, the
# grpc-swift-2 echo server (../shared/anchors/grpcswift-echo, built once, release, into ~/.cache/kiln/grpcswift-echo:
# about ten minutes the first time; GRPCSWIFT_BIN=/path/to/EchoServer uses another build, GRPCSWIFT_BIN=none skips it).
# Figures: RPC/s, mean latency at -c1 -m1, server CPU µs per RPC and per streamed message.
set -euo pipefail
cd "$(dirname "$0")/.."
KILN_BIN=${KILN_BIN:-.build/release/kiln}
ROUNDS=${ROUNDS:-2}
SHARED=${SHARED:-../shared}
GRPCSWIFT_BIN=${GRPCSWIFT_BIN:-}
GRPCSWIFT_DIR=${GRPCSWIFT_DIR:-$HOME/.cache/kiln/grpcswift-echo}
if [ -z "$GRPCSWIFT_BIN" ]; then
  GRPCSWIFT_BIN="$GRPCSWIFT_DIR/.build/release/EchoServer"
  if [ ! -x "$GRPCSWIFT_BIN" ]; then
    echo "building the grpc-swift-2 anchor (once, release) in $GRPCSWIFT_DIR" >&2
    mkdir -p "$GRPCSWIFT_DIR"
    cp -r "$SHARED/anchors/grpcswift-echo/Package.swift" "$SHARED/anchors/grpcswift-echo/Sources" "$GRPCSWIFT_DIR/"
    (cd "$GRPCSWIFT_DIR" && swift build -c release >&2)
  fi
fi
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT

cc -O2 -o "$work/grpc_echo" "$SHARED/anchors/grpc_echo.c" -lnghttp2
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Requests: a 32-byte unary message and a 16-byte streaming request, gRPC-framed.
printf '\x00\x00\x00\x00\x20%s' "0123456789abcdef0123456789abcdef" > "$work/unary.bin"
printf '\x00\x00\x00\x00\x10%s' "0123456789abcdef" > "$work/stream.bin"

declare -A port_of pid_of
start() {  # name port command...
  local name=$1 p=$2; shift 2
  "$@" >/dev/null 2>&1 &
  pid_of[$name]=$!; pids+=($!); port_of[$name]=$p
}
p=$(port); start kiln "$p" "$KILN_BIN" serve --no-model --demo-routes --threads 1 --no-tls --h2c-port "$p"
# kiln_async: the same Kiln process, through EchoAsync (a task per call, the path of every async handler);
# kiln's Echo is an inline unary method answered on the event loop.
pid_of[kiln_async]=${pid_of[kiln]}; port_of[kiln_async]=${port_of[kiln]}
declare -A method_of=([kiln_async]=EchoAsync)
p=$(port); start bare_c "$p" "$work/grpc_echo" "$p"
servers=(kiln kiln_async bare_c)
if [ -n "$GRPCSWIFT_BIN" ] && [ -x "$GRPCSWIFT_BIN" ]; then
  p=$(port); start grpc_swift "$p" "$GRPCSWIFT_BIN" "$p"; servers+=(grpc_swift)
else
  echo "grpc-swift-2 anchor skipped (GRPCSWIFT_BIN=$GRPCSWIFT_BIN); comparing with bare C only" >&2
fi
sleep 1.5

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
H=(-H 'content-type: application/grpc' -H 'te: trailers')

run() {  # pid url messages-per-request h2load-args... → "rps lat_us cpu_per_rpc_us cpu_per_msg_us"
  local pid=$1 url=$2 per=$3; shift 3
  local before after out
  before=$(cpu_ticks "$pid")
  out=$(h2load "${H[@]}" "$@" "$url" 2>&1)
  after=$(cpu_ticks "$pid")
  if ! grep -q ' 0 failed, 0 errored, 0 timeout' <<<"$out"; then echo "h2load failed against $url:" >&2; echo "$out" >&2; exit 1; fi
  python3 - "$out" "$before" "$after" "$hz" "$per" <<'PY'
import re, sys
out, before, after, hz, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
n = int(re.search(r'requests: (\d+) total', out).group(1))
rps = float(re.search(r'finished in [^,]+, ([0-9.]+) req/s', out).group(1))
m = re.search(r'time for request:\s+(\S+)\s+(\S+)\s+(\S+)', out)
def us(v):
    x = float(re.match(r'[0-9.]+', v).group(0))
    return x * 1e3 if v.endswith('ms') else x if v.endswith('us') else x * 1e6
cpu = (after - before) / hz * 1e6
print(f"{rps:.0f} {us(m.group(3)):.1f} {cpu / n:.2f} {cpu / (n * per):.3f}")
PY
}

declare -A acc
add() { acc[$1]="${acc[$1]:-} $2"; }
median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

for round in $(seq "$ROUNDS"); do
  for s in "${servers[@]}"; do
    base="http://127.0.0.1:${port_of[$s]}/pkg.Service"
    echo_method=${method_of[$s]:-Echo}
    read -r rps lat cpu _ < <(run "${pid_of[$s]}" "$base/$echo_method" 1 -n 200000 -c 16 -m 32 -d "$work/unary.bin")
    add "${s}_unary_rps" "$rps"; add "${s}_unary_cpu" "$cpu"
    read -r rps lat cpu _ < <(run "${pid_of[$s]}" "$base/$echo_method" 1 -n 20000 -c 1 -m 1 -d "$work/unary.bin")
    add "${s}_serial_lat" "$lat"; add "${s}_serial_cpu" "$cpu"
    read -r rps lat cpu permsg < <(run "${pid_of[$s]}" "$base/Stream" 256 -n 4000 -c 4 -m 8 -d "$work/stream.bin")
    add "${s}_stream_msgs" "$(python3 -c "print(round($rps*256))")"; add "${s}_stream_cpu" "$permsg"
    echo "round $round $s: unary ${acc[${s}_unary_cpu]##* } us/RPC, stream ${acc[${s}_stream_cpu]##* } us/msg, serial ${acc[${s}_serial_lat]##* } us" >&2
  done
done

for s in "${servers[@]}"; do
  echo "BENCH ${s}_unary_c16m32_rpc_per_s $(median "${acc[${s}_unary_rps]}") RPC/s"
  echo "BENCH ${s}_unary_c16m32_cpu_per_rpc $(median "${acc[${s}_unary_cpu]}") us"
  echo "BENCH ${s}_unary_c1m1_latency $(median "${acc[${s}_serial_lat]}") us"
  echo "BENCH ${s}_stream_messages_per_s $(median "${acc[${s}_stream_msgs]}") msg/s"
  echo "BENCH ${s}_stream_cpu_per_message $(median "${acc[${s}_stream_cpu]}") us"
done
# Ratios: each Kiln path (inline, and the task path of generated services) over each comparator.
for kiln in kiln kiln_async; do
  for s in "${servers[@]}"; do
    [ "$s" = kiln ] || [ "$s" = kiln_async ] && continue
    for f in unary_cpu serial_lat stream_cpu; do
      k=$(median "${acc[${kiln}_$f]}"); o=$(median "${acc[${s}_$f]}")
      echo "BENCH ratio_${kiln}_over_${s}_${f} $(python3 -c "print(f'{$k/$o:.2f}')") x"
    done
  done
done
