#!/usr/bin/env bash
# make bench-model: GGUF open time, tokenizer throughput beside llama.cpp's tokenizer (interleaved, same text,
# same run) and the CPU reference decoder's tok/s. llama.cpp's tokenizer comes from the llama-cpp-python
# package, installed here (outside the repository) the first time; nothing of it is committed.
set -euo pipefail
cd "$(dirname "$0")/.."
KILN_BIN=${KILN_BIN:-.build/release/kiln}
MODEL=${KILN_MODEL:-${KILN_MODELS_DIR:-$HOME/.cache/kiln/models}/SmolLM2-135M-Instruct.Q4_1.gguf}
ROUNDS=${ROUNDS:-3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# 1 MB of mixed text: English prose (Debian's licence texts), code (Kiln's own sources) and CJK, interleaved in
# 4 KB slices so every kind is spread through the file.
python3 - "$work/text.txt" <<'PY'
import glob, sys
def read(paths):
    return "".join(open(p, encoding="utf-8", errors="ignore").read() for p in paths)
english = read(sorted(glob.glob("/usr/share/common-licenses/*"))[:12])
code = read(sorted(glob.glob("Sources/**/*.swift", recursive=True)))
cjk = open("Benchmarks/cjk_sample.txt", encoding="utf-8").read()
sources = [english, code, cjk * 200]
out, offsets, i = [], [0, 0, 0], 0
while sum(len(s.encode()) for s in out) < 1_000_000:
    k = i % 3
    text = sources[k]
    chunk = text[offsets[k] % len(text):][:4096]
    offsets[k] += 4096
    out.append(chunk)
    i += 1
data = "".join(out).encode()[:1_000_000].decode("utf-8", errors="ignore")
open(sys.argv[1], "w", encoding="utf-8").write(data)
PY
echo "text: $(wc -c < "$work/text.txt") bytes"

if ! python3 -c 'import llama_cpp' 2>/dev/null; then
  echo "installing llama-cpp-python (builds llama.cpp; several minutes)"
  python3 -m pip install -q llama-cpp-python 2>/dev/null || python3 -m pip install -q --break-system-packages llama-cpp-python
fi
cat > "$work/llama_tok.py" <<'PY'
import sys, time, statistics
from llama_cpp import Llama
llm = Llama(model_path=sys.argv[1], vocab_only=True, verbose=False)
data = open(sys.argv[2], "rb").read()
times = []
for _ in range(int(sys.argv[3])):
    t = time.perf_counter(); ids = llm.tokenize(data, add_bos=False, special=True); times.append(time.perf_counter() - t)
print(f"llama.cpp tokenizer: {len(data)} bytes -> {len(ids)} tokens")
print(f"LLAMA tokenizer_mb_s {len(data) / 1e6 / statistics.median(times):.2f}")
PY

"$KILN_BIN" bench model --model "$MODEL" --only open --rounds 20
ours=(); theirs=()
for r in $(seq "$ROUNDS"); do
  o=$("$KILN_BIN" bench model --model "$MODEL" --only tokenizer --text "$work/text.txt" --rounds 3)
  echo "$o" | grep -v BENCH
  ours+=("$(echo "$o" | awk '/BENCH tokenizer_mb_s/ {print $3}')")
  t=$(python3 "$work/llama_tok.py" "$MODEL" "$work/text.txt" 3)
  echo "$t" | grep -v LLAMA
  theirs+=("$(echo "$t" | awk '/LLAMA/ {print $3}')")
  echo "round $r: kiln ${ours[-1]} MB/s, llama.cpp ${theirs[-1]} MB/s"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
k=$(median "${ours[@]}"); l=$(median "${theirs[@]}")
echo "BENCH tokenizer_mb_s $k MB/s"
echo "BENCH llamacpp_tokenizer_mb_s $l MB/s"
echo "BENCH tokenizer_speed_ratio $(python3 -c "print(f'{$k/$l:.2f}')") x"
"$KILN_BIN" bench model --model "$MODEL" --only decoder --rounds 1 | grep BENCH
