#!/usr/bin/env bash
# make fuzz: builds each libFuzzer target (swiftc -sanitize=fuzzer,address) from the sources it covers
# and runs it for FUZZ_SECONDS (default 60) on a copy of its committed seed corpus. Fails on any crash.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-60}
out=.build-fuzz
mkdir -p "$out"
src=Sources/KilnRPC
model=Sources/KilnModel
gguf="$model/GGUFFile.swift $model/GGUFCursor.swift $model/GGUFError.swift $model/GGUFValue.swift $model/GGMLType.swift $model/MappedFile.swift"
declare -A targets=(
  [protobuf]="Fuzz/ProtobufDecoderFuzz.swift $src/ProtobufWire.swift $src/ProtobufReader.swift"
  [framer]="Fuzz/MessageFramerFuzz.swift $src/MessageFraming.swift $src/RPCStatus.swift $src/ProtobufWire.swift"
  [gguf]="Fuzz/GGUFReaderFuzz.swift $gguf $model/ModelConfig.swift $model/Dequantize.swift"
  [tokenizer]="Fuzz/TokenizerFuzz.swift $gguf $model/Tokenizer/*.swift"
)
# The tokenizer target reads real vocabularies: the default model's (byte-level BPE) and llama.cpp's SentencePiece suite.
export KILN_FUZZ_BPE=${KILN_FUZZ_BPE:-${KILN_MODEL:-$HOME/.cache/kiln/models/SmolLM2-135M-Instruct.Q4_1.gguf}}
export KILN_FUZZ_SPM=${KILN_FUZZ_SPM:-../shared/reference/tokenizer/ggml-vocab-llama-spm.gguf}
for name in "${!targets[@]}"; do
  echo "== fuzz $name (${seconds}s)"
  # ld.gold warns about every ASan helper symbol it cannot export; those lines are noise.
  swiftc -O -sanitize=fuzzer,address -parse-as-library -module-name Fuzz${name} ${targets[$name]} -o "$out/fuzz-$name" 2> >(grep -v "ld.gold: warning" >&2)
  rm -rf "$out/corpus-$name"; mkdir -p "$out/corpus-$name"
  [ -d "Fuzz/corpus/$name" ] && cp -r "Fuzz/corpus/$name/." "$out/corpus-$name/"
  # The GGUF seed is written by the Python gguf package rather than committed as a binary.
  [ "$name" = gguf ] && python3 Fuzz/make_gguf_seed.py "$out/corpus-$name/seed.gguf"
  "$out/fuzz-$name" -max_total_time="$seconds" -max_len=4096 -rss_limit_mb=2048 "$out/corpus-$name" 2>&1 | tail -3
done
echo "fuzzing found no crash"
