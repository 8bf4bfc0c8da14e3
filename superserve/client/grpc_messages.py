"""The KServe v2 gRPC messages for the client, built in a private protobuf descriptor pool.

The server's generated module (``superserve/serving/protos/inference_pb2.py``) registers
protobuf package ``inference`` in protobuf's process-wide pool, where ``tritonclient.grpc``
registers its own, identically named messages: a process importing both fails with
"duplicate symbol". The client builds its message classes from the very same serialized
descriptor (read out of the generated module's source, not by importing it) in a pool of its
own, so it works in a process that also uses tritonclient or runs the server. Only field
numbers travel on the wire, so these messages are the server's.
"""
from __future__ import annotations

import ast
from functools import cache
from importlib import resources
from typing import Any

from google.protobuf import descriptor_pool, message_factory

import superserve.serving.protos as protos

SERVICE = "/inference.GRPCInferenceService/"
_GENERATED = "inference_pb2.py"


def _serialized_descriptor() -> bytes:
    """The FileDescriptorProto bytes the generated module passes to ``AddSerializedFile``."""
    source = resources.files(protos).joinpath(_GENERATED).read_text()
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "AddSerializedFile" and node.args):
            blob = ast.literal_eval(node.args[0])
            if isinstance(blob, bytes):
                return blob
    raise RuntimeError(f"no serialized descriptor in superserve/serving/protos/{_GENERATED}; regenerate it "
                       "(see inference.proto)")


@cache
def _pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(_serialized_descriptor())
    return pool


@cache
def message(name: str) -> Any:
    """The message class ``inference.<name>`` (e.g. ``ModelInferRequest``)."""
    return message_factory.GetMessageClass(_pool().FindMessageTypeByName(f"inference.{name}"))


def set_parameter(param: Any, value: bool | int | float | str) -> None:
    """Fill an ``InferParameter`` with ``value`` in the field of its type."""
    if isinstance(value, bool):
        param.bool_param = value
    elif isinstance(value, int):
        param.int64_param = value
    elif isinstance(value, float):
        param.double_param = value
    else:
        param.string_param = str(value)


def parameter_value(param: Any) -> Any:
    """The value an ``InferParameter`` holds (None when empty)."""
    kind = param.WhichOneof("parameter_choice")
    return None if kind is None else getattr(param, kind)
