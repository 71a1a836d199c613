#!/usr/bin/env bash
# make bench-serve: `kiln bench serve` (the load generator on Kiln's generated client) against `kiln serve` and,
# in the same run and alternating phase by phase, the same workload against llama.cpp's llama-server (CPU,
# -np 8 -cb -t 2), built outside the repository from the llama-cpp-python sdist's vendored source into
# ~/.cache/kiln/llama-server (nothing of it is committed). Then, ROUNDS times interleaved, the 16-stream phase
# through Kiln's server, the same workload on the engine directly (`kiln bench engine`) and batch-16 decode
# (`kiln bench decode`), for the serving-overhead ratios, and the 16-stream phase through Kiln's OpenAI endpoint
# (SSE over HTTP/1.1) for its ratio to the same phase over gRPC.
#   CONCURRENCY (1,4,16,32)  NEW_TOKENS (64,128)  RATES (0.25,0.5,1,2)  POISSON_REQUESTS (12)  TURNS (10)  ROUNDS (3)
set -euo pipefail
cd "$(dirname "$0")/.."
KILN_BIN=${KILN_BIN:-.build/release/kiln}
MODEL=${KILN_MODEL:-${KILN_MODELS_DIR:-$HOME/.cache/kiln/models}/SmolLM2-135M-Instruct.Q4_1.gguf}
CONCURRENCY=${CONCURRENCY:-1,4,16,32}
NEW_TOKENS=${NEW_TOKENS:-64,128}
RATES=${RATES:-0.25,0.5,1,2}
TURNS=${TURNS:-10}
POISSON_REQUESTS=${POISSON_REQUESTS:-12}
. Benchmarks/llama_cpp.sh
LLAMA_SERVER=$(llama_cpp_tool llama-server)

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 600); do python3 -c "import socket; socket.create_connection(('127.0.0.1', $1), 1)" 2>/dev/null && return 0; sleep 0.1; done; echo "no listener on $1"; exit 1; }
kp=$(port); lp=$(port)
"$KILN_BIN" serve --model "$MODEL" --no-tls --h2c-port "$kp" --kv-blocks 2048 --result-cache-mb 0 >/tmp/kiln-bench-serve.log 2>&1 &
kpid=$!
"$LLAMA_SERVER" -m "$MODEL" -np 8 -cb -c 8192 -t 2 --host 127.0.0.1 --port "$lp" >/tmp/kiln-bench-llama-server.log 2>&1 &
lpid=$!
trap 'kill $kpid $lpid 2>/dev/null || true' EXIT
wait_port "$kp"; wait_port "$lp"
for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$lp/health" >/dev/null && break; sleep 0.2; done

out=$(mktemp)
kiln_run() { "$KILN_BIN" bench serve --server "h2c://127.0.0.1:$kp" "$@" | tee -a "$out"; }
llama_run() { "$KILN_BIN" bench serve --openai "http://127.0.0.1:$lp" "$@" | tee -a "$out"; }
# Phase by phase, alternating the two servers.
for n in ${NEW_TOKENS//,/ }; do
  for c in ${CONCURRENCY//,/ }; do
    llama_run --concurrency "$c" --new-tokens "$n" --turns 0
    kiln_run --concurrency "$c" --new-tokens "$n" --turns 0
  done
done
if [ -n "$RATES" ]; then
  llama_run --skip-closed --rates "$RATES" --poisson-requests "$POISSON_REQUESTS" --turns 0
  kiln_run --skip-closed --rates "$RATES" --poisson-requests "$POISSON_REQUESTS" --turns 0
fi
if [ "$TURNS" -gt 0 ]; then
  llama_run --skip-closed --turns "$TURNS"
  kiln_run --skip-closed --turns "$TURNS"
fi
kill $lpid 2>/dev/null || true

# Serving overhead, interleaved on this noisy machine: ROUNDS times, the 16 x 64 phase through the server, the
# same workload on the engine directly (`kiln bench engine`: same prompts, no RPC), and batch-16 decode
# (`kiln bench decode`). Medians and their ratios. The server stays up, idle, during the direct runs.
ROUNDS=${ROUNDS:-3}
rounds=$(mktemp)
for _ in $(seq 1 "$ROUNDS"); do
  "$KILN_BIN" bench serve --server "h2c://127.0.0.1:$kp" --concurrency 16 --new-tokens 64 --turns 0 | grep 'kiln_c16_n64_tok_s' | tee -a "$rounds"
  "$KILN_BIN" bench serve --openai "http://127.0.0.1:$kp" --openai-label kiln_openai --concurrency 16 --new-tokens 64 --turns 0 | grep 'kiln_openai_c16_n64_tok_s' | tee -a "$rounds"
  "$KILN_BIN" bench engine --model "$MODEL" --concurrency 16 --new-tokens 64 | tee -a "$rounds"
  # Named for the backend `auto` picks (vulkan_ or cpu_); the same one the server runs on.
  "$KILN_BIN" bench decode --model "$MODEL" --steps 8 --batches 16 --prompt-tokens 16 | grep 'decode_b16' | sed -E 's/BENCH (vulkan|cpu)_/BENCH /' | tee -a "$rounds"
done
kill $kpid 2>/dev/null || true
wait 2>/dev/null || true
median() { awk -v n="$1" '$2 == n {print $3}' "$rounds" | sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
served=$(median kiln_c16_n64_tok_s); direct=$(median engine_c16_n64_tok_s); decode16=$(median decode_b16_tok_s)
echo "BENCH median_kiln_c16_n64_tok_s $served tok/s"
echo "BENCH median_engine_c16_n64_tok_s $direct tok/s"
echo "BENCH median_decode_b16_tok_s $decode16 tok/s"
openai16=$(median kiln_openai_c16_n64_tok_s)
echo "BENCH median_kiln_openai_c16_n64_tok_s $openai16 tok/s"
echo "BENCH kiln_openai_vs_grpc_c16_tok_s $(python3 -c "a, b = '$openai16', '$served'; print(f'{float(a) / float(b):.3f}' if a and b and float(b) else 'nan')") x"

fig() { awk -v n="$1" '$2 == n {print $3}' "$out" | tail -1; }
ratio() { python3 -c "a, b = '$1', '$2'; print(f'{float(a) / float(b):.3f}' if a and b and float(b) else 'nan')"; }
echo "BENCH kiln_c16_vs_decode_b16 $(ratio "$served" "$decode16") x"
echo "BENCH kiln_c16_vs_engine_c16 $(ratio "$served" "$direct") x"
echo "BENCH kiln_vs_llama_server_c16_ttft_p95 $(ratio "$(fig kiln_c16_n64_ttft_p95_ms)" "$(fig llama_server_c16_n64_ttft_p95_ms)") x"
echo "BENCH kiln_vs_llama_server_c16_tok_s $(ratio "$(fig kiln_c16_n64_tok_s)" "$(fig llama_server_c16_n64_tok_s)") x"
