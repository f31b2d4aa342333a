"""The CRI protos we compile match the published contracts, field by field.

Reference: the descriptors shipped in the PyPI package ``container-runtime-interface-api``
(modules ``cri_api.v1.api_pb2`` and ``cri_api.v1alpha2.api_pb2``). Those modules register the
``runtime.v1`` / ``runtime.v1alpha2`` symbols in protobuf's default descriptor pool, as our
generated modules do, so the two can never be imported in one process: cri_api's descriptor is
read in a child process (``sys.executable``) and handed back as a serialized
``FileDescriptorProto``.

Also checked: the vendored v1alpha2 ``api.proto`` is byte-identical to the shared upstream copy,
and every v1alpha2 message keeps its field numbers and types in v1 (the server parses
v1alpha2 bytes as v1 messages).
"""

from __future__ import annotations

import base64
import functools
import importlib
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parents[2]
VENDORED_V1ALPHA2 = ROOT / "proto" / "criadapt" / "_proto" / "runtime" / "v1alpha2" / "api.proto"
SHARED_V1ALPHA2 = ROOT.parent / "shared" / "cri-api" / "runtime" / "v1alpha2" / "api.proto"

FDP = descriptor_pb2.FieldDescriptorProto

_DUMP_SCRIPT = """
import base64, importlib, sys
module = importlib.import_module(sys.argv[1])
sys.stdout.write(base64.b64encode(module.DESCRIPTOR.serialized_pb).decode("ascii"))
"""

# ---------------------------------------------------------------------------------------------
# loading descriptors


def _parse(serialized: bytes) -> descriptor_pb2.FileDescriptorProto:
    return descriptor_pb2.FileDescriptorProto.FromString(serialized)


def _ours(version: str) -> descriptor_pb2.FileDescriptorProto:
    """Our generated module, imported here (cri_api is never imported in this process)."""
    api_pb2 = importlib.import_module(f"criadapt._proto.runtime.{version}.api_pb2")
    return _parse(api_pb2.DESCRIPTOR.serialized_pb)


@functools.cache
def _cri_api_installed() -> bool:
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('cri_api') is None)"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, timeout=60, check=False
    )
    return result.returncode == 0


