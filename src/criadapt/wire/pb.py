"""Access to the generated protobuf modules by API version (wire layer only)."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from criadapt._proto.runtime.v1 import api_pb2 as v1_pb2
from criadapt._proto.runtime.v1 import api_pb2_grpc as v1_grpc
from criadapt._proto.runtime.v1alpha2 import api_pb2 as v1alpha2_pb2
from criadapt._proto.runtime.v1alpha2 import api_pb2_grpc as v1alpha2_grpc

#: API version → generated message module
MESSAGES: dict[str, ModuleType] = {"v1": v1_pb2, "v1alpha2": v1alpha2_pb2}
#: API version → generated gRPC module
SERVICES: dict[str, ModuleType] = {"v1": v1_grpc, "v1alpha2": v1alpha2_grpc}
#: API version → proto package, as in gRPC method paths (``/runtime.v1.RuntimeService/Version``)
PACKAGES = {"v1": "runtime.v1", "v1alpha2": "runtime.v1alpha2"}
VERSIONS = ("v1", "v1alpha2")


def message_class(name: str) -> Any:
    """The v1 protobuf class of message ``name``.

    v1 is a superset of v1alpha2 with the same field numbers, so v1alpha2 bytes are parsed
    into v1 classes and v1 classes serialize into bytes a v1alpha2 peer reads (fields it does
    not know are skipped by its parser): one class per message serves both versions.
    """
    return getattr(v1_pb2, name)


def method_path(version: str, service: str, rpc: str) -> str:
    return f"/{PACKAGES[version]}.{service}/{rpc}"
