"""``criadapt serve`` in a subprocess, for end-to-end tests.

Imports only grpc (not criadapt's generated protobuf modules), so tests that talk to the server
with another CRI stub package in the same process can use it.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import grpc


def answers(socket_path: Path) -> bool:
    """Whether ``Version`` is answered on the socket (raw bytes: no protobuf module needed)."""
    try:
        with grpc.insecure_channel(f"unix://{socket_path}") as channel:
            channel.unary_unary("/runtime.v1.RuntimeService/Version")(b"", timeout=1.0)
    except grpc.RpcError:
        return False
    return True


class ServeProcess:
    """A running ``criadapt serve``: its process, socket and captured stderr."""

    def __init__(self, proc: subprocess.Popen[bytes], socket_path: Path, stderr: Path) -> None:
        self.proc = proc
        self.socket_path = socket_path
        self.stderr_path = stderr

    @property
    def endpoint(self) -> str:
        return f"unix://{self.socket_path}"

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


class ServeError(AssertionError):
    """The server did not start or did not stop as it should (fails the test)."""


@contextlib.contextmanager
def serve_subprocess(
    args: Sequence[str],
    base: Path,
    *,
    start_timeout: float = 15.0,
    stop_timeout: float = 15.0,
) -> Iterator[ServeProcess]:
    """Run ``criadapt serve --listen unix://<socket> *args`` until the block ends.

    The socket lives in a short temporary folder (unix socket paths are limited to ~107 bytes);
    ``base`` holds the server's stderr. Waits until ``Version`` answers. On leaving, SIGTERM
    must stop it with exit code 0 and remove the socket (else :class:`ServeError`); a server
    still running after a failure is killed.
    """
    sock_dir = Path(tempfile.mkdtemp(prefix="criadapt-serve-"))
    socket_path = sock_dir / "cri.sock"
    stderr_path = base / "server.stderr"
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "criadapt",
                "serve",
                "--listen",
                f"unix://{socket_path}",
                *args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    server = ServeProcess(proc, socket_path, stderr_path)
    try:
        deadline = time.monotonic() + start_timeout
        while not (socket_path.exists() and answers(socket_path)):
            if proc.poll() is not None:
                raise ServeError(
                    f"criadapt serve exited with {proc.returncode} before answering:\n"
                    + server.stderr()
                )
            if time.monotonic() > deadline:
                raise ServeError(
                    f"criadapt serve did not answer on {socket_path} within {start_timeout} s:\n"
                    + server.stderr()
                )
            time.sleep(0.1)
        yield server
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=stop_timeout)
        except subprocess.TimeoutExpired:
            raise ServeError(
                "criadapt serve did not stop on SIGTERM:\n" + server.stderr()
            ) from None
        if code != 0:
            raise ServeError(f"criadapt serve exited with {code}:\n" + server.stderr())
        if socket_path.exists():
            raise ServeError("the socket was left behind after SIGTERM")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(sock_dir, ignore_errors=True)
