"""The process side of Exec, Attach and PortForward in the runc backend.

The streaming server calls these hooks when a client connects to the URL of an
Exec/Attach/PortForward call; they relay the client's streams and return when the work ends
or the client goes away, leaving no process, fd or socket file behind.

Exec
    ``<runtime> exec -d --pid-file pid --process process.json <id>``, with the container's
    process spec (env, cwd, user, capabilities) and the client's command. The runtime gives
    the process our pipes directly (no copy loop in the runtime), or, with a terminal, sends
    the pty master over ``--console-socket`` (the runtime refuses console sockets unless it
    detaches). Detached, the runtime exits once the process runs; the process is then re-parented
    to us, the backend being a child subreaper, and its exit status comes from ``waitpid``:
    128+n after signal n. When the client leaves, the process and its descendants are killed.
    After the process exits its output is relayed until the pipes reach EOF, or for at most
    :data:`EXEC_DRAIN_TIMEOUT` seconds when background processes keep them open.
Attach
    conmon's attach socket (SOCK_SEQPACKET): every packet from conmon is one byte of stream (2
    stdout, 3 stderr) and the data; what is sent goes to the container's stdin. Closing our
    write side (at the client's stdin EOF, or when the session ends) makes conmon close the
    container's stdin if it was created with ``stdin_once`` (conmon runs without
    ``--leave-stdin-open`` then). Terminal sizes go through conmon's ``ctl`` fifo.
PortForward
    a TCP connection to 127.0.0.1 (then ::1) made from a short-lived thread that entered the
    sandbox's network namespace (a socket belongs to the namespace it was created in); the
    client's EOF half-closes the connection, the server's EOF ends the relay.

Threading: the hook's own thread owns every fd. Client input (stdin, terminal sizes, port
data) arrives through blocking reads of objects we cannot interrupt, so it is read by daemon
helper threads, which write through a :class:`_SharedFd`: a lock makes sure they never use an
fd number after the owner closed it (the kernel may have handed it out again). A helper still
blocked in a client read when the hook returns ends at the client's next read; it holds no fd.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import json
import logging
import os
import select
import selectors
import shutil
import socket
import struct
import subprocess
import tempfile
import termios
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from criadapt import hookimpl
from criadapt import models as m
from criadapt.errors import CriError, FailedPrecondition, InvalidArgument, Unavailable
from criadapt_runc.oci import (
    RUNTIME_PATH,
    Oci,
    OciError,
    connect_attach,
    kill_process_tree,
)
from criadapt_runc.records import ContainerRecord, SandboxRecord

if TYPE_CHECKING:
    from criadapt.streaming import PortStream, StreamIO, TerminalSize

__all__ = ["StreamService"]

log = logging.getLogger("criadapt.runc.streams")

C_RUNNING = int(m.ContainerState.CONTAINER_RUNNING)
SANDBOX_READY = int(m.PodSandboxState.SANDBOX_READY)

#: bytes per read of process output, socket data and client input
CHUNK = 1 << 16
#: how often the relay loops look at ``streams.closed`` (seconds)
POLL_INTERVAL = 0.1
#: conmon reads at most CONN_SOCK_BUF_SIZE - 1 (32767) bytes per attach packet and drops the
#: rest of a longer one: stdin goes out in packets no larger than this
ATTACH_PACKET = 8192
#: conmon's stream ids (its ``stdpipe_t``: NO_PIPE, STDIN_PIPE, STDOUT_PIPE, STDERR_PIPE)
ATTACH_STDOUT = 2
ATTACH_STDERR = 3
#: pipe size asked for exec stdio (more data per wake-up; the kernel may refuse)
PIPE_SIZE = 1 << 20
#: after an exec'd process exits, how long its output is still relayed while processes it
#: started in the background keep the pipes (or the terminal) open
EXEC_DRAIN_TIMEOUT = 1.0
#: with a terminal, how long to wait for the client's first size before starting the process,
#: so that it starts with that size (clients send it at once; runc applies ``consoleSize``)
EXEC_FIRST_SIZE_WAIT = 0.1
#: timeout of the TCP connect of a port-forward (to localhost: refusals are immediate)
CONNECT_TIMEOUT = 10.0

CLONE_NEWNET = 0x40000000
PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37


class _ClientGone(Exception):
    """The client disconnected, or writing to it failed."""


# -- fds shared with helper threads ------------------------------------------------------------


class _SharedFd:
    """An fd owned by the hook's thread that helper threads write to, resize or shut down.

    Every use happens under a lock and :meth:`close` takes it too, so a helper never touches
    the fd number after it was closed (and perhaps reused). Writes are non-blocking, waiting
    for room at most 50 ms at a time under the lock, so :meth:`close` never waits long. ``sock``
    is the socket object when the fd is a socket (kept alive, closed by :meth:`close`).
    """

    def __init__(self, fd: int, sock: socket.socket | None = None) -> None:
        self._fd = fd
        self._sock = sock
        self._lock = threading.Lock()
        self._closing = False

    @classmethod
    def of_socket(cls, sock: socket.socket) -> _SharedFd:
        sock.setblocking(False)
        return cls(sock.fileno(), sock)

    @property
    def closed(self) -> bool:
        return self._closing

    def write(self, data: bytes, *, packet: int = 0) -> bool:
        """Write all of ``data`` (in records of at most ``packet`` bytes if set).

        False when the fd is closed or the write failed (EPIPE, EIO, ...).
        """
        view = memoryview(data)
        step = packet or len(view)
        while view:
            if self._closing:
                return False
            with self._lock:
                if self._fd < 0:
                    return False
                try:
                    written = os.write(self._fd, view[:step])
                except BlockingIOError:
                    written = 0
                except OSError as error:
                    log.debug("write to fd %d failed: %s", self._fd, error)
                    return False
                if not written:
                    poller = select.poll()
                    poller.register(self._fd, select.POLLOUT)
                    poller.poll(50)
            view = view[written:]
        return True

    def ioctl(self, request: int, arg: bytes) -> None:
        with self._lock:
            if self._fd >= 0:
                fcntl.ioctl(self._fd, request, arg)

    def shutdown(self, how: int) -> None:
        """``shutdown(how)`` of the socket; for a plain fd, any ``how`` closes it."""
        with self._lock:
            if self._fd < 0:
                return
            if self._sock is None:
                self._close_locked()
                return
            with contextlib.suppress(OSError):
                self._sock.shutdown(how)

    def close(self) -> None:
        self._closing = True
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        if self._fd < 0:
            return
        if self._sock is not None:
            self._sock.close()
        else:
            os.close(self._fd)
        self._fd = -1


def _pump_input(
    name: str,
    read: Callable[[int], bytes],
    target: _SharedFd,
    *,
    on_eof: Callable[[], None],
    on_error: Callable[[], None] | None = None,
    packet: int = 0,
) -> threading.Thread:
    """A daemon thread copying ``read(CHUNK)`` to ``target`` until EOF (then ``on_eof``).

    A failing read calls ``on_error`` (``on_eof`` if None); a failing write (the target is
    closed or broken) just ends the thread.
    """

    def run() -> None:
        try:
            while True:
                data = read(CHUNK)
                if not data:
                    break
                if not target.write(bytes(data), packet=packet):
                    return
        except Exception as error:
            log.debug("%s: client read failed: %s", name, error)
            (on_error or on_eof)()
            return
        on_eof()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


def _reader(stream: BinaryIO) -> Callable[[int], bytes]:
    """``read1`` when the stream has it (returns what is there instead of filling ``n``)."""
    read1 = getattr(stream, "read1", None)
    return read1 if callable(read1) else stream.read


def _sink(stream: BinaryIO | None) -> Callable[[bytes], None] | None:
    """A writer of all of ``data`` to the client's ``stream``; raises :class:`_ClientGone`."""
    if stream is None:
        return None

    def write(data: bytes) -> None:
        try:
            while data:
                written = stream.write(data)
                if written is None or written >= len(data):
                    break
                data = data[written:]
            stream.flush()
        except Exception as error:
            raise _ClientGone(f"writing to the client failed: {error}") from error

    return write


