#!/usr/bin/env bash
# make bench-decode, first the CPU backend: `kiln bench decode --backend cpu` (prefill of 512 tokens, decode at
# batch 1, 4, 16, 32, and the batch-1 bound that memory bandwidth sets) alternating ROUNDS times with
# llama.cpp's own llama-bench (-p 512 -n 128 -t 2, the same threads), built outside the repository from the
# llama-cpp-python sdist's vendored source into ~/.cache/kiln/llama-server (as make bench-serve builds
# llama-server; nothing of it is committed); ratios from the medians. Then (DECODE_BACKENDS=cpu skips it)
# Kiln's Vulkan decoder (lavapipe here) — prefill tok/s for a 512-token prompt and decode
# tok/s at batch 1, 4, 16, 32 — and, in the same run, llama.cpp's CPU backend (2 threads) on the same model
# through the llama-cpp-python package (installed outside the repository by this script; nothing committed),
# and llama.cpp's Vulkan backend on the same Vulkan device through the prebuilt `cyllama-vulkan` wheel (a
# llama.cpp build with GGML_VULKAN=ON; it needs Python >= 3.12, so it is skipped with a note where none exists).
# Building llama.cpp's Vulkan backend from llama-cpp-python's sdist fails on Debian 12: its Vulkan headers
# (1.3.239) are older than the backend needs.
set -euo pipefail
cd "$(dirname "$0")/.."
KILN_BIN=${KILN_BIN:-.build/release/kiln}
MODEL=${KILN_MODEL:-${KILN_MODELS_DIR:-$HOME/.cache/kiln/models}/SmolLM2-135M-Instruct.Q4_1.gguf}
STEPS=${STEPS:-8}
ROUNDS=${ROUNDS:-3}
THREADS=${THREADS:-2}
DECODE_BACKENDS=${DECODE_BACKENDS:-cpu vulkan}

if [[ " $DECODE_BACKENDS " == *" cpu "* ]]; then
  . Benchmarks/llama_cpp.sh
  LLAMA_BENCH=$(llama_cpp_tool llama-bench)
  rm -f /tmp/kiln-bench-cpu-*.txt
  for round in $(seq "$ROUNDS"); do
    "$KILN_BIN" bench decode --backend cpu --threads "$THREADS" --model "$MODEL" --steps 32 | tee -a /tmp/kiln-bench-cpu-kiln.txt
    "$LLAMA_BENCH" -m "$MODEL" -p 512 -n 128 -t "$THREADS" -o jsonl 2>/dev/null > /tmp/kiln-bench-llama-bench.jsonl
    python3 - /tmp/kiln-bench-llama-bench.jsonl <<'PY' | tee -a /tmp/kiln-bench-cpu-llama.txt
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    name = "pp512" if r["n_gen"] == 0 else "tg128"
    print(f"BENCH llamacpp_bench_{name}_tok_s {r['avg_ts']:.2f} tok/s")
PY
  done
  python3 - <<'PY'
import statistics
def medians(path):
    values = {}
    for line in open(path):
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "BENCH":
            values.setdefault(parts[1], []).append(float(parts[2]))
    return {k: statistics.median(v) for k, v in values.items()}
k, l = medians("/tmp/kiln-bench-cpu-kiln.txt"), medians("/tmp/kiln-bench-cpu-llama.txt")
pp, tg = l["llamacpp_bench_pp512_tok_s"], l["llamacpp_bench_tg128_tok_s"]
print(f"BENCH cpu_median_prefill_tok_s {k['cpu_prefill_tok_s']:.2f} tok/s (llama-bench pp512 {pp:.2f})")
print(f"BENCH cpu_median_decode_b1_tok_s {k['cpu_decode_b1_tok_s']:.2f} tok/s (llama-bench tg128 {tg:.2f})")
print(f"BENCH cpu_vs_llamacpp_prefill_ratio {k['cpu_prefill_tok_s'] / pp:.3f} x (target >= 1.0)")
print(f"BENCH cpu_vs_llamacpp_decode_b1_ratio {k['cpu_decode_b1_tok_s'] / tg:.3f} x (target >= 1.0)")
print(f"BENCH cpu_decode_b16_vs_llamacpp_b1_ratio {k['cpu_decode_b16_tok_s'] / tg:.3f} x (target >= 4.0)")
print(f"BENCH cpu_decode_b1_vs_bandwidth_bound_ratio {k['cpu_decode_b1_tok_s'] / k['cpu_decode_b1_bandwidth_bound_tok_s']:.3f} x")
PY
fi
[[ " $DECODE_BACKENDS " == *" vulkan "* ]] || exit 0
if ! python3 -c 'import llama_cpp' 2>/dev/null; then
  echo "installing llama-cpp-python (builds llama.cpp; several minutes)"
  python3 -m pip install -q llama-cpp-python 2>/dev/null || python3 -m pip install -q --break-system-packages llama-cpp-python
