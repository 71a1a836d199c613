"""Python protobuf (the reference implementation) as the peer for Kiln's generated messages.

usage: protobuf_peer.py OUT_DIR MODULE decode MESSAGE HEX   → JSON of the decoded message
       protobuf_peer.py OUT_DIR MODULE encode MESSAGE JSON  → hex of the encoded message
OUT_DIR holds the modules grpcio-tools' protoc generated from Schemas/.
"""
import importlib
import sys

sys.path.insert(0, sys.argv[1])
from google.protobuf import json_format  # noqa: E402

module = importlib.import_module(sys.argv[2])
mode, name, payload = sys.argv[3], sys.argv[4], sys.argv[5]
cls = module
for part in name.split("."):
    cls = getattr(cls, part)
if mode == "decode":
    msg = cls()
    msg.ParseFromString(bytes.fromhex(payload))
    print(json_format.MessageToJson(msg, preserving_proto_field_name=True, sort_keys=True, indent=None))
else:
    msg = json_format.Parse(payload, cls())
    print(msg.SerializeToString(deterministic=True).hex())
