"""Exec, Attach and PortForward streams of the runc backend, on real runc + conmon containers.

The hooks are called directly on the backend object with in-memory streams (no streaming
server), as unbound :class:`StreamService` functions so that the tests do not depend on the
mixin being part of ``RuncBackend`` yet.
"""

from __future__ import annotations

import contextlib
import io
import os
import queue
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from criadapt import errors
from criadapt import models as m
from criadapt.client import Client
from criadapt.streaming import TerminalSize
from criadapt_runc.streams import EXEC_DRAIN_TIMEOUT, StreamService
from criadapt_runc.testing import (
    RuncServer,
    ctr_config,
    pod_config,
    run,
    wait_exited,
    write_cni_conflist,
)

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="containers need root"),
    pytest.mark.skipif(not os.access("/usr/sbin/runc", os.X_OK), reason="needs runc"),
]


# -- in-memory client streams ---------------------------------------------------------------


class Sink(io.BytesIO):
    """A client output stream that tests can wait on."""

    def __init__(self) -> None:
        super().__init__()
        self._changed = threading.Condition()

    def write(self, data: Any) -> int:
        with self._changed:
            written = super().write(data)
            self._changed.notify_all()
        return written

    def wait_for(self, text: bytes, timeout: float = 10) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: text in self.getvalue(), timeout)


class Streams:
    """A :class:`criadapt.streaming.StreamIO`: BytesIO or pipe stdin, collecting outputs."""

    def __init__(
        self, stdin: bytes | BinaryIO | None = None, *, stdout: bool = True, stderr: bool = True
    ) -> None:
        self.stdin: BinaryIO | None = io.BytesIO(stdin) if isinstance(stdin, bytes) else stdin
        self.sink_out = Sink() if stdout else None
        self.sink_err = Sink() if stderr else None
        self.stdout: BinaryIO | None = self.sink_out
        self.stderr: BinaryIO | None = self.sink_err
        self.sizes: queue.SimpleQueue[TerminalSize | None] = queue.SimpleQueue()
        self.gone = threading.Event()

    def resizes(self) -> Iterator[TerminalSize]:
        while (size := self.sizes.get()) is not None:
            yield size

    @property
    def closed(self) -> bool:
        return self.gone.is_set()

    def end(self) -> None:
        self.gone.set()
        self.sizes.put(None)

    @property
    def out(self) -> bytes:
        return b"" if self.sink_out is None else self.sink_out.getvalue()

    @property
    def err(self) -> bytes:
        return b"" if self.sink_err is None else self.sink_err.getvalue()

    def wait_out(self, text: bytes, timeout: float = 10) -> bool:
        return self.sink_out is not None and self.sink_out.wait_for(text, timeout)

    def wait_err(self, text: bytes, timeout: float = 10) -> bool:
        return self.sink_err is not None and self.sink_err.wait_for(text, timeout)


class Port:
    """A :class:`criadapt.streaming.PortStream`: sends ``request`` then EOF, collects the rest."""

    def __init__(self, request: bytes) -> None:
        self._request = io.BytesIO(request)
        self.received = bytearray()
        self.closed = threading.Event()

    def read(self, size: int = -1) -> bytes:
        return self._request.read(size)

    def write(self, data: bytes) -> int:
        self.received += data
        return len(data)

    def close(self) -> None:
        self.closed.set()


def piped_stdin() -> tuple[BinaryIO, BinaryIO]:
    """(stdin for the streams, the test's end to write to)."""
    read_end, write_end = os.pipe()
    return open(read_end, "rb", buffering=0), open(write_end, "wb", buffering=0)


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    result: list[Any] = []

    def target() -> None:
        try:
            result.append(fn())
        except BaseException as error:
            result.append(error)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, result


# -- fixtures -------------------------------------------------------------------------------


class Env:
    def __init__(
        self, server: RuncServer, image: str, base: Path, name: str, handler: str = "", **pod: Any
    ) -> None:
        self.server = server
        cri = server.client
        assert cri is not None
        self.cri: Client = cri
        self.image = image
        self.backend = server.pm.get_plugin("runc-backend")
        assert self.backend is not None
        cri.pull_image(image=m.ImageSpec(image=image))
        self.pconf = pod_config(base, name, **pod)
        self.pod = cri.run_pod_sandbox(config=self.pconf, runtime_handler=handler).pod_sandbox_id
        self._count = 0
        self._children = other_children()  # e.g. the test registry

    def container(self, command: list[str], **kw: Any) -> str:
        self._count += 1
        config = ctr_config(f"c{self._count}", self.image, command, **kw)
        return run(self.cri, self.pod, self.pconf, config)

    def exec(self, cid: str, cmd: list[str], streams: Streams, tty: bool = False) -> int:
        return StreamService.criadapt_stream_exec(self.backend, cid, cmd, tty, streams)

    def attach(self, cid: str, streams: Streams, tty: bool = False) -> int:
        return StreamService.criadapt_stream_attach(self.backend, cid, tty, streams)

    def port_forward(self, port: int, stream: Port, pod: str | None = None) -> None:
        StreamService.criadapt_stream_port_forward(self.backend, pod or self.pod, port, stream)

    def new_children(self) -> set[int]:
        return other_children() - self._children

    def processes(self, cid: str) -> str:
        return self.cri.exec_sync(container_id=cid, cmd=["ps"], timeout=10).stdout.decode()