fi
llama() {
  python3 - "$MODEL" <<'PY'
import sys, time
from llama_cpp import Llama
llm = Llama(model_path=sys.argv[1], n_threads=2, n_threads_batch=2, n_ctx=1024, n_batch=512, verbose=False)
prompt = [((i * 7919) % (49152 - 100)) + 50 for i in range(512)]
t = time.perf_counter(); llm.eval(prompt); prefill = time.perf_counter() - t
# Batch-1 decode after the long prompt (attention over ~512 keys), as kiln's vulkan_decode_b1_ctx512.
t = time.perf_counter()
for i in range(16):
    llm.eval([prompt[i]])
long_decode = time.perf_counter() - t
llm.reset(); llm.eval(prompt[:16])
t = time.perf_counter()
for i in range(64):
    llm.eval([prompt[16 + i]])
decode = time.perf_counter() - t
print(f"BENCH llamacpp_cpu_prefill_tok_s {512 / prefill:.2f} tok/s")
print(f"BENCH llamacpp_cpu_decode_b1_tok_s {64 / decode:.2f} tok/s")
print(f"BENCH llamacpp_cpu_decode_b1_ctx512_tok_s {16 / long_decode:.2f} tok/s")
PY
}
# llama.cpp's Vulkan backend: a venv outside the repository, made once.
VK_VENV=${KILN_LLAMACPP_VULKAN_VENV:-$HOME/.cache/kiln/llamacpp-vulkan}
if [ ! -x "$VK_VENV/bin/python" ]; then
  # Any Python >= 3.12: on PATH, or one of pyenv's (whose shims refuse versions not selected here).
  for py in python3.13 python3.12 ${PYENV_ROOT:-$HOME/.pyenv}/versions/3.1[2-9]*/bin/python3; do
    if "$py" -c 'import sys; assert sys.version_info >= (3, 12)' 2>/dev/null; then
      echo "installing cyllama-vulkan (prebuilt llama.cpp with its Vulkan backend) into $VK_VENV"
      "$py" -m venv "$VK_VENV" && "$VK_VENV/bin/pip" install -q 'cyllama-vulkan==0.7.0' || rm -rf "$VK_VENV"
      break
    fi
  done
fi
llama_vulkan() {
  if [ ! -x "$VK_VENV/bin/python" ]; then echo "llama.cpp Vulkan backend skipped: no Python >= 3.12 for cyllama-vulkan"; return; fi
  # ggml-vulkan hides CPU-type devices such as lavapipe unless they are named explicitly.
  # Warm-up with 64 tokens (the matrix-matrix pipelines): a whole 512-token one adds three minutes on lavapipe.
  GGML_VK_VISIBLE_DEVICES=${GGML_VK_VISIBLE_DEVICES:-0} "$VK_VENV/bin/python" Benchmarks/llama_vulkan.py "$MODEL" \
    --warmup-tokens 64 --prefill-runs 1 --steps 16 --long-steps 0 2>/dev/null | grep '^BENCH' || true
}
llama | tee /tmp/kiln-bench-llama-1.txt
llama_vulkan | tee /tmp/kiln-bench-llama-vk.txt
# --compare-norm-rope: RMSNorm folded into the matrix kernels and RoPE + KV store in the QKV kernel against both as
# dispatches of their own, alternating step by step (--compare-swiglu does the same for the SwiGLU epilogue).
"$KILN_BIN" bench decode --backend vulkan --model "$MODEL" --steps "$STEPS" --compare-norm-rope --compare-pipeline | tee /tmp/kiln-bench-kiln.txt
llama | tee /tmp/kiln-bench-llama-2.txt
k1=$(awk '/vulkan_decode_b1_tok_s/ {print $3}' /tmp/kiln-bench-kiln.txt)
l1=$(cat /tmp/kiln-bench-llama-1.txt /tmp/kiln-bench-llama-2.txt | awk '/decode_b1_tok_s/ {s+=$3; n++} END {print s/n}')
echo "BENCH vulkan_vs_llamacpp_cpu_decode_b1_ratio $(python3 -c "print(f'{$k1/$l1:.3f}')") x"
v1=$(awk '/llamacpp_vulkan_decode_b1/ {print $3}' /tmp/kiln-bench-llama-vk.txt)
if [ -n "$v1" ]; then
  kp=$(awk '/vulkan_prefill_tok_s/ && !/llamacpp/ {print $3}' /tmp/kiln-bench-kiln.txt)
  vp=$(awk '/llamacpp_vulkan_prefill/ {print $3}' /tmp/kiln-bench-llama-vk.txt)
  echo "BENCH vulkan_vs_llamacpp_vulkan_decode_b1_ratio $(python3 -c "print(f'{$k1/$v1:.1f}')") x"
  echo "BENCH vulkan_vs_llamacpp_vulkan_prefill_ratio $(python3 -c "print(f'{$kp/$vp:.1f}')") x"
fi
