"""``PodSandboxStatus``: NOT_FOUND for unknown ids; metadata, state, labels and annotations."""

from __future__ import annotations

import json

import pytest

from criadapt import models as m
from criadapt.client import Client
from criadapt.errors import NotFound
from criadapt.testing.contract.helpers import assert_subset, random_id
from criadapt.testing.plugin import SandboxFactory

#: annotations a runtime might be tempted to "fix": they MUST come back unaltered
ODD_ANNOTATIONS = {
    "kubernetes.io/config.seen": "2024-01-01T00:00:00.000000000Z",
    "empty": "",
    "unicode": "ünïcödé ✓",
    "json": json.dumps({"a": [1, 2, {"b": None}]}),
    "spaces and/slashes": "  padded  ",
    "newline": "line one\nline two",
}


def test_unknown_sandbox_is_not_found(cri: Client) -> None:
    with pytest.raises(NotFound):
        cri.pod_sandbox_status(pod_sandbox_id=random_id())


def test_status_describes_the_sandbox(cri: Client, sandbox_factory: SandboxFactory) -> None:
    sandbox = sandbox_factory()
    response = cri.pod_sandbox_status(pod_sandbox_id=sandbox.id)
    status = response.status
    assert status is not None
    assert status.id == sandbox.id
    assert status.metadata == sandbox.config.metadata
    assert status.state == m.PodSandboxState.SANDBOX_READY
    assert status.created_at > 0
    assert status.runtime_handler == ""


def test_labels_and_annotations_are_returned_as_given(
    cri: Client, sandbox_factory: SandboxFactory
) -> None:
    labels = {"app": "contract", "example.com/tier": "backend", "empty": ""}
    sandbox = sandbox_factory(labels=labels, annotations=ODD_ANNOTATIONS)
    status = cri.pod_sandbox_status(pod_sandbox_id=sandbox.id).status
    assert status is not None
    assert_subset(sandbox.config.labels, status.labels, "sandbox labels")
    assert_subset(sandbox.config.annotations, status.annotations, "sandbox annotations")
    # api.proto: the annotations "MUST be identical" to those of the PodSandboxConfig
    assert dict(status.annotations) == dict(sandbox.config.annotations)


def test_status_of_a_stopped_sandbox(cri: Client, sandbox_factory: SandboxFactory) -> None:
    sandbox = sandbox_factory(annotations={"kept": "after stop"})
    cri.stop_pod_sandbox(pod_sandbox_id=sandbox.id)
    status = cri.pod_sandbox_status(pod_sandbox_id=sandbox.id).status
    assert status is not None
    assert status.state == m.PodSandboxState.SANDBOX_NOTREADY
    assert status.metadata == sandbox.config.metadata
    assert dict(status.annotations) == dict(sandbox.config.annotations)


def test_verbose_status(cri: Client, sandbox_factory: SandboxFactory) -> None:
    sandbox = sandbox_factory()
    response = cri.pod_sandbox_status(pod_sandbox_id=sandbox.id, verbose=True)
    assert response.status is not None
    assert response.status.id == sandbox.id


def test_status_after_remove_is_not_found(cri: Client, sandbox_factory: SandboxFactory) -> None:
    sandbox = sandbox_factory()
    cri.stop_pod_sandbox(pod_sandbox_id=sandbox.id)
    cri.remove_pod_sandbox(pod_sandbox_id=sandbox.id)
    with pytest.raises(NotFound):
        cri.pod_sandbox_status(pod_sandbox_id=sandbox.id)
