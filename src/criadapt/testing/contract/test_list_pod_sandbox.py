"""``ListPodSandbox``: every field, and the filters (id, id prefix, state, labels; ANDed)."""

from __future__ import annotations

import uuid
from typing import Any

from criadapt import models as m
from criadapt.client import Client
from criadapt.testing.contract.helpers import assert_subset, random_id
from criadapt.testing.plugin import Sandbox, SandboxFactory

READY = m.PodSandboxStateValue(state=m.PodSandboxState.SANDBOX_READY)
NOTREADY = m.PodSandboxStateValue(state=m.PodSandboxState.SANDBOX_NOTREADY)


def listed_ids(cri: Client, **filter_fields: Any) -> list[str]:
    response = cri.list_pod_sandbox(filter=m.PodSandboxFilter(**filter_fields))
    return [item.id for item in response.items]


def test_list_reports_the_sandbox(cri: Client, sandbox_factory: SandboxFactory) -> None:
    sandbox = sandbox_factory(labels={"app": "list"}, annotations={"note": "listed"})
    items = [item for item in cri.list_pod_sandbox().items if item.id == sandbox.id]
    assert len(items) == 1, f"sandbox {sandbox.id} listed {len(items)} times"
    item = items[0]
    assert item.metadata == sandbox.config.metadata
    assert item.state == m.PodSandboxState.SANDBOX_READY
    assert item.created_at > 0
    assert_subset(sandbox.config.labels, item.labels, "listed sandbox labels")
    assert dict(item.annotations) == dict(sandbox.config.annotations)
    assert item.runtime_handler == ""


def test_filter_by_id(cri: Client, sandbox_factory: SandboxFactory) -> None:
    one, _other = sandbox_factory(), sandbox_factory()
    assert listed_ids(cri, id=one.id) == [one.id]


def test_filter_by_id_prefix(cri: Client, sandbox_factory: SandboxFactory) -> None:
    one, _other = sandbox_factory(), sandbox_factory()
    prefix = one.id[: max(8, len(one.id) // 2)]
    ids = listed_ids(cri, id=prefix)
    assert one.id in ids, f"no sandbox listed for the id prefix {prefix!r}"
    assert all(found.startswith(prefix) for found in ids), ids


def test_filter_by_unknown_id_lists_nothing(cri: Client, sandbox_factory: SandboxFactory) -> None:
    sandbox_factory()
    assert listed_ids(cri, id=random_id()) == []


def test_filter_by_state(cri: Client, sandbox_factory: SandboxFactory) -> None:
    ready, stopped = sandbox_factory(), sandbox_factory()
    cri.stop_pod_sandbox(pod_sandbox_id=stopped.id)
    ready_ids, notready_ids = listed_ids(cri, state=READY), listed_ids(cri, state=NOTREADY)
    assert ready.id in ready_ids and stopped.id not in ready_ids
    assert stopped.id in notready_ids and ready.id not in notready_ids


def test_filter_by_label_selector(cri: Client, sandbox_factory: SandboxFactory) -> None:
    run = uuid.uuid4().hex
    front = sandbox_factory(labels={"run": run, "tier": "front"})
    back = sandbox_factory(labels={"run": run, "tier": "back"})
    sandbox_factory(labels={"run": "other", "tier": "front"})
    assert sorted(listed_ids(cri, label_selector={"run": run})) == sorted([front.id, back.id])
    assert listed_ids(cri, label_selector={"run": run, "tier": "front"}) == [front.id]
    assert listed_ids(cri, label_selector={"run": run, "tier": "middle"}) == []
    assert listed_ids(cri, label_selector={"run": run, "missing-key": "x"}) == []


def test_filters_are_anded(cri: Client, sandbox_factory: SandboxFactory) -> None:
    run = uuid.uuid4().hex
    sandbox: Sandbox = sandbox_factory(labels={"run": run})
    assert listed_ids(cri, id=sandbox.id, state=READY, label_selector={"run": run}) == [sandbox.id]
    assert listed_ids(cri, id=sandbox.id, state=NOTREADY) == []
    assert listed_ids(cri, id=sandbox.id, label_selector={"run": "other"}) == []


def test_removed_sandbox_is_not_listed(cri: Client, sandbox_factory: SandboxFactory) -> None:
    sandbox = sandbox_factory()
    cri.stop_pod_sandbox(pod_sandbox_id=sandbox.id)
    cri.remove_pod_sandbox(pod_sandbox_id=sandbox.id)
    assert sandbox.id not in [item.id for item in cri.list_pod_sandbox().items]
    assert listed_ids(cri, id=sandbox.id) == []