class _Resizer:
    """Terminal sizes from the client, read by a daemon thread from ``streams.resizes()``.

    Sizes seen before :meth:`attach` are kept (the last one is applied on attach, and
    :meth:`first` offers the first for the process' initial ``consoleSize``); later ones are
    applied as they arrive, in order, under one lock.
    """

    def __init__(self, streams: StreamIO, name: str) -> None:
        self._cond = threading.Condition()
        self._size: TerminalSize | None = None
        self._apply: Callable[[int, int], None] | None = None
        self._streams = streams
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def _run(self) -> None:
        try:
            for size in self._streams.resizes():
                if size.width <= 0 or size.height <= 0:
                    continue
                with self._cond:
                    self._size = size
                    self._cond.notify_all()
                    if self._apply is not None:
                        self._call(size)
        except Exception as error:
            log.debug("terminal sizes: client read failed: %s", error)

    def _call(self, size: TerminalSize) -> None:
        assert self._apply is not None
        try:
            self._apply(size.width, size.height)
        except Exception as error:
            log.debug("cannot resize the terminal to %sx%s: %s", size.width, size.height, error)

    def first(self, timeout: float) -> TerminalSize | None:
        with self._cond:
            self._cond.wait_for(lambda: self._size is not None, timeout)
            return self._size

    def attach(self, apply: Callable[[int, int], None]) -> None:
        with self._cond:
            self._apply = apply
            if self._size is not None:
                self._call(self._size)

    def detach(self) -> None:
        with self._cond:
            self._apply = None