@functools.cache
def _cri_api_serialized(version: str) -> bytes:
    module = f"cri_api.{version}.api_pb2"
    result = subprocess.run(
        [sys.executable, "-c", _DUMP_SCRIPT, module],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    if result.returncode != 0:
        pytest.fail(f"could not read the descriptor of {module} in a subprocess:\n{result.stderr}")
    return base64.b64decode(result.stdout)


def _reference(version: str) -> descriptor_pb2.FileDescriptorProto:
    """cri_api's descriptor for ``version``, read in a child process; skip if not installed."""
    if not _cri_api_installed():
        pytest.skip("container-runtime-interface-api (cri_api) is not installed")
    return _parse(_cri_api_serialized(version))


# ---------------------------------------------------------------------------------------------
# normalizing a FileDescriptorProto into comparable records


def _json_name(name: str) -> str:
    """protoc's default JSON name: drop each ``_`` and upper-case the letter after it."""
    out: list[str] = []
    upper_next = False
    for char in name:
        if char == "_":
            upper_next = True
        elif upper_next:
            out.append(char.upper())
            upper_next = False
        else:
            out.append(char)
    return "".join(out)


def _short_type(type_name: str, package: str) -> str:
    """``.runtime.v1.Foo.Bar`` -> ``Foo.Bar``; types from other packages keep their full name."""
    prefix = f".{package}."
    return type_name[len(prefix) :] if type_name.startswith(prefix) else type_name


def _field_record(
    field: descriptor_pb2.FieldDescriptorProto,
    message: descriptor_pb2.DescriptorProto,
    package: str,
) -> dict[str, Any]:
    return {
        "number": field.number,
        "label": FDP.Label.Name(field.label),
        "type": FDP.Type.Name(field.type),
        "type_name": _short_type(field.type_name, package),
        "json_name": field.json_name if field.HasField("json_name") else _json_name(field.name),
        "oneof": (
            message.oneof_decl[field.oneof_index].name if field.HasField("oneof_index") else None
        ),
        "proto3_optional": field.proto3_optional,
        "deprecated": field.options.deprecated,
        "packed": field.options.packed if field.options.HasField("packed") else None,
    }


def _enum_records(enum: descriptor_pb2.EnumDescriptorProto, path: str, out: dict[str, Any]) -> None:
    out[f"enum {path}"] = {"allow_alias": enum.options.allow_alias}
    for value in enum.value:
        out[f"enum {path} value {value.name}"] = value.number


def _message_records(
    messages: Iterable[descriptor_pb2.DescriptorProto],
    prefix: str,
    package: str,
    out: dict[str, Any],
) -> None:
    for message in messages:
        path = prefix + message.name
        out[f"message {path}"] = {
            "map_entry": message.options.map_entry,
            "deprecated": message.options.deprecated,
            "oneofs": [oneof.name for oneof in message.oneof_decl],
            "reserved_ranges": [(r.start, r.end) for r in message.reserved_range],
            "reserved_names": list(message.reserved_name),
        }
        for field in message.field:
            out[f"message {path} field {field.name}"] = _field_record(field, message, package)
        for enum in message.enum_type:
            _enum_records(enum, f"{path}.{enum.name}", out)
        _message_records(message.nested_type, f"{path}.", package, out)


def _records(fdp: descriptor_pb2.FileDescriptorProto, *, file_level: bool) -> dict[str, Any]:
    """Every message (nested ones too), field, enum value, service and RPC, keyed by path."""
    out: dict[str, Any] = {}
    if file_level:
        out["file syntax"] = fdp.syntax
        out["file package"] = fdp.package
        out["file go_package"] = fdp.options.go_package
    _message_records(fdp.message_type, "", fdp.package, out)
    for enum in fdp.enum_type:
        _enum_records(enum, enum.name, out)
    for service in fdp.service:
        out[f"service {service.name}"] = True
        for method in service.method:
            out[f"service {service.name} rpc {method.name}"] = {
                "input": _short_type(method.input_type, fdp.package),
                "output": _short_type(method.output_type, fdp.package),
                "client_streaming": method.client_streaming,
                "server_streaming": method.server_streaming,
            }
    return out


def _differences(ours: dict[str, Any], reference: dict[str, Any]) -> list[str]:
    problems = []
    for key in sorted(reference.keys() - ours.keys()):
        problems.append(f"missing in ours: {key} = {reference[key]}")
    for key in sorted(ours.keys() - reference.keys()):
        problems.append(f"not in reference: {key} = {ours[key]}")
    for key in sorted(ours.keys() & reference.keys()):
        if ours[key] != reference[key]:
            if isinstance(ours[key], dict) and isinstance(reference[key], dict):
                changed = ", ".join(
                    f"{attr}: ours={ours[key].get(attr)!r} reference={reference[key].get(attr)!r}"
                    for attr in sorted(ours[key].keys() | reference[key].keys())
                    if ours[key].get(attr) != reference[key].get(attr)
                )
            else:
                changed = f"ours={ours[key]!r} reference={reference[key]!r}"
            problems.append(f"differs: {key}: {changed}")
    return problems


def _assert_same(ours: dict[str, Any], reference: dict[str, Any], what: str) -> None:
    problems = _differences(ours, reference)
    if problems:
        pytest.fail(
            f"{what}: {len(problems)} difference(s)\n  " + "\n  ".join(problems), pytrace=False
        )


# ---------------------------------------------------------------------------------------------
# tests


def test_v1_matches_cri_api() -> None:
    reference = _reference("v1")
    ours = _ours("v1")
    assert ours.package == "runtime.v1"
    _assert_same(
        _records(ours, file_level=True),
        _records(reference, file_level=True),
        "proto/criadapt/_proto/runtime/v1/api.proto vs cri_api.v1.api_pb2",
    )


def test_v1alpha2_matches_cri_api() -> None:
    # cri_api's v1alpha2 is an older upstream revision that still imports gogo.proto and sets
    # gogo file options; only messages, fields, enums and RPCs are compared.
    reference = _reference("v1alpha2")
    ours = _ours("v1alpha2")
    assert ours.package == "runtime.v1alpha2"
    _assert_same(
        _records(ours, file_level=False),
        _records(reference, file_level=False),
        "proto/criadapt/_proto/runtime/v1alpha2/api.proto vs cri_api.v1alpha2.api_pb2",
    )


def test_vendored_v1alpha2_is_the_shared_upstream_copy() -> None:
    if not SHARED_V1ALPHA2.is_file():
        pytest.skip(f"{SHARED_V1ALPHA2} does not exist")
    assert VENDORED_V1ALPHA2.read_bytes() == SHARED_V1ALPHA2.read_bytes(), (
        f"{VENDORED_V1ALPHA2.relative_to(ROOT)} differs from {SHARED_V1ALPHA2}; "
        "it must stay an exact copy of upstream"
    )


def _wire_records(fdp: descriptor_pb2.FileDescriptorProto) -> dict[str, Any]:
    """What the wire format depends on: fields and enum values keyed by number, and RPCs."""
    out: dict[str, Any] = {}

    def walk(messages: Iterable[descriptor_pb2.DescriptorProto], prefix: str) -> None:
        for message in messages:
            path = prefix + message.name
            out[f"message {path}"] = {"map_entry": message.options.map_entry}
            for field in message.field:
                out[f"message {path} field #{field.number}"] = {
                    "name": field.name,
                    "label": FDP.Label.Name(field.label),
                    "type": FDP.Type.Name(field.type),
                    "type_name": _short_type(field.type_name, fdp.package),
                }
            for enum in message.enum_type:
                for value in enum.value:
                    out[f"enum {path}.{enum.name} value #{value.number}"] = value.name
            walk(message.nested_type, f"{path}.")

    walk(fdp.message_type, "")
    for enum in fdp.enum_type:
        for value in enum.value:
            out[f"enum {enum.name} value #{value.number}"] = value.name
    for service in fdp.service:
        for method in service.method:
            out[f"service {service.name} rpc {method.name}"] = {
                "input": _short_type(method.input_type, fdp.package),
                "output": _short_type(method.output_type, fdp.package),
                "client_streaming": method.client_streaming,
                "server_streaming": method.server_streaming,
            }
    return out


def test_v1alpha2_is_wire_compatible_with_v1() -> None:
    # v1 may add messages, fields, enum values and RPCs; everything in v1alpha2 must be in v1
    # under the same number with the same type, so that v1alpha2 bytes parse as v1 messages.
    alpha = _wire_records(_ours("v1alpha2"))
    v1 = _wire_records(_ours("v1"))
    problems = [
        problem
        for problem in _differences(v1, alpha)
        if not problem.startswith("not in reference: ")
    ]
    if problems:
        pytest.fail(
            f"v1alpha2 -> v1 wire compatibility: {len(problems)} problem(s) "
            "(ours = v1, reference = v1alpha2)\n  " + "\n  ".join(problems),
            pytrace=False,
        )
