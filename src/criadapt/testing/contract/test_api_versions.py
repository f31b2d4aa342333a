"""CRI v1alpha2 on the same socket: the same calls and answers, minus the v1-only RPCs."""

from __future__ import annotations

from typing import Any

import pytest

from criadapt import models as m
from criadapt.client import Client
from criadapt.errors import CriError, NotFound, Unimplemented
from criadapt.rpcs import RPCS
from criadapt.testing.contract.helpers import random_id, raw_call, unchecked
from criadapt.testing.plugin import ContainerFactory, PulledImage, SandboxFactory

V1_ONLY = sorted(rpc.name for rpc in RPCS if "v1alpha2" not in rpc.versions)


def test_the_alpha_client_speaks_v1alpha2(cri_alpha: Client) -> None:
    assert cri_alpha.api_version == "v1alpha2"


def test_version_reports_the_api_version_spoken(cri: Client, cri_alpha: Client) -> None:
    assert cri.version(version="v1").runtime_api_version == "v1"
    alpha = cri_alpha.version(version="v1alpha2")
    assert alpha.runtime_api_version == "v1alpha2"
    assert alpha.runtime_name == cri.version().runtime_name


def test_sandbox_lifecycle_over_v1alpha2(
    cri_alpha: Client, sandbox_factory: SandboxFactory
) -> None:
    sandbox = sandbox_factory(client=cri_alpha, labels={"api": "v1alpha2"})
    status = cri_alpha.pod_sandbox_status(pod_sandbox_id=sandbox.id).status
    assert status is not None
    assert status.state == m.PodSandboxState.SANDBOX_READY
    assert status.metadata == sandbox.config.metadata
    assert dict(status.annotations) == dict(sandbox.config.annotations)

    listed = cri_alpha.list_pod_sandbox(filter=m.PodSandboxFilter(id=sandbox.id)).items
    assert [item.id for item in listed] == [sandbox.id]

    cri_alpha.stop_pod_sandbox(pod_sandbox_id=sandbox.id)
    status = cri_alpha.pod_sandbox_status(pod_sandbox_id=sandbox.id).status
    assert status is not None
    assert status.state == m.PodSandboxState.SANDBOX_NOTREADY

    cri_alpha.remove_pod_sandbox(pod_sandbox_id=sandbox.id)
    with pytest.raises(NotFound):
        cri_alpha.pod_sandbox_status(pod_sandbox_id=sandbox.id)


def test_container_lifecycle_over_v1alpha2(
    cri_alpha: Client, sandbox_factory: SandboxFactory, container_factory: ContainerFactory
) -> None:
    sandbox = sandbox_factory(client=cri_alpha)
    container = container_factory(sandbox, client=cri_alpha, start=True)
    status = cri_alpha.container_status(container_id=container.id).status
    assert status is not None
    assert status.state == m.ContainerState.CONTAINER_RUNNING
    assert status.metadata == container.config.metadata

    listed = cri_alpha.list_containers(filter=m.ContainerFilter(pod_sandbox_id=sandbox.id))
    assert [c.id for c in listed.containers] == [container.id]

    cri_alpha.stop_container(container_id=container.id, timeout=0)
    status = cri_alpha.container_status(container_id=container.id).status
    assert status is not None
    assert status.state == m.ContainerState.CONTAINER_EXITED

    cri_alpha.remove_container(container_id=container.id)
    with pytest.raises(NotFound):
        cri_alpha.container_status(container_id=container.id)


def test_objects_are_shared_between_versions(
    cri: Client, cri_alpha: Client, sandbox_factory: SandboxFactory
) -> None:
    from_v1 = sandbox_factory(client=cri)
    from_alpha = sandbox_factory(client=cri_alpha)
    alpha_status = cri_alpha.pod_sandbox_status(pod_sandbox_id=from_v1.id).status
    v1_status = cri.pod_sandbox_status(pod_sandbox_id=from_alpha.id).status
    assert alpha_status is not None and alpha_status.metadata == from_v1.config.metadata
    assert v1_status is not None and v1_status.metadata == from_alpha.config.metadata


def test_idempotent_calls_over_v1alpha2(cri_alpha: Client) -> None:
    cri_alpha.stop_pod_sandbox(pod_sandbox_id=random_id())
    cri_alpha.remove_pod_sandbox(pod_sandbox_id=random_id())
    cri_alpha.stop_container(container_id=random_id(), timeout=0)
    cri_alpha.remove_container(container_id=random_id())


def test_not_found_over_v1alpha2(cri_alpha: Client) -> None:
    with pytest.raises(NotFound):
        cri_alpha.pod_sandbox_status(pod_sandbox_id=random_id())
    with pytest.raises(NotFound):
        cri_alpha.container_status(container_id=random_id())


def test_images_over_v1alpha2(cri_alpha: Client, test_image: PulledImage) -> None:
    image = cri_alpha.image_status(image=m.ImageSpec(image=test_image.name)).image
    assert image is not None
    assert image.id in [i.id for i in cri_alpha.list_images().images]
    missing = cri_alpha.image_status(image=m.ImageSpec(image=f"{random_id()[:20]}:absent"))
    assert missing.image is None


def test_status_over_v1alpha2(cri_alpha: Client) -> None:
    status = cri_alpha.status().status
    assert status is not None
    assert {"RuntimeReady", "NetworkReady"} <= {c.type for c in status.conditions}


def test_the_client_refuses_v1_only_rpcs_on_v1alpha2(cri_alpha: Client) -> None:
    with pytest.raises(CriError, match="RuntimeConfig"):
        cri_alpha.runtime_config()


@pytest.mark.parametrize("rpc", V1_ONLY)
def test_v1_only_rpcs_are_unimplemented_on_v1alpha2(cri_endpoint: str, rpc: str) -> None:
    """Sent anyway, a v1-only RPC on the v1alpha2 service is UNIMPLEMENTED (no such method)."""
    request: Any = unchecked(next(r.request for r in RPCS if r.name == rpc))
    with pytest.raises(Unimplemented):
        raw_call(cri_endpoint, rpc, request, api_version="v1alpha2")
