# llama.cpp's Vulkan backend (the cyllama-vulkan wheel's build) on the GPU machine, for Benchmarks/gpu/run.sh:
# the same 512-token prompt as `kiln bench decode`, prefill timed three times after a warm-up (median), then
# batch-1 decode after the long prompt and after a 16-token one. Prints BENCH lines.
import sys, time
import cyllama.llama.llama_cpp as L
L.ggml_backend_load_all()
print([d["name"] for d in L.ggml_backend_dev_info()])
mp = L.LlamaModelParams(); mp.n_gpu_layers = 99
model = L.LlamaModel(sys.argv[1], mp)
cp = L.LlamaContextParams(); cp.n_ctx = 1024; cp.n_batch = 512; cp.n_ubatch = 512; cp.n_threads = 2; cp.n_threads_batch = 2
ctx = L.LlamaContext(model, cp)
prompt = [((i * 7919) % (49152 - 100)) + 50 for i in range(512)]
def run(tokens, start):
    ctx.decode(L.llama_batch_get_one(tokens, start)); ctx.synchronize()
run(prompt, 0); ctx.kv_cache_clear(); run(prompt[:16], 0); run([prompt[16]], 16); ctx.kv_cache_clear()
pre = []
for r in range(3):
    ctx.kv_cache_clear()
    t = time.perf_counter(); run(prompt, 0); pre.append(time.perf_counter() - t)
t = time.perf_counter()
for i in range(64):
    run([prompt[i]], 512 + i)
long_decode = time.perf_counter() - t
ctx.kv_cache_clear(); run(prompt[:16], 0)
t = time.perf_counter()
for i in range(256):
    run([prompt[16 + i]], 16 + i)
decode = time.perf_counter() - t
print(f"BENCH llamacpp_vulkan_prefill_tok_s {512 / sorted(pre)[1]:.2f} tok/s")
print(f"BENCH llamacpp_vulkan_decode_b1_tok_s {256 / decode:.2f} tok/s")
print(f"BENCH llamacpp_vulkan_decode_b1_ctx512_tok_s {64 / long_decode:.2f} tok/s")