# -- processes ---------------------------------------------------------------------------------


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _ensure_subreaper() -> None:
    """Exec'd processes must be re-parented to us when the detached runtime exits."""
    libc = _libc()
    flag = ctypes.c_int(0)
    if libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0) == 0 and flag.value:
        return
    log.info("becoming a child subreaper (needed for the exit codes of exec'd processes)")
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OciError(
            f"cannot become a child subreaper (errno {ctypes.get_errno()}): "
            "exec'd processes would be lost"
        )


def _wait_child(pid: int) -> int:
    """Reap child ``pid``; its exit code, 128+n if signal n killed it, -1 if not ours."""
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        log.warning("exec'd process %d was reaped by someone else: exit code unknown", pid)
        return -1
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _wait_exit(pid: int, timeout: float) -> bool:
    """Wait until child ``pid`` (not yet reaped) exits; False on timeout."""
    pidfd = os.pidfd_open(pid)
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        return bool(poller.poll(max(0, int(timeout * 1000))))
    finally:
        os.close(pidfd)


def _runtime_log_message(path: Path) -> str:
    """The error messages of a runtime's JSON log (``--log-format json``)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    messages = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            if line.strip():
                messages.append(line.strip())
            continue
        if isinstance(entry, dict) and entry.get("level") in ("error", "fatal", "panic"):
            messages.append(str(entry.get("msg", "")))
    return "; ".join(message for message in messages if message)


def _set_pipe_size(fd: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)


class _Exec:
    """One exec session: start the process detached, relay, reap; see the module docs."""

    def __init__(
        self,
        oci: Oci,
        container_id: str,
        process: Mapping[str, Any],
        tty: bool,
        streams: StreamIO,
    ) -> None:
        self.oci = oci
        self.container_id = container_id
        self.process = dict(process)
        self.tty = tty
        self.streams = streams
        self.pid: int | None = None  # the exec'd process, once started and not yet reaped

    def run(self) -> int:
        _ensure_subreaper()
        work = Path(
            tempfile.mkdtemp(prefix=f"stream-{self.container_id[:12]}.", dir=self.oci.exec_dir)
        )
        try:
            with contextlib.ExitStack() as stack:
                try:
                    return self._run(work, stack)
                finally:
                    if self.pid is not None:  # an error after the start: leave nothing running
                        kill_process_tree(self.pid)
                        _wait_child(self.pid)
                        self.pid = None
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _command(self, *extra: str) -> list[str]:
        runtime = self.oci.runtime
        return [
            runtime.path,
            f"--root={runtime.root}",
            "--log=runtime.log",
            "--log-format=json",
            "exec",
            "--detach",
            "--pid-file=pid",
            "--process=process.json",
            *extra,
            self.container_id,
        ]

    def _popen(
        self, work: Path, stack: contextlib.ExitStack, args: list[str], **fds: Any
    ) -> subprocess.Popen[bytes]:
        """Start the runtime; if the session fails before it was reaped, kill it (and what it
        started)."""
        try:
            runtime = subprocess.Popen(
                args, cwd=work, env={"PATH": RUNTIME_PATH}, start_new_session=True, **fds
            )
        except OSError as error:
            raise OciError(
                f"runtime {self.oci.runtime.name} is not available: {error}", code="UNAVAILABLE"
            ) from None
        stack.callback(self._abandon_runtime, work, runtime)
        return runtime

    def _abandon_runtime(self, work: Path, runtime: subprocess.Popen[bytes]) -> None:
        if runtime.returncode is not None:
            return
        kill_process_tree(runtime.pid)
        runtime.wait()
        if self.pid is None:  # it may have started the process (now re-parented to us)
            with contextlib.suppress(OSError, ValueError):
                pid = int((work / "pid").read_text().strip())
                kill_process_tree(pid)
                _wait_child(pid)

    def _failed(self, work: Path, returncode: int | None) -> OciError:
        text = _runtime_log_message(work / "runtime.log") or (
            "timed out" if returncode is None else f"exit status {returncode}"
        )
        running = self.oci.exit_code(self.container_id) is None
        return OciError(
            f"exec in container {self.container_id} failed: {text}",
            code="UNKNOWN" if running else "FAILED_PRECONDITION",
            runtime_message=text,
        )

    def _finish_runtime(self, work: Path, runtime: subprocess.Popen[bytes]) -> int:
        """Wait for the detached runtime to exit; the pid of the process it started."""
        # Popen.wait(timeout) polls with sleeps growing to 50 ms (a 40 ms runtime would be
        # noticed after 63 ms): wait on a pidfd instead
        returncode: int | None
        if _wait_exit(runtime.pid, self.oci.command_timeout):
            returncode = runtime.wait()
        else:
            kill_process_tree(runtime.pid)
            runtime.wait()
            returncode = None
        pid_text = ""
        with contextlib.suppress(OSError):
            pid_text = (work / "pid").read_text().strip()
        if pid_text.isdigit() and int(pid_text) > 0:
            self.pid = int(pid_text)
        if returncode != 0 or self.pid is None:
            raise self._failed(work, returncode)
        return self.pid

    def _run(self, work: Path, stack: contextlib.ExitStack) -> int:
        if self.tty:
            return self._run_tty(work, stack)
        streams = self.streams
        fds = _Fds()
        stack.callback(fds.close_all)
        devnull = fds.add(os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC))
        child_fds: list[int] = []
        stdin: _SharedFd | None = None
        outputs: dict[int, Callable[[bytes], None] | None] = {}

        def pipe() -> tuple[int, int]:
            read_end, write_end = os.pipe()
            fds.add(read_end)
            fds.add(write_end)
            _set_pipe_size(write_end)
            return read_end, write_end

        if streams.stdin is not None:
            read_end, write_end = pipe()
            child_fds.append(read_end)
            os.set_blocking(write_end, False)
            stdin = _SharedFd(fds.take(write_end))
            stack.callback(stdin.close)
        else:
            child_fds.append(devnull)
        for stream in (streams.stdout, streams.stderr):
            if stream is None:
                child_fds.append(devnull)
                continue
            read_end, write_end = pipe()
            child_fds.append(write_end)
            outputs[read_end] = _sink(stream)

        spec = dict(self.process, terminal=False)
        spec.pop("consoleSize", None)
        (work / "process.json").write_text(json.dumps(spec))
        runtime = self._popen(
            work,
            stack,
            self._command(),
            stdin=child_fds[0],
            stdout=child_fds[1],
            stderr=child_fds[2],
        )
        for fd in child_fds:  # the process holds them now: EOF comes when it is done
            fds.close(fd)
        pid = self._finish_runtime(work, runtime)
        if stdin is not None and streams.stdin is not None:
            _pump_input(f"exec-stdin-{pid}", _reader(streams.stdin), stdin, on_eof=stdin.close)
        return self._relay(pid, outputs)

    def _run_tty(self, work: Path, stack: contextlib.ExitStack) -> int:
        streams = self.streams
        resizer = _Resizer(streams, f"exec-resize-{self.container_id[:12]}")
        stack.callback(resizer.detach)
        spec = dict(self.process, terminal=True)
        spec.pop("consoleSize", None)
        size = resizer.first(EXEC_FIRST_SIZE_WAIT)
        if size is not None:
            spec["consoleSize"] = {"height": size.height, "width": size.width}
        env = list(spec.get("env") or [])
        if not any(str(item).startswith("TERM=") for item in env):
            spec["env"] = [*env, "TERM=xterm"]
        (work / "process.json").write_text(json.dumps(spec))

        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stack.callback(listener.close)
        folder = os.open(work, os.O_PATH | os.O_CLOEXEC)
        try:  # the work dir's path may be longer than a socket address allows
            listener.bind(f"/proc/self/fd/{folder}/console.sock")
        finally:
            os.close(folder)
        listener.listen(1)
        runtime = self._popen(
            work,
            stack,
            self._command("--console-socket=console.sock"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        master = self._receive_console(listener, runtime)
        listener.close()
        if master is None:
            self._finish_runtime(work, runtime)  # raises: the runtime sent no terminal
            raise self._failed(work, runtime.returncode)
        shared = _SharedFd(master)
        stack.callback(shared.close)
        os.set_blocking(master, False)
        pid = self._finish_runtime(work, runtime)

        def resize(width: int, height: int) -> None:
            shared.ioctl(termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))

        resizer.attach(resize)
        if streams.stdin is not None:
            # no EOF on a terminal: the client's stdin ending changes nothing
            _pump_input(f"exec-stdin-{pid}", _reader(streams.stdin), shared, on_eof=_nothing)
        return self._relay(pid, {master: _sink(streams.stdout)})

    def _receive_console(
        self, listener: socket.socket, runtime: subprocess.Popen[bytes]
    ) -> int | None:
        """The pty master the runtime sends to the console socket; None if it exits first."""
        deadline = time.monotonic() + self.oci.command_timeout
        pidfd = os.pidfd_open(runtime.pid)
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(listener, selectors.EVENT_READ)
                selector.register(pidfd, selectors.EVENT_READ)
                while True:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return None
                    ready = {key.fd for key, _ in selector.select(remaining)}
                    if listener.fileno() in ready:
                        break
                    if pidfd in ready:
                        return None
        finally:
            os.close(pidfd)
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(self.oci.command_timeout)
            _, fds, _, _ = socket.recv_fds(conn, 4096, 4)
        for extra in fds[1:]:
            os.close(extra)
        return fds[0] if fds else None

    def _relay(self, pid: int, outputs: Mapping[int, Callable[[bytes], None] | None]) -> int:
        """Copy output to the client until the process exits and the output is drained."""
        streams = self.streams
        pidfd = os.pidfd_open(pid)  # our child (re-parented): the pid stays valid until reaped
        code: int | None = None
        drain_deadline = 0.0
        pending = set(outputs)
        try:
            with selectors.DefaultSelector() as selector:
                for fd in outputs:
                    os.set_blocking(fd, False)
                    selector.register(fd, selectors.EVENT_READ)
                selector.register(pidfd, selectors.EVENT_READ)
                while True:
                    now = time.monotonic()
                    if code is not None and (not pending or now >= drain_deadline):
                        return code
                    if streams.closed:
                        raise _ClientGone("the client disconnected")
                    timeout = POLL_INTERVAL
                    if code is not None:
                        timeout = min(timeout, drain_deadline - now)
                    for key, _ in selector.select(timeout):
                        fd = int(key.fd)
                        if fd == pidfd:
                            selector.unregister(pidfd)
                            code = _wait_child(pid)
                            self.pid = None
                            drain_deadline = time.monotonic() + EXEC_DRAIN_TIMEOUT
                            continue
                        data = _read_output(fd)
                        if data is None:
                            continue
                        if not data:
                            selector.unregister(fd)
                            pending.discard(fd)
                            continue
                        sink = outputs[fd]
                        if sink is not None:
                            sink(data)
        except _ClientGone as gone:
            if code is None:
                log.debug("exec %d in %s: %s; killing it", pid, self.container_id[:12], gone)
                kill_process_tree(pid)
                code = _wait_child(pid)
                self.pid = None
            return code
        finally:
            os.close(pidfd)


def _read_output(fd: int) -> bytes | None:
    """Read what is there: b"" at EOF (a pty master whose slaves closed: EIO), None if none."""
    try:
        return os.read(fd, CHUNK)
    except BlockingIOError:
        return None
    except OSError as error:
        if error.errno == errno.EIO:
            return b""
        raise


class _Fds:
    """fds owned by one exec session: each closed exactly once."""

    def __init__(self) -> None:
        self._fds: set[int] = set()

    def add(self, fd: int) -> int:
        self._fds.add(fd)
        return fd

    def take(self, fd: int) -> int:
        """Hand ``fd`` over to another owner."""
        self._fds.remove(fd)
        return fd

    def close(self, fd: int) -> None:
        if fd in self._fds:
            self._fds.remove(fd)
            os.close(fd)

    def close_all(self) -> None:
        while self._fds:
            os.close(self._fds.pop())


def _nothing() -> None:
    pass


# -- port forwarding ---------------------------------------------------------------------------


def _setns(fd: int) -> None:
    if _libc().setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"setns: {os.strerror(code)}")


def _dial_localhost(port: int, where: str) -> socket.socket:
    """Connect to 127.0.0.1:``port``, else [::1]:``port``, in this thread's network namespace."""
    problems = []
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as error:  # no IPv6 in the namespace
            problems.append(f"{host}: {error.strerror or error}")
            continue
        try:
            sock.settimeout(CONNECT_TIMEOUT)
            sock.connect((host, port))
        except OSError as error:
            sock.close()
            problems.append(f"{host}: {error.strerror or error}")
            continue
        sock.settimeout(None)
        return sock
    raise Unavailable(f"cannot connect to port {port} in {where}: {'; '.join(problems)}")


