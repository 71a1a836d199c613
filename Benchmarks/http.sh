#!/usr/bin/env bash
# make bench-http: HTTP/1.1 against Kiln's fixed route (`/`, five bytes) and against nginx serving the same five
# bytes, interleaved in one run (this machine is noisy: compare within a run). Both servers get one thread
# (nginx: one process, no master). Figures: h2load --h1 req/s and server CPU µs per request (utime+stime from
# /proc/PID/stat around each run), and wrk's p50 latency at one connection.
#   ROUNDS (3)
set -euo pipefail
cd "$(dirname "$0")/.."
KILN_BIN=${KILN_BIN:-.build/release/kiln}
ROUNDS=${ROUNDS:-3}
work=$(mktemp -d)
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
kp=$(port); np=$(port)
printf 'kiln\n' > "$work/index.html"
cat > "$work/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
error_log $work/error.log;
pid $work/nginx.pid;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $work/body;
  proxy_temp_path $work/proxy;
  fastcgi_temp_path $work/fastcgi;
  uwsgi_temp_path $work/uwsgi;
  scgi_temp_path $work/scgi;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$np;
    location = / { default_type text/plain; root $work; try_files /index.html =404; }
  }
}
EOF
"$KILN_BIN" serve --no-model --demo-routes --no-tls --threads 1 --h2c-port "$kp" >/dev/null 2>&1 &
kiln_pid=$!
/usr/sbin/nginx -c "$work/nginx.conf" >/dev/null 2>&1 &
nginx_pid=$!
trap 'kill $kiln_pid $nginx_pid 2>/dev/null || true; rm -rf "$work"' EXIT
for p in $kp $np; do
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$p/" >/dev/null && break; sleep 0.1; done
done
[ "$(curl -s --http1.1 "http://127.0.0.1:$kp/")" = kiln ] && [ "$(curl -s "http://127.0.0.1:$np/")" = kiln ] || { echo "a server does not answer"; exit 1; }

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

# load PID PORT: h2load --h1 at 16 connections; prints "req_per_s cpu_us_per_req"
load() {
  local pid=$1 p=$2 before after out
  before=$(cpu_ticks "$pid")
  out=$(h2load --h1 -n 200000 -c 16 "http://127.0.0.1:$p/" 2>&1)
  after=$(cpu_ticks "$pid")
  if ! grep -q ' 0 failed, 0 errored, 0 timeout' <<<"$out"; then echo "h2load failed on $p:" >&2; echo "$out" >&2; exit 1; fi
  python3 - "$out" "$before" "$after" "$hz" <<'PY'
import re, sys
out, before, after, hz = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
n = int(re.search(r'requests: (\d+) total', out).group(1))
rps = float(re.search(r'finished in [^,]+, ([0-9.]+) req/s', out).group(1))
print(f"{rps:.0f} {(after - before) / hz * 1e6 / n:.2f}")
PY
}

# latency PORT: wrk's p50 at one connection, in µs
latency() {
  wrk -t1 -c1 -d3s --latency "http://127.0.0.1:$1/" | awk '$1 == "50%" {v = $2; if (v ~ /us$/) {sub(/us/, "", v); print v} else if (v ~ /ms$/) {sub(/ms/, "", v); print v * 1000} else {sub(/s/, "", v); print v * 1e6}}'
}

declare -A acc
add() { acc[$1]="${acc[$1]:-} $2"; }
median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

for round in $(seq "$ROUNDS"); do
  read -r rps cpu < <(load "$kiln_pid" "$kp"); add kiln_rps "$rps"; add kiln_cpu "$cpu"
  read -r rps cpu < <(load "$nginx_pid" "$np"); add nginx_rps "$rps"; add nginx_cpu "$cpu"
  add kiln_p50 "$(latency "$kp")"; add nginx_p50 "$(latency "$np")"
  echo "round $round: kiln ${acc[kiln_cpu]##* } us/req, nginx ${acc[nginx_cpu]##* } us/req; p50 kiln ${acc[kiln_p50]##* } us, nginx ${acc[nginx_p50]##* } us" >&2
done

for srv in kiln nginx; do
  echo "BENCH ${srv}_http1_c16_req_per_s $(median "${acc[${srv}_rps]}") req/s"
  echo "BENCH ${srv}_http1_c16_cpu_per_req $(median "${acc[${srv}_cpu]}") us"
  echo "BENCH ${srv}_http1_c1_p50_latency $(median "${acc[${srv}_p50]}") us"
done
ratio() { python3 -c "print(f'{float($1) / float($2):.3f}')"; }
echo "BENCH kiln_vs_nginx_http1_cpu_per_req $(ratio "$(median "${acc[kiln_cpu]}")" "$(median "${acc[nginx_cpu]}")") x"
echo "BENCH kiln_vs_nginx_http1_p50_latency $(ratio "$(median "${acc[kiln_p50]}")" "$(median "${acc[nginx_p50]}")") x"
