"""Validation rules of the CRI models, kept by hand in one place.

The models in :mod:`criadapt.models` are generated from the CRI proto; the generator reads
:data:`FIELD_RULES` and :data:`CLASS_RULES` below and wires the named checks into the
generated attrs classes (field validators and a post-init check). Changing a rule's *body*
needs no regeneration; adding or removing a *key* does (``tools/gen_models.py``).

Every failure raises :class:`ValidationError` naming the message and field, which the wire
layer turns into gRPC ``INVALID_ARGUMENT``. This module imports nothing of criadapt, so the
generator can load it on its own.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Mapping
from typing import Any

import attrs


class ValidationError(ValueError):
    """A CRI message broke a rule of the contract (maps to ``INVALID_ARGUMENT``)."""


FieldCheck = Callable[[Any, "attrs.Attribute[Any]", Any], None]
ClassCheck = Callable[[Any], None]


def _where(instance: Any, attribute: attrs.Attribute[Any]) -> str:
    return f"{type(instance).__name__}.{attribute.name}"


def required(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """A message-typed field that must be set."""
    if value is None:
        raise ValidationError(f"{_where(instance, attribute)} is required")


def non_empty(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """A string (id, name) or list that must not be empty."""
    if not value:
        raise ValidationError(f"{_where(instance, attribute)} must not be empty")


def non_negative(instance: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if value < 0:
        raise ValidationError(f"{_where(instance, attribute)} must not be negative, got {value}")


def at_least_minus_one(instance: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    """Numbers where -1 means "unlimited" (OCI's cpu quota and swap)."""
    if value < -1:
        raise ValidationError(
            f"{_where(instance, attribute)} must be -1 (unlimited) or more, got {value}"
        )


def oom_score_adj(instance: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if not -1000 <= value <= 1000:
        raise ValidationError(f"{_where(instance, attribute)} must be in [-1000, 1000]")


def absolute_path(instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    """A path inside the container: required and absolute."""
    if not value.startswith("/"):
        raise ValidationError(f"{_where(instance, attribute)} must be an absolute path: {value!r}")
    if "\x00" in value:
        raise ValidationError(f"{_where(instance, attribute)} contains a NUL byte")


def relative_log_path(instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    """``ContainerConfig.log_path``: relative to the sandbox's log directory, never outside it."""
    if not value:
        return
    if "\x00" in value:
        raise ValidationError(f"{_where(instance, attribute)} contains a NUL byte")
    normal = posixpath.normpath(value)
    if value.startswith("/") or normal == ".." or normal.startswith("../") or normal == ".":
        raise ValidationError(
            f"{_where(instance, attribute)} must be a relative path inside the log directory: "
            f"{value!r}"
        )


_CPUSET = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")


def cpuset(instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    """Linux cpuset list syntax such as ``0-2,4``; empty means unset."""
    if value and not _CPUSET.match(value):
        raise ValidationError(f"{_where(instance, attribute)} is not a cpu list: {value!r}")
    for part in value.split(",") if value else ():
        lo, _, hi = part.partition("-")
        if hi and int(hi) < int(lo):
            raise ValidationError(f"{_where(instance, attribute)} has a reversed range: {part!r}")


_LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def label_key_problem(key: str) -> str | None:
    """Why ``key`` is not a Kubernetes qualified name (``[prefix/]name``), or None."""
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return "its prefix must be a DNS subdomain of at most 253 characters"
    if not name or len(name) > 63 or not _LABEL_NAME.match(name):
        return (
            "its name must be 1-63 characters of [A-Za-z0-9_.-], "
            "starting and ending with a letter or digit"
        )
    return None


def label_keys(instance: Any, attribute: attrs.Attribute[Any], value: Mapping[str, str]) -> None:
    for key in value:
        problem = label_key_problem(key)
        if problem:
            raise ValidationError(f"{_where(instance, attribute)}: invalid key {key!r}: {problem}")


def _streams(kind: str) -> ClassCheck:
    def check(request: Any) -> None:
        if not (request.stdin or request.stdout or request.stderr):
            raise ValidationError(f"{kind}: one of stdin, stdout and stderr must be true")
        if request.tty and request.stderr:
            raise ValidationError(f"{kind}: tty and stderr cannot both be true")

    return check


def _run_as_group(kind: str, *users: str) -> ClassCheck:
    def check(context: Any) -> None:
        if context.run_as_group is not None and not any(getattr(context, u) for u in users):
            raise ValidationError(f"{kind}.run_as_group is set without {' or '.join(users)}")

    return check


def _localhost_ref(profile: Any) -> None:
    # ProfileType.Localhost == 2; compared by value so this module stays standalone.
    if int(profile.profile_type) == 2:
        if not profile.localhost_ref:
            raise ValidationError("SecurityProfile.localhost_ref is required for Localhost")
    elif profile.localhost_ref:
        raise ValidationError("SecurityProfile.localhost_ref is only allowed for Localhost")


def _image_named(kind: str, field: str) -> ClassCheck:
    def check(request: Any) -> None:
        spec = getattr(request, field)
        if spec is None or not spec.image:
            raise ValidationError(f"{kind}.{field}.image is required")

    return check


def _run_as_user_or_name(context: Any) -> None:
    if context.run_as_user is not None and context.run_as_username:
        raise ValidationError(
            "LinuxContainerSecurityContext: only one of run_as_user and run_as_username may be set"
        )


def _both(*checks: ClassCheck) -> ClassCheck:
    def check(value: Any) -> None:
        for one in checks:
            one(value)

    return check


_ID = (non_empty,)
_ID_RULES = {
    f"{message}.{field}": _ID
    for message, field in [
        ("StopPodSandboxRequest", "pod_sandbox_id"),
        ("RemovePodSandboxRequest", "pod_sandbox_id"),
        ("PodSandboxStatusRequest", "pod_sandbox_id"),
        ("PodSandboxStatsRequest", "pod_sandbox_id"),
        ("PortForwardRequest", "pod_sandbox_id"),
        ("CreateContainerRequest", "pod_sandbox_id"),
        ("UpdatePodSandboxResourcesRequest", "pod_sandbox_id"),
        ("StartContainerRequest", "container_id"),
        ("StopContainerRequest", "container_id"),
        ("RemoveContainerRequest", "container_id"),
        ("ContainerStatusRequest", "container_id"),
        ("ContainerStatsRequest", "container_id"),
        ("UpdateContainerResourcesRequest", "container_id"),
        ("ReopenContainerLogRequest", "container_id"),
        ("ExecSyncRequest", "container_id"),
        ("ExecRequest", "container_id"),
        ("AttachRequest", "container_id"),
        ("CheckpointContainerRequest", "container_id"),
    ]
}

#: ``"Message.field"`` → checks run as attrs field validators, in order.
FIELD_RULES: dict[str, tuple[FieldCheck, ...]] = {
    **_ID_RULES,
    "RunPodSandboxRequest.config": (required,),
    "CreateContainerRequest.config": (required,),
    "PodSandboxConfig.metadata": (required,),
    "PodSandboxConfig.labels": (label_keys,),
    "PodSandboxMetadata.name": (non_empty,),
    "PodSandboxMetadata.uid": (non_empty,),
    "PodSandboxMetadata.namespace": (non_empty,),
    "ContainerConfig.metadata": (required,),
    "ContainerConfig.labels": (label_keys,),
    "ContainerConfig.log_path": (relative_log_path,),
    "ContainerMetadata.name": (non_empty,),
    "Mount.container_path": (absolute_path,),
    "Device.container_path": (absolute_path,),
    "ExecSyncRequest.cmd": (non_empty,),
    "ExecSyncRequest.timeout": (non_negative,),
    "ExecRequest.cmd": (non_empty,),
    "StopContainerRequest.timeout": (non_negative,),
    "LinuxContainerResources.cpu_period": (non_negative,),
    "LinuxContainerResources.cpu_quota": (at_least_minus_one,),
    "LinuxContainerResources.cpu_shares": (non_negative,),
    "LinuxContainerResources.memory_limit_in_bytes": (non_negative,),
    "LinuxContainerResources.memory_swap_limit_in_bytes": (at_least_minus_one,),
    "LinuxContainerResources.oom_score_adj": (oom_score_adj,),
    "LinuxContainerResources.cpuset_cpus": (cpuset,),
    "LinuxContainerResources.cpuset_mems": (cpuset,),
}

#: ``"Message"`` → a check over the whole instance, run after the field validators.
CLASS_RULES: dict[str, ClassCheck] = {
    "ExecRequest": _streams("ExecRequest"),
    "AttachRequest": _streams("AttachRequest"),
    "LinuxSandboxSecurityContext": _run_as_group("LinuxSandboxSecurityContext", "run_as_user"),
    "LinuxContainerSecurityContext": _both(
        _run_as_group("LinuxContainerSecurityContext", "run_as_user", "run_as_username"),
        _run_as_user_or_name,
    ),
    "SecurityProfile": _localhost_ref,
    "PullImageRequest": _image_named("PullImageRequest", "image"),
    "ImageStatusRequest": _image_named("ImageStatusRequest", "image"),
    "RemoveImageRequest": _image_named("RemoveImageRequest", "image"),
    "ContainerConfig": _image_named("ContainerConfig", "image"),
}


def field_validator(key: str) -> FieldCheck:
    """The combined attrs validator for ``"Message.field"`` (used by generated code)."""
    checks = FIELD_RULES[key]

    def validate(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        for check in checks:
            check(instance, attribute, value)

    return validate


def check_class(name: str, instance: Any) -> None:
    """Run the class rule of ``name`` (used by generated ``__attrs_post_init__``)."""
    if attrs.validators.get_disabled():
        return
    CLASS_RULES[name](instance)
