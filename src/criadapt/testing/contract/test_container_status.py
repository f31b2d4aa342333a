"""``ContainerStatus``: NOT_FOUND for unknown ids; the CREATED → RUNNING → EXITED machine."""

from __future__ import annotations

import json

import pytest

from criadapt import models as m
from criadapt.client import Client
from criadapt.errors import NotFound
from criadapt.testing.contract.helpers import assert_subset, random_id, wait_for
from criadapt.testing.plugin import ContainerFactory, PulledImage

ODD_ANNOTATIONS = {
    "empty": "",
    "unicode": "ünïcödé ✓",
    "json": json.dumps({"probe": {"exec": ["cat", "/tmp/ready"]}}),
    "newline": "a\nb",
}


def status_of(cri: Client, container_id: str) -> m.ContainerStatus:
    status = cri.container_status(container_id=container_id).status
    assert status is not None, "ContainerStatusResponse.status is missing"
    return status


def exited(cri: Client, container_id: str) -> m.ContainerStatus | None:
    status = status_of(cri, container_id)
    return status if status.state == m.ContainerState.CONTAINER_EXITED else None


def test_unknown_container_is_not_found(cri: Client) -> None:
    with pytest.raises(NotFound):
        cri.container_status(container_id=random_id())


def test_state_machine(cri: Client, container_factory: ContainerFactory) -> None:
    container = container_factory()
    created = status_of(cri, container.id)
    assert created.state == m.ContainerState.CONTAINER_CREATED
    assert created.created_at > 0
    assert (created.started_at, created.finished_at) == (0, 0)

    cri.start_container(container_id=container.id)
    running = status_of(cri, container.id)
    assert running.state == m.ContainerState.CONTAINER_RUNNING
    assert running.created_at == created.created_at
    assert running.started_at >= running.created_at
    assert running.finished_at == 0

    cri.stop_container(container_id=container.id, timeout=0)
    stopped = status_of(cri, container.id)
    assert stopped.state == m.ContainerState.CONTAINER_EXITED
    assert stopped.created_at == created.created_at
    assert stopped.started_at == running.started_at
    assert stopped.finished_at >= stopped.started_at
    assert stopped.exit_code != 0, (
        "a container killed by StopContainer(timeout=0) reports exit code 0"
    )
    assert stopped.reason, "an exited container must say why (Completed, Error, OOMKilled...)"


@pytest.mark.requires("process_exit")
def test_container_exits_by_itself_with_its_exit_code(
    cri: Client, container_factory: ContainerFactory
) -> None:
    container = container_factory(command=["sh", "-c", "exit 3"], start=True)
    status = wait_for(lambda: exited(cri, container.id), what="the container to exit")
    assert status.exit_code == 3
    assert status.finished_at >= status.started_at > 0


@pytest.mark.requires("process_exit")
def test_container_exiting_with_zero(cri: Client, container_factory: ContainerFactory) -> None:
    container = container_factory(command=["true"], start=True)
    status = wait_for(lambda: exited(cri, container.id), what="the container to exit")
    assert status.exit_code == 0


def test_status_describes_the_container(
    cri: Client, container_factory: ContainerFactory, test_image: PulledImage
) -> None:
    container = container_factory(labels={"app": "status"}, annotations=ODD_ANNOTATIONS)
    status = status_of(cri, container.id)
    assert status.id == container.id
    assert status.metadata == container.config.metadata
    assert status.image is not None and status.image.image, "ContainerStatus.image is empty"
    assert status.image_ref, "ContainerStatus.image_ref is empty"
    # api.proto: "For a given image it MUST equal PullImageResponse.image_ref."
    assert status.image_id == test_image.image_ref
    assert_subset(container.config.labels, status.labels, "container labels")
    assert_subset(container.config.annotations, status.annotations, "container annotations")
    assert dict(status.annotations) == dict(container.config.annotations)


def test_log_path_is_reported(cri: Client, container_factory: ContainerFactory) -> None:
    container = container_factory()
    status = status_of(cri, container.id)
    assert status.log_path.endswith(container.config.log_path), (
        f"log_path {status.log_path!r} is not the configured {container.config.log_path!r} "
        "(joined to the sandbox's log directory)"
    )


def test_verbose_status(cri: Client, container_factory: ContainerFactory) -> None:
    container = container_factory(start=True)
    response = cri.container_status(container_id=container.id, verbose=True)
    assert response.status is not None
    assert response.status.id == container.id


def test_status_after_remove_is_not_found(cri: Client, container_factory: ContainerFactory) -> None:
    container = container_factory()
    cri.remove_container(container_id=container.id)
    with pytest.raises(NotFound):
        cri.container_status(container_id=container.id)
