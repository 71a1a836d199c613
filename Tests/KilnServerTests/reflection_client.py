"""grpcio-reflection's client (a reflection client nobody here wrote) against `kiln serve`.

  reflection_client.py PORT SCHEMAS_DIR
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grpc  # noqa: E402
from google.protobuf import descriptor_pool, message_factory  # noqa: E402
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc  # noqa: E402
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase  # noqa: E402
from kiln_grpc import Checks, load  # noqa: E402

port, schemas = sys.argv[1], sys.argv[2]
pb, rpc = load(schemas)
check = Checks()
channel = grpc.insecure_channel(f"127.0.0.1:{port}")

database = ProtoReflectionDescriptorDatabase(channel)
services = sorted(database.get_services())
check("lists the services", services == ["grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "kiln.v1.Inference"],
      str(services))

# The schema comes from the server alone; it equals the one compiled from Schemas/.
pool = descriptor_pool.DescriptorPool(database)
inference = pool.FindServiceByName("kiln.v1.Inference")
compiled = pb.DESCRIPTOR.services_by_name["Inference"]
check("methods as in Schemas/", [(m.name, m.input_type.full_name, m.output_type.full_name) for m in inference.methods]
      == [(m.name, m.input_type.full_name, m.output_type.full_name) for m in compiled.methods])
generate = pool.FindMethodByName("kiln.v1.Inference.Generate")
check("method lookup by symbol", generate.output_type.full_name == "kiln.v1.GenerateResponse")
reflected = pool.FindMessageTypeByName("kiln.v1.SamplingParameters")
check("fields as in Schemas/", [(f.name, f.number, f.type) for f in reflected.fields]
      == [(f.name, f.number, f.type) for f in pb.SamplingParameters.DESCRIPTOR.fields])

# A call made with message classes built from the reflected schema only (what grpcurl does).
Request = message_factory.GetMessageClass(pool.FindMessageTypeByName("kiln.v1.TokenizeRequest"))
Response = message_factory.GetMessageClass(pool.FindMessageTypeByName("kiln.v1.TokenizeResponse"))
tokenize = channel.unary_unary("/kiln.v1.Inference/Tokenize", request_serializer=Request.SerializeToString,
                               response_deserializer=Response.FromString)
expected = rpc.InferenceStub(channel).Tokenize(pb.TokenizeRequest(text="the cat")).token_ids
check("a call through reflected types", list(tokenize(Request(text="the cat")).token_ids) == list(expected), str(list(expected)))

# Unknown names are errors, not crashes; the stream stays usable.
try:
    pool.FindMessageTypeByName("kiln.v1.NoSuchThing")
    check("unknown symbol", False, "found")
except KeyError:
    check("unknown symbol", True)

# The v1 service answers too (same messages as v1alpha on the wire).
v1 = channel.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                           request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                           response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
answers = list(v1(iter([reflection_pb2.ServerReflectionRequest(list_services=""),
                        reflection_pb2.ServerReflectionRequest(file_by_filename="kiln/v1/inference.proto"),
                        reflection_pb2.ServerReflectionRequest(file_containing_symbol="grpc.health.v1.Health.Check"),
                        reflection_pb2.ServerReflectionRequest(file_by_filename="nope.proto")])))
check("v1 list_services", sorted(s.name for s in answers[0].list_services_response.service) == services)
check("v1 file_by_filename", len(answers[1].file_descriptor_response.file_descriptor_proto) == 1)
check("v1 file_containing_symbol", len(answers[2].file_descriptor_response.file_descriptor_proto) == 1)
check("v1 unknown file is NOT_FOUND", answers[3].error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0],
      str(answers[3].error_response))
check.exit()
