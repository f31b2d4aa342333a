"""``RemovePodSandbox``: gone afterwards, containers removed with it, idempotent (api.proto)."""

from __future__ import annotations

import pytest

from criadapt import models as m
from criadapt.client import Client
from criadapt.errors import NotFound
from criadapt.testing.contract.helpers import random_id
from criadapt.testing.plugin import ContainerFactory, SandboxFactory


def test_removed_sandbox_is_gone(cri: Client, sandbox_factory: SandboxFactory) -> None:
    sandbox = sandbox_factory()
    cri.stop_pod_sandbox(pod_sandbox_id=sandbox.id)
    cri.remove_pod_sandbox(pod_sandbox_id=sandbox.id)
    with pytest.raises(NotFound):
        cri.pod_sandbox_status(pod_sandbox_id=sandbox.id)
    listed = cri.list_pod_sandbox().items
    assert sandbox.id not in [item.id for item in listed]


def test_remove_is_idempotent(cri: Client, sandbox_factory: SandboxFactory) -> None:
    sandbox = sandbox_factory()
    cri.stop_pod_sandbox(pod_sandbox_id=sandbox.id)
    for _ in range(3):
        cri.remove_pod_sandbox(pod_sandbox_id=sandbox.id)


def test_remove_of_an_unknown_sandbox_succeeds(cri: Client) -> None:
    cri.remove_pod_sandbox(pod_sandbox_id=random_id())


def test_remove_of_a_ready_sandbox_removes_its_containers(
    cri: Client, sandbox_factory: SandboxFactory, container_factory: ContainerFactory
) -> None:
    sandbox = sandbox_factory()
    running = container_factory(sandbox, start=True)
    created = container_factory(sandbox)
    cri.remove_pod_sandbox(pod_sandbox_id=sandbox.id)
    with pytest.raises(NotFound):
        cri.pod_sandbox_status(pod_sandbox_id=sandbox.id)
    for container in (running, created):
        with pytest.raises(NotFound):
            cri.container_status(container_id=container.id)
    left = cri.list_containers(filter=m.ContainerFilter(pod_sandbox_id=sandbox.id)).containers
    assert left == ()
