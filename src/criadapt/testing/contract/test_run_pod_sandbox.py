"""``RunPodSandbox``: the sandbox is READY on success (api.proto)."""

from __future__ import annotations

import pytest

from criadapt import models as m
from criadapt.client import Client
from criadapt.errors import CriError
from criadapt.testing.contract.helpers import unique_name
from criadapt.testing.plugin import SandboxFactory


def test_run_leaves_the_sandbox_ready(cri: Client, sandbox_factory: SandboxFactory) -> None:
    sandbox = sandbox_factory()
    status = cri.pod_sandbox_status(pod_sandbox_id=sandbox.id).status
    assert status is not None
    assert status.id == sandbox.id
    assert status.state == m.PodSandboxState.SANDBOX_READY
    assert status.created_at > 0
    assert status.metadata == sandbox.config.metadata


def test_every_sandbox_gets_its_own_id(sandbox_factory: SandboxFactory) -> None:
    ids = {sandbox_factory().id for _ in range(3)}
    assert len(ids) == 3


def test_default_runtime_handler(cri: Client, sandbox_factory: SandboxFactory) -> None:
    sandbox = sandbox_factory(runtime_handler="")
    status = cri.pod_sandbox_status(pod_sandbox_id=sandbox.id).status
    assert status is not None
    assert status.state == m.PodSandboxState.SANDBOX_READY


def test_unknown_runtime_handler_is_rejected(cri: Client, sandbox_factory: SandboxFactory) -> None:
    config = sandbox_factory.config()
    with pytest.raises(CriError):
        try:
            sandbox_factory(config, runtime_handler=unique_name("no-such-handler"))
        finally:
            # in case it was accepted: find it by its uid label and let the factory remove it
            uid = config.labels["io.kubernetes.pod.uid"]
            found = cri.list_pod_sandbox(
                filter=m.PodSandboxFilter(label_selector={"io.kubernetes.pod.uid": uid})
            )
            for item in found.items:
                sandbox_factory.track(item.id)


def test_sandbox_with_a_later_attempt(cri: Client, sandbox_factory: SandboxFactory) -> None:
    sandbox = sandbox_factory(attempt=1)
    status = cri.pod_sandbox_status(pod_sandbox_id=sandbox.id).status
    assert status is not None
    assert status.metadata is not None
    assert status.metadata.attempt == 1
