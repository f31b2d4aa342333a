"""``UpdateContainerResources``: applied synchronously and reported by ContainerStatus."""

from __future__ import annotations

import pytest

from criadapt import models as m
from criadapt.client import Client
from criadapt.errors import NotFound
from criadapt.testing.contract.helpers import random_id
from criadapt.testing.plugin import ContainerFactory

pytestmark = pytest.mark.requires("update_container_resources")

RESOURCES = m.LinuxContainerResources(
    cpu_period=100_000,
    cpu_quota=50_000,
    cpu_shares=512,
    memory_limit_in_bytes=256 * 1024 * 1024,
)


def assert_reported(cri: Client, container_id: str) -> None:
    status = cri.container_status(container_id=container_id).status
    assert status is not None
    assert status.resources is not None and status.resources.linux is not None, (
        "ContainerStatus.resources.linux is not reported"
    )
    linux = status.resources.linux
    for field in ("cpu_period", "cpu_quota", "cpu_shares", "memory_limit_in_bytes"):
        assert getattr(linux, field) == getattr(RESOURCES, field), field


def test_update_a_running_container(cri: Client, container_factory: ContainerFactory) -> None:
    container = container_factory(start=True)
    cri.update_container_resources(container_id=container.id, linux=RESOURCES)
    assert_reported(cri, container.id)


def test_update_a_created_container(cri: Client, container_factory: ContainerFactory) -> None:
    container = container_factory()
    cri.update_container_resources(container_id=container.id, linux=RESOURCES)
    assert_reported(cri, container.id)


def test_update_an_unknown_container_is_not_found(cri: Client) -> None:
    with pytest.raises(NotFound):
        cri.update_container_resources(container_id=random_id(), linux=RESOURCES)