@pytest.fixture
def env(runc_server: Callable[..., RuncServer], busybox_ref: str, tmp_path: Path) -> Iterator[Env]:
    environment = Env(runc_server(), busybox_ref, tmp_path, "streams")
    yield environment
    environment.cri.stop_pod_sandbox(pod_sandbox_id=environment.pod)
    environment.cri.remove_pod_sandbox(pod_sandbox_id=environment.pod)


@pytest.fixture
def cni_conf(tmp_path: Path) -> Iterator[str]:
    """A bridge + host-local conflist on a test-only bridge and subnet."""
    bridge = f"crs{os.getpid() % 10000}"
    yield write_cni_conflist(
        tmp_path / "cni",
        name="criadapt-streams-test",
        bridge=bridge,
        subnet=f"10.89.{os.getpid() % 25 + 225}.0/24",
        ipam_dir=tmp_path / "ipam",
        portmap=False,
    )
    subprocess.run(["ip", "link", "delete", bridge], capture_output=True, check=False)


def other_children() -> set[int]:
    """Our child processes other than conmons (every exec'd process must have been reaped)."""
    me = str(os.getpid())
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_bytes()
        except OSError:
            continue
        name = raw[raw.find(b"(") + 1 : raw.rfind(b")")]
        fields = raw[raw.rfind(b")") + 2 :].split()
        if fields[1].decode() == me and name != b"conmon":
            found.add(int(entry))
    return found


def describe(pids: set[int]) -> list[str]:
    out = []
    for pid in pids:
        with contextlib.suppress(OSError):
            out.append(Path(f"/proc/{pid}/stat").read_text())
    return out


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def settle(read: Callable[[], int], want: int, timeout: float = 5) -> int:
    """``read()`` once it equals ``want`` (other threads open files briefly), else its last value."""
    deadline = time.monotonic() + timeout
    while (value := read()) != want and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


def settle_at_most(read: Callable[[], int], limit: int, timeout: float = 5) -> int:
    """``read()`` once it is at most ``limit``, else its last value."""
    deadline = time.monotonic() + timeout
    while (value := read()) > limit and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


# -- exec -----------------------------------------------------------------------------------


def test_exec_separates_stdout_and_stderr_and_returns_the_exit_code(env: Env) -> None:
    cid = env.container(["sleep", "99999"])
    streams = Streams()
    code = env.exec(cid, ["sh", "-c", "echo out; echo err >&2; exit 3"], streams)
    assert (code, streams.out, streams.err) == (3, b"out\n", b"err\n")
    killed = Streams()
    assert env.exec(cid, ["sh", "-c", "kill -9 $$"], killed) == 128 + 9
    quiet = Streams(stdout=False, stderr=False)
    assert env.exec(cid, ["sh", "-c", "echo dropped; exit 7"], quiet) == 7


def test_exec_stdin(env: Env) -> None:
    cid = env.container(["sleep", "99999"])
    streams = Streams(b"hello\n")
    assert env.exec(cid, ["cat"], streams) == 0
    assert streams.out == b"hello\n"
    no_stdin = Streams()  # the process reads /dev/null
    assert env.exec(cid, ["cat"], no_stdin) == 0
    assert no_stdin.out == b""
    # a client that types slowly, then ends its input
    stdin, typing = piped_stdin()
    slow = Streams(stdin)
    thread, result = in_thread(
        lambda: env.exec(cid, ["sh", "-c", "read a; echo got $a; cat"], slow)
    )
    typing.write(b"one\n")
    assert slow.wait_out(b"got one\n")
    typing.write(b"two\n")
    typing.close()
    thread.join(10)
    stdin.close()
    assert result == [0]
    assert slow.out == b"got one\ntwo\n"


