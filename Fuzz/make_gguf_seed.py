"""Writes the GGUF reader fuzzer's seed (a ~1 KB file with every metadata value type, a nested array and three
tensor types) with llama.cpp's own `gguf` writer: how Fuzz/corpus/gguf/seed was made.

  make_gguf_seed.py OUT.gguf
"""
import sys

import gguf
import numpy as np

w = gguf.GGUFWriter(sys.argv[1], "llama")
w.add_uint32("llama.block_count", 1)
w.add_uint32("llama.embedding_length", 32)
w.add_uint32("llama.feed_forward_length", 64)
w.add_uint32("llama.attention.head_count", 4)
w.add_float32("llama.rope.freq_base", 10000.0)
w.add_array("x.nested", [[1, 2], [3]])
w.add_bool("x.flag", True)
w.add_int64("x.big", -5)
w.add_float64("x.f64", 0.5)
w.add_array("tokenizer.ggml.tokens", ["a", "b", "<s>"])
w.add_tensor("token_embd.weight", np.zeros((3, 32), dtype=np.float16))
w.add_tensor("q", np.zeros((2, 34), dtype=np.uint8), raw_dtype=gguf.GGMLQuantizationType.Q8_0)
w.add_tensor("k", np.zeros((1, 210), dtype=np.uint8), raw_dtype=gguf.GGMLQuantizationType.Q6_K)
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
