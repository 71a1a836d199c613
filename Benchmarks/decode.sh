#!/usr/bin/env bash
# make bench-decode: Kiln's Vulkan decoder (lavapipe here) — prefill tok/s for a 512-token prompt and decode
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
"$KILN_BIN" bench decode --model "$MODEL" --steps "$STEPS" --compare-norm-rope --compare-pipeline | tee /tmp/kiln-bench-kiln.txt
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
