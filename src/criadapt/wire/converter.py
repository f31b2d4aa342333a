"""One cattrs converter between CRI protobuf messages and criadapt's attrs models.

Decoding walks ``ListFields()`` of a message into builtins (only the fields that are set, so
unset fields take the attrs defaults, which are the proto3 zero values), then
``converter.structure`` builds and validates the model. Encoding unstructures a model into
builtins, dropping fields at their default, and hands them to the protobuf constructor, which
accepts nested dicts. Both directions are generic: no per-message code.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from functools import cache
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.gen import make_dict_unstructure_fn, override
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

from criadapt.errors import InvalidArgument
from criadapt.validators import ValidationError
from criadapt.wire.pb import message_class

T = TypeVar("T")

_MESSAGE = FieldDescriptor.TYPE_MESSAGE


def make_converter() -> cattrs.Converter:
    """A converter for CRI models ⇄ builtins as protobuf constructors take them.

    Unstructuring omits every field equal to its default (proto3 does not send them either).
    """
    converter = cattrs.Converter(forbid_extra_keys=True)

    def omit_defaults(cls: Any) -> Any:
        overrides: dict[str, Any] = {
            a.name: override(omit_if_default=True) for a in attrs.fields(cls)
        }
        return make_dict_unstructure_fn(cls, converter, **overrides)

    converter.register_unstructure_hook_factory(attrs.has, omit_defaults)
    converter.register_unstructure_hook(enum.IntEnum, int)
    return converter


CONVERTER = make_converter()


def message_to_builtins(message: Message) -> dict[str, Any]:
    """The set fields of ``message`` as nested dicts, lists and scalars."""
    out: dict[str, Any] = {}
    for field, value in message.ListFields():
        if field.type != _MESSAGE:
            out[field.name] = list(value) if field.is_repeated else value
        elif field.message_type.GetOptions().map_entry:  # type: ignore[union-attr]
            value_field = field.message_type.fields_by_name["value"]  # type: ignore[union-attr]
            if value_field.type == _MESSAGE:
                out[field.name] = {k: message_to_builtins(v) for k, v in value.items()}
            else:
                out[field.name] = dict(value)
        elif field.is_repeated:
            out[field.name] = [message_to_builtins(v) for v in value]
        else:
            out[field.name] = message_to_builtins(value)
    return out


def _describe(error: BaseException, model: type) -> str:
    """A one-line explanation naming the field, for INVALID_ARGUMENT."""
    causes: list[str] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, ExceptionGroup):
            for sub in exc.exceptions:
                walk(sub)
        elif isinstance(exc, ValidationError):
            causes.append(str(exc))

    walk(error)
    if causes:
        return "; ".join(dict.fromkeys(causes))
    if isinstance(error, cattrs.BaseValidationError):
        return "; ".join(cattrs.transform_error(error, path=model.__name__))
    return f"{model.__name__}: {error}"


def structure(data: Mapping[str, Any], model: type[T]) -> T:
    """Builtins → validated model; any failure is :class:`InvalidArgument` naming the field."""
    try:
        return CONVERTER.structure(data, model)
    except (cattrs.BaseValidationError, ValidationError, ValueError, TypeError) as exc:
        raise InvalidArgument(_describe(exc, model)) from exc


def decode(model: type[T], message: Message | bytes) -> T:
    """A protobuf message (or its serialized bytes, of either API version) → model."""
    if isinstance(message, bytes | bytearray | memoryview):
        try:
            message = message_class(model.__name__).FromString(bytes(message))
        except DecodeError as exc:
            raise InvalidArgument(f"{model.__name__}: cannot parse message: {exc}") from exc
    assert isinstance(message, Message)
    return structure(message_to_builtins(message), model)


@cache
def _pb_class(name: str) -> Any:
    return message_class(name)


def to_pb(model: Any) -> Message:
    """Model → v1 protobuf message (which also serializes as v1alpha2)."""
    result: Message = _pb_class(type(model).__name__)(**CONVERTER.unstructure(model))
    return result


def encode(model: Any) -> bytes:
    """Model → serialized protobuf bytes."""
    return to_pb(model).SerializeToString()
