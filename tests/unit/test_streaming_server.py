"""criadapt.streaming.server in process, with the fake backend behind it.

The SPDY client is criadapt's own SPDY/3.1 stack used as a client, driven the way client-go's
``remotecommand`` (v1-v4) and ``portforward`` clients drive it; the WebSocket client is the
``websockets`` package (tests needing it skip without it), plus raw frames for framing edge
cases the library would never send.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import http.client
import json
import os
import socket
import struct
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import attrs
import pluggy
import pytest

from criadapt import errors, hookimpl
from criadapt import models as m
from criadapt.call import CallContext
from criadapt.plugin import get_plugin_manager
from criadapt.rpcs import BY_NAME
from criadapt.streaming import StreamIO
from criadapt.streaming import server as streaming
from criadapt.streaming.spdy import (
    SpdyConnection,
    SpdyStream,
    client_upgrade_request,
    read_http_response_head,
)
from criadapt.testing import fake

V4, V3, V2, V1 = (
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
)
#: what kubectl and client-go's NewSPDYExecutor offer
CLIENT_GO_PROTOCOLS = ["v5.channel.k8s.io", V4, V3, V2, V1]


# ---------------------------------------------------------------------------------------------
# fixtures and helpers


def rpc(pm: pluggy.PluginManager, name: str, **fields: Any) -> Any:
    spec = BY_NAME[name]
    request = spec.request(**fields)
    kwargs = {field.name: getattr(request, field.name) for field in attrs.fields(spec.request)}
    return getattr(pm.hook, spec.hook)(**kwargs, call=CallContext(rpc=name))


@pytest.fixture
def pm() -> Iterator[pluggy.PluginManager]:
    manager = get_plugin_manager()
    fake.criadapt_configure(config=None, pluginmanager=manager)
    yield manager
    fake.criadapt_unconfigure(config=None)


@pytest.fixture
def server(pm: pluggy.PluginManager) -> Iterator[streaming.StreamingServer]:
    srv = streaming.StreamingServer(pm).start()
    previous = streaming.set_current(srv)
    try:
        yield srv
    finally:
        streaming.set_current(previous)
        srv.stop()


@attrs.define
class Pod:
    pm: pluggy.PluginManager
    sandbox_id: str
    counter: int = 0

    def container(self, *, tty: bool = False, user: int | None = None) -> str:
        self.counter += 1
        security = (
            m.LinuxContainerSecurityContext(run_as_user=m.Int64Value(value=user))
            if user is not None
            else None
        )
        config = m.ContainerConfig(
            metadata=m.ContainerMetadata(name=f"c{self.counter}"),
            image=m.ImageSpec(image="busybox"),
            tty=tty,
            stdin=True,
            linux=m.LinuxContainerConfig(security_context=security) if security else None,
        )
        cid = rpc(self.pm, "CreateContainer", pod_sandbox_id=self.sandbox_id, config=config)
        rpc(self.pm, "StartContainer", container_id=cid.container_id)
        return str(cid.container_id)

    def exec_url(self, cmd: list[str], **flags: bool) -> str:
        container_id = self.container(tty=flags.get("tty", False))
        flags.setdefault("stdout", True)
        return str(rpc(self.pm, "Exec", container_id=container_id, cmd=cmd, **flags).url)


@pytest.fixture
def pod(pm: pluggy.PluginManager, server: streaming.StreamingServer) -> Pod:
    rpc(pm, "PullImage", image=m.ImageSpec(image="busybox"))
    config = m.PodSandboxConfig(
        metadata=m.PodSandboxMetadata(name="pod", uid="uid", namespace="ns"), hostname="pod"
    )
    sandbox_id = rpc(pm, "RunPodSandbox", config=config, runtime_handler="").pod_sandbox_id
    return Pod(pm, sandbox_id)


def http_request(
    url: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, http.client.HTTPMessage, bytes]:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        conn.request(
            method, parts.path + (f"?{parts.query}" if parts.query else ""), headers=headers or {}
        )
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def spdy_upgrade(url: str, protocols: list[str]) -> tuple[int, dict[str, str], socket.socket]:
    parts = urllib.parse.urlsplit(url)
    sock = socket.create_connection((parts.hostname or "", parts.port or 80), timeout=10)
    sock.sendall(client_upgrade_request(parts.path, parts.netloc, protocols))
    status, headers = read_http_response_head(sock)
    return status, headers, sock


class SpdySession:
    """A client-go style remotecommand session: the streams, opened in client-go's order."""

    def __init__(
        self,
        url: str,
        *,
        protocols: list[str] | None = None,
        stdin: bool = False,
        stdout: bool = True,
        stderr: bool = False,
        tty: bool = False,
    ) -> None:
        status, headers, sock = spdy_upgrade(url, protocols or CLIENT_GO_PROTOCOLS)
        assert status == 101, (status, headers)
        self.protocol = headers["x-stream-protocol-version"]
        self.conn = SpdyConnection(sock, server=False)
        self.streams: dict[str, SpdyStream] = {}
        wanted = {"error": True, "stdin": stdin, "stdout": stdout, "stderr": stderr}
        wanted["resize"] = tty and self.protocol in (V3, V4)
        for kind, want in wanted.items():
            if want:
                stream = self.conn.open_stream({"streamType": kind})
                stream.wait_reply(10)
                self.streams[kind] = stream
        self.output: dict[str, bytearray] = {k: bytearray() for k in ("stdout", "stderr", "error")}
        self._cond = threading.Condition()
        self._readers = [
            threading.Thread(target=self._pump, args=(kind,), daemon=True)
            for kind in ("stdout", "stderr", "error")
            if kind in self.streams
        ]
        for reader in self._readers:
            reader.start()

    def _pump(self, kind: str) -> None:
        while chunk := self.streams[kind].read():
            with self._cond:
                self.output[kind] += chunk
                self._cond.notify_all()

    def send(self, data: bytes) -> None:
        self.streams["stdin"].write(data)

    def close_stdin(self) -> None:
        self.streams["stdin"].close()

    def resize(self, width: int, height: int) -> None:
        self.streams["resize"].write(
            json.dumps({"Width": width, "Height": height}).encode() + b"\n"
        )

    def wait_for(self, kind: str, needle: bytes, timeout: float = 10.0) -> bytes:
        with self._cond:
            ok = self._cond.wait_for(lambda: needle in self.output[kind], timeout)
            assert ok, f"{needle!r} not in {kind}: {bytes(self.output[kind])!r}"
            return bytes(self.output[kind])

    def finish(self, timeout: float = 20.0) -> dict[str, bytes]:
        for reader in self._readers:
            reader.join(timeout)
            assert not reader.is_alive(), "a stream did not end"
        self.conn.close()
        return {k: bytes(v) for k, v in self.output.items()}


