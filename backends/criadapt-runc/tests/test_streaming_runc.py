"""Exec, attach and port-forward on real runc containers, through `criadapt serve`'s streaming
server, with a SPDY client as kubelet speaks it."""

from __future__ import annotations

import json
import socket
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from criadapt import errors
from criadapt import models as m
from criadapt.client import Client
from criadapt.streaming.spdy import (
    SpdyConnection,
    client_upgrade_request,
    read_http_response_head,
)
from criadapt.testing.serving import serve_subprocess
from criadapt_runc.testing import ctr_config, pod_config, run

PROTOCOLS = ["v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io"]
CONFIG = """
backend = "runc"
root = "{root}"
state = "{state}"
"""


@pytest.fixture(scope="module")
def serving(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    base = tmp_path_factory.mktemp("streaming")
    config = base / "criadapt.toml"
    config.write_text(CONFIG.format(root=base / "root", state=base / "state"))
    with (
        serve_subprocess(["--config", str(config)], base, start_timeout=30) as server,
        Client(server.endpoint, timeout=60) as cri,
    ):
        yield cri


def spdy_exec(url: str, *, stdin: bytes | None = None, stderr: bool = True) -> dict[str, bytes]:
    parts = urllib.parse.urlsplit(url)
    sock = socket.create_connection((parts.hostname or "", parts.port or 80), timeout=10)
    sock.sendall(client_upgrade_request(parts.path, parts.netloc, PROTOCOLS))
    status, headers = read_http_response_head(sock)
    assert status == 101, (status, headers)
    assert headers["x-stream-protocol-version"] == "v4.channel.k8s.io"
    conn = SpdyConnection(sock, server=False)
    kinds = ["error", "stdout"] + (["stderr"] if stderr else []) + (["stdin"] if stdin else [])
    streams = {kind: conn.open_stream({"streamType": kind}) for kind in kinds}
    for stream in streams.values():
        stream.wait_reply(10)
    out: dict[str, bytes] = {}

    def pump(kind: str) -> None:
        out[kind] = streams[kind].readall()

    outputs = [k for k in ("error", "stdout", "stderr") if k in streams]
    readers = [threading.Thread(target=pump, args=(k,)) for k in outputs]
    for reader in readers:
        reader.start()
    if stdin is not None:
        streams["stdin"].write(stdin)
        streams["stdin"].close()
    for reader in readers:
        reader.join(30)
    conn.close()
    return out


@pytest.fixture(scope="module")
def running(
    serving: Client, busybox_ref: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    cri = serving
    cri.pull_image(image=m.ImageSpec(image=busybox_ref))
    base = tmp_path_factory.mktemp("pods")
    pconf = pod_config(base, "streamed")
    pod = cri.run_pod_sandbox(config=pconf).pod_sandbox_id
    yield run(cri, pod, pconf, ctr_config("c", busybox_ref, ["sleep", "1000"]))
    cri.stop_pod_sandbox(pod_sandbox_id=pod)
    cri.remove_pod_sandbox(pod_sandbox_id=pod)


def test_exec_over_spdy_on_runc(serving: Client, running: str) -> None:
    url = serving.exec(
        container_id=running,
        cmd=["sh", "-c", "echo out; echo err >&2; exit 3"],
        stdout=True,
        stderr=True,
    ).url
    assert url.startswith("http://127.0.0.1:")
    out = spdy_exec(url)
    assert out["stdout"] == b"out\n" and out["stderr"] == b"err\n"
    status = json.loads(out["error"])
    assert status["status"] == "Failure" and status["reason"] == "NonZeroExitCode"
    assert status["details"]["causes"][0] == {"reason": "ExitCode", "message": "3"}


def test_exec_with_stdin_on_runc(serving: Client, running: str) -> None:
    url = serving.exec(container_id=running, cmd=["cat"], stdin=True, stdout=True).url
    out = spdy_exec(url, stdin=b"through the pod\n", stderr=False)
    assert out["stdout"] == b"through the pod\n"
    assert json.loads(out["error"])["status"] == "Success"


def test_streaming_validation_on_runc(serving: Client, running: str) -> None:
    with pytest.raises(errors.NotFound):
        serving.exec(container_id="0" * 64, cmd=["true"], stdout=True)
    url = serving.exec(container_id=running, cmd=["true"], stdout=True).url
    spdy_exec(url, stderr=False)
    # a used token is gone
    parts = urllib.parse.urlsplit(url)
    with socket.create_connection((parts.hostname or "", parts.port or 80), timeout=5) as sock:
        sock.sendall(client_upgrade_request(parts.path, parts.netloc, PROTOCOLS))
        status, _ = read_http_response_head(sock)
    assert status == 404


def test_port_forward_url_on_runc(serving: Client, running: str) -> None:
    status = serving.container_status(container_id=running).status
    assert status is not None
    pods = serving.list_pod_sandbox().items
    url = serving.port_forward(pod_sandbox_id=pods[0].id, port=[8080]).url
    assert "/portforward/" in url


def test_attach_url_on_runc(serving: Client, running: str, tmp_path: Path) -> None:
    url = serving.attach(container_id=running, stdout=True).url
    assert "/attach/" in url
