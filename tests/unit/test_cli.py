"""The ``criadapt`` command line, run as a subprocess (``python -m criadapt ...``)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

import criadapt

COMMAND_TIMEOUT = 30.0
START_TIMEOUT = 10.0
STOP_TIMEOUT = 15.0


def criadapt_cli(*args: str, timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "criadapt", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def answers(socket_path: Path) -> bool:
    """Whether Version is answered OK on the socket (raw bytes, no protobuf module)."""
    try:
        with grpc.insecure_channel(f"unix://{socket_path}") as channel:
            channel.unary_unary("/runtime.v1.RuntimeService/Version")(b"", timeout=1.0)
    except grpc.RpcError:
        return False
    return True


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short folder for sockets (unix socket paths are limited to ~107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="criadapt-cli-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class Serve:
    """A ``criadapt serve`` subprocess; stderr goes to a file so that it never blocks."""

    def __init__(self, tmp: Path, socket_path: Path, *extra: str) -> None:
        self.socket = socket_path
        self.stderr_path = tmp / f"serve-{time.monotonic_ns()}.stderr"
        with self.stderr_path.open("wb") as stderr:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "criadapt",
                    "serve",
                    "--backend=fake",
                    "--listen",
                    f"unix://{socket_path}",
                    "--root",
                    str(tmp / "root"),
                    "--state",
                    str(tmp / "state"),
                    *extra,
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_answering(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not (self.socket.exists() and answers(self.socket)):
            if self.proc.poll() is not None:
                pytest.fail(
                    f"criadapt serve exited with {self.proc.returncode} before answering:\n"
                    + self.stderr()
                )
            if time.monotonic() > deadline:
                pytest.fail(
                    f"criadapt serve did not answer within {START_TIMEOUT} s:\n" + self.stderr()
                )
            time.sleep(0.1)

    def stop(self, signum: int = signal.SIGTERM) -> int:
        self.proc.send_signal(signum)
        try:
            return self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"criadapt serve did not stop on {signal.Signals(signum).name}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@contextlib.contextmanager
def serving(tmp: Path, socket_path: Path, *extra: str) -> Iterator[Serve]:
    server = Serve(tmp, socket_path, *extra)
    try:
        yield server
    finally:
        server.kill()


# -- commands without a server ---------------------------------------------------------------


def test_version() -> None:
    result = criadapt_cli("version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"criadapt {criadapt.__version__}\n"


def test_console_script_matches_module() -> None:
    script = Path(sys.executable).with_name("criadapt")
    if not script.exists():
        pytest.skip("no criadapt console script next to the interpreter")
    result = subprocess.run(
        [str(script), "version"],
        check=False,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"criadapt {criadapt.__version__}\n"


def test_backends_lists_fake() -> None:
    result = criadapt_cli("backends")
    assert result.returncode == 0, result.stderr
    rows = dict(line.split("\t") for line in result.stdout.splitlines())
    assert rows.get("fake") == "criadapt.testing.fake"


def test_backends_does_not_import_them() -> None:
    code = (
        "import sys\n"
        "from criadapt.cli import main\n"
        "assert main(['backends']) == 0\n"
        "loaded = [m for m in sys.modules if m.startswith('criadapt.testing')]\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
    )
    assert result.returncode == 0, result.stderr


def _keys(table: dict[str, Any], prefix: str = "") -> set[str]:
    keys = set()
    for key, value in table.items():
        keys.add(prefix + key)
        if isinstance(value, dict):
            keys |= _keys(value, f"{prefix}{key}.")
    return keys


def test_config_default_is_toml() -> None:
    result = criadapt_cli("config", "default")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    parsed = tomllib.loads(result.stdout)
    assert "listen" in parsed
    assert parsed["listen"].startswith("unix:///")
    assert {"backend", "root", "state"} <= _keys(parsed)


def test_unknown_backend(tmp_path: Path) -> None:
    result = criadapt_cli(
        "serve",
        "--backend=no-such-backend",
        "--listen",
        f"unix://{tmp_path}/x.sock",
        "--root",
        str(tmp_path / "root"),
        "--state",
        str(tmp_path / "state"),
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "no-such-backend" in lines[0]
    assert "fake" in lines[0]
    assert not (tmp_path / "x.sock").exists()


def test_missing_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "criadapt.toml"
    result = criadapt_cli("serve", "--backend=fake", "--config", str(missing))
    assert result.returncode == 2, result.stderr
    assert str(missing) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_config_unknown_key(tmp_path: Path, sock_dir: Path) -> None:
    config = tmp_path / "criadapt.toml"
    config.write_text('backend = "fake"\nlisten_addr = "unix:///tmp/x.sock"\n')
    result = criadapt_cli(
        "serve", "--config", str(config), "--listen", f"unix://{sock_dir}/cri.sock"
    )
    assert result.returncode == 2, result.stderr
    assert "listen_addr" in result.stderr
    assert str(config) in result.stderr
    assert not (sock_dir / "cri.sock").exists()


def test_config_unknown_nested_key(tmp_path: Path) -> None:
    config = tmp_path / "criadapt.toml"
    config.write_text('backend = "fake"\n[streaming]\nprot = 1\n')
    result = criadapt_cli("serve", "--config", str(config))
    assert result.returncode == 2, result.stderr
    assert "streaming.prot" in result.stderr


# -- serving -----------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_stops_on_signal(tmp_path: Path, sock_dir: Path, signum: int) -> None:
    path = sock_dir / "cri.sock"
    with serving(tmp_path, path) as server:
        server.wait_answering()
        assert server.stop(signum) == 0, server.stderr()
        assert not path.exists(), "the socket was left behind"


def test_socket_mode(tmp_path: Path, sock_dir: Path) -> None:
    path = sock_dir / "cri.sock"
    with serving(tmp_path, path) as server:
        server.wait_answering()
        mode = path.lstat().st_mode
        assert stat.S_ISSOCK(mode)
        assert stat.S_IMODE(mode) == 0o660, oct(stat.S_IMODE(mode))
        assert server.stop() == 0, server.stderr()


def test_serve_with_default_config_file(tmp_path: Path, sock_dir: Path) -> None:
    """The output of ``config default`` is a valid ``--config`` (flags override it)."""
    config = tmp_path / "criadapt.toml"
    default = criadapt_cli("config", "default")
    assert default.returncode == 0, default.stderr
    config.write_text(default.stdout)
    path = sock_dir / "cri.sock"
    with serving(tmp_path, path, "--config", str(config)) as server:
        server.wait_answering()
        assert server.stop() == 0, server.stderr()


def test_stale_socket_is_replaced(tmp_path: Path, sock_dir: Path) -> None:
    path = sock_dir / "cri.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    assert stat.S_ISSOCK(path.lstat().st_mode)
    with serving(tmp_path, path) as server:
        # answering proves the stale file was replaced: bind() fails on an existing path
        server.wait_answering()
        assert stat.S_IMODE(path.lstat().st_mode) == 0o660
        assert server.stop() == 0, server.stderr()
        assert not path.exists()


def test_live_socket_is_refused(tmp_path: Path, sock_dir: Path) -> None:
    path = sock_dir / "cri.sock"
    with serving(tmp_path, path) as first:
        first.wait_answering()
        inode = path.lstat().st_ino
        second = criadapt_cli(
            "serve",
            "--backend=fake",
            "--listen",
            f"unix://{path}",
            "--root",
            str(tmp_path / "root2"),
            "--state",
            str(tmp_path / "state2"),
            timeout=20,
        )
        assert second.returncode != 0
        assert second.stderr.strip(), "no message on refusal"
        assert str(path) in second.stderr
        assert path.exists(), "the second server removed the first one's socket"
        assert path.lstat().st_ino == inode
        assert first.proc.poll() is None, first.stderr()
        assert answers(path)
        assert first.stop() == 0, first.stderr()
        assert not path.exists()


def test_regular_file_is_not_replaced(tmp_path: Path, sock_dir: Path) -> None:
    path = sock_dir / "cri.sock"
    path.write_text("precious")
    result = criadapt_cli(
        "serve",
        "--backend=fake",
        "--listen",
        f"unix://{path}",
        "--root",
        str(tmp_path / "root"),
        "--state",
        str(tmp_path / "state"),
    )
    assert result.returncode != 0
    assert str(path) in result.stderr
    assert path.read_text() == "precious"


def test_invalid_listen_flag() -> None:
    result = criadapt_cli("serve", "--backend=fake", "--listen", "tcp://127.0.0.1:1234")
    assert result.returncode == 2, result.stderr
    assert "listen" in result.stderr


def test_serve_does_not_log_answered_rpcs_as_unimplemented(tmp_path: Path, sock_dir: Path) -> None:
    path = sock_dir / "cri.sock"
    with serving(tmp_path, path, "--log-level", "info") as server:
        server.wait_answering()  # Version is answered OK...
        assert server.stop() == 0, server.stderr()
    unimplemented: list[str] = []
    for line in server.stderr().splitlines():
        _, found, names = line.partition("does not implement (answer UNIMPLEMENTED): ")
        if found:
            unimplemented += [name.strip() for name in names.split(",")]
    # ...so it must not be listed as unimplemented
    assert "Version" not in unimplemented
    assert "RunPodSandbox" not in unimplemented


def test_backend_that_fails_to_import_is_one_line(tmp_path: Path) -> None:
    info = tmp_path / "criadapt_broken-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: criadapt_broken\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[criadapt.backends]\nbroken = broken_backend\n")
    (tmp_path / "broken_backend.py").write_text("import no_such_module_anywhere\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "criadapt",
            "serve",
            "--backend=broken",
            "--listen",
            f"unix://{tmp_path}/s.sock",
        ],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "cannot load backend 'broken'" in lines[0]
    assert "no_such_module_anywhere" in lines[0]
