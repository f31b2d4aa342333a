"""``ExecSync``: stdout, stderr and exit code of a command in a running container."""

from __future__ import annotations

import time

import pytest

from criadapt.client import Client
from criadapt.errors import DeadlineExceeded, FailedPrecondition, NotFound
from criadapt.testing.contract.helpers import random_id
from criadapt.testing.plugin import ContainerFactory

pytestmark = pytest.mark.requires("exec_sync")


def test_echo(cri: Client, container_factory: ContainerFactory) -> None:
    container = container_factory(start=True)
    response = cri.exec_sync(container_id=container.id, cmd=["echo", "hello"])
    assert response.stdout == b"hello\n"
    assert response.stderr == b""
    assert response.exit_code == 0


def test_stderr_and_exit_code(cri: Client, container_factory: ContainerFactory) -> None:
    container = container_factory(start=True)
    response = cri.exec_sync(
        container_id=container.id, cmd=["sh", "-c", "echo out; echo err >&2; exit 3"]
    )
    assert response.stdout == b"out\n"
    assert response.stderr == b"err\n"
    assert response.exit_code == 3


def test_failing_command_is_not_an_error(cri: Client, container_factory: ContainerFactory) -> None:
    container = container_factory(start=True)
    response = cri.exec_sync(container_id=container.id, cmd=["sh", "-c", "exit 42"])
    assert response.exit_code == 42


def test_missing_command_is_a_non_zero_exit(
    cri: Client, container_factory: ContainerFactory
) -> None:
    """runc and kubelet report a command that cannot be run as an exit code, not an error."""
    container = container_factory(start=True)
    response = cri.exec_sync(
        container_id=container.id, cmd=["sh", "-c", "no-such-command-criadapt"]
    )
    assert response.exit_code == 127


def test_environment_of_the_container(cri: Client, container_factory: ContainerFactory) -> None:
    container = container_factory(envs={"CONTRACT_VAR": "value with spaces"}, start=True)
    response = cri.exec_sync(container_id=container.id, cmd=["sh", "-c", "echo $CONTRACT_VAR"])
    assert (response.stdout, response.exit_code) == (b"value with spaces\n", 0)


def test_unknown_container_is_not_found(cri: Client) -> None:
    with pytest.raises(NotFound):
        cri.exec_sync(container_id=random_id(), cmd=["echo", "x"])


def test_created_container_refuses(cri: Client, container_factory: ContainerFactory) -> None:
    container = container_factory()
    with pytest.raises((FailedPrecondition, NotFound)):
        cri.exec_sync(container_id=container.id, cmd=["echo", "x"])


def test_exited_container_refuses(cri: Client, container_factory: ContainerFactory) -> None:
    container = container_factory(start=True)
    cri.stop_container(container_id=container.id, timeout=0)
    with pytest.raises((FailedPrecondition, NotFound)):
        cri.exec_sync(container_id=container.id, cmd=["echo", "x"])


@pytest.mark.requires("exec_sync_timeout")
def test_timeout_is_deadline_exceeded(cri: Client, container_factory: ContainerFactory) -> None:
    """kubelet turns DEADLINE_EXCEEDED into a probe timeout (remote_runtime.go)."""
    container = container_factory(start=True)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        cri.exec_sync(container_id=container.id, cmd=["sleep", "30"], timeout=1)
    took = time.monotonic() - started
    assert took < 15, f"ExecSync(timeout=1) returned after {took:.1f}s"


def test_command_finishing_within_timeout(cri: Client, container_factory: ContainerFactory) -> None:
    container = container_factory(start=True)
    response = cri.exec_sync(container_id=container.id, cmd=["echo", "quick"], timeout=30)
    assert (response.stdout, response.exit_code) == (b"quick\n", 0)
