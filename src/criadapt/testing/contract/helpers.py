"""Builders and assertions shared by the contract tests (and usable by backends' own tests).

- :func:`pod_sandbox_config` / :func:`container_config`: valid configs with unique metadata,
  kubelet-like labels, a log directory and ``log_path`` ``<name>/0.log``;
- :func:`unique_name`, :func:`random_id`: names and ids nobody else uses;
- :func:`assert_subset`: critest's ``ExpectSubset`` for labels and annotations;
- :func:`wait_for`: poll until a condition holds (container exits, ...);
- :func:`unchecked` and :func:`raw_call`: build a request that breaks the contract and send
  it as is, to check that the *server* answers ``INVALID_ARGUMENT`` (the client would refuse
  to build it);
- :func:`optional_call` / :func:`capable_call`: call an optional RPC, accepting only success
  or ``UNIMPLEMENTED`` (unless the backend claims the capability: then only success).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import attrs
import grpc

from criadapt import models as m
from criadapt.errors import CriError, Unimplemented
from criadapt.rpcs import BY_NAME
from criadapt.server.errors import error_of
from criadapt.wire import decode, encode
from criadapt.wire.pb import method_path

T = TypeVar("T")

#: namespace of every pod the contract suite creates (kubelet's ``io.kubernetes.pod.namespace``)
NAMESPACE = "criadapt-contract"
#: label put on every sandbox and container the suite creates, so leftovers can be found
SUITE_LABEL = "criadapt.io/contract"
#: the long-running command of test containers (busybox has ``sleep``)
SLEEP_COMMAND: tuple[str, ...] = ("sleep", "3600")

__all__ = [
    "NAMESPACE",
    "SLEEP_COMMAND",
    "SUITE_LABEL",
    "assert_subset",
    "capable_call",
    "container_config",
    "optional_call",
    "pod_sandbox_config",
    "random_id",
    "raw_call",
    "raw_stream",
    "unchecked",
    "unique_name",
    "wait_for",
]


def unique_name(prefix: str = "pod") -> str:
    """``<prefix>-<12 hex digits>``: a valid pod/container name nobody else uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def random_id() -> str:
    """A 64 hex digit id, the shape of sandbox/container ids, that names nothing (critest)."""
    return uuid.uuid4().hex + uuid.uuid4().hex


def pod_sandbox_config(
    *,
    name: str | None = None,
    namespace: str = NAMESPACE,
    uid: str | None = None,
    attempt: int = 0,
    log_directory: str = "",
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    host_network: bool = True,
    hostname: str | None = None,
    linux: m.LinuxPodSandboxConfig | None = None,
) -> m.PodSandboxConfig:
    """A valid ``PodSandboxConfig`` with unique metadata and kubelet's pod labels.

    ``labels`` and ``annotations`` are added to the defaults (kubelet's
    ``io.kubernetes.pod.*`` labels and :data:`SUITE_LABEL`). With ``host_network`` (the
    default) the pod uses the node's network namespace, so no CNI set-up is needed; the PID
    namespace is per container, as kubelet asks for pods without ``shareProcessNamespace``.
    ``linux`` replaces the whole Linux section when given.
    """
    name = name or unique_name("pod")
    uid = uid or str(uuid.uuid4())
    all_labels = {
        "io.kubernetes.pod.name": name,
        "io.kubernetes.pod.namespace": namespace,
        "io.kubernetes.pod.uid": uid,
        SUITE_LABEL: "true",
        **(labels or {}),
    }
    if linux is None:
        network = m.NamespaceMode.NODE if host_network else m.NamespaceMode.POD
        linux = m.LinuxPodSandboxConfig(
            security_context=m.LinuxSandboxSecurityContext(
                namespace_options=m.NamespaceOption(
                    network=network, pid=m.NamespaceMode.CONTAINER, ipc=m.NamespaceMode.POD
                )
            )
        )
    return m.PodSandboxConfig(
        metadata=m.PodSandboxMetadata(name=name, uid=uid, namespace=namespace, attempt=attempt),
        hostname=(hostname if hostname is not None else ("" if host_network else name)),
        log_directory=log_directory,
        labels=all_labels,
        annotations=dict(annotations or {}),
        linux=linux,
    )


