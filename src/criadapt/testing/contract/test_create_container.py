"""``CreateContainer``: CREATED afterwards, in an existing sandbox only."""

from __future__ import annotations

import pytest

from criadapt import models as m
from criadapt.client import Client
from criadapt.errors import NotFound
from criadapt.testing.contract.helpers import random_id
from criadapt.testing.plugin import ContainerFactory, PulledImage, SandboxFactory


def test_created_container_is_created(
    cri: Client, container_factory: ContainerFactory, test_image: PulledImage
) -> None:
    container = container_factory()
    status = cri.container_status(container_id=container.id).status
    assert status is not None
    assert status.id == container.id
    assert status.state == m.ContainerState.CONTAINER_CREATED
    assert status.metadata == container.config.metadata
    assert status.created_at > 0
    assert status.started_at == 0
    assert status.finished_at == 0


def test_every_container_gets_its_own_id(
    sandbox_factory: SandboxFactory, container_factory: ContainerFactory
) -> None:
    sandbox = sandbox_factory()
    ids = {container_factory(sandbox).id for _ in range(3)}
    assert len(ids) == 3


def test_containers_of_one_sandbox_are_listed_with_it(
    cri: Client, sandbox_factory: SandboxFactory, container_factory: ContainerFactory
) -> None:
    sandbox = sandbox_factory()
    created = [container_factory(sandbox) for _ in range(2)]
    listed = cri.list_containers(filter=m.ContainerFilter(pod_sandbox_id=sandbox.id)).containers
    assert sorted(c.id for c in listed) == sorted(c.id for c in created)
    assert all(c.pod_sandbox_id == sandbox.id for c in listed)


def test_create_in_an_unknown_sandbox_is_not_found(
    cri: Client, sandbox_factory: SandboxFactory, container_factory: ContainerFactory
) -> None:
    config = container_factory.config()
    with pytest.raises(NotFound):
        response = cri.create_container(
            pod_sandbox_id=random_id(), config=config, sandbox_config=sandbox_factory.config()
        )
        container_factory.track(response.container_id)


def test_create_with_the_image_name(
    cri: Client,
    sandbox_factory: SandboxFactory,
    container_factory: ContainerFactory,
    test_image: PulledImage,
) -> None:
    """kubelet sends the resolved image ref; critest sends the name as written: both work."""
    sandbox = sandbox_factory()
    container = container_factory(sandbox, image=test_image.name)
    status = cri.container_status(container_id=container.id).status
    assert status is not None
    assert status.state == m.ContainerState.CONTAINER_CREATED
    assert status.image_id == test_image.image_ref


def test_create_with_a_host_path_mount(
    cri: Client,
    sandbox_factory: SandboxFactory,
    container_factory: ContainerFactory,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    host = tmp_path_factory.mktemp("mount")
    (host / "hello.txt").write_text("hello\n")
    mount = m.Mount(container_path="/mnt/contract", host_path=str(host), readonly=True)
    sandbox = sandbox_factory()
    container = container_factory(sandbox, mounts=[mount])
    status = cri.container_status(container_id=container.id).status
    assert status is not None
    assert status.state == m.ContainerState.CONTAINER_CREATED
