"""End to end: ``criadapt serve --backend=fake`` and the streaming URLs of its Exec, Attach and
PortForward answers, driven over SPDY/3.1 (criadapt's SPDY stack as the client, in client-go's
order) and WebSocket (the ``websockets`` package; those tests skip without it).

The throughput tests push 100 MB through the fake's ``cat`` and print MB/s; they assert
nothing about speed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from criadapt import errors
from criadapt import models as m
from criadapt.client import Client
from criadapt.streaming.spdy import (
    SpdyConnection,
    SpdyStream,
    client_upgrade_request,
    read_http_response_head,
)
from criadapt.testing.serving import serve_subprocess

START_TIMEOUT = 15.0
STOP_TIMEOUT = 15.0
MB = 1024 * 1024
THROUGHPUT_BYTES = 100 * MB
V4 = "v4.channel.k8s.io"
CLIENT_GO_PROTOCOLS = ["v5.channel.k8s.io", V4, "v3.channel.k8s.io", "v2.channel.k8s.io"]


# ---------------------------------------------------------------------------------------------
# the server


@contextlib.contextmanager
def serve(tmp: Path) -> Iterator[Client]:
    """``criadapt serve --backend=fake`` in a subprocess; a client of it."""
    args = ["--backend=fake", "--root", str(tmp / "root"), "--state", str(tmp / "state")]
    with (
        serve_subprocess(args, tmp, start_timeout=START_TIMEOUT, stop_timeout=STOP_TIMEOUT) as srv,
        Client(srv.endpoint) as client,
    ):
        yield client


class Pod:
    def __init__(self, cri: Client) -> None:
        self.cri = cri
        cri.pull_image(image=m.ImageSpec(image="busybox"))
        config = m.PodSandboxConfig(
            metadata=m.PodSandboxMetadata(name="stream", uid="stream-uid", namespace="ns")
        )
        self.sandbox_id = cri.run_pod_sandbox(config=config).pod_sandbox_id
        self.count = 0

    def container(self, *, tty: bool = False) -> str:
        self.count += 1
        config = m.ContainerConfig(
            metadata=m.ContainerMetadata(name=f"c{self.count}"),
            image=m.ImageSpec(image="busybox"),
            tty=tty,
            stdin=True,
        )
        container_id = self.cri.create_container(
            pod_sandbox_id=self.sandbox_id, config=config
        ).container_id
        self.cri.start_container(container_id=container_id)
        return container_id

    def exec_url(self, cmd: list[str], **flags: bool) -> str:
        container_id = self.container(tty=flags.get("tty", False))
        flags.setdefault("stdout", True)
        return self.cri.exec(container_id=container_id, cmd=cmd, **flags).url


@pytest.fixture(scope="module")
def pod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pod]:
    with serve(tmp_path_factory.mktemp("serve")) as cri:
        yield Pod(cri)


# ---------------------------------------------------------------------------------------------
# clients


def spdy_connect(url: str, protocols: list[str]) -> tuple[str, SpdyConnection]:
    parts = urllib.parse.urlsplit(url)
    sock = socket.create_connection((parts.hostname or "", parts.port or 80), timeout=10)
    sock.sendall(client_upgrade_request(parts.path, parts.netloc, protocols))
    status, headers = read_http_response_head(sock)
    assert status == 101, (status, headers)
    return headers["x-stream-protocol-version"], SpdyConnection(sock, server=False)


class SpdyExec:
    """client-go's remotecommand over SPDY: error, stdin, stdout, stderr, resize streams."""

    def __init__(
        self,
        url: str,
        *,
        stdin: bool = False,
        stderr: bool = False,
        tty: bool = False,
        keep: bool = True,
    ) -> None:
        """``keep=False`` counts stdout (in :attr:`counted`) instead of keeping it."""
        self.keep = keep
        self.counted = 0
        self.protocol, self.conn = spdy_connect(url, CLIENT_GO_PROTOCOLS)
        self.streams: dict[str, SpdyStream] = {}
        wanted = {"error": True, "stdin": stdin, "stdout": True, "stderr": stderr, "resize": tty}
        for kind, want in wanted.items():
            if want:
                self.streams[kind] = self.conn.open_stream({"streamType": kind})
                self.streams[kind].wait_reply(10)
        self.output = {kind: bytearray() for kind in ("stdout", "stderr", "error")}
        self.cond = threading.Condition()
        self.readers = [
            threading.Thread(target=self._pump, args=(kind,), daemon=True)
            for kind in self.output
            if kind in self.streams
        ]
        for reader in self.readers:
            reader.start()

    def _pump(self, kind: str) -> None:
        while chunk := self.streams[kind].read():
            if kind == "stdout" and not self.keep:
                self.counted += len(chunk)
                continue
            with self.cond:
                self.output[kind] += chunk
                self.cond.notify_all()

    def wait_for(self, kind: str, needle: bytes, timeout: float = 10.0) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: needle in self.output[kind], timeout), bytes(
                self.output[kind]
            )

    def finish(self) -> dict[str, bytes]:
        for reader in self.readers:
            reader.join(60)
            assert not reader.is_alive()
        self.conn.close()
        return {kind: bytes(data) for kind, data in self.output.items()}