def test_exec_with_a_terminal(env: Env) -> None:
    cid = env.container(["sleep", "99999"])
    streams = Streams(stderr=False)
    streams.sizes.put(TerminalSize(width=100, height=40))  # sent by the client first
    code = env.exec(cid, ["sh", "-c", "busybox stty size; busybox tty; exit 4"], streams, tty=True)
    streams.end()
    assert code == 4
    assert b"40 100" in streams.out
    assert b"/dev/pts/" in streams.out
    # sizes sent while it runs, and stdin into the terminal
    live = Streams(b"typed\n", stderr=False)
    script = "read line; echo got $line; sleep 1; busybox stty size"
    thread, result = in_thread(lambda: env.exec(cid, ["sh", "-c", script], live, tty=True))
    assert live.wait_out(b"got typed")
    live.sizes.put(TerminalSize(width=90, height=30))
    thread.join(10)
    live.end()
    assert result == [0], live.out
    assert b"30 90" in live.out


@pytest.mark.parametrize("tty", [False, True], ids=["pipes", "tty"])
def test_exec_client_disconnect_kills_the_process_tree(env: Env, tty: bool) -> None:
    cid = env.container(["sleep", "99999"])
    streams = Streams(stderr=not tty)
    thread, result = in_thread(
        lambda: env.exec(cid, ["sh", "-c", "sleep 1000 & sleep 1000; echo never"], streams, tty)
    )
    deadline = time.monotonic() + 10
    while env.processes(cid).count("sleep 1000") < 2:
        assert time.monotonic() < deadline, env.processes(cid)
        time.sleep(0.1)
    started = time.monotonic()
    streams.end()
    thread.join(5)
    assert not thread.is_alive()
    assert time.monotonic() - started < 2
    assert result and result[0] == 128 + 9
    assert "sleep 1000" not in env.processes(cid)
    assert settle(lambda: len(env.new_children()), 0) == 0, describe(env.new_children())


def test_exec_background_processes_do_not_hold_the_session(env: Env) -> None:
    cid = env.container(["sleep", "99999"])
    streams = Streams()
    started = time.monotonic()
    code = env.exec(cid, ["sh", "-c", "sleep 30 & echo started"], streams)
    elapsed = time.monotonic() - started
    assert (code, streams.out) == (0, b"started\n")
    assert elapsed < EXEC_DRAIN_TIMEOUT + 2


def test_exec_errors(env: Env) -> None:
    cid = env.container(["sleep", "99999"])
    with pytest.raises(errors.NotFound):
        env.exec("no-such-container", ["true"], Streams())
    with pytest.raises(errors.InvalidArgument):
        env.exec(cid, [], Streams())
    with pytest.raises(errors.CriError, match="no-such-binary"):
        env.exec(cid, ["no-such-binary"], Streams())
    with pytest.raises(errors.CriError, match="no-such-binary"):
        env.exec(cid, ["no-such-binary"], Streams(stderr=False), tty=True)
    env.cri.stop_container(container_id=cid, timeout=0)
    with pytest.raises(errors.FailedPrecondition):
        env.exec(cid, ["true"], Streams())
    assert env.new_children() == set()


def test_concurrent_execs_leak_nothing(env: Env) -> None:
    cid = env.container(["sleep", "99999"])
    env.exec(cid, ["true"], Streams())  # first-use setup (libc handle, state dirs)
    fds_before = open_fds()

    def one(i: int) -> tuple[int, bytes, bytes]:
        streams = Streams(b"" if i % 2 else None)
        code = env.exec(cid, ["sh", "-c", f"echo {i}"], streams)
        return code, streams.out, streams.err

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(one, range(50)))
    assert results == [(0, f"{i}\n".encode(), b"") for i in range(50)]
    # no fd of the execs is left; fewer than before is fine (earlier tests' objects get
    # collected and close theirs while this runs in the same process)
    assert settle_at_most(open_fds, fds_before) <= fds_before
    assert env.new_children() == set()
    lines = [line for line in env.processes(cid).splitlines()[1:] if "ps" not in line.split()]
    assert len(lines) == 1 and "sleep 99999" in lines[0], lines
    assert not list(Path(env.backend.oci("").exec_dir).iterdir())


@pytest.mark.skipif(not os.access("/usr/bin/crun", os.X_OK), reason="needs crun")
def test_exec_and_attach_with_crun(
    runc_server: Callable[..., RuncServer], busybox_ref: str, tmp_path: Path
) -> None:
    env = Env(runc_server(), busybox_ref, tmp_path, "crun", handler="crun")
    try:
        cid = env.container(["sh", "-c", "while true; do echo tick; sleep 0.2; done"])
        streams = Streams(b"in\n")
        assert env.exec(cid, ["sh", "-c", "cat; echo err >&2; exit 3"], streams) == 3
        assert (streams.out, streams.err) == (b"in\n", b"err\n")
        terminal = Streams(stderr=False)
        terminal.sizes.put(TerminalSize(width=100, height=40))
        # crun 1.8 sets the initial size on the master while the process already runs: a
        # process that asks at once may see 0x0 (runc sets it before the process starts)
        script = "sleep 0.5; busybox stty size"
        assert env.exec(cid, ["sh", "-c", script], terminal, tty=True) == 0
        terminal.end()
        assert b"40 100" in terminal.out
        attached = Streams()
        thread, result = in_thread(lambda: env.attach(cid, attached))
        assert attached.wait_out(b"tick\n")
        attached.end()
        thread.join(5)
        assert result == [-1]
        assert env.new_children() == set()
    finally:
        env.cri.stop_pod_sandbox(pod_sandbox_id=env.pod)
        env.cri.remove_pod_sandbox(pod_sandbox_id=env.pod)


