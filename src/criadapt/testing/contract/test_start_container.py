"""``StartContainer``: RUNNING afterwards, NOT_FOUND for unknown ids."""

from __future__ import annotations

import pytest

from criadapt import models as m
from criadapt.client import Client
from criadapt.errors import NotFound
from criadapt.testing.contract.helpers import random_id
from criadapt.testing.plugin import ContainerFactory


def test_started_container_is_running(cri: Client, container_factory: ContainerFactory) -> None:
    container = container_factory()
    cri.start_container(container_id=container.id)
    status = cri.container_status(container_id=container.id).status
    assert status is not None
    assert status.state == m.ContainerState.CONTAINER_RUNNING
    assert status.started_at >= status.created_at > 0
    assert status.finished_at == 0


def test_start_of_an_unknown_container_is_not_found(cri: Client) -> None:
    with pytest.raises(NotFound):
        cri.start_container(container_id=random_id())


def test_start_of_a_removed_container_is_not_found(
    cri: Client, container_factory: ContainerFactory
) -> None:
    container = container_factory()
    cri.remove_container(container_id=container.id)
    with pytest.raises(NotFound):
        cri.start_container(container_id=container.id)