def ws_connect(url: str, protocols: list[str]) -> Any:
    sync_client = pytest.importorskip("websockets.sync.client")
    return sync_client.connect(
        url.replace("http://", "ws://", 1),
        subprotocols=protocols,
        max_size=None,
        compression=None,
        open_timeout=10,
        close_timeout=5,
    )


def ws_collect(ws: Any) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    for message in ws:
        out[message[0]] = out.get(message[0], b"") + message[1:]
    return out


def success() -> dict[str, Any]:
    return {"metadata": {}, "status": "Success"}


# ---------------------------------------------------------------------------------------------
# exec and attach


def test_exec_over_spdy_reports_output_and_the_exit_code(pod: Pod) -> None:
    url = pod.exec_url(["sh", "-c", "echo out; echo err >&2; exit 42"], stderr=True)
    session = SpdyExec(url, stderr=True)
    assert session.protocol == V4
    result = session.finish()
    assert (result["stdout"], result["stderr"]) == (b"out\n", b"err\n")
    assert result["error"] == (
        b'{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit '
        b"code: error executing command [sh -c echo out; echo err \\u003e\\u00262; exit 42], "
        b'exit code 42","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode",'
        b'"message":"42"}]}}'
    )


def test_exec_over_websocket_v5_with_stdin_closed(pod: Pod) -> None:
    data = os.urandom(1_000_000)
    with ws_connect(pod.exec_url(["cat"], stdin=True), ["v5.channel.k8s.io"]) as ws:
        for offset in range(0, len(data), 32 * 1024):
            ws.send(b"\x00" + data[offset : offset + 32 * 1024])
        ws.send(bytes([255, 0]))
        out = ws_collect(ws)
    assert out[1] == data
    assert json.loads(out[3]) == success()


