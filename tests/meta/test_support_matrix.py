"""docs/support.md has a row per RPC, and its fake column matches the fake backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from criadapt import errors
from criadapt import models as m
from criadapt.call import CallContext
from criadapt.plugin import check_backend, get_plugin_manager
from criadapt.rpcs import RPCS
from criadapt.streaming import server as streaming
from criadapt.testing import fake

DOC = Path(__file__).resolve().parents[2] / "docs" / "support.md"


def rows() -> dict[str, list[str]]:
    table = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 5 and cells[0] in {r.name for r in RPCS}:
            table[cells[0]] = cells
    return table


def test_every_rpc_has_a_row_with_its_versions() -> None:
    table = rows()
    for rpc in RPCS:
        assert rpc.name in table, rpc.name
        versions = "v1, v1alpha2" if "v1alpha2" in rpc.versions else "v1 only"
        assert table[rpc.name][1:3] == [rpc.service, versions]


@pytest.mark.parametrize("name", ["Exec", "Attach", "PortForward"])
def test_fake_streaming_rows_match_behaviour(name: str) -> None:
    """A URL while a streaming server runs (as under ``criadapt serve``), else UNIMPLEMENTED."""
    assert rows()[name][3] == "✔"
    assert rows()[name][4] == "✔"  # runc: checked by backends/criadapt-runc/tests
    pm = get_plugin_manager()
    fake.criadapt_configure(config=None, pluginmanager=pm)
    try:
        cri = pm.hook
        pod = cri.criadapt_run_pod_sandbox(
            config=m.PodSandboxConfig(
                metadata=m.PodSandboxMetadata(name=name, uid=name, namespace="ns")
            ),
            runtime_handler="",
            call=CallContext(rpc="RunPodSandbox"),
        ).pod_sandbox_id
        cri.criadapt_pull_image(
            image=m.ImageSpec(image="busybox"),
            auth=None,
            sandbox_config=None,
            call=CallContext(rpc="PullImage"),
        )
        container = cri.criadapt_create_container(
            pod_sandbox_id=pod,
            config=m.ContainerConfig(
                metadata=m.ContainerMetadata(name="c"), image=m.ImageSpec(image="busybox")
            ),
            sandbox_config=None,
            call=CallContext(rpc="CreateContainer"),
        ).container_id
        cri.criadapt_start_container(container_id=container, call=CallContext(rpc="StartContainer"))
        request = {
            "Exec": dict(
                container_id=container,
                cmd=["sh"],
                tty=False,
                stdin=False,
                stdout=True,
                stderr=False,
            ),
            "Attach": dict(
                container_id=container, tty=False, stdin=False, stdout=True, stderr=False
            ),
            "PortForward": dict(pod_sandbox_id=pod, port=[80]),
        }[name]
        hook = getattr(cri, f"criadapt_{'port_forward' if name == 'PortForward' else name.lower()}")
        with pytest.raises(errors.Unimplemented):
            hook(**request, call=CallContext(rpc=name))
        with streaming.StreamingServer(pm) as server:
            streaming.set_current(server)
            try:
                response = hook(**request, call=CallContext(rpc=name))
            finally:
                streaming.set_current(None)
        assert response.url.startswith(f"{server.base_url}/{name.lower()}/")
    finally:
        fake.criadapt_unconfigure(config=None)


def test_fake_column_lists_every_rpc_as_implemented() -> None:
    pm = get_plugin_manager()
    fake.criadapt_configure(config=None, pluginmanager=pm)
    try:
        assert check_backend(pm) == []
    finally:
        fake.criadapt_unconfigure(config=None)
    for name, cells in rows().items():
        assert cells[3] == "✔", name
