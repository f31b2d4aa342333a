"""``RemoveContainer``: gone afterwards, a running container is force-removed, idempotent."""

from __future__ import annotations

import pytest

from criadapt import models as m
from criadapt.client import Client
from criadapt.errors import NotFound
from criadapt.testing.contract.helpers import random_id
from criadapt.testing.plugin import Container, ContainerFactory


def assert_gone(cri: Client, container: Container) -> None:
    with pytest.raises(NotFound):
        cri.container_status(container_id=container.id)
    assert container.id not in [c.id for c in cri.list_containers().containers]


def test_removed_container_is_gone(cri: Client, container_factory: ContainerFactory) -> None:
    container = container_factory(start=True)
    cri.stop_container(container_id=container.id, timeout=0)
    cri.remove_container(container_id=container.id)
    assert_gone(cri, container)


def test_remove_of_a_running_container_forces_it(
    cri: Client, container_factory: ContainerFactory
) -> None:
    container = container_factory(start=True)
    cri.remove_container(container_id=container.id)
    assert_gone(cri, container)


def test_remove_of_a_created_container(cri: Client, container_factory: ContainerFactory) -> None:
    container = container_factory()
    cri.remove_container(container_id=container.id)
    assert_gone(cri, container)


def test_remove_is_idempotent(cri: Client, container_factory: ContainerFactory) -> None:
    container = container_factory(start=True)
    cri.stop_container(container_id=container.id, timeout=0)
    for _ in range(3):
        cri.remove_container(container_id=container.id)


def test_remove_of_an_unknown_container_succeeds(cri: Client) -> None:
    cri.remove_container(container_id=random_id())


def test_the_name_is_free_again_after_remove(
    cri: Client, container_factory: ContainerFactory
) -> None:
    first = container_factory()
    cri.remove_container(container_id=first.id)
    again = container_factory(first.sandbox, config=first.config)
    status = cri.container_status(container_id=again.id).status
    assert status is not None
    assert status.metadata == first.config.metadata
    assert status.state == m.ContainerState.CONTAINER_CREATED
