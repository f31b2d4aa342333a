"""``ListContainers``: every field, and the filters (id, prefix, state, sandbox, labels)."""

from __future__ import annotations

import uuid
from typing import Any

from criadapt import models as m
from criadapt.client import Client
from criadapt.testing.contract.helpers import assert_subset, random_id
from criadapt.testing.plugin import ContainerFactory, PulledImage, SandboxFactory

State = m.ContainerState


def listed_ids(cri: Client, **filter_fields: Any) -> list[str]:
    response = cri.list_containers(filter=m.ContainerFilter(**filter_fields))
    return [container.id for container in response.containers]


def state(value: m.ContainerState) -> m.ContainerStateValue:
    return m.ContainerStateValue(state=value)


def test_list_reports_the_container(
    cri: Client, container_factory: ContainerFactory, test_image: PulledImage
) -> None:
    container = container_factory(labels={"app": "list"}, annotations={"note": "listed"})
    found = [c for c in cri.list_containers().containers if c.id == container.id]
    assert len(found) == 1, f"container {container.id} listed {len(found)} times"
    item = found[0]
    assert item.pod_sandbox_id == container.sandbox.id
    assert item.metadata == container.config.metadata
    assert item.image is not None and item.image.image
    assert item.image_ref
    assert item.image_id == test_image.image_ref
    assert item.state == State.CONTAINER_CREATED
    assert item.created_at > 0
    assert_subset(container.config.labels, item.labels, "listed container labels")
    assert dict(item.annotations) == dict(container.config.annotations)


def test_filter_by_id(cri: Client, container_factory: ContainerFactory) -> None:
    one, _other = container_factory(), container_factory()
    assert listed_ids(cri, id=one.id) == [one.id]


def test_filter_by_id_prefix(cri: Client, container_factory: ContainerFactory) -> None:
    one, _other = container_factory(), container_factory()
    prefix = one.id[: max(8, len(one.id) // 2)]
    ids = listed_ids(cri, id=prefix)
    assert one.id in ids, f"no container listed for the id prefix {prefix!r}"
    assert all(found.startswith(prefix) for found in ids), ids


def test_filter_by_unknown_id_lists_nothing(
    cri: Client, container_factory: ContainerFactory
) -> None:
    container_factory()
    assert listed_ids(cri, id=random_id()) == []


def test_filter_by_state(
    cri: Client, sandbox_factory: SandboxFactory, container_factory: ContainerFactory
) -> None:
    sandbox = sandbox_factory()
    created = container_factory(sandbox)
    running = container_factory(sandbox, start=True)
    exited = container_factory(sandbox, start=True)
    cri.stop_container(container_id=exited.id, timeout=0)
    for value, expected in [
        (State.CONTAINER_CREATED, created),
        (State.CONTAINER_RUNNING, running),
        (State.CONTAINER_EXITED, exited),
    ]:
        ids = listed_ids(cri, pod_sandbox_id=sandbox.id, state=state(value))
        assert ids == [expected.id], f"{value.name}: {ids}"


def test_filter_by_sandbox(
    cri: Client, sandbox_factory: SandboxFactory, container_factory: ContainerFactory
) -> None:
    first, second = sandbox_factory(), sandbox_factory()
    mine = container_factory(first)
    theirs = container_factory(second)
    assert listed_ids(cri, pod_sandbox_id=first.id) == [mine.id]
    assert listed_ids(cri, pod_sandbox_id=second.id) == [theirs.id]
    assert listed_ids(cri, pod_sandbox_id=random_id()) == []


def test_filter_by_label_selector(
    cri: Client, sandbox_factory: SandboxFactory, container_factory: ContainerFactory
) -> None:
    run = uuid.uuid4().hex
    sandbox = sandbox_factory()
    web = container_factory(sandbox, labels={"run": run, "role": "web"})
    db = container_factory(sandbox, labels={"run": run, "role": "db"})
    container_factory(sandbox, labels={"run": "other", "role": "web"})
    assert sorted(listed_ids(cri, label_selector={"run": run})) == sorted([web.id, db.id])
    assert listed_ids(cri, label_selector={"run": run, "role": "web"}) == [web.id]
    assert listed_ids(cri, label_selector={"run": run, "role": "cache"}) == []


def test_filters_are_anded(
    cri: Client, sandbox_factory: SandboxFactory, container_factory: ContainerFactory
) -> None:
    run = uuid.uuid4().hex
    sandbox, other = sandbox_factory(), sandbox_factory()
    container = container_factory(sandbox, labels={"run": run}, start=True)
    assert listed_ids(
        cri,
        id=container.id,
        pod_sandbox_id=sandbox.id,
        state=state(State.CONTAINER_RUNNING),
        label_selector={"run": run},
    ) == [container.id]
    assert listed_ids(cri, id=container.id, state=state(State.CONTAINER_EXITED)) == []
    assert listed_ids(cri, id=container.id, pod_sandbox_id=other.id) == []
    assert listed_ids(cri, id=container.id, label_selector={"run": "other"}) == []


def test_removed_container_is_not_listed(cri: Client, container_factory: ContainerFactory) -> None:
    container = container_factory()
    cri.remove_container(container_id=container.id)
    assert container.id not in [c.id for c in cri.list_containers().containers]
    assert listed_ids(cri, id=container.id) == []