def spdy_exec(url: str, stdin: bytes | None = None, **kwargs: Any) -> dict[str, bytes]:
    session = SpdySession(url, stdin=stdin is not None, **kwargs)
    if stdin is not None:
        session.send(stdin)
        session.close_stdin()
    return session.finish()


def ws_connect(url: str, protocols: list[str] | None) -> Any:
    sync_client = pytest.importorskip("websockets.sync.client")
    return sync_client.connect(
        url.replace("http://", "ws://", 1),
        subprotocols=protocols,
        max_size=None,
        compression=None,
        open_timeout=10,
        close_timeout=5,
    )


def decode_ws(message: str | bytes) -> tuple[int, bytes]:
    if isinstance(message, str):
        return int(message[0]), base64.b64decode(message[1:])
    return message[0], message[1:]


def ws_messages(ws: Any) -> list[tuple[int, bytes]]:
    """Every channel message until the server closes the connection."""
    return [decode_ws(message) for message in ws]


def joined(messages: list[tuple[int, bytes]]) -> dict[int, bytes]:
    out: dict[int, bytes] = collections.defaultdict(bytes)
    for channel, data in messages:
        out[channel] += data
    return out


def success() -> bytes:
    return b'{"metadata":{},"status":"Success"}'


def exit_failure(cmd: str, code: int) -> bytes:
    message = (
        f"command terminated with non-zero exit code: error executing command [{cmd}], "
        f"exit code {code}"
    )
    text = json.dumps(
        {
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
        },
        separators=(",", ":"),
    )
    # Go's encoding/json escapes HTML characters
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode()


