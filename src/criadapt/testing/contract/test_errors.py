"""Requests that break the contract are answered ``INVALID_ARGUMENT``, naming the field.

The typed client refuses to build such requests, so these tests build them with validation
off (:func:`~criadapt.testing.contract.helpers.unchecked`) and send them as they are
(:func:`~criadapt.testing.contract.helpers.raw_call`), as a client in another language could.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from criadapt import models as m
from criadapt.errors import InvalidArgument
from criadapt.rpcs import BY_NAME
from criadapt.testing.contract.helpers import raw_call, unchecked
from criadapt.testing.plugin import Container, ContainerFactory, SandboxFactory


def assert_invalid(endpoint: str, rpc: str, request: Any, *words: str) -> None:
    """``rpc(request)`` is INVALID_ARGUMENT and the message names every word of ``words``."""
    with pytest.raises(InvalidArgument) as caught:
        raw_call(endpoint, rpc, request)
    message = caught.value.message
    for word in words:
        assert word in message, f"{rpc}: the message does not name {word!r}: {message!r}"


@pytest.fixture
def running(container_factory: ContainerFactory) -> Container:
    return container_factory(start=True)


# -- sandboxes --------------------------------------------------------------------------------


def test_run_without_config(cri_endpoint: str) -> None:
    assert_invalid(cri_endpoint, "RunPodSandbox", unchecked(m.RunPodSandboxRequest), "config")


def test_run_without_metadata(cri_endpoint: str, sandbox_factory: SandboxFactory) -> None:
    config = unchecked(
        m.PodSandboxConfig, **{**_fields(sandbox_factory.config()), "metadata": None}
    )
    request = unchecked(m.RunPodSandboxRequest, config=config)
    assert_invalid(cri_endpoint, "RunPodSandbox", request, "metadata")


@pytest.mark.parametrize("field", ["name", "uid", "namespace"])
def test_run_with_empty_metadata_field(
    cri_endpoint: str, sandbox_factory: SandboxFactory, field: str
) -> None:
    valid = sandbox_factory.config()
    assert valid.metadata is not None
    metadata = unchecked(m.PodSandboxMetadata, **{**_fields(valid.metadata), field: ""})
    config = unchecked(m.PodSandboxConfig, **{**_fields(valid), "metadata": metadata})
    request = unchecked(m.RunPodSandboxRequest, config=config)
    assert_invalid(cri_endpoint, "RunPodSandbox", request, field)


@pytest.mark.parametrize("key", ["-starts-with-dash", "has space", "a/b/c", "x" * 64, ""])
def test_run_with_invalid_label_key(
    cri_endpoint: str, sandbox_factory: SandboxFactory, key: str
) -> None:
    valid = sandbox_factory.config()
    config = unchecked(
        m.PodSandboxConfig, **{**_fields(valid), "labels": {**valid.labels, key: "v"}}
    )
    request = unchecked(m.RunPodSandboxRequest, config=config)
    assert_invalid(cri_endpoint, "RunPodSandbox", request, "labels")


@pytest.mark.parametrize(
    "rpc", ["StopPodSandbox", "RemovePodSandbox", "PodSandboxStatus", "PortForward"]
)
def test_empty_sandbox_id(cri_endpoint: str, rpc: str) -> None:
    request: Any = unchecked(BY_NAME[rpc].request, pod_sandbox_id="")
    assert_invalid(cri_endpoint, rpc, request, "pod_sandbox_id")


# -- containers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rpc",
    [
        "StartContainer",
        "StopContainer",
        "RemoveContainer",
        "ContainerStatus",
        "UpdateContainerResources",
        "ExecSync",
        "Exec",
        "Attach",
    ],
)
def test_empty_container_id(cri_endpoint: str, rpc: str) -> None:
    fields: dict[str, Any] = {"container_id": ""}
    if rpc in ("ExecSync", "Exec"):
        fields["cmd"] = ("echo",)
    if rpc in ("Exec", "Attach"):
        fields["stdout"] = True
    request: Any = unchecked(BY_NAME[rpc].request, **fields)
    assert_invalid(cri_endpoint, rpc, request, "container_id")


def test_create_with_an_empty_sandbox_id(
    cri_endpoint: str, sandbox_factory: SandboxFactory, container_factory: ContainerFactory
) -> None:
    request = unchecked(
        m.CreateContainerRequest,
        pod_sandbox_id="",
        config=container_factory.config(),
        sandbox_config=sandbox_factory.config(),
    )
    assert_invalid(cri_endpoint, "CreateContainer", request, "pod_sandbox_id")


def create_request(
    sandbox_factory: SandboxFactory, container_factory: ContainerFactory, **changes: Any
) -> m.CreateContainerRequest:
    """A CreateContainer request for a real sandbox whose config has ``changes``."""
    sandbox = sandbox_factory()
    config = unchecked(m.ContainerConfig, **{**_fields(container_factory.config()), **changes})
    return unchecked(
        m.CreateContainerRequest,
        pod_sandbox_id=sandbox.id,
        config=config,
        sandbox_config=sandbox.config,
    )


def test_create_without_config(cri_endpoint: str, sandbox_factory: SandboxFactory) -> None:
    sandbox = sandbox_factory()
    request = unchecked(
        m.CreateContainerRequest, pod_sandbox_id=sandbox.id, sandbox_config=sandbox.config
    )
    assert_invalid(cri_endpoint, "CreateContainer", request, "config")


def test_create_without_metadata(
    cri_endpoint: str, sandbox_factory: SandboxFactory, container_factory: ContainerFactory
) -> None:
    request = create_request(sandbox_factory, container_factory, metadata=None)
    assert_invalid(cri_endpoint, "CreateContainer", request, "metadata")


def test_create_with_an_empty_name(
    cri_endpoint: str, sandbox_factory: SandboxFactory, container_factory: ContainerFactory
) -> None:
    metadata = unchecked(m.ContainerMetadata, name="")
    request = create_request(sandbox_factory, container_factory, metadata=metadata)
    assert_invalid(cri_endpoint, "CreateContainer", request, "name")


def test_create_without_image(
    cri_endpoint: str, sandbox_factory: SandboxFactory, container_factory: ContainerFactory
) -> None:
    request = create_request(sandbox_factory, container_factory, image=None)
    assert_invalid(cri_endpoint, "CreateContainer", request, "image")


@pytest.mark.parametrize("path", ["relative/path", "", "mnt"])
def test_create_with_a_relative_mount_path(
    cri_endpoint: str,
    sandbox_factory: SandboxFactory,
    container_factory: ContainerFactory,
    path: str,
) -> None:
    mount = unchecked(m.Mount, container_path=path, host_path="/tmp")
    request = create_request(sandbox_factory, container_factory, mounts=(mount,))
    assert_invalid(cri_endpoint, "CreateContainer", request, "container_path")


@pytest.mark.parametrize("log_path", ["../x", "name/../../x", "/var/log/abs.log", ".."])
def test_create_with_a_log_path_outside_the_log_directory(
    cri_endpoint: str,
    sandbox_factory: SandboxFactory,
    container_factory: ContainerFactory,
    log_path: str,
) -> None:
    request = create_request(sandbox_factory, container_factory, log_path=log_path)
    assert_invalid(cri_endpoint, "CreateContainer", request, "log_path")


def test_create_with_an_invalid_label_key(
    cri_endpoint: str, sandbox_factory: SandboxFactory, container_factory: ContainerFactory
) -> None:
    request = create_request(sandbox_factory, container_factory, labels={"bad key!": "v"})
    assert_invalid(cri_endpoint, "CreateContainer", request, "labels", "bad key!")


def test_stop_with_a_negative_timeout(cri_endpoint: str, running: Container) -> None:
    request = unchecked(m.StopContainerRequest, container_id=running.id, timeout=-1)
    assert_invalid(cri_endpoint, "StopContainer", request, "timeout")


# -- exec -------------------------------------------------------------------------------------


def test_exec_sync_without_command(cri_endpoint: str, running: Container) -> None:
    request = unchecked(m.ExecSyncRequest, container_id=running.id, cmd=())
    assert_invalid(cri_endpoint, "ExecSync", request, "cmd")


def test_exec_sync_with_a_negative_timeout(cri_endpoint: str, running: Container) -> None:
    request = unchecked(m.ExecSyncRequest, container_id=running.id, cmd=("true",), timeout=-1)
    assert_invalid(cri_endpoint, "ExecSync", request, "timeout")


@pytest.mark.parametrize("rpc", ["Exec", "Attach"])
def test_tty_with_stderr(cri_endpoint: str, running: Container, rpc: str) -> None:
    fields: dict[str, Any] = {"container_id": running.id, "tty": True, "stdout": True}
    if rpc == "Exec":
        fields["cmd"] = ("sh",)
    request: Any = unchecked(BY_NAME[rpc].request, **fields, stderr=True)
    assert_invalid(cri_endpoint, rpc, request, "tty", "stderr")


@pytest.mark.parametrize("rpc", ["Exec", "Attach"])
def test_no_stream(cri_endpoint: str, running: Container, rpc: str) -> None:
    fields: dict[str, Any] = {"container_id": running.id}
    if rpc == "Exec":
        fields["cmd"] = ("sh",)
    request: Any = unchecked(BY_NAME[rpc].request, **fields)
    assert_invalid(cri_endpoint, rpc, request, "stdin", "stdout", "stderr")


# -- images and wire ----------------------------------------------------------------------------


@pytest.mark.parametrize("rpc", ["PullImage", "ImageStatus", "RemoveImage"])
def test_image_rpcs_without_image(cri_endpoint: str, rpc: str) -> None:
    assert_invalid(cri_endpoint, rpc, unchecked(BY_NAME[rpc].request), "image")
    empty: Any = unchecked(BY_NAME[rpc].request, image=m.ImageSpec(image=""))
    assert_invalid(cri_endpoint, rpc, empty, "image")


def test_undecodable_message(cri_endpoint: str) -> None:
    with pytest.raises(InvalidArgument):
        raw_call(cri_endpoint, "ListPodSandbox", b"\xff\xff\xff\xff")


def _fields(model: Any) -> dict[str, Any]:
    """The fields of an attrs model, shallowly, to rebuild it with changes."""
    return {field.name: getattr(model, field.name) for field in attrs.fields(type(model))}
