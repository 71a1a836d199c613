#!/usr/bin/env bash
# make bench-decode: Kiln's Vulkan decoder (lavapipe here) — prefill tok/s for a 512-token prompt and decode
# tok/s at batch 1, 4, 16, 32 — and, in the same run, llama.cpp's CPU backend (2 threads) on the same model
# through the llama-cpp-python package (installed outside the repository by this script; nothing committed).
# llama.cpp's own Vulkan backend on lavapipe is not built here (see BENCHMARKS.md for the anchor figure).
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
llm.reset(); llm.eval(prompt[:16])
t = time.perf_counter()
for i in range(64):
    llm.eval([prompt[16 + i]])
decode = time.perf_counter() - t
print(f"BENCH llamacpp_cpu_prefill_tok_s {512 / prefill:.2f} tok/s")
print(f"BENCH llamacpp_cpu_decode_b1_tok_s {64 / decode:.2f} tok/s")
PY
}
llama | tee /tmp/kiln-bench-llama-1.txt
"$KILN_BIN" bench decode --model "$MODEL" --steps "$STEPS" | tee /tmp/kiln-bench-kiln.txt
llama | tee /tmp/kiln-bench-llama-2.txt
k1=$(awk '/vulkan_decode_b1_tok_s/ {print $3}' /tmp/kiln-bench-kiln.txt)
l1=$(cat /tmp/kiln-bench-llama-1.txt /tmp/kiln-bench-llama-2.txt | awk '/decode_b1/ {s+=$3; n++} END {print s/n}')
echo "BENCH vulkan_vs_llamacpp_cpu_decode_b1_ratio $(python3 -c "print(f'{$k1/$l1:.3f}')") x"