# -- attach ---------------------------------------------------------------------------------


def test_attach_receives_output_until_the_client_leaves(env: Env) -> None:
    cid = env.container(["sh", "-c", "while true; do echo tick; echo tock >&2; sleep 0.2; done"])
    streams = Streams()
    thread, result = in_thread(lambda: env.attach(cid, streams))
    assert streams.wait_out(b"tick\n")
    assert streams.wait_err(b"tock\n")
    assert b"tock" not in streams.out
    started = time.monotonic()
    streams.end()
    thread.join(5)
    assert result == [-1]
    assert time.monotonic() - started < 1
    status = env.cri.container_status(container_id=cid).status
    assert status is not None and status.state == m.ContainerState.CONTAINER_RUNNING


def test_attach_stdin_once(env: Env) -> None:
    cid = env.container(["cat"], stdin=True, stdin_once=True)
    stdin, typing = piped_stdin()
    streams = Streams(stdin)
    thread, result = in_thread(lambda: env.attach(cid, streams))
    typing.write(b"hello\n")
    assert streams.wait_out(b"hello\n")
    typing.close()  # stdin_once: the container's stdin closes, cat exits
    thread.join(10)
    stdin.close()
    assert result == [0]
    assert wait_exited(env.cri, cid).exit_code == 0


def test_attach_with_a_terminal_resizes_it(env: Env) -> None:
    cid = env.container(
        ["sh", "-c", "while true; do busybox stty size; sleep 0.2; done"], tty=True, stdin=True
    )
    streams = Streams(stderr=False)
    thread, result = in_thread(lambda: env.attach(cid, streams, tty=True))
    streams.sizes.put(TerminalSize(width=77, height=33))
    assert streams.wait_out(b"33 77")
    streams.end()
    thread.join(5)
    assert result == [-1]


def test_attach_to_a_stopped_container_fails(env: Env) -> None:
    cid = env.container(["true"])
    wait_exited(env.cri, cid)
    with pytest.raises(errors.FailedPrecondition):
        env.attach(cid, Streams())


# -- port forward ---------------------------------------------------------------------------

HTTP_GET = b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n"


def fetch(env: Env, port: int, pod: str | None = None, timeout: float = 10) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        stream = Port(HTTP_GET)
        try:
            env.port_forward(port, stream, pod)
        except errors.Unavailable:  # not listening yet
            assert time.monotonic() < deadline
            time.sleep(0.1)
            continue
        assert stream.closed.is_set()
        return bytes(stream.received)


def serve(env: Env, address: str) -> str:
    www = (
        f"mkdir -p /www && echo served-from-pod > /www/index.html && httpd -f -p {address} -h /www"
    )
    return env.container(["sh", "-c", www])


def test_port_forward_into_a_pod_network_namespace(
    runc_server: Callable[..., RuncServer], busybox_ref: str, tmp_path: Path, cni_conf: str
) -> None:
    own_netns = os.readlink("/proc/thread-self/ns/net")
    env = Env(runc_server(cni_conf), busybox_ref, tmp_path, "pf", host_network=False)
    try:
        serve(env, "8080")
        reply = fetch(env, 8080)
        assert reply.startswith(b"HTTP/1.") and b"200" in reply.split(b"\r\n")[0], reply
        assert reply.endswith(b"served-from-pod\n")
        with pytest.raises(errors.Unavailable):  # nothing listens there
            env.port_forward(8081, Port(HTTP_GET))
        # the namespace switch stays in the dialling thread
        assert os.readlink("/proc/thread-self/ns/net") == own_netns
        assert os.readlink(f"/proc/{os.getpid()}/ns/net") == own_netns
    finally:
        env.cri.stop_pod_sandbox(pod_sandbox_id=env.pod)
        env.cri.remove_pod_sandbox(pod_sandbox_id=env.pod)
    with pytest.raises(errors.NotFound):
        env.port_forward(8080, Port(HTTP_GET))


def test_port_forward_in_a_host_network_pod(env: Env) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    serve(env, f"127.0.0.1:{port}")
    reply = fetch(env, port)
    assert reply.startswith(b"HTTP/1.") and reply.endswith(b"served-from-pod\n"), reply
