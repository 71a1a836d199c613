"""The FileDescriptorProtos kiln-protoc embeds in generated Swift, against protoc's (grpcio-tools) own.

  descriptor_check.py PROTO_ROOT GENERATED_SWIFT_DIR FILE.proto ...

For each file: parses the `serialized: [...]` bytes out of the generated .pb.swift and compares them, as a
FileDescriptorProto, with `protoc --descriptor_set_out` for the same file (file options aside: Kiln does not
carry language options such as go_package). Prints PASS/FAIL per file; exits 1 on a difference.
"""
import os
import re
import subprocess
import sys
import tempfile

from google.protobuf import descriptor_pb2

root, generated, files = sys.argv[1], sys.argv[2], sys.argv[3:]
failures = 0
for proto in files:
    out = os.path.join(tempfile.mkdtemp(), "set.pb")
    subprocess.check_call([sys.executable, "-m", "grpc_tools.protoc", "-I", root, f"--descriptor_set_out={out}", proto])
    theirs = descriptor_pb2.FileDescriptorSet.FromString(open(out, "rb").read()).file[0]
    theirs.ClearField("options")
    base = proto[:-len(".proto")].replace("/", "_")
    swift = open(os.path.join(generated, base, base + ".descriptor.swift")).read()
    body = re.search(r"serialized: \[(.*?)\]", swift, re.S).group(1)
    ours = descriptor_pb2.FileDescriptorProto.FromString(bytes(int(b, 16) for b in re.findall(r"0x[0-9A-F]{2}", body)))
    if ours == theirs:
        print(f"PASS {proto}: {len(ours.message_type)} messages, {len(ours.enum_type)} enums, {len(ours.service)} services")
    else:
        failures += 1
        print(f"FAIL {proto}\n--- kiln-protoc:\n{ours}\n--- protoc:\n{theirs}")
sys.exit(1 if failures else 0)
