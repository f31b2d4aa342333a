"""``StopPodSandbox``: NOTREADY afterwards, containers killed, idempotent (api.proto)."""

from __future__ import annotations

from criadapt import models as m
from criadapt.client import Client
from criadapt.testing.contract.helpers import random_id
from criadapt.testing.plugin import ContainerFactory, SandboxFactory


def test_stopped_sandbox_is_not_ready(cri: Client, sandbox_factory: SandboxFactory) -> None:
    sandbox = sandbox_factory()
    cri.stop_pod_sandbox(pod_sandbox_id=sandbox.id)
    status = cri.pod_sandbox_status(pod_sandbox_id=sandbox.id).status
    assert status is not None
    assert status.state == m.PodSandboxState.SANDBOX_NOTREADY
    listed = cri.list_pod_sandbox(filter=m.PodSandboxFilter(id=sandbox.id)).items
    assert [item.state for item in listed] == [m.PodSandboxState.SANDBOX_NOTREADY]


def test_stop_is_idempotent(cri: Client, sandbox_factory: SandboxFactory) -> None:
    sandbox = sandbox_factory()
    for _ in range(3):
        cri.stop_pod_sandbox(pod_sandbox_id=sandbox.id)
    status = cri.pod_sandbox_status(pod_sandbox_id=sandbox.id).status
    assert status is not None
    assert status.state == m.PodSandboxState.SANDBOX_NOTREADY


def test_stop_of_an_unknown_sandbox_succeeds(cri: Client) -> None:
    cri.stop_pod_sandbox(pod_sandbox_id=random_id())


def test_stop_of_a_removed_sandbox_succeeds(cri: Client, sandbox_factory: SandboxFactory) -> None:
    sandbox = sandbox_factory()
    cri.stop_pod_sandbox(pod_sandbox_id=sandbox.id)
    cri.remove_pod_sandbox(pod_sandbox_id=sandbox.id)
    cri.stop_pod_sandbox(pod_sandbox_id=sandbox.id)


def test_stop_terminates_running_containers(
    cri: Client, sandbox_factory: SandboxFactory, container_factory: ContainerFactory
) -> None:
    sandbox = sandbox_factory()
    container = container_factory(sandbox, start=True)
    cri.stop_pod_sandbox(pod_sandbox_id=sandbox.id)
    status = cri.container_status(container_id=container.id).status
    assert status is not None
    assert status.state == m.ContainerState.CONTAINER_EXITED, (
        f"a container of a stopped sandbox is {status.state.name}, not CONTAINER_EXITED"
    )
    assert status.finished_at >= status.started_at > 0
