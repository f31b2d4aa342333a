"""``UpdatePodSandboxResources`` (v1 only): best effort, after kubelet resized the cgroups."""

from __future__ import annotations

import pytest

from criadapt import models as m
from criadapt.client import Client
from criadapt.errors import NotFound, Unimplemented
from criadapt.testing.contract.helpers import capable_call, random_id
from criadapt.testing.plugin import SandboxFactory

RESOURCES = m.LinuxContainerResources(
    cpu_period=100_000, cpu_quota=200_000, cpu_shares=2048, memory_limit_in_bytes=512 * 1024**2
)


def test_update_a_ready_sandbox(
    cri: Client, sandbox_factory: SandboxFactory, backend_info: m.BackendInfo
) -> None:
    sandbox = sandbox_factory()
    capable_call(
        backend_info,
        "update_pod_sandbox_resources",
        lambda: cri.update_pod_sandbox_resources(pod_sandbox_id=sandbox.id, resources=RESOURCES),
    )


def test_update_an_unknown_sandbox(cri: Client) -> None:
    with pytest.raises((NotFound, Unimplemented)):
        cri.update_pod_sandbox_resources(pod_sandbox_id=random_id(), resources=RESOURCES)