def _dial_in_netns(netns: str, port: int, where: str) -> socket.socket:
    """:func:`_dial_localhost` from a thread that entered the network namespace file ``netns``.

    Only that thread changes namespace (setns affects the calling thread), it goes back before
    it ends, and it ends right after; the socket stays in the namespace it was created in.
    """
    result: list[socket.socket | BaseException] = []

    def run() -> None:
        try:
            own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                target = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    _setns(target)
                finally:
                    os.close(target)
                try:
                    result.append(_dial_localhost(port, where))
                finally:
                    try:
                        _setns(own)
                    except OSError:  # the thread ends now anyway
                        log.exception("cannot return to the original network namespace")
            finally:
                os.close(own)
        except BaseException as error:
            result.append(error)

    thread = threading.Thread(target=run, name=f"netns-dial-{port}", daemon=True)
    thread.start()
    thread.join()
    outcome = result[0] if result else RuntimeError("the dialling thread died")
    if isinstance(outcome, BaseException):
        if isinstance(outcome, FileNotFoundError):
            raise FailedPrecondition(f"the network namespace of {where} is gone") from None
        raise outcome
    return outcome


def _relay_port(sock: socket.socket, stream: PortStream, name: str) -> None:
    """Copy between ``sock`` and ``stream`` until the socket's peer is done or a side fails."""
    shared = _SharedFd.of_socket(sock)
    try:
        _pump_input(
            name,
            stream.read,
            shared,
            on_eof=lambda: shared.shutdown(socket.SHUT_WR),  # half-close: keep reading
            on_error=lambda: shared.shutdown(socket.SHUT_RDWR),  # wakes the reader below
        )
        with selectors.DefaultSelector() as selector:
            selector.register(sock, selectors.EVENT_READ)
            while True:
                selector.select()
                try:
                    data = sock.recv(CHUNK)
                except BlockingIOError:
                    continue
                except OSError as error:
                    log.debug("%s: the connection failed: %s", name, error)
                    return
                if not data:
                    return
                try:
                    while data:
                        written = stream.write(data)
                        if written is None or written >= len(data):
                            break
                        data = data[written:]
                except Exception as error:
                    log.debug("%s: writing to the client failed: %s", name, error)
                    return
    finally:
        shared.close()
        with contextlib.suppress(Exception):
            stream.close()


