#!/usr/bin/env bash
# make bench-transport: h2load against Kiln's small-response route and against nghttpd serving the same
# five bytes, interleaved in one run (this machine is noisy: compare within a run, not across runs).
# Figures: req/s, mean request latency at -c1 -m1, and server CPU µs per request (utime+stime of the server
# process from /proc/PID/stat before and after each h2load run).
set -euo pipefail
cd "$(dirname "$0")/.."
KILN_BIN=${KILN_BIN:-.build/release/kiln}
ROUNDS=${ROUNDS:-2}
THREADS=${THREADS:-1}   # nghttpd runs one thread; Kiln gets the same for a like-for-like CPU figure
work=$(mktemp -d)
trap 'kill $kiln_pid $nghttpd_pid 2>/dev/null || true; rm -rf "$work"' EXIT

printf 'kiln\n' > "$work/index.html"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
k_h2c=$(port); k_tls=$(port); n_h2c=$(port); n_tls=$(port)

"$KILN_BIN" serve --no-model --demo-routes --threads "$THREADS" --h2c-port "$k_h2c" --tls-port "$k_tls" >/dev/null 2>&1 &
kiln_pid=$!
# nghttpd: one process per listener (it serves either TLS or cleartext); both single-threaded.
/usr/sbin/nghttpd -a 127.0.0.1 -d "$work" --no-tls "$n_h2c" >/dev/null 2>&1 &
nghttpd_pid=$!
/usr/sbin/nghttpd -a 127.0.0.1 -d "$work" "$n_tls" Certs/server.key Certs/server.pem >/dev/null 2>&1 &
nghttpd_tls_pid=$!
trap 'kill $kiln_pid $nghttpd_pid $nghttpd_tls_pid 2>/dev/null || true; rm -rf "$work"' EXIT
sleep 1

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

# run NAME PID URL H2LOAD-ARGS... : prints "reqs req_per_s mean_latency_us cpu_us_per_req"
run() {
  local pid=$1 url=$2; shift 2
  local before after out n
  before=$(cpu_ticks "$pid")
  out=$(h2load "$@" "$url" 2>&1)
  after=$(cpu_ticks "$pid")
  if ! grep -q ' 0 failed, 0 errored, 0 timeout' <<<"$out"; then echo "h2load failed against $url:" >&2; echo "$out" >&2; exit 1; fi
  n=$(awk '/^requests:/ {print $2}' <<<"$out")
  python3 - "$out" "$n" "$before" "$after" "$hz" <<'PY'
import re, sys
out, n, before, after, hz = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
rps = float(re.search(r'finished in [^,]+, ([0-9.]+) req/s', out).group(1))
m = re.search(r'time for request:\s+(\S+)\s+(\S+)\s+(\S+)', out)
def us(v):
    num = float(re.match(r'[0-9.]+', v).group(0))
    return num * (1e6 if v.endswith('s') and not v.endswith(('ms', 'us')) else 1e3 if v.endswith('ms') else 1)
cpu = (after - before) / hz * 1e6 / n
print(f"{rps:.0f} {us(m.group(3)):.1f} {cpu:.2f}")
PY
}

declare -A acc
add() { acc[$1]="${acc[$1]:-} $2"; }
median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

for round in $(seq "$ROUNDS"); do
  for proto in h2c tls; do
    if [ $proto = h2c ]; then ku="http://127.0.0.1:$k_h2c/"; nu="http://127.0.0.1:$n_h2c/"; npid=$nghttpd_pid
    else ku="https://127.0.0.1:$k_tls/"; nu="https://127.0.0.1:$n_tls/"; npid=$nghttpd_tls_pid; fi
    for shape in c16m32 c1m1; do
      if [ $shape = c16m32 ]; then args=(-n 200000 -c 16 -m 32); else args=(-n 50000 -c 1 -m 1); fi
      # Interleave: Kiln, then nghttpd, same shape, back to back.
      read -r rps lat cpu < <(run "$kiln_pid" "$ku" "${args[@]}")
      add "kiln_${proto}_${shape}_rps" "$rps"; add "kiln_${proto}_${shape}_lat" "$lat"; add "kiln_${proto}_${shape}_cpu" "$cpu"
      read -r rps lat cpu < <(run "$npid" "$nu" "${args[@]}")
      add "nghttpd_${proto}_${shape}_rps" "$rps"; add "nghttpd_${proto}_${shape}_lat" "$lat"; add "nghttpd_${proto}_${shape}_cpu" "$cpu"
      echo "round $round $proto $shape: kiln ${acc[kiln_${proto}_${shape}_cpu]##* } us/req, nghttpd ${acc[nghttpd_${proto}_${shape}_cpu]##* } us/req" >&2
    done
  done
done

for proto in h2c tls; do
  for shape in c16m32 c1m1; do
    for srv in kiln nghttpd; do
      echo "BENCH ${srv}_${proto}_${shape}_req_per_s $(median "${acc[${srv}_${proto}_${shape}_rps]}") req/s"
      echo "BENCH ${srv}_${proto}_${shape}_cpu_per_req $(median "${acc[${srv}_${proto}_${shape}_cpu]}") us"
      [ $shape = c1m1 ] && echo "BENCH ${srv}_${proto}_${shape}_mean_latency $(median "${acc[${srv}_${proto}_${shape}_lat]}") us"
    done
    k=$(median "${acc[kiln_${proto}_${shape}_cpu]}"); n=$(median "${acc[nghttpd_${proto}_${shape}_cpu]}")
    echo "BENCH ratio_${proto}_${shape}_cpu_per_req $(python3 -c "print(f'{$k/$n:.2f}')") x"
    if [ $shape = c1m1 ]; then
      k=$(median "${acc[kiln_${proto}_${shape}_lat]}"); n=$(median "${acc[nghttpd_${proto}_${shape}_lat]}")
      echo "BENCH ratio_${proto}_${shape}_latency $(python3 -c "print(f'{$k/$n:.2f}')") x"
    fi
  done
done
