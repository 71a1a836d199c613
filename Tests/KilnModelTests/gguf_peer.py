"""The Python `gguf` package (llama.cpp's own reader) as a peer for Kiln's tests.

  gguf_peer.py dequant TYPE IN OUT   raw blocks of TYPE in IN -> little-endian float32 in OUT
  gguf_peer.py describe FILE         JSON: tensors (name, type, shape, offset) and scalar metadata
"""
import json
import sys

import numpy as np
import gguf
from gguf import quants


def dequant(type_name, path_in, path_out):
    qtype = gguf.GGMLQuantizationType[type_name]
    raw = np.fromfile(path_in, dtype=np.uint8)
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    rows = raw.reshape((-1, type_size))
    values = quants.dequantize(rows, qtype).astype(np.float32).reshape(-1)
    values.tofile(path_out)


def describe(path):
    reader = gguf.GGUFReader(path)
    tensors = [{"name": t.name, "type": t.tensor_type.name, "shape": [int(x) for x in t.shape],
                "offset": int(t.data_offset), "bytes": int(t.n_bytes)} for t in reader.tensors]
    metadata = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        try:
            value = field.contents()
        except Exception:
            continue
        if isinstance(value, (str, int, float, bool)):
            metadata[key] = value
        elif isinstance(value, list):
            metadata[key] = {"count": len(value)}
    print(json.dumps({"tensors": tensors, "metadata": metadata}))


if __name__ == "__main__":
    if sys.argv[1] == "dequant":
        dequant(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        describe(sys.argv[2])
