"""Generated gRPC/protobuf stubs of the splitedge.v1 protocol (proto/splitedge/v1/splitedge.proto).

Do not edit the *_pb2* files: run `python scripts/gen_protos.py` after changing the .proto.
"""

from . import splitedge_pb2 as pb
from . import splitedge_pb2_grpc as pb_grpc

__all__ = ["pb", "pb_grpc"]