def container_config(
    *,
    image: str,
    user_specified_image: str = "",
    name: str | None = None,
    attempt: int = 0,
    command: Sequence[str] = SLEEP_COMMAND,
    args: Sequence[str] = (),
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    log_path: str | None = None,
    envs: Mapping[str, str] | None = None,
    mounts: Sequence[m.Mount] = (),
    tty: bool = False,
    stdin: bool = False,
    linux: m.LinuxContainerConfig | None = None,
) -> m.ContainerConfig:
    """A valid ``ContainerConfig`` running ``command`` (``sleep 3600``) from ``image``.

    As kubelet does, ``image`` may be the resolved ``PullImageResponse.image_ref`` and
    ``user_specified_image`` the reference as the pod spec wrote it.

    ``log_path`` defaults to ``<name>/0.log`` (relative to the sandbox's log directory, as
    kubelet writes it); ``labels`` are added to kubelet's ``io.kubernetes.container.name``
    and :data:`SUITE_LABEL`.
    """
    name = name or unique_name("ctr")
    all_labels = {
        "io.kubernetes.container.name": name,
        SUITE_LABEL: "true",
        **(labels or {}),
    }
    return m.ContainerConfig(
        metadata=m.ContainerMetadata(name=name, attempt=attempt),
        image=m.ImageSpec(image=image, user_specified_image=user_specified_image),
        command=tuple(command),
        args=tuple(args),
        envs=tuple(m.KeyValue(key=k, value=v) for k, v in (envs or {}).items()),
        mounts=tuple(mounts),
        labels=all_labels,
        annotations=dict(annotations or {}),
        log_path=log_path if log_path is not None else f"{name}/{attempt}.log",
        tty=tty,
        stdin=stdin,
        linux=linux,
    )


def assert_subset(expected: Mapping[str, str], actual: Mapping[str, str], what: str) -> None:
    """Every key of ``expected`` is in ``actual`` with the same value (critest ExpectSubset)."""
    missing = {k: v for k, v in expected.items() if k not in actual}
    changed = {k: (v, actual[k]) for k, v in expected.items() if k in actual and actual[k] != v}
    assert not missing and not changed, (
        f"{what} not returned exactly: missing {missing}, altered (given, returned) {changed}"
    )


def wait_for(
    condition: Callable[[], T | None],
    *,
    timeout: float = 30.0,
    interval: float = 0.05,
    what: str = "",
) -> T:
    """Call ``condition`` until it returns something truthy, and return that; fail after
    ``timeout`` seconds with ``what`` in the message."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


def unchecked(cls: type[T], **fields: Any) -> T:
    """Build model ``cls`` without running its validators (to send an invalid request).

    Validation is switched off process-wide for the duration of the constructor call only,
    and the in-process server is idle meanwhile (the test is not calling it).
    """
    with attrs.validators.disabled():
        return cls(**fields)


def raw_call(
    endpoint: str, rpc: str, request: Any, *, api_version: str = "v1", timeout: float = 30.0
) -> Any:
    """Send model ``request`` to ``rpc`` as is (no client-side validation) and return the
    response model; gRPC errors are raised as :mod:`criadapt.errors` classes.

    Unlike :class:`criadapt.client.Client`, this also calls an RPC on an API version that
    does not have it, to see what the server answers.
    """
    spec = BY_NAME[rpc]
    payload = request if isinstance(request, bytes) else encode(request)
    with grpc.insecure_channel(endpoint) as channel:
        method = channel.unary_unary(method_path(api_version, spec.service, rpc))
        try:
            reply = method(payload, timeout=timeout)
        except grpc.RpcError as exc:
            raise error_of(exc.code(), exc.details() or "") from None
    return decode(spec.response, reply)


def raw_stream(endpoint: str, rpc: str, request: Any, *, timeout: float) -> Iterator[Any]:
    """Call the server-streaming ``rpc`` with a deadline and yield the response models.

    The stream ends quietly at the deadline (``DEADLINE_EXCEEDED``) or when the server ends
    it; other errors are raised as :mod:`criadapt.errors` classes.
    """
    spec = BY_NAME[rpc]
    with grpc.insecure_channel(endpoint) as channel:
        method = channel.unary_stream(method_path("v1", spec.service, rpc))
        replies = method(encode(request), timeout=timeout)
        try:
            for reply in replies:
                yield decode(spec.response, reply)
        except grpc.RpcError as exc:
            if exc.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
                return
            raise error_of(exc.code(), exc.details() or "") from None
        finally:
            replies.cancel()


def optional_call(call: Callable[[], T]) -> T | None:
    """Run the call of an optional RPC: it must succeed or raise ``Unimplemented``.

    Returns the response, or None when the backend does not implement the RPC. Any other
    error fails the test (critest skips on UNIMPLEMENTED, but nothing else is acceptable).
    """
    try:
        return call()
    except Unimplemented:
        return None
    except CriError as exc:
        raise AssertionError(
            f"an optional RPC must succeed or answer UNIMPLEMENTED, got {exc.code}: {exc}"
        ) from exc


def capable_call(info: m.BackendInfo, capability: str, call: Callable[[], T]) -> T | None:
    """Run the call of an optional feature: if the backend reports ``capability`` it must
    succeed, otherwise it may also answer ``UNIMPLEMENTED`` (see :func:`optional_call`)."""
    if capability in info.capabilities:
        return call()
    return optional_call(call)
