#!/usr/bin/env bash
# make fuzz: builds kiln-fuzz from the package's own targets with libFuzzer and AddressSanitizer (its own
# build folder, .build-fuzz) and runs every fuzz target for FUZZ_SECONDS (default 60) on a copy of its
# committed seed corpus (Fuzz/corpus/TARGET). Fails on any crash; a crashing input is left as
# .build-fuzz/crash-TARGET-*, to be added to the corpus once fixed (`make test` replays every entry).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-60}
out=.build-fuzz
targets=${FUZZ_TARGETS:-"protobuf framer gguf tokenizer server h2frames"}
# ld.gold warns about every ASan helper symbol it cannot export; those lines are noise.
swift build --scratch-path "$out" --product kiln-fuzz --sanitize fuzzer --sanitize address -Xswiftc -DFUZZING \
  2> >(grep -v "ld.gold: warning" >&2)
bin=$(swift build --scratch-path "$out" --product kiln-fuzz --sanitize fuzzer --sanitize address -Xswiftc -DFUZZING --show-bin-path)/kiln-fuzz
# The tokenizer target reads real vocabularies: the default model's (byte-level BPE) and llama.cpp's SentencePiece suite.
export KILN_FUZZ_BPE=${KILN_FUZZ_BPE:-${KILN_MODEL:-$HOME/.cache/kiln/models/SmolLM2-135M-Instruct.Q4_1.gguf}}
export KILN_FUZZ_SPM=${KILN_FUZZ_SPM:-${KILN_VOCAB_DIR:-$HOME/.cache/kiln/vocab}/ggml-vocab-llama-spm.gguf}
for name in $targets; do
  echo "== fuzz $name (${seconds}s)"
  rm -rf "$out/corpus-$name" "$out/crash-$name-"*; mkdir -p "$out/corpus-$name"
  cp -r "Fuzz/corpus/$name/." "$out/corpus-$name/"
  # The server's threads and caches live for the whole run: leaks at exit are not findings.
  KILN_FUZZ_TARGET=$name "$bin" -max_total_time="$seconds" -max_len=4096 -rss_limit_mb=4096 -timeout=10 \
    -detect_leaks=0 -artifact_prefix="$out/crash-$name-" "$out/corpus-$name" 2>&1 | grep -E "^#[0-9]+ +(DONE|INITED)|ERROR|SUMMARY|crash-|Done [0-9]+ runs" || true
  if ls "$out/crash-$name-"* >/dev/null 2>&1; then echo "fuzz $name found a crash: $(ls "$out/crash-$name-"*)"; exit 1; fi
done
echo "fuzzing found no crash"