# -- the hooks ---------------------------------------------------------------------------------


def _running(backend: _Backend, container_id: str) -> tuple[ContainerRecord, Oci]:
    ctr = backend._ctr(container_id)
    oci = backend.oci(ctr.runtime)
    if ctr.state != C_RUNNING or oci.exit_code(ctr.id) is not None:
        state = "EXITED" if ctr.state == C_RUNNING else m.ContainerState(ctr.state).name
        raise FailedPrecondition(f"container {container_id} is {state}, not running")
    return ctr, oci


def _relay_attach(
    sock: socket.socket, streams: StreamIO, sinks: Mapping[int, Callable[[bytes], None] | None]
) -> bool:
    """Relay conmon's packets; True when conmon closed, False when the client left."""
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_READ)
        while True:
            if streams.closed:
                return False
            if not selector.select(POLL_INTERVAL):
                continue
            try:
                packet = sock.recv(CHUNK)
            except BlockingIOError:
                continue
            except OSError as error:
                log.debug("attach socket failed: %s", error)
                return True
            if not packet:
                return True
            sink = sinks.get(packet[0])
            if sink is not None and len(packet) > 1:
                sink(packet[1:])


class _Backend(Protocol):
    """What the hooks use of the backend (:class:`criadapt_runc.runtime.RuntimeService`)."""

    def _ctr(self, container_id: str) -> ContainerRecord: ...

    def _pod(self, pod_id: str) -> SandboxRecord: ...

    def oci(self, handler: str) -> Oci: ...


