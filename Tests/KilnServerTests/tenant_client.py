"""Sessions belong to who made them: two clients with different certificates (mTLS) against `kiln serve
--client-ca`, through Python grpcio. The second gets NOT_FOUND for the first's session, by any call, and
the first's session is untouched.

  tenant_client.py PORT SCHEMAS_DIR CA CERT_A KEY_A CERT_B KEY_B
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grpc  # noqa: E402
from kiln_grpc import Checks, load  # noqa: E402

port, schemas, ca = sys.argv[1], sys.argv[2], sys.argv[3]
pb, rpc = load(schemas)
check = Checks()


def client(cert, key):
    read = lambda path: open(path, "rb").read()
    credentials = grpc.ssl_channel_credentials(root_certificates=read(ca), private_key=read(key), certificate_chain=read(cert))
    return rpc.InferenceStub(grpc.secure_channel(f"localhost:{port}", credentials))


a = client(sys.argv[4], sys.argv[5])
b = client(sys.argv[6], sys.argv[7])
S = pb.SamplingParameters(max_tokens=3, temperature=0)


def chat(stub, sid, text="hi"):
    replies = stub.Chat(pb.ChatRequest(messages=[pb.ChatMessage(role="user", content=text)], session_id=sid, sampling=S))
    messages = list(replies)
    return messages[-1], dict(replies.initial_metadata())


def code(call):
    try:
        call()
        return grpc.StatusCode.OK
    except grpc.RpcError as e:
        return e.code()


first, _ = chat(a, "shared-name")
check("A starts session shared-name", first.usage.prompt_tokens > 0)
check("B may not continue A's session", code(lambda: chat(b, "shared-name")) == grpc.StatusCode.NOT_FOUND)
check("B may not end A's session", code(lambda: b.EndSession(pb.EndSessionRequest(session_id="shared-name"))) == grpc.StatusCode.NOT_FOUND)
second, _ = chat(a, "shared-name", "and?")
check("A's session kept its history", second.usage.prompt_tokens > first.usage.prompt_tokens + first.usage.completion_tokens,
      f"{first.usage} / {second.usage}")

_, metadata = chat(a, "new")
issued = metadata.get("x-session-id", "")
check("\"new\" issues an id in x-session-id", len(issued) == 32, repr(issued))
check("B may not use A's issued id", code(lambda: chat(b, issued)) == grpc.StatusCode.NOT_FOUND)
check("A ends its sessions", a.EndSession(pb.EndSessionRequest(session_id=issued)).existed
      and a.EndSession(pb.EndSessionRequest(session_id="shared-name")).existed)
check.exit()
