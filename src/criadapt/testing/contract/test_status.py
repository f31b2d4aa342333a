"""``Status``: the RuntimeReady and NetworkReady conditions kubelet needs."""

from __future__ import annotations

from criadapt.client import Client

REQUIRED_CONDITIONS = ("RuntimeReady", "NetworkReady")


def test_status_reports_the_required_conditions(cri: Client) -> None:
    status = cri.status().status
    assert status is not None, "StatusResponse.status is missing"
    types = [condition.type for condition in status.conditions]
    for required in REQUIRED_CONDITIONS:
        assert required in types, f"condition {required} missing from {types}"
    assert len(types) == len(set(types)), f"duplicate condition types: {types}"


def test_runtime_is_ready(cri: Client) -> None:
    status = cri.status().status
    assert status is not None
    runtime = next(c for c in status.conditions if c.type == "RuntimeReady")
    assert runtime.status, f"RuntimeReady is false: {runtime.reason}: {runtime.message}"


def test_unmet_conditions_say_why(cri: Client) -> None:
    status = cri.status().status
    assert status is not None
    for condition in status.conditions:
        if not condition.status:
            assert condition.reason, f"{condition.type} is false without a reason"


def test_verbose_status(cri: Client) -> None:
    response = cri.status(verbose=True)
    assert response.status is not None


def test_runtime_handlers_are_unique(cri: Client) -> None:
    names = [handler.name for handler in cri.status().runtime_handlers]
    assert len(names) == len(set(names)), f"duplicate runtime handlers: {names}"