def settle(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


# ---------------------------------------------------------------------------------------------
# status JSON, resize decoding, tokens


def test_status_json_is_what_go_marshals() -> None:
    assert streaming.encode_status(streaming.success_status(), v4=True) == success()
    assert streaming.encode_status(streaming.success_status(), v4=False) == b""
    status = streaming.exit_code_status(["sh", "-c", "exit 3"], 3)
    assert streaming.encode_status(status, v4=True) == exit_failure("sh -c exit 3", 3)
    assert streaming.encode_status(status, v4=False) == (
        b"command terminated with non-zero exit code: error executing command "
        b"[sh -c exit 3], exit code 3"
    )
    internal = streaming.encode_status(streaming.internal_error_status("a <b> & c"), v4=True)
    assert internal == (
        b'{"metadata":{},"status":"Failure","message":"Internal error occurred: '
        b'a \\u003cb\\u003e \\u0026 c","reason":"InternalError","details":{"causes":'
        b'[{"message":"a \\u003cb\\u003e \\u0026 c"}]},"code":500}'
    )


def test_resize_stream_decodes_like_go() -> None:
    resizes = streaming._Resizes()
    resizes.feed(b'{"Width":80,"Height":24}\n{"wid')
    resizes.feed(b'th":100,"HEIGHT":40}  {"Width":1}{"Height":2,"Other":"x"}')
    resizes.feed(b'{"Width":"wide"}{"Width":5,"Height":5}')  # Go's decoder stops at the error
    resizes.finish()
    assert [(s.width, s.height) for s in resizes] == [(80, 24), (100, 40), (1, 0), (0, 2)]
    assert list(resizes) == []  # a second iteration ends too


def test_token_cache_expiry_limit_and_single_use() -> None:
    now = [0.0]
    cache = streaming._RequestCache(ttl=60, limit=2, clock=lambda: now[0])
    one = cache.insert("exec", "a")
    two = cache.insert("exec", "b")
    assert len(one) == len(two) == 8 and one != two
    assert all(c.isalnum() or c in "-_" for c in one + two)
    with pytest.raises(errors.ResourceExhausted, match="maximum number of in-flight requests"):
        cache.insert("exec", "c")
    assert cache.consume(one) == ("exec", "a")
    assert cache.consume(one) is None
    cache.insert("exec", "c")
    now[0] = 61.0
    assert cache.consume(two) is None  # expired
    assert len(cache) == 0  # the expired one was collected
    cache.insert("exec", "d")


def test_register_validates_like_upstream(server: streaming.StreamingServer) -> None:
    url = server.register("exec", m.ExecRequest(container_id="c", cmd=["ls"], stdout=True))
    assert url.startswith(server.base_url + "/exec/") and len(url.rsplit("/", 1)[1]) == 8
    assert server.base_url.startswith("http://127.0.0.1:")
    port_forward = m.PortForwardRequest(pod_sandbox_id="p", port=[80])
    assert "/portforward/" in server.register("portforward", port_forward)
    # the models refuse these already; register checks again, as upstream's GetExec does
    unchecked = m.PortForwardRequest(pod_sandbox_id="p")
    object.__setattr__(unchecked, "pod_sandbox_id", "")
    with pytest.raises(errors.InvalidArgument, match="missing required pod_sandbox_id"):
        server.register("portforward", unchecked)
    for changes, message in (
        ({"tty": True, "stderr": True}, "tty and stderr cannot both be true"),
        ({"stdout": False}, "one of stdin, stdout, and stderr must be set"),
    ):
        attach = m.AttachRequest(container_id="c", stdout=True)
        for name, value in changes.items():
            object.__setattr__(attach, name, value)
        with pytest.raises(errors.InvalidArgument, match=message):
            server.register("attach", attach)
    with pytest.raises(TypeError):
        server.register("attach", m.ExecRequest(container_id="c", cmd=["ls"], stdout=True))
    with pytest.raises(ValueError, match="kind"):
        server.register("shell", port_forward)  # type: ignore[arg-type]
    assert server.outstanding == 2
    stopped = streaming.StreamingServer(get_plugin_manager())
    with pytest.raises(errors.Unavailable):
        stopped.register("portforward", port_forward)


def test_register_limit_and_expiry(pm: pluggy.PluginManager) -> None:
    request = m.PortForwardRequest(pod_sandbox_id="p", port=[80])
    with streaming.StreamingServer(pm, token_ttl=0.3, max_tokens=3) as srv:
        urls = [srv.register("portforward", request) for _ in range(3)]
        with pytest.raises(errors.ResourceExhausted):
            srv.register("portforward", request)
        time.sleep(0.5)
        assert http_request(urls[0])[0] == 404  # expired
        srv.register("portforward", request)  # expired tokens no longer count


def test_current_is_set_and_restored(pm: pluggy.PluginManager) -> None:
    assert streaming.current() is None
    srv = streaming.StreamingServer(pm)
    assert streaming.set_current(srv) is None
    assert streaming.current() is srv
    assert streaming.set_current(None) is srv


# ---------------------------------------------------------------------------------------------
# HTTP routing, tokens, handshakes


def test_unknown_used_and_misrouted_tokens_are_404(pod: Pod) -> None:
    status, headers, body = http_request(pod.exec_url(["true"]).rsplit("/", 1)[0] + "/nosuch00")
    assert (status, body) == (404, b"404 page not found\n")
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    url = pod.exec_url(["true"])
    assert spdy_exec(url)["error"] == success()
    assert http_request(url)[0] == 404  # used
    misrouted = pod.exec_url(["true"]).replace("/exec/", "/attach/")
    assert http_request(misrouted)[0] == 404
    assert http_request(misrouted.replace("/attach/", "/exec/"))[0] == 404  # consumed anyway
    base = pod.exec_url(["true"]).rsplit("/", 2)[0]
    assert http_request(base + "/exec/a/b")[0] == 404
    assert http_request(base + "/shell/abcdefgh")[0] == 404
    assert http_request(pod.exec_url(["true"]), method="PUT")[0] == 405


def test_spdy_handshake_errors(pod: Pod) -> None:
    status, headers, sock = spdy_upgrade(pod.exec_url(["true"]), ["v9.channel.k8s.io", "x"])
    sock.close()
    assert status == 403
    assert headers["x-accepted-stream-protocol-versions"] == ", ".join([V4, V3, V2, V1])
    status, _, body = http_request(
        pod.exec_url(["true"]), "POST", {"Connection": "Upgrade", "Upgrade": "SPDY/3.1"}
    )
    assert (status, body) == (400, b"unable to upgrade: X-Stream-Protocol-Version is required\n")
    status, _, body = http_request(
        pod.exec_url(["true"]), "POST", {"X-Stream-Protocol-Version": V4}
    )
    assert status == 400 and b"missing upgrade headers" in body
    pf = str(rpc(pod.pm, "PortForward", pod_sandbox_id=pod.sandbox_id, port=[80]).url)
    status, headers, sock = spdy_upgrade(pf, [V4])
    sock.close()
    assert status == 403
    assert headers["x-accepted-stream-protocol-versions"] == "portforward.k8s.io"


# ---------------------------------------------------------------------------------------------
# exec and attach over SPDY


def test_spdy_exec_v4_output_and_status(pod: Pod) -> None:
    script = "echo out; echo err >&2; exit 3"
    url = pod.exec_url(["sh", "-c", script], stderr=True)
    session = SpdySession(url, stderr=True)
    assert session.protocol == V4  # v5 offered first, as kubectl does; v4 negotiated
    result = session.finish()
    assert result["stdout"] == b"out\n" and result["stderr"] == b"err\n"
    assert result["error"] == exit_failure(f"sh -c {script}", 3)
    assert json.loads(result["error"])["details"]["causes"] == [
        {"reason": "ExitCode", "message": "3"}
    ]
    assert spdy_exec(pod.exec_url(["echo", "hi"]))["error"] == success()


@pytest.mark.parametrize("protocol", [V3, V2, V1])
def test_spdy_exec_before_v4_reports_text(pod: Pod, protocol: str) -> None:
    result = spdy_exec(pod.exec_url(["sh", "-c", "echo x; exit 2"]), protocols=[protocol])
    assert result["stdout"] == b"x\n"
    assert result["error"] == (
        b"command terminated with non-zero exit code: error executing command "
        b"[sh -c echo x; exit 2], exit code 2"
    )
    assert spdy_exec(pod.exec_url(["true"]), protocols=[protocol])["error"] == b""


def test_spdy_exec_hook_errors_are_internal_errors(pod: Pod) -> None:
    container_id = pod.container()
    url = rpc(pod.pm, "Exec", container_id=container_id, cmd=["true"], stdout=True).url
    rpc(pod.pm, "StopContainer", container_id=container_id, timeout=0)
    status = json.loads(spdy_exec(url)["error"])
    assert status["reason"] == "InternalError" and status["code"] == 500
    assert status["message"].startswith(
        "Internal error occurred: error executing command in container: container "
    )
    assert "is not running" in status["message"]


def test_spdy_exec_stdin_piped_and_closed(pod: Pod) -> None:
    data = os.urandom(300_000)
    result = spdy_exec(pod.exec_url(["cat"], stdin=True), stdin=data)
    assert result["stdout"] == data and result["error"] == success()
    script = b"echo one\nexit 4\necho never\n"
    result = spdy_exec(pod.exec_url(["sh"], stdin=True), stdin=script)
    assert result["stdout"] == b"one\n" and result["error"] == exit_failure("sh", 4)


def test_spdy_interactive_tty_with_resize(pod: Pod) -> None:
    session = SpdySession(pod.exec_url(["sh"], stdin=True, tty=True), stdin=True, tty=True)
    assert set(session.streams) == {"error", "stdin", "stdout", "resize"}
    session.wait_for("stdout", b"# ")
    session.send(b"stty size\r")
    session.wait_for("stdout", b"stty size\r\n0 0\r\n# ")  # echoed, then no resize yet
    session.resize(100, 40)
    deadline = time.monotonic() + 10
    while b"40 100\r\n" not in session.output["stdout"]:
        assert time.monotonic() < deadline, bytes(session.output["stdout"])
        session.send(b"stty size\r")
        time.sleep(0.05)
    session.send(b"echo typo\x7f\x7f\x7f\x7fhi\r")
    session.wait_for("stdout", b"echo typo" + b"\b \b" * 4 + b"hi\r\nhi\r\n")
    session.send(b"exit 5\r")
    result = session.finish()
    assert result["error"] == exit_failure("sh", 5)
    assert result["stderr"] == b""


def test_spdy_tty_cat_and_interrupt(pod: Pod) -> None:
    session = SpdySession(pod.exec_url(["cat"], stdin=True, tty=True), stdin=True, tty=True)
    session.send(b"abc\r")
    session.wait_for("stdout", b"abc\r\nabc\r\n")  # echo, then cat's copy
    session.send(b"x\x03")
    result = session.finish()
    assert result["stdout"].endswith(b"x^C\r\n")
    assert json.loads(result["error"])["details"]["causes"][0]["message"] == "130"


def test_spdy_attach_echo(pod: Pod) -> None:
    container_id = pod.container()
    url = rpc(pod.pm, "Attach", container_id=container_id, stdin=True, stdout=True).url
    session = SpdySession(url, stdin=True)
    session.send(b"ping\n")
    session.wait_for("stdout", b"ping\n")
    session.close_stdin()
    assert session.finish() == {"stdout": b"ping\n", "stderr": b"", "error": success()}
    tty_container = pod.container(tty=True)
    url = rpc(pod.pm, "Attach", container_id=tty_container, tty=True, stdin=True, stdout=True).url
    session = SpdySession(url, stdin=True, tty=True)
    assert "resize" in session.streams
    session.send(b"x")
    session.wait_for("stdout", b"x")  # the hook runs
    rpc(pod.pm, "StopContainer", container_id=tty_container, timeout=0)
    assert session.finish()["error"] == success()  # the attach ended with the container


# ---------------------------------------------------------------------------------------------
# port-forward over SPDY


def spdy_port_forward(url: str) -> SpdyConnection:
    status, headers, sock = spdy_upgrade(url, ["portforward.k8s.io"])
    assert status == 101 and headers["x-stream-protocol-version"] == "portforward.k8s.io"
    return SpdyConnection(sock, server=False)


def open_pair(conn: SpdyConnection, port: int, request_id: str) -> tuple[SpdyStream, SpdyStream]:
    """client-go's order: the error stream, then the data stream."""
    error = conn.open_stream({"streamType": "error", "port": str(port), "requestID": request_id})
    error.wait_reply(10)
    data = conn.open_stream({"streamType": "data", "port": str(port), "requestID": request_id})
    data.wait_reply(10)
    return data, error


def test_spdy_port_forward_echo(pod: Pod) -> None:
    url = rpc(pod.pm, "PortForward", pod_sandbox_id=pod.sandbox_id, port=[8080]).url
    conn = spdy_port_forward(url)
    pairs = [open_pair(conn, port, str(n)) for n, port in enumerate((8080, 8080, 9090))]
    payloads = [os.urandom(200_000 + n) for n in range(len(pairs))]
    for (data, _), payload in zip(pairs, payloads, strict=True):
        data.write(payload)
        data.close()
    for (data, error), payload in zip(pairs, payloads, strict=True):
        assert data.readall() == payload
        assert error.readall() == b""
    conn.close()


def test_spdy_port_forward_errors(pod: Pod) -> None:
    url = rpc(pod.pm, "PortForward", pod_sandbox_id=pod.sandbox_id, port=[80]).url
    conn = spdy_port_forward(url)
    bad = conn.open_stream({"streamType": "data", "port": "0", "requestID": "x"})
    with pytest.raises(Exception, match="reset|RST|CANCEL"):
        bad.wait_reply(10)
    rpc(pod.pm, "StopPodSandbox", pod_sandbox_id=pod.sandbox_id)
    data, error = open_pair(conn, 80, "1")
    data.close()
    assert (
        error.readall()
        == (
            f"error forwarding port 80 to pod {pod.sandbox_id}, uid : "
            f"pod sandbox '{pod.sandbox_id}' is not ready"
        ).encode()
    )
    assert data.readall() == b""
    conn.close()


# ---------------------------------------------------------------------------------------------
# exec, attach and port-forward over WebSocket


@pytest.mark.parametrize(
    ("protocol", "v4_status"),
    [
        ("v5.channel.k8s.io", True),
        ("v4.channel.k8s.io", True),
        ("v4.base64.channel.k8s.io", True),
        ("channel.k8s.io", False),
        ("base64.channel.k8s.io", False),
        (None, False),
    ],
)
def test_websocket_exec_protocols(pod: Pod, protocol: str | None, v4_status: bool) -> None:
    url = pod.exec_url(["sh", "-c", "echo out; echo err >&2; exit 7"], stderr=True)
    with ws_connect(url, [protocol] if protocol else None) as ws:
        assert ws.subprotocol == protocol
        messages = ws_messages(ws)
        assert ws.close_code == 1000
    assert messages[0] == (1, b"")  # the ready signal on stdout
    out = joined(messages)
    assert out[1] == b"out\n" and out[2] == b"err\n"
    if v4_status:
        assert out[3] == exit_failure("sh -c echo out; echo err >&2; exit 7", 7)
    else:
        assert out[3].startswith(b"command terminated with non-zero exit code: ")
    ok_url = pod.exec_url(["true"])
    with ws_connect(ok_url, [protocol] if protocol else None) as ws:
        assert joined(ws_messages(ws))[3] == (success() if v4_status else b"")


def test_websocket_ready_signal_goes_to_the_lowest_writable_channel(pod: Pod) -> None:
    url = pod.exec_url(["true"], stdout=False, stderr=True)
    with ws_connect(url, [V4]) as ws:
        assert ws_messages(ws)[0] == (2, b"")
    url = pod.exec_url(["true"], stdout=False, stdin=True)
    with ws_connect(url, [V4]) as ws:
        assert ws_messages(ws) == [(3, b""), (3, success())]


def test_websocket_v5_stdin_close_ends_cat(pod: Pod) -> None:
    data = os.urandom(500_000)
    with ws_connect(pod.exec_url(["cat"], stdin=True), ["v5.channel.k8s.io"]) as ws:
        for offset in range(0, len(data), 32 * 1024):
            ws.send(b"\x00" + data[offset : offset + 32 * 1024])
        ws.send(bytes([255, 0]))
        out = joined(ws_messages(ws))
    assert out[1] == data and out[3] == success()


def test_websocket_base64_stdin_and_tty_resize(pod: Pod) -> None:
    url = pod.exec_url(["sh"], stdin=True, tty=True)
    with ws_connect(url, ["v4.base64.channel.k8s.io"]) as ws:
        ws.send("4" + base64.b64encode(b'{"Width":132,"Height":43}').decode())
        seen = b""
        deadline = time.monotonic() + 10
        while b"43 132" not in seen:
            assert time.monotonic() < deadline, seen
            ws.send("0" + base64.b64encode(b"stty size\r").decode())
            message = ws.recv(timeout=5)
            assert isinstance(message, str)  # text messages in the base64 protocols
            seen += decode_ws(message)[1]
        ws.send("0" + base64.b64encode(b"exit\r").decode())
        out = joined(ws_messages(ws))
    assert out[3] == success()


def test_websocket_attach_and_client_close(pod: Pod) -> None:
    container_id = pod.container()
    url = rpc(pod.pm, "Attach", container_id=container_id, stdin=True, stdout=True).url
    with ws_connect(url, [V4]) as ws:
        assert decode_ws(ws.recv(timeout=5)) == (1, b"")
        ws.send(b"\x00hello")
        assert decode_ws(ws.recv(timeout=5)) == (1, b"hello")
    # the client closed first: the hook saw stdin end; the server answered the close


def test_websocket_port_forward_channels(pod: Pod) -> None:
    url = rpc(pod.pm, "PortForward", pod_sandbox_id=pod.sandbox_id, port=[1]).url
    with ws_connect(url + "?port=8080&port=9090,53", [V4]) as ws:
        first = [decode_ws(ws.recv(timeout=5)) for _ in range(6)]
        assert sorted(first) == sorted(
            (channel, struct.pack("<H", port))
            for index, port in enumerate((8080, 9090, 53))
            for channel in (2 * index, 2 * index + 1)
        )
        for channel in (0, 2, 4):
            ws.send(bytes([channel]) + f"to {channel}".encode())
        echoed = sorted(decode_ws(ws.recv(timeout=5)) for _ in range(3))
        assert echoed == [(0, b"to 0"), (2, b"to 2"), (4, b"to 4")]
    url = rpc(pod.pm, "PortForward", pod_sandbox_id=pod.sandbox_id, port=[7777]).url
    with ws_connect(url, ["v4.base64.channel.k8s.io"]) as ws:  # ports of the CRI request
        assert sorted(decode_ws(ws.recv(timeout=5)) for _ in range(2)) == [
            (0, struct.pack("<H", 7777)),
            (1, struct.pack("<H", 7777)),
        ]
        ws.send("0" + base64.b64encode(b"b64").decode())
        assert decode_ws(ws.recv(timeout=5)) == (0, b"b64")


class WsTunnel:
    """client-go's tunneling dialer: SPDY over binary WebSocket messages.

    Raw frames: the ``websockets`` client refuses ``SPDY/3.1+portforward.k8s.io``, which is
    not an RFC 7230 token (gorilla/websocket, which client-go uses, accepts it)."""

    def __init__(self, url: str) -> None:
        self.sock = raw_ws(url, "SPDY/3.1+portforward.k8s.io")
        self.sock.settimeout(None)
        mine, self._theirs = socket.socketpair()
        self._pumps = [
            threading.Thread(target=self._up, daemon=True),
            threading.Thread(target=self._down, daemon=True),
        ]
        for pump in self._pumps:
            pump.start()
        self.conn = SpdyConnection(mine, server=False)

    def _up(self) -> None:
        with contextlib.suppress(OSError):
            while chunk := self._theirs.recv(65536):
                self.sock.sendall(frame(2, chunk))
            self.sock.sendall(frame(8, struct.pack(">H", 1000)))

    def _down(self) -> None:
        with contextlib.suppress(OSError, AssertionError):
            while True:
                opcode, payload = read_frame(self.sock)
                if opcode == 8:
                    break
                assert opcode == 2
                self._theirs.sendall(payload)
        with contextlib.suppress(OSError):
            self._theirs.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.conn.close()
        for pump in self._pumps:
            pump.join(10)
        self._theirs.close()
        self.sock.close()


def test_websocket_spdy_tunnel_port_forward(pod: Pod) -> None:
    url = rpc(pod.pm, "PortForward", pod_sandbox_id=pod.sandbox_id, port=[]).url
    tunnel = WsTunnel(url)
    data, error = open_pair(tunnel.conn, 5432, "0")
    payload = os.urandom(1_000_000)
    echoed: list[bytes] = []
    reader = threading.Thread(target=lambda: echoed.append(data.readall()))
    reader.start()  # an echo needs reading while writing, or both windows fill up
    data.write(payload)
    data.close()
    reader.join(20)
    assert echoed == [payload]
    assert error.readall() == b""
    tunnel.close()


def test_websocket_handshake_errors(pod: Pod) -> None:
    url = pod.exec_url(["true"])
    status, _, _ = http_request(
        url,
        headers={
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Protocol": "v9.channel.k8s.io",
        },
    )
    assert status == 403
    status, headers, _ = http_request(
        pod.exec_url(["true"]),
        headers={
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version": "8",
        },
    )
    assert status == 400 and headers["Sec-WebSocket-Version"] == "13"
    pf = rpc(pod.pm, "PortForward", pod_sandbox_id=pod.sandbox_id, port=[]).url
    status, _, body = http_request(
        pf + "?port=0",
        headers={
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Protocol": V4,
        },
    )
    assert status == 400 and b"must be > 0" in body
    assert streaming.websocket_accept("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


# ---------------------------------------------------------------------------------------------
# WebSocket framing, with hand-made frames


def raw_ws(url: str, protocol: str) -> socket.socket:
    parts = urllib.parse.urlsplit(url)
    sock = socket.create_connection((parts.hostname or "", parts.port or 80), timeout=10)
    request = (
        f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: Upgrade\r\n"
        "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: {protocol}\r\n\r\n"
    )
    sock.sendall(request.encode())
    status, headers = read_http_response_head(sock)
    assert status == 101 and headers["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    return sock


def frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True) -> bytes:
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        length = bytes([n])
    elif n < 65536:
        length = bytes([126]) + struct.pack(">H", n)
    else:
        length = bytes([127]) + struct.pack(">Q", n)
    if not mask:
        return head + length + payload
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + bytes([length[0] | 0x80]) + length[1:] + key + masked


def read_frame(sock: socket.socket) -> tuple[int, bytes]:
    def exact(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            assert chunk, "connection closed"
            data += chunk
        return data

    first, second = exact(2)
    assert not second & 0x80, "server frames are never masked"
    n = second & 0x7F
    if n == 126:
        n = struct.unpack(">H", exact(2))[0]
    elif n == 127:
        n = struct.unpack(">Q", exact(8))[0]
    return first & 0x0F, exact(n)


def test_websocket_fragments_pings_and_close(pod: Pod) -> None:
    sock = raw_ws(pod.exec_url(["cat"], stdin=True), "v5.channel.k8s.io")
    assert read_frame(sock) == (2, b"\x01")  # binary, ready signal on stdout
    sock.sendall(frame(2, b"\x00hel", fin=False) + frame(9, b"are you there") + frame(0, b"lo"))
    assert read_frame(sock) == (10, b"are you there")  # pong, in the middle of a message
    assert read_frame(sock) == (2, b"\x01hello")
    sock.sendall(frame(2, bytes([255, 0])))
    assert read_frame(sock) == (2, b"\x03" + success())
    assert read_frame(sock) == (8, struct.pack(">H", 1000))
    sock.sendall(frame(8, struct.pack(">H", 1000)))
    assert sock.recv(10) == b""
    sock.close()


@pytest.mark.parametrize(
    ("wire", "code"),
    [
        (frame(2, b"\x00x", mask=False), 1002),
        (bytes([0xC2, 0x80]) + b"\0\0\0\0", 1002),  # RSV1 without an extension
        (frame(0, b"\x00x"), 1002),  # continuation of nothing
        (frame(9, b"x" * 126), 1002),  # control frame too long
        (frame(1, b"\xff\xfe"), 1007),  # text that is not UTF-8
    ],
)
def test_websocket_protocol_errors_close_the_connection(pod: Pod, wire: bytes, code: int) -> None:
    sock = raw_ws(pod.exec_url(["cat"], stdin=True), "v5.channel.k8s.io")
    read_frame(sock)
    sock.sendall(wire)
    opcode, payload = read_frame(sock)
    while opcode != 8:  # the status may come first
        opcode, payload = read_frame(sock)
    assert struct.unpack(">H", payload[:2])[0] == code
    sock.close()


# ---------------------------------------------------------------------------------------------
# disconnects, stop, leaks


class Recorder:
    """A backend whose exec waits for the client to leave."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.returned = threading.Event()
        self.saw_closed = False
        self.write_error: BaseException | None = None

    @hookimpl
    def criadapt_stream_exec(
        self, container_id: str, cmd: list[str], tty: bool, streams: StreamIO
    ) -> int:
        self.started.set()
        deadline = time.monotonic() + 30
        while not streams.closed and time.monotonic() < deadline:
            time.sleep(0.01)
        self.saw_closed = streams.closed
        assert streams.stdout is not None
        try:
            streams.stdout.write(b"too late")
        except BrokenPipeError as exc:
            self.write_error = exc
        self.returned.set()
        return 0


@pytest.mark.parametrize("transport", ["spdy", "websocket"])
def test_client_disconnect_mid_exec_is_seen_by_the_hook(transport: str) -> None:
    manager = get_plugin_manager()
    recorder = Recorder()
    manager.register(recorder)
    with streaming.StreamingServer(manager) as srv:
        url = srv.register("exec", m.ExecRequest(container_id="c", cmd=["x"], stdout=True))
        if transport == "spdy":
            session = SpdySession(url)
            assert recorder.started.wait(10)
            session.conn.close()
        else:
            with ws_connect(url, [V4]):
                assert recorder.started.wait(10)
        assert recorder.returned.wait(10)
    assert recorder.saw_closed
    assert isinstance(recorder.write_error, BrokenPipeError)


def test_fake_sleep_ends_when_the_client_leaves(pod: Pod) -> None:
    def handlers() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name == "criadapt-streaming-conn"}

    earlier = handlers()
    session = SpdySession(pod.exec_url(["sleep", "1000"]))
    time.sleep(0.2)
    assert handlers() - earlier  # the session runs
    started = time.monotonic()
    session.conn.close()
    # the server's session (and its hook) ends: the handler thread goes away
    assert settle(lambda: not handlers() - earlier)
    assert time.monotonic() - started < 5


def test_stop_disconnects_live_sessions(pm: pluggy.PluginManager) -> None:
    recorder = Recorder()
    manager = get_plugin_manager()
    manager.register(recorder)
    srv = streaming.StreamingServer(manager).start()
    url = srv.register("exec", m.ExecRequest(container_id="c", cmd=["x"], stdout=True))
    session = SpdySession(url)
    assert recorder.started.wait(10)
    srv.stop()
    assert recorder.returned.is_set() and recorder.saw_closed
    session.finish()
    with pytest.raises(OSError):
        http_request(url)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_100_concurrent_execs_leak_nothing(pod: Pod) -> None:
    urls = [pod.exec_url(["echo", str(n)]) for n in range(100)]
    before = threading.active_count()
    spdy_exec(pod.exec_url(["true"]))  # warm up lazily created things
    assert settle(lambda: threading.active_count() <= before)
    threads, fds = threading.active_count(), open_fds()
    barrier = threading.Barrier(100)

    def one(n: int) -> dict[str, bytes]:
        barrier.wait()
        return spdy_exec(urls[n])

    with ThreadPoolExecutor(100) as pool:
        results = list(pool.map(one, range(100)))
    for n, result in enumerate(results):
        assert result == {"stdout": f"{n}\n".encode(), "stderr": b"", "error": success()}
    assert settle(lambda: threading.active_count() <= threads and open_fds() <= fds, 15), (
        threading.enumerate(),
        open_fds(),
        fds,
    )


# ---------------------------------------------------------------------------------------------
# the fake's RPC side


def test_fake_rpcs_hand_out_urls_only_with_a_server(pm: pluggy.PluginManager) -> None:
    rpc(pm, "PullImage", image=m.ImageSpec(image="busybox"))
    config = m.PodSandboxConfig(metadata=m.PodSandboxMetadata(name="p", uid="u", namespace="n"))
    sandbox_id = rpc(pm, "RunPodSandbox", config=config, runtime_handler="").pod_sandbox_id
    pod = Pod(pm, sandbox_id)
    container_id = pod.container()
    assert "streaming" not in pm.hook.criadapt_backend_info().capabilities
    with pytest.raises(errors.Unimplemented, match="streaming server"):
        rpc(pm, "Exec", container_id=container_id, cmd=["ls"], stdout=True)
    with streaming.StreamingServer(pm, max_tokens=2) as srv:
        streaming.set_current(srv)
        try:
            assert "streaming" in pm.hook.criadapt_backend_info().capabilities
            url = rpc(pm, "Exec", container_id=container_id, cmd=["ls"], stdout=True).url
            assert url.startswith(srv.base_url + "/exec/")
            url = rpc(pm, "PortForward", pod_sandbox_id=sandbox_id, port=[80]).url
            assert url.startswith(srv.base_url + "/portforward/")
            with pytest.raises(errors.ResourceExhausted):
                rpc(pm, "Attach", container_id=container_id, stdout=True)
            with pytest.raises(errors.InvalidArgument):
                pm.hook.criadapt_exec(
                    container_id=container_id,
                    cmd=["ls"],
                    tty=True,
                    stdin=False,
                    stdout=False,
                    stderr=True,
                    call=CallContext(rpc="Exec"),
                )
        finally:
            streaming.set_current(None)
