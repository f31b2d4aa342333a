"""``StopContainer``: EXITED afterwards, killed after the grace period, idempotent."""

from __future__ import annotations

import time

from criadapt import models as m
from criadapt.client import Client
from criadapt.testing.contract.helpers import random_id
from criadapt.testing.plugin import ContainerFactory

#: a process killed by SIGKILL (StopContainer with timeout 0) exits with 128 + 9
SIGKILL_EXIT_CODE = 137


def test_stopped_container_has_exited(cri: Client, container_factory: ContainerFactory) -> None:
    container = container_factory(start=True)
    cri.stop_container(container_id=container.id, timeout=0)
    status = cri.container_status(container_id=container.id).status
    assert status is not None
    assert status.state == m.ContainerState.CONTAINER_EXITED
    assert status.finished_at >= status.started_at >= status.created_at > 0


def test_stop_without_grace_period_kills(cri: Client, container_factory: ContainerFactory) -> None:
    container = container_factory(start=True)
    cri.stop_container(container_id=container.id, timeout=0)
    status = cri.container_status(container_id=container.id).status
    assert status is not None
    assert status.exit_code == SIGKILL_EXIT_CODE, (
        f"StopContainer(timeout=0) must SIGKILL: exit code {status.exit_code}, "
        f"expected {SIGKILL_EXIT_CODE}"
    )
    assert status.reason, "an exited container has no reason"


def test_stop_with_a_grace_period_returns_within_it(
    cri: Client, container_factory: ContainerFactory
) -> None:
    container = container_factory(start=True)
    started = time.monotonic()
    cri.stop_container(container_id=container.id, timeout=2)
    took = time.monotonic() - started
    assert took < 2 + 10, f"StopContainer(timeout=2) took {took:.1f}s"
    status = cri.container_status(container_id=container.id).status
    assert status is not None
    assert status.state == m.ContainerState.CONTAINER_EXITED


def test_stop_is_idempotent(cri: Client, container_factory: ContainerFactory) -> None:
    container = container_factory(start=True)
    for _ in range(3):
        cri.stop_container(container_id=container.id, timeout=0)
    status = cri.container_status(container_id=container.id).status
    assert status is not None
    assert status.state == m.ContainerState.CONTAINER_EXITED


def test_stop_of_an_unknown_container_succeeds(cri: Client) -> None:
    cri.stop_container(container_id=random_id(), timeout=0)


def test_stop_of_a_removed_container_succeeds(
    cri: Client, container_factory: ContainerFactory
) -> None:
    container = container_factory(start=True)
    cri.stop_container(container_id=container.id, timeout=0)
    cri.remove_container(container_id=container.id)
    cri.stop_container(container_id=container.id, timeout=0)


def test_stop_of_a_created_container_succeeds(
    cri: Client, container_factory: ContainerFactory
) -> None:
    container = container_factory()
    cri.stop_container(container_id=container.id, timeout=0)
    status = cri.container_status(container_id=container.id).status
    assert status is not None
    assert status.state != m.ContainerState.CONTAINER_RUNNING