def test_interactive_tty_over_both_transports(pod: Pod) -> None:
    session = SpdyExec(pod.exec_url(["sh"], stdin=True, tty=True), stdin=True, tty=True)
    session.streams["resize"].write(b'{"Width":120,"Height":30}\n')
    deadline = time.monotonic() + 10
    while b"30 120" not in session.output["stdout"]:
        assert time.monotonic() < deadline
        session.streams["stdin"].write(b"stty size\r")
        time.sleep(0.05)
    session.streams["stdin"].write(b"exit 0\r")
    assert json.loads(session.finish()["error"]) == success()

    url = pod.exec_url(["sh"], stdin=True, tty=True)
    with ws_connect(url, ["v5.channel.k8s.io"]) as ws:
        ws.send(b'\x04{"Width":90,"Height":20}')
        seen = b""
        while b"20 90" not in seen:
            ws.send(b"\x00stty size\r")
            seen += ws.recv(timeout=10)[1:]
        ws.send(b"\x00exit 3\r")
        out = ws_collect(ws)
    assert json.loads(out[3])["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]


def test_attach_echoes(pod: Pod) -> None:
    url = pod.cri.attach(container_id=pod.container(), stdin=True, stdout=True).url
    session = SpdyExec(url, stdin=True)
    session.streams["stdin"].write(b"hello attach\n")
    session.wait_for("stdout", b"hello attach\n")
    session.streams["stdin"].close()
    assert json.loads(session.finish()["error"]) == success()


# ---------------------------------------------------------------------------------------------
# port-forward


def test_port_forward_over_spdy(pod: Pod) -> None:
    url = pod.cri.port_forward(pod_sandbox_id=pod.sandbox_id, port=[80]).url
    protocol, conn = spdy_connect(url, ["portforward.k8s.io"])
    assert protocol == "portforward.k8s.io"
    for request_id in range(3):  # three forwarded connections on one SPDY connection
        headers = {"port": "80", "requestID": str(request_id)}
        error = conn.open_stream({"streamType": "error", **headers})
        error.wait_reply(10)
        data = conn.open_stream({"streamType": "data", **headers})
        data.wait_reply(10)
        data.write(b"GET / HTTP/1.0\r\n\r\n")
        data.close()
        assert data.readall() == b"GET / HTTP/1.0\r\n\r\n"
        assert error.readall() == b""
    conn.close()


def test_port_forward_over_websocket_channels(pod: Pod) -> None:
    url = pod.cri.port_forward(pod_sandbox_id=pod.sandbox_id, port=[]).url
    with ws_connect(url + "?port=8080", ["v4.channel.k8s.io"]) as ws:
        port = struct.pack("<H", 8080)
        assert sorted([ws.recv(timeout=5), ws.recv(timeout=5)]) == [b"\x00" + port, b"\x01" + port]
        ws.send(b"\x00ping")
        assert ws.recv(timeout=5) == b"\x00ping"


# ---------------------------------------------------------------------------------------------
# tokens


def http_status(url: str) -> int:
    parts = urllib.parse.urlsplit(url)
    with socket.create_connection((parts.hostname or "", parts.port or 80), timeout=10) as sock:
        sock.sendall(f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode())
        return read_http_response_head(sock)[0]


def test_tokens_are_single_use_and_unknown_ones_404(pod: Pod) -> None:
    url = pod.exec_url(["true"])
    assert json.loads(SpdyExec(url).finish()["error"]) == success()
    assert http_status(url) == 404
    assert http_status(url[:-8] + "AAAAAAAA") == 404


def test_1001_outstanding_tokens_are_resource_exhausted(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    with serve(tmp_path_factory.mktemp("limit")) as cri:
        pod = Pod(cri)
        container_id = pod.container()
        urls = [
            cri.exec(container_id=container_id, cmd=["true"], stdout=True).url for _ in range(1000)
        ]
        assert len(set(urls)) == 1000
        with pytest.raises(errors.ResourceExhausted, match="maximum number of in-flight"):
            cri.exec(container_id=container_id, cmd=["true"], stdout=True)
        with pytest.raises(errors.ResourceExhausted):
            cri.port_forward(pod_sandbox_id=pod.sandbox_id, port=[80])
        assert json.loads(SpdyExec(urls[0]).finish()["error"]) == success()  # frees one
        cri.attach(container_id=container_id, stdout=True)


# ---------------------------------------------------------------------------------------------
# throughput


def report(capsys: pytest.CaptureFixture[str], what: str, seconds: float) -> None:
    with capsys.disabled():
        rate = THROUGHPUT_BYTES / MB / seconds
        print(f"\n{what}: {THROUGHPUT_BYTES // MB} MB in {seconds:.2f} s = {rate:.0f} MB/s")


def chunks(size: int) -> Iterator[bytes]:
    block = os.urandom(size)
    for _ in range(THROUGHPUT_BYTES // size):
        yield block


def test_throughput_exec_cat_over_spdy(pod: Pod, capsys: pytest.CaptureFixture[str]) -> None:
    session = SpdyExec(pod.exec_url(["cat"], stdin=True), stdin=True, keep=False)
    started = time.monotonic()
    for block in chunks(256 * 1024):
        session.streams["stdin"].write(block)
    session.streams["stdin"].close()
    result = session.finish()
    elapsed = time.monotonic() - started
    assert session.counted == THROUGHPUT_BYTES
    assert json.loads(result["error"]) == success()
    report(capsys, "exec cat over SPDY/3.1", elapsed)


def test_throughput_exec_cat_over_websocket(pod: Pod, capsys: pytest.CaptureFixture[str]) -> None:
    # websockets' sync client holds its protocol lock while a send blocks, which stops its
    # reader thread too: with an echo (the server waits for us to read stdout before it reads
    # more stdin) both ends would wait for each other. So at most WINDOW bytes are in flight.
    window = 1 * MB
    with ws_connect(pod.exec_url(["cat"], stdin=True), ["v5.channel.k8s.io"]) as ws:
        received = [0]
        status: list[bytes] = []
        progress = threading.Condition()

        def drain() -> None:
            for message in ws:
                if message[0] == 1:
                    with progress:
                        received[0] += len(message) - 1
                        progress.notify_all()
                elif message[0] == 3:
                    status.append(message[1:])

        started = time.monotonic()
        reader = threading.Thread(target=drain)
        reader.start()
        sent = 0
        for block in chunks(64 * 1024):
            with progress:
                floor = sent - window
                progress.wait_for(lambda: received[0] >= floor, 30)  # noqa: B023
            ws.send(b"\x00" + block)
            sent += len(block)
        ws.send(bytes([255, 0]))
        reader.join(120)
        elapsed = time.monotonic() - started
    assert received[0] == THROUGHPUT_BYTES
    assert [json.loads(s) for s in status] == [success()]
    report(capsys, "exec cat over WebSocket v5", elapsed)


# ---------------------------------------------------------------------------------------------
# kubectl (client-go) through a stand-in kube-apiserver, as kubelet proxies to the runtime

KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")


def _json_response(sock: socket.socket, code: int, body: object) -> None:
    raw = json.dumps(body).encode()
    reason = {200: "OK", 404: "Not Found"}[code]
    sock.sendall(
        f"HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(raw)}\r\nConnection: close\r\n\r\n".encode()
        + raw
    )


def _relay(client: socket.socket, upstream: socket.socket) -> None:
    def one(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    back = threading.Thread(target=one, args=(upstream, client), daemon=True)
    back.start()
    one(client, upstream)
    back.join(60)


class FakeApiServer:
    """Just enough kube-apiserver for ``kubectl exec|attach|port-forward``: discovery, one
    running pod ``p``, and its exec/attach/portforward requests, which it turns into CRI
    calls and then proxies byte for byte to the streaming URL (as kubelet does)."""

    DISCOVERY: dict[str, object] = {
        "/version": {"major": "1", "minor": "32", "gitVersion": "v1.32.0"},
        "/api": {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}
            ],
        },
        "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": []},
        "/api/v1": {
            "kind": "APIResourceList",
            "groupVersion": "v1",
            "resources": [
                {"name": "pods", "singularName": "pod", "namespaced": True, "kind": "Pod",
                 "verbs": ["get", "list"]},
                *(
                    {"name": f"pods/{sub}", "singularName": "", "namespaced": True,
                     "kind": kind, "verbs": ["create", "get"]}
                    for sub, kind in (
                        ("exec", "PodExecOptions"),
                        ("attach", "PodAttachOptions"),
                        ("portforward", "PodPortForwardOptions"),
                    )
                ),
            ],
        },
    }  # fmt: skip

    def __init__(self, pod: Pod) -> None:
        self.pod = pod
        self.container_id = pod.container()
        self.requests: list[tuple[str, str, str]] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.listener.close()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.listener.accept()
                threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _streaming_url(self, kind: str, query: dict[str, list[str]]) -> str:
        def flag(name: str) -> bool:
            return query.get(name, ["false"])[0] in ("true", "1")

        streams = {name: flag(name) for name in ("stdin", "stdout", "stderr", "tty")}
        if kind == "exec":
            return self.pod.cri.exec(
                container_id=self.container_id, cmd=query["command"], **streams
            ).url
        if kind == "attach":
            return self.pod.cri.attach(container_id=self.container_id, **streams).url
        ports = [int(p) for p in query.get("ports", [])]
        return self.pod.cri.port_forward(pod_sandbox_id=self.pod.sandbox_id, port=ports).url

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            buf = b""
            while b"\r\n\r\n" not in buf:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
            head, _, rest = buf.partition(b"\r\n\r\n")
            request_line, *headers = head.decode("latin-1").split("\r\n")
            method, target, version = request_line.split(" ")
            parts = urllib.parse.urlsplit(target)
            upgrade = next((h for h in headers if h.lower().startswith("upgrade:")), "")
            self.requests.append((method, parts.path, upgrade))
            if parts.path in self.DISCOVERY:
                _json_response(conn, 200, self.DISCOVERY[parts.path])
                return
            match = re.fullmatch(
                r"/api/v1/namespaces/([^/]+)/pods/p(?:/(exec|attach|portforward))?", parts.path
            )
            if match is None:
                _json_response(conn, 404, {"kind": "Status", "status": "Failure", "code": 404})
                return
            if match.group(2) is None:
                running = {"name": "c", "ready": True, "image": "busybox", "imageID": "x",
                           "restartCount": 0, "state": {"running": {}}}  # fmt: skip
                pod = {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": "p", "namespace": match.group(1), "uid": "u"},
                    "spec": {"containers": [{"name": "c", "image": "busybox", "stdin": True}]},
                    "status": {"phase": "Running", "containerStatuses": [running]},
                }
                _json_response(conn, 200, pod)
                return
            url = urllib.parse.urlsplit(
                self._streaming_url(match.group(2), urllib.parse.parse_qs(parts.query))
            )
            headers = [h for h in headers if not h.lower().startswith("host:")]
            headers.append(f"Host: {url.netloc}")
            forwarded = f"{method} {url.path}?{parts.query} {version}\r\n" + "\r\n".join(headers)
            with socket.create_connection((url.hostname or "", url.port or 80)) as upstream:
                upstream.sendall(forwarded.encode("latin-1") + b"\r\n\r\n" + rest)
                _relay(conn, upstream)


@pytest.fixture(scope="module")
def apiserver(pod: Pod) -> Iterator[FakeApiServer]:
    server = FakeApiServer(pod)
    yield server
    server.close()


TRANSPORTS = pytest.mark.parametrize("websocket", [True, False], ids=["websocket", "spdy"])


def kubectl(
    apiserver: FakeApiServer, websocket: bool, *args: str, **kwargs: Any
) -> subprocess.CompletedProcess[bytes]:
    assert KUBECTL is not None
    env = {
        **os.environ,
        "KUBECONFIG": "/dev/null",
        "KUBECTL_REMOTE_COMMAND_WEBSOCKETS": str(websocket).lower(),
        "KUBECTL_PORT_FORWARD_WEBSOCKETS": str(websocket).lower(),
    }
    command = [KUBECTL, "--server", apiserver.url, *args]
    return subprocess.run(command, check=False, env=env, capture_output=True, timeout=60, **kwargs)


@needs_kubectl
@TRANSPORTS
def test_kubectl_exec(apiserver: FakeApiServer, websocket: bool) -> None:
    result = kubectl(
        apiserver, websocket, "exec", "p", "--", "sh", "-c", "echo o; echo e >&2; exit 3"
    )
    assert (result.returncode, result.stdout) == (3, b"o\n")
    assert result.stderr == b"e\ncommand terminated with exit code 3\n"
    upgrade = apiserver.requests[-1][2].lower()
    assert upgrade == ("upgrade: websocket" if websocket else "upgrade: spdy/3.1")
    data = os.urandom(2_000_000)
    result = kubectl(apiserver, websocket, "exec", "-i", "p", "--", "cat", input=data)
    assert result.returncode == 0, result.stderr
    assert result.stdout == data


@needs_kubectl
@TRANSPORTS
def test_kubectl_attach(apiserver: FakeApiServer, websocket: bool) -> None:
    result = kubectl(apiserver, websocket, "attach", "-i", "p", input=b"attached\n")
    assert (result.returncode, result.stdout) == (0, b"attached\n"), result.stderr


@needs_kubectl
@TRANSPORTS
def test_kubectl_exec_tty_and_resize(apiserver: FakeApiServer, websocket: bool) -> None:
    import fcntl
    import pty
    import select
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 111, 0, 0))
    env = {
        **os.environ,
        "KUBECONFIG": "/dev/null",
        "KUBECTL_REMOTE_COMMAND_WEBSOCKETS": str(websocket).lower(),
    }
    assert KUBECTL is not None
    proc = subprocess.Popen(
        [KUBECTL, "--server", apiserver.url, "exec", "-it", "p", "--", "sh"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        start_new_session=True,
    )
    os.close(slave)
    seen = bytearray()

    def read_until(needle: bytes) -> None:
        deadline = time.monotonic() + 15
        while needle not in seen:
            assert time.monotonic() < deadline, bytes(seen)
            if select.select([master], [], [], 0.2)[0]:
                seen.extend(os.read(master, 65536))

    try:
        read_until(b"# ")
        os.write(master, b"stty size\r")
        read_until(b"stty size\r\n33 111\r\n# ")  # the initial size kubectl sent
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
        proc.send_signal(signal.SIGWINCH)
        deadline = time.monotonic() + 15
        while b"50 160" not in seen:
            assert time.monotonic() < deadline, bytes(seen)
            os.write(master, b"stty size\r")
            time.sleep(0.2)
            while select.select([master], [], [], 0.1)[0]:
                seen.extend(os.read(master, 65536))
        os.write(master, b"exit 4\r")
        assert proc.wait(timeout=20) == 4
        with contextlib.suppress(OSError):
            read_until(b"command terminated with exit code 4")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


@needs_kubectl
@TRANSPORTS
def test_kubectl_port_forward(apiserver: FakeApiServer, websocket: bool) -> None:
    assert KUBECTL is not None
    env = {
        **os.environ,
        "KUBECONFIG": "/dev/null",
        "KUBECTL_PORT_FORWARD_WEBSOCKETS": str(websocket).lower(),
    }
    proc = subprocess.Popen(
        [KUBECTL, "--server", apiserver.url, "port-forward", "p", ":8080"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        match = re.search(r"127\.0\.0\.1:(\d+) -> 8080", line)
        assert match, line
        for _ in range(3):  # three connections over the one forwarding session
            with socket.create_connection(("127.0.0.1", int(match.group(1))), timeout=15) as conn:
                payload = os.urandom(300_000)
                conn.sendall(payload)
                echoed = b""
                while len(echoed) < len(payload) and (chunk := conn.recv(65536)):
                    echoed += chunk
                assert echoed == payload
        upgrade = apiserver.requests[-1][2].lower()
        assert upgrade == ("upgrade: websocket" if websocket else "upgrade: spdy/3.1")
    finally:
        proc.terminate()
        proc.communicate(timeout=15)
