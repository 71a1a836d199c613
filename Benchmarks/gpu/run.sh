#!/usr/bin/env bash
# Runs on the GPU machine (the device tool; no Swift there), over what Benchmarks/gpu/pack.sh put in .dev/ for
# each call, with `.gl` and `.dev` carried:
#   bash Benchmarks/gpu/run.sh 1      unpack, describe the GPU, the Vulkan tests that need no model file
#   bash Benchmarks/gpu/run.sh stash  keep the model's second part
#   bash Benchmarks/gpu/run.sh 2      the model: `kiln bench decode` and llama.cpp's Vulkan backend alternating,
#                                     a sweep of the GPU family's lanes per row, per-kernel GPU times, then the
#                                     model-level Vulkan tests
# Logs go to $OUT (env.log, tests1.log, bench.log, tests2.log). Machine state lives in /tmp/k between calls.
set -u
stage=${1:-1}; R=$PWD; O=${OUT:-/tmp/kiln-gpu-out}; mkdir -p $O
export PATH=/tmp/k/bin:$PATH
if [ "$stage" = 1 ]; then
  for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig
  mkdir -p /tmp/k && tar -xJf .dev/kiln.tar.xz -C /tmp/k
  # The test bundle finds the repository through its compile-time path, and the reference beside it.
  [ "$R" = /work/main ] || { mkdir -p /work && ln -sfn $R /work/main; }
  [ -e /work/shared/reference ] || { mkdir -p /work/shared && ln -sfn /tmp/k/reference /work/shared/reference; }
fi
icd=$(ls /usr/share/vulkan/icd.d/nvidia_icd.json /etc/vulkan/icd.d/nvidia_icd.json /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json 2>/dev/null | head -1)
[ -n "$icd" ] && export VK_ICD_FILENAMES=$icd VK_DRIVER_FILES=$icd
export VK_LAYER_PATH=/tmp/k/layer
export KILN_BIN=/tmp/k/bin/kiln KILN_RELEASE_BIN=/tmp/k/bin/kiln KILN_MODELS_DIR=/tmp/k/models
KLD=/tmp/k/lib:/usr/local/nvidia/lib64:/usr/local/nvidia/lib
xct() { LD_LIBRARY_PATH=$KLD timeout $1 /tmp/k/bin/KilnPackageTests.xctest "$2" 2>&1 | grep -v "^Test Case.*started"; }
kiln_bench() { LD_LIBRARY_PATH=$KLD timeout 150 stdbuf -oL kiln bench decode --model $M "$@"; }
case $stage in
1)
  { date; nvidia-smi -L; echo "icd=$icd"; grep -m1 "model name" /proc/cpuinfo; nproc; } > $O/env.log 2>&1; cat $O/env.log
  xct 400 "${2:-KilnVulkanTests.KernelTests,KilnVulkanTests.DecoderTests,KilnVulkanTests.LargeDispatchTests,KilnVulkanTests.MemoryTypeChoiceTests,KilnVulkanTests.ModelAgreementTests/testNoVulkanDriverFallsBackToCPU}" > $O/tests1.log
  tail -c 6000 $O/tests1.log
  cp .dev/model.part1 /tmp/k/model.part1 ;;
stash)
  cp .dev/model.part2 /tmp/k/model.part2 ;;
2)
  mkdir -p /tmp/k/models; M=/tmp/k/models/SmolLM2-135M-Instruct.Q4_1.gguf
  cat /tmp/k/model.part1 /tmp/k/model.part2 .dev/model.part3 > $M; sha256sum $M
  mkdir -p /tmp/py && tar -xJf .dev/py.tar.xz -C /tmp/py
  llama() { PYTHONPATH=/tmp/py timeout 150 python3 Benchmarks/llama_vulkan.py $M 2>&1 | grep "^BENCH\|Error\|error"; }
  # llama.cpp and Kiln alternating, the single-column frame's lanes per row against the default (32), then
  # per-kernel times at batch 1.
  { llama; kiln_bench --steps 32
    for l in 8 16; do echo "single-column lanes per row $l"; KILN_VULKAN_GPU_SINGLE_LANES_PER_ROW=$l kiln_bench --steps 32 --batches 1,4; done
    llama; kiln_bench --steps 32
    echo "profile: batch 1 after 16 tokens"; KILN_VULKAN_PROFILE=gpu kiln_bench --prompt-tokens 16 --steps 32 --batches 1; } > $O/bench.log 2>&1
  grep -h "BENCH\|kernels\|lanes per row\|profile\|µs each" $O/bench.log
  xct 300 "${2:-KilnVulkanTests.ModelAgreementTests/testVulkanAgreesWithCPUAndLlamaCpp,KilnVulkanTests.SchedulerOnVulkanTests,KilnVulkanTests.ValidationLayerTests}" > $O/tests2.log
  tail -c 5000 $O/tests2.log ;;
esac
