"""End to end: ``criadapt serve --backend=fake`` answered to a client criadapt did not write.

The client (``cri_api_client.py``) uses only the stubs of the PyPI package
``container-runtime-interface-api`` and grpc, and runs in a subprocess: its generated modules
register the same protobuf symbols as criadapt's, so they never share a process with criadapt's
``_proto``/``wire``/``client``/``server`` modules. This module imports neither.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from criadapt.testing.serving import ServeProcess, serve_subprocess

CLIENT = Path(__file__).with_name("cri_api_client.py")
VERSIONS = ["v1", "v1alpha2"]
START_TIMEOUT = 10.0
STOP_TIMEOUT = 15.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    tmp = tmp_path_factory.mktemp("serve")
    args = ["--backend=fake", "--root", str(tmp / "root"), "--state", str(tmp / "state")]
    with serve_subprocess(args, tmp, start_timeout=START_TIMEOUT, stop_timeout=STOP_TIMEOUT) as srv:
        yield srv


def run_client(server: ServeProcess, version: str, scenario: str) -> dict[str, dict[str, Any]]:
    """Run a scenario of the cri_api client in a subprocess; its steps by name."""
    result = subprocess.run(
        [sys.executable, str(CLIENT), str(server.socket_path), version, scenario],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert result.returncode == 0, (
        f"client failed:\n{result.stderr}\n--- server stderr ---\n{server.stderr()}"
    )
    steps: dict[str, dict[str, Any]] = json.loads(result.stdout)
    return steps


@pytest.fixture(scope="module")
def lifecycle_runs(server: ServeProcess) -> Callable[[str], dict[str, dict[str, Any]]]:
    """The lifecycle scenario, run once per API version and shared by the tests below."""
    cache: dict[str, dict[str, dict[str, Any]]] = {}

    def get(version: str) -> dict[str, dict[str, Any]]:
        if version not in cache:
            cache[version] = run_client(server, version, "lifecycle")
        return cache[version]

    return get


@pytest.fixture(params=VERSIONS)
def version(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def steps(
    lifecycle_runs: Callable[[str], dict[str, dict[str, Any]]], version: str
) -> dict[str, dict[str, Any]]:
    return lifecycle_runs(version)


def codes(steps: dict[str, dict[str, Any]], *names: str) -> dict[str, str]:
    return {name: steps[name]["code"] for name in names}


def test_version(steps: dict[str, dict[str, Any]], version: str) -> None:
    got = steps["version"]
    assert got["code"] == "OK", got
    assert got["runtime_api_version"] == version
    assert got["version"] == "0.1.0"
    assert got["runtime_name"]


def test_run_and_list_sandboxes(steps: dict[str, dict[str, Any]]) -> None:
    assert codes(steps, "run_a", "run_b", "list_by_labels", "list_by_run_label", "list_by_id") == {
        "run_a": "OK",
        "run_b": "OK",
        "list_by_labels": "OK",
        "list_by_run_label": "OK",
        "list_by_id": "OK",
    }, steps
    id_a, id_b = steps["run_a"]["id"], steps["run_b"]["id"]
    assert id_a and id_b and id_a != id_b
    assert steps["list_by_labels"]["ids"] == [id_b]
    assert sorted(steps["list_by_run_label"]["ids"]) == sorted([id_a, id_b])
    assert steps["list_by_id"]["ids"] == [id_a]
    listed = steps["list_by_id"]["items"][0]
    assert listed["state"] == "SANDBOX_READY"
    assert listed["labels"] == steps["config_a"]["labels"]
    assert listed["metadata"] == steps["config_a"]["metadata"]


def test_sandbox_status(steps: dict[str, dict[str, Any]]) -> None:
    status = steps["status_a"]
    assert status["code"] == "OK", status
    assert status["id"] == steps["run_a"]["id"]
    assert status["state"] == "SANDBOX_READY"
    assert status["labels"] == steps["config_a"]["labels"]
    assert status["annotations"] == steps["config_a"]["annotations"]
    assert status["metadata"] == steps["config_a"]["metadata"]


def test_stop_and_remove_sandbox_are_idempotent(steps: dict[str, dict[str, Any]]) -> None:
    assert codes(
        steps,
        "stop_a_1",
        "stop_a_2",
        "status_a_stopped",
        "remove_a_1",
        "remove_a_2",
        "status_a_removed",
        "stop_unknown",
        "remove_unknown",
    ) == {
        "stop_a_1": "OK",
        "stop_a_2": "OK",
        "status_a_stopped": "OK",
        "remove_a_1": "OK",
        "remove_a_2": "OK",
        "status_a_removed": "NOT_FOUND",
        "stop_unknown": "OK",
        "remove_unknown": "OK",
    }, steps
    assert steps["status_a_stopped"]["state"] == "SANDBOX_NOTREADY"


def test_error_codes(steps: dict[str, dict[str, Any]]) -> None:
    assert codes(steps, "create_in_unknown_sandbox", "run_without_metadata") == {
        "create_in_unknown_sandbox": "NOT_FOUND",
        "run_without_metadata": "INVALID_ARGUMENT",
    }, steps
    assert "metadata" in steps["run_without_metadata"].get("details", "")


def test_runtime_status(steps: dict[str, dict[str, Any]]) -> None:
    status = steps["status"]
    assert status["code"] == "OK", status
    assert status["conditions"].get("RuntimeReady") is True
    assert status["conditions"].get("NetworkReady") is True


def test_images(steps: dict[str, dict[str, Any]]) -> None:
    assert codes(
        steps,
        "pull",
        "image_status",
        "list_images",
        "remove_image_1",
        "remove_image_2",
        "image_status_removed",
        "image_status_missing",
    ) == {
        "pull": "OK",
        "image_status": "OK",
        "list_images": "OK",
        "remove_image_1": "OK",
        "remove_image_2": "OK",
        "image_status_removed": "OK",
        "image_status_missing": "OK",
    }, steps
    assert steps["pull"]["image_ref"]
    assert steps["image_status"]["has_image"] is True
    image_id = steps["image_status"]["id"]
    assert image_id
    assert image_id in [image["id"] for image in steps["list_images"]["images"]]
    assert steps["image_status_removed"]["has_image"] is False
    assert steps["image_status_missing"]["has_image"] is False


def test_container_lifecycle(steps: dict[str, dict[str, Any]]) -> None:
    assert codes(
        steps,
        "c_pull",
        "c_run_sandbox",
        "c_create",
        "c_status_created",
        "c_start",
        "c_status_running",
        "c_list",
        "c_stop_1",
        "c_stop_2",
        "c_status_exited",
        "c_remove_1",
        "c_remove_2",
        "c_status_removed",
        "cleanup_stop_b",
        "cleanup_remove_b",
        "cleanup_stop_c",
        "cleanup_remove_c",
    ) == {
        "c_pull": "OK",
        "c_run_sandbox": "OK",
        "c_create": "OK",
        "c_status_created": "OK",
        "c_start": "OK",
        "c_status_running": "OK",
        "c_list": "OK",
        "c_stop_1": "OK",
        "c_stop_2": "OK",
        "c_status_exited": "OK",
        "c_remove_1": "OK",
        "c_remove_2": "OK",
        "c_status_removed": "NOT_FOUND",
        "cleanup_stop_b": "OK",
        "cleanup_remove_b": "OK",
        "cleanup_stop_c": "OK",
        "cleanup_remove_c": "OK",
    }, steps
    cid = steps["c_create"]["id"]
    assert cid
    assert steps["c_status_created"]["state"] == "CONTAINER_CREATED"
    assert steps["c_status_running"]["state"] == "CONTAINER_RUNNING"
    assert steps["c_status_running"]["id"] == cid
    assert steps["c_status_running"]["name"] == "main"
    assert steps["c_list"]["ids"] == [cid]
    assert steps["c_status_exited"]["state"] == "CONTAINER_EXITED"


@pytest.mark.parametrize(("api", "expected"), [("v1", "OK"), ("v1alpha2", "UNIMPLEMENTED")])
def test_v1_only_rpc(server: ServeProcess, api: str, expected: str) -> None:
    steps = run_client(server, api, "runtime_config")
    assert steps["runtime_config"]["code"] == expected, steps


def test_garbage_bytes_are_invalid_argument(server: ServeProcess, version: str) -> None:
    steps = run_client(server, version, "garbage")
    assert steps["garbage"]["code"] == "INVALID_ARGUMENT", steps
    assert steps["version_after"]["code"] == "OK", steps
    assert steps["version_after"]["runtime_api_version"] == version
