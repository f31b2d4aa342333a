"""``ContainerStats``, ``ListContainerStats``, ``PodSandboxStats``, ``ListPodSandboxStats``."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from criadapt import models as m
from criadapt.client import Client
from criadapt.errors import NotFound
from criadapt.testing.contract.helpers import assert_subset, random_id
from criadapt.testing.plugin import Container, ContainerFactory, Sandbox, SandboxFactory


def assert_container_stats(stats: m.ContainerStats | None, container: Container) -> None:
    assert stats is not None, "no stats for the container"
    attributes = stats.attributes
    assert attributes is not None, "ContainerStats.attributes is missing"
    assert attributes.id == container.id
    assert attributes.metadata == container.config.metadata
    assert_subset(container.config.labels, attributes.labels, "container stats labels")
    assert dict(attributes.annotations) == dict(container.config.annotations)
    assert stats.cpu is not None and stats.cpu.timestamp > 0, "CpuUsage.timestamp must be > 0"
    assert stats.memory is not None and stats.memory.timestamp > 0, (
        "MemoryUsage.timestamp must be > 0"
    )
    if stats.writable_layer is not None:
        assert stats.writable_layer.timestamp > 0


def assert_sandbox_stats(stats: m.PodSandboxStats | None, sandbox: Sandbox) -> None:
    assert stats is not None, "no stats for the sandbox"
    attributes = stats.attributes
    assert attributes is not None, "PodSandboxStats.attributes is missing"
    assert attributes.id == sandbox.id
    assert attributes.metadata == sandbox.config.metadata
    assert_subset(sandbox.config.labels, attributes.labels, "sandbox stats labels")
    assert dict(attributes.annotations) == dict(sandbox.config.annotations)
    assert stats.linux is not None, "PodSandboxStats.linux is missing"
    if stats.linux.cpu is not None:
        assert stats.linux.cpu.timestamp > 0
    if stats.linux.memory is not None:
        assert stats.linux.memory.timestamp > 0


@pytest.mark.requires("stats")
def test_container_stats(cri: Client, container_factory: ContainerFactory) -> None:
    container = container_factory(annotations={"stats": "yes"}, start=True)
    assert_container_stats(cri.container_stats(container_id=container.id).stats, container)


@pytest.mark.requires("stats")
def test_container_stats_of_an_unknown_container_is_not_found(cri: Client) -> None:
    with pytest.raises(NotFound):
        cri.container_stats(container_id=random_id())


@pytest.mark.requires("stats")
def test_list_container_stats(
    cri: Client, sandbox_factory: SandboxFactory, container_factory: ContainerFactory
) -> None:
    run = uuid.uuid4().hex
    sandbox = sandbox_factory()
    container = container_factory(sandbox, labels={"run": run}, start=True)
    other = container_factory(sandbox_factory(), start=True)

    def listed(**fields: Any) -> dict[str, m.ContainerStats]:
        response = cri.list_container_stats(filter=m.ContainerStatsFilter(**fields))
        return {s.attributes.id: s for s in response.stats if s.attributes is not None}

    everything = cri.list_container_stats().stats
    assert container.id in [s.attributes.id for s in everything if s.attributes is not None]
    by_id = listed(id=container.id)
    assert list(by_id) == [container.id]
    assert_container_stats(by_id[container.id], container)
    assert list(listed(pod_sandbox_id=sandbox.id)) == [container.id]
    assert list(listed(label_selector={"run": run})) == [container.id]
    assert listed(id=other.id, pod_sandbox_id=sandbox.id) == {}


@pytest.mark.requires("pod_sandbox_stats")
def test_pod_sandbox_stats(
    cri: Client, sandbox_factory: SandboxFactory, container_factory: ContainerFactory
) -> None:
    sandbox = sandbox_factory(annotations={"stats": "yes"})
    container_factory(sandbox, start=True)
    assert_sandbox_stats(cri.pod_sandbox_stats(pod_sandbox_id=sandbox.id).stats, sandbox)


@pytest.mark.requires("pod_sandbox_stats")
def test_pod_sandbox_stats_of_an_unknown_sandbox_is_not_found(cri: Client) -> None:
    with pytest.raises(NotFound):
        cri.pod_sandbox_stats(pod_sandbox_id=random_id())


@pytest.mark.requires("pod_sandbox_stats")
def test_list_pod_sandbox_stats(cri: Client, sandbox_factory: SandboxFactory) -> None:
    run = uuid.uuid4().hex
    sandbox = sandbox_factory(labels={"run": run})
    sandbox_factory()

    def listed(**fields: Any) -> dict[str, m.PodSandboxStats]:
        response = cri.list_pod_sandbox_stats(filter=m.PodSandboxStatsFilter(**fields))
        return {s.attributes.id: s for s in response.stats if s.attributes is not None}

    everything = cri.list_pod_sandbox_stats().stats
    assert sandbox.id in [s.attributes.id for s in everything if s.attributes is not None]
    by_id = listed(id=sandbox.id)
    assert list(by_id) == [sandbox.id]
    assert_sandbox_stats(by_id[sandbox.id], sandbox)
    assert list(listed(label_selector={"run": run})) == [sandbox.id]
