# llama.cpp's Vulkan backend (the prebuilt cyllama-vulkan wheel, llama.cpp built with GGML_VULKAN=ON) on the
# same model and prompt as `kiln bench decode`: a 512-token prefill, then single-token decode steps after a
# 16-token prompt (and, with --long-steps, after the whole prompt). Prints BENCH lines. Used by
# Benchmarks/decode.sh on lavapipe (short warm-up, one prefill: this backend is slow there) and by
# Benchmarks/gpu/run.sh on a GPU (the defaults).
import argparse, time
import cyllama.llama.llama_cpp as L

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("--prompt-tokens", type=int, default=512)
ap.add_argument("--warmup-tokens", type=int, default=512, help="the first batch compiles the backend's pipelines")
ap.add_argument("--prefill-runs", type=int, default=3, help="timed prefills; the median is printed")
ap.add_argument("--steps", type=int, default=256, help="decode steps after a 16-token prompt")
ap.add_argument("--long-steps", type=int, default=64, help="decode steps after the whole prompt (0: none)")
a = ap.parse_args()

L.ggml_backend_load_all()
assert any(d["name"].startswith("Vulkan") for d in L.ggml_backend_dev_info()), "no Vulkan device"
mp = L.LlamaModelParams(); mp.n_gpu_layers = 99
model = L.LlamaModel(a.model, mp)
cp = L.LlamaContextParams(); cp.n_ctx = 1024; cp.n_batch = 512; cp.n_ubatch = 512; cp.n_threads = 2; cp.n_threads_batch = 2
ctx = L.LlamaContext(model, cp)
n = a.prompt_tokens
prompt = [((i * 7919) % (49152 - 100)) + 50 for i in range(n)]

def run(tokens, start):
    ctx.decode(L.llama_batch_get_one(tokens, start)); ctx.synchronize()

run(prompt[:a.warmup_tokens], 0); ctx.kv_cache_clear(); run(prompt[:16], 0); run([prompt[16]], 16)
prefills = []
for _ in range(a.prefill_runs):
    ctx.kv_cache_clear()
    t = time.perf_counter(); run(prompt, 0); prefills.append(time.perf_counter() - t)
if a.long_steps:
    t = time.perf_counter()
    for i in range(a.long_steps):
        run([prompt[i % n]], n + i)
    long_decode = time.perf_counter() - t
ctx.kv_cache_clear(); run(prompt[:16], 0)
t = time.perf_counter()
for i in range(a.steps):
    run([prompt[(16 + i) % n]], 16 + i)
decode = time.perf_counter() - t
print(f"BENCH llamacpp_vulkan_prefill_tok_s {n / sorted(prefills)[len(prefills) // 2]:.2f} tok/s")
print(f"BENCH llamacpp_vulkan_decode_b1_tok_s {a.steps / decode:.2f} tok/s")
if a.long_steps:
    print(f"BENCH llamacpp_vulkan_decode_b1_ctx{n}_tok_s {a.long_steps / long_decode:.2f} tok/s")
