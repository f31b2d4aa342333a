"""Hypothesis round-trips over every CRI message: protobuf ⇄ model, both ways, both versions."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from criadapt import models as m
from criadapt.wire import converter
from criadapt.wire.pb import MESSAGES

F = FieldDescriptor
INT_RANGES = {
    F.TYPE_INT32: (-(2**31), 2**31 - 1),
    F.TYPE_INT64: (-(2**63), 2**63 - 1),
    F.TYPE_UINT32: (0, 2**32 - 1),
    F.TYPE_UINT64: (0, 2**64 - 1),
}


def scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    if field.type in INT_RANGES:
        lo, hi = INT_RANGES[field.type]
        return st.integers(lo, hi)
    if field.type == F.TYPE_STRING:
        return st.text(max_size=8)
    if field.type == F.TYPE_BYTES:
        return st.binary(max_size=8)
    if field.type == F.TYPE_BOOL:
        return st.booleans()
    if field.type in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        # -0.0 + 0.0 == 0.0: the converter (like proto3 zero values) does not keep -0.0's sign
        width = 32 if field.type == F.TYPE_FLOAT else 64
        return st.floats(allow_nan=False, width=width).map(lambda x: x + 0.0)
    if field.type == F.TYPE_ENUM:
        return st.sampled_from([v.number for v in field.enum_type.values])
    raise AssertionError(field.type)


def message_dicts(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    """Random builtins for a message, as protobuf constructors take them."""
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        if field.type == F.TYPE_MESSAGE:
            if field.message_type.GetOptions().map_entry:
                key = scalar(field.message_type.fields_by_name["key"])
                value_field = field.message_type.fields_by_name["value"]
                value = (
                    message_dicts(value_field.message_type, depth + 1)
                    if value_field.type == F.TYPE_MESSAGE
                    else scalar(value_field)
                )
                fields[field.name] = st.dictionaries(key, value, max_size=2)
                continue
            if depth > 4:
                continue
            inner = message_dicts(field.message_type, depth + 1)
            fields[field.name] = st.lists(inner, max_size=2) if field.is_repeated else inner
        else:
            fields[field.name] = (
                st.lists(scalar(field), max_size=3) if field.is_repeated else scalar(field)
            )
    return st.fixed_dictionaries({}, optional=fields)


MESSAGE_NAMES = sorted(m.MODELS)


@pytest.mark.parametrize("name", MESSAGE_NAMES)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_pb_model_pb(name: str, data: st.DataObject) -> None:
    """pb → model → pb gives the same message, for every v1 message."""
    cls = MESSAGES["v1"].__dict__[name]
    message = cls(**data.draw(message_dicts(cls.DESCRIPTOR)))
    with attrs.validators.disabled():
        model = converter.decode(m.MODELS[name], message.SerializeToString())
        again = converter.to_pb(model)
        assert again == message
        assert converter.decode(m.MODELS[name], again) == model


ALPHA_NAMES = sorted(
    n for n in MESSAGE_NAMES if n in MESSAGES["v1alpha2"].DESCRIPTOR.message_types_by_name
)


@pytest.mark.parametrize("name", ALPHA_NAMES)
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_v1alpha2_bytes_decode_to_the_same_model(name: str, data: st.DataObject) -> None:
    """v1alpha2 bytes parse into the same model, and the model's bytes parse back as v1alpha2."""
    alpha_cls = MESSAGES["v1alpha2"].__dict__[name]
    alpha = alpha_cls(**data.draw(message_dicts(alpha_cls.DESCRIPTOR)))
    with attrs.validators.disabled():
        model = converter.decode(m.MODELS[name], alpha.SerializeToString())
    assert alpha_cls.FromString(converter.encode(model)) == alpha


def test_every_message_has_a_model_and_back() -> None:
    v1 = MESSAGES["v1"].DESCRIPTOR.message_types_by_name
    assert set(v1) == set(m.MODELS)
    for name, model in m.MODELS.items():
        assert {f.name for f in attrs.fields(model)} == set(v1[name].fields_by_name), name


def test_unset_fields_take_proto3_defaults() -> None:
    status = converter.decode(m.ContainerStatus, b"")
    assert status.id == ""
    assert status.state is m.ContainerState.CONTAINER_CREATED
    assert status.metadata is None
    assert status.mounts == ()
    assert status.labels == {}


def test_presence_of_empty_wrapper_is_kept() -> None:
    ctx = m.LinuxContainerSecurityContext(run_as_user=m.Int64Value(value=0))
    again = converter.decode(m.LinuxContainerSecurityContext, converter.encode(ctx))
    assert again.run_as_user == m.Int64Value(value=0)


def test_repeated_fields_are_tuples_whatever_was_given() -> None:
    response = m.ListContainersResponse(containers=[m.Container(id="a")])
    assert response.containers == (m.Container(id="a"),)
    assert converter.decode(m.ListContainersResponse, converter.encode(response)) == response


def test_unknown_enum_value_is_invalid_argument() -> None:
    from criadapt.errors import InvalidArgument

    raw = MESSAGES["v1"].PortMapping(protocol=7).SerializeToString()
    with pytest.raises(InvalidArgument, match="PortMapping"):
        converter.decode(m.PortMapping, raw)


def test_garbage_bytes_are_invalid_argument() -> None:
    from criadapt.errors import InvalidArgument

    with pytest.raises(InvalidArgument, match="cannot parse"):
        converter.decode(m.RunPodSandboxRequest, b"\xff\xff\xff")