class StreamService:
    """Hooks of the streaming server: exec, attach and port-forward on runc containers.

    Mixed into the runc backend with :class:`criadapt_runc.runtime.RuntimeService`, whose
    ``_ctr``, ``_pod`` and ``oci`` are all the hooks use (they work as plain functions on any
    object providing those: the logic lives in module functions).
    """

    if TYPE_CHECKING:  # provided by RuntimeService

        def _ctr(self, container_id: str) -> ContainerRecord: ...

        def _pod(self, pod_id: str) -> SandboxRecord: ...

        def oci(self, handler: str) -> Oci: ...

    @hookimpl
    def criadapt_stream_exec(
        self, container_id: str, cmd: Sequence[str], tty: bool, streams: StreamIO
    ) -> int:
        if not cmd:
            raise InvalidArgument("exec needs a command")
        ctr, oci = _running(self, container_id)
        spec = json.loads((Path(ctr.bundle) / "config.json").read_text())
        process = dict(spec["process"])
        process["args"] = list(cmd)
        return _Exec(oci, ctr.id, process, tty, streams).run()

    @hookimpl
    def criadapt_stream_attach(self, container_id: str, tty: bool, streams: StreamIO) -> int:
        ctr, oci = _running(self, container_id)
        process = oci.process(ctr.id)
        if process is None or process.attach_socket is None:
            raise FailedPrecondition(f"container {container_id} has no attach socket")
        try:
            sock = connect_attach(process.attach_socket)
        except OSError as error:
            if oci.exit_code(ctr.id) is not None:
                raise FailedPrecondition(f"container {container_id} exited") from None
            raise Unavailable(f"cannot attach to container {container_id}: {error}") from None
        config = ctr.config
        shared = _SharedFd.of_socket(sock)
        resizer: _Resizer | None = None
        try:
            if tty:
                resizer = _Resizer(streams, f"attach-resize-{ctr.id[:12]}")

                def resize(width: int, height: int) -> None:
                    oci.resize(ctr.id, width=width, height=height)

                resizer.attach(resize)
            if streams.stdin is not None and (config.stdin or config.tty):
                _pump_input(
                    f"attach-stdin-{ctr.id[:12]}",
                    _reader(streams.stdin),
                    shared,
                    # conmon closes the container's stdin at our EOF when it is stdin_once
                    on_eof=lambda: shared.shutdown(socket.SHUT_WR),
                    packet=ATTACH_PACKET,
                )
            sinks = {ATTACH_STDOUT: _sink(streams.stdout), ATTACH_STDERR: _sink(streams.stderr)}
            if tty:
                sinks[ATTACH_STDERR] = None
            if not _relay_attach(sock, streams, sinks):
                return -1
        except _ClientGone:
            return -1
        finally:
            if resizer is not None:
                resizer.detach()
            shared.close()
        # conmon closed the socket: it exits right after the container
        try:
            code = oci.wait(ctr.id, timeout=5)
        except CriError as error:
            log.warning("attach to %s: no exit code: %s", ctr.id[:12], error)
            return -1
        return -1 if code is None else code

    @hookimpl
    def criadapt_stream_port_forward(
        self, pod_sandbox_id: str, port: int, stream: PortStream
    ) -> None:
        if not 0 < port < 65536:
            raise InvalidArgument(f"invalid port {port}")
        pod = self._pod(pod_sandbox_id)
        if pod.state != SANDBOX_READY:
            raise FailedPrecondition(f"pod sandbox {pod_sandbox_id} is not ready")
        where = f"pod sandbox {pod_sandbox_id}"
        netns = pod.namespaces.get("network")
        if pod.host_network:
            sock = _dial_localhost(port, where)
        elif netns:
            sock = _dial_in_netns(netns, port, where)
        else:
            raise FailedPrecondition(f"{where} has no network namespace")
        _relay_port(sock, stream, f"port-forward-{pod.id[:12]}-{port}")
