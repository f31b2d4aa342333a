"""Tests of the OCI process layer: real conmon + runc (and crun) on busybox bundles.

Every test runs its containers under a test-unique cgroup parent and checks afterwards that it
left nothing behind: no container known to the runtime, no live process mentioning the test's
directory, no cgroup under its parent, no mount under its directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from criadapt.errors import DeadlineExceeded
from criadapt_runc.oci import (
    ContainerProcess,
    Oci,
    OciError,
    OciRuntime,
    connect_attach,
    pid_alive,
)
from criadapt_runc.testing_bundles import bundle_config, make_bundle, make_rootfs

RUNC = "/usr/sbin/runc"
CONMON = "/usr/bin/conmon"
CRUN = "/usr/bin/crun"
CGROUP_ROOT = Path("/sys/fs/cgroup")

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="containers need root"),
    pytest.mark.skipif(
        not (os.access(RUNC, os.X_OK) and os.access(CONMON, os.X_OK)),
        reason="needs runc and conmon (Debian packages runc, conmon)",
    ),
    pytest.mark.skipif(not Path("/bin/busybox").is_file(), reason="needs busybox-static"),
]

CRI_LOG_LINE = re.compile(
    r"^(?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)) "
    r"(?P<stream>stdout|stderr) (?P<tag>[FP]) (?P<text>.*)$"
)

SLEEPER = ["/bin/catatonit", "--", "sleep", "1000"]


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_rootfs(tmp_path_factory.mktemp("rootfs") / "rootfs")
    if not (root / "bin" / "catatonit").exists():
        pytest.skip("needs catatonit (Debian package catatonit)")
    return root


def _cgroup_dirs(parent: str) -> list[Path]:
    out = []
    for controller in CGROUP_ROOT.iterdir():
        path = controller / parent.lstrip("/")
        if path.is_dir():
            out.append(path)
    return out


def _remove_cgroup_tree(path: Path) -> None:
    for sub in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        sub.rmdir()
    path.rmdir()


def _processes_mentioning(text: str) -> list[tuple[int, str]]:
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline and pid_alive(int(name)):
            out.append((int(name), cmdline))
    return out


def container_processes(init_pid: int) -> list[str]:
    """Command lines of the live processes in the PID namespace of ``init_pid``."""
    namespace = os.readlink(f"/proc/{init_pid}/ns/pid")
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{name}/ns/pid") != namespace:
                continue
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
        except OSError:
            continue
        if pid_alive(int(name)):
            out.append(cmdline.replace(b"\0", b" ").decode().strip())
    return sorted(out)  # not by pid: pids wrap around


class Lab:
    """Bundles, Oci instances and containers of one test, cleaned up and checked after it."""

    def __init__(self, base: Path, rootfs: Path) -> None:
        self.base = base
        self.rootfs = rootfs
        self.cgroup_parent = f"/criadapt-test/{uuid.uuid4().hex[:12]}"
        self.ocis: list[Oci] = []
        self.processes: list[ContainerProcess] = []
        self.oci = self.make_oci(OciRuntime.runc(base / "runc-root"))

    def make_oci(self, runtime: OciRuntime, state: str = "state") -> Oci:
        oci = Oci(runtime, conmon=CONMON, state_dir=self.base / state)
        self.ocis.append(oci)
        return oci

    def bundle(self, name: str, args: Sequence[str], **kwargs: Any) -> Path:
        return make_bundle(
            self.base / "bundles" / name,
            self.rootfs,
            args,
            cgroups_path=f"{self.cgroup_parent}/{name}",
            **kwargs,
        )

    def create(
        self,
        name: str,
        args: Sequence[str],
        *,
        oci: Oci | None = None,
        log: bool = True,
        terminal: bool = False,
        **kwargs: Any,
    ) -> ContainerProcess:
        bundle = self.bundle(name, args, terminal=terminal)
        process = (oci or self.oci).create(
            name,
            bundle,
            log_path=self.log_path(name) if log else None,
            terminal=terminal,
            **kwargs,
        )
        self.processes.append(process)
        return process

    def run(self, name: str, args: Sequence[str], **kwargs: Any) -> ContainerProcess:
        process = self.create(name, args, **kwargs)
        (kwargs.get("oci") or self.oci).start(name)
        return process

    def log_path(self, name: str) -> Path:
        return self.base / "logs" / f"{name}.log"

    def log_lines(self, name: str) -> list[re.Match[str]]:
        lines = self.log_path(name).read_text().splitlines()
        matches = [CRI_LOG_LINE.match(line) for line in lines]
        assert all(matches), lines
        return [m for m in matches if m is not None]

    def exec_process(self, args: Sequence[str]) -> dict[str, Any]:
        process: dict[str, Any] = bundle_config(args)["process"]
        return process

    def alive(self, pid: int) -> bool:
        return pid_alive(pid) and self.owns(pid)

    def owns(self, pid: int) -> bool:
        """Whether ``pid`` is (still) one of ours: pids wrap around quickly on busy hosts."""
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            cgroups = Path(f"/proc/{pid}/cgroup").read_text()
        except OSError:
            return False
        return str(self.base).encode() in cmdline or self.cgroup_parent in cgroups

    def cleanup_and_check(self) -> list[str]:
        problems = []
        for oci in self.ocis:
            root = oci.runtime.root
            ids = set(oci.containers())
            if root.is_dir():
                ids |= {p.name for p in root.iterdir() if p.is_dir()}
            for container_id in sorted(ids):
                if container_id in oci.containers() or (root / container_id).exists():
                    problems.append(f"container {container_id} left in {oci}")
                oci.delete(container_id, force=True)
            leftovers = list(oci.exits_dir.iterdir()) + list(oci.exec_dir.iterdir())
            if leftovers:
                problems.append(f"files left: {leftovers}")
        for process in self.processes:
            for pid in (process.pid, process.conmon_pid):
                if self.alive(pid):
                    problems.append(f"process {pid} of {process.id} alive")
        deadline = time.monotonic() + 5
        while (procs := _processes_mentioning(str(self.base))) and time.monotonic() < deadline:
            time.sleep(0.05)
        if procs:
            problems.append(f"processes left: {procs}")
        for path in _cgroup_dirs(self.cgroup_parent):
            subs = [p for p in path.iterdir() if p.is_dir()]
            if subs:
                problems.append(f"cgroups left: {subs}")
            try:
                _remove_cgroup_tree(path)
            except OSError as error:
                problems.append(f"cannot remove cgroup {path}: {error}")
            with contextlib.suppress(OSError):  # unless another test's cgroups are there
                path.parent.rmdir()
        mounts = [
            line for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if str(self.base) in line
        ]  # fmt: skip
        if mounts:
            problems.append(f"mounts left: {mounts}")
        return problems


@pytest.fixture
def lab(tmp_path: Path, rootfs: Path) -> Iterator[Lab]:
    lab = Lab(tmp_path, rootfs)
    yield lab
    problems = lab.cleanup_and_check()
    assert not problems


def _assert_nothing_left(lab: Lab, name: str, bundle: Path) -> None:
    oci = lab.oci
    assert oci.containers() == []
    assert not (oci.runtime.root / name).exists()
    assert not oci.exit_file(name).exists()
    assert not oci.container_dir(name).exists()
    assert not lab.log_path(name).exists()
    assert sorted(p.name for p in bundle.iterdir()) == ["config.json"]
    assert _processes_mentioning(str(lab.base)) == []
    assert all(not any(p.is_dir() for p in d.iterdir()) for d in _cgroup_dirs(lab.cgroup_parent))


# -- create, start, wait, logs ---------------------------------------------------------------


def test_run_to_exit_with_cri_log(lab: Lab) -> None:
    oci = lab.oci
    process = lab.create("c1", ["sh", "-c", "echo hello; echo oops >&2; exit 3"])
    assert process.id == "c1"
    assert process.pid > 0 and process.conmon_pid > 0
    assert process.exit_file == oci.exit_file("c1")
    assert process.log_path == lab.log_path("c1")
    assert process.attach_socket == process.bundle / "attach"
    assert oci.process("c1") == process
    state = oci.state("c1")
    assert state is not None and state["status"] == "created" and state["pid"] == process.pid
    assert oci.exit_code("c1") is None
    assert oci.wait("c1", 0) is None
    oci.start("c1")
    assert oci.wait("c1", 10) == 3
    assert oci.exit_code("c1") == 3
    assert process.exit_file.read_text() == "3"
    state = oci.state("c1")
    assert state is not None and state["status"] == "stopped"
    lines = {(m["stream"], m["tag"], m["text"]) for m in lab.log_lines("c1")}
    assert lines == {("stdout", "F", "hello"), ("stderr", "F", "oops")}
    oci.delete("c1")
    assert oci.state("c1") is None
    assert oci.exit_code("c1") is None
    assert oci.process("c1") is None
    assert lab.log_path("c1").exists()  # logs belong to the caller
    assert sorted(p.name for p in process.bundle.iterdir()) == ["config.json"]


def test_long_running_container_killed_with_sigterm(lab: Lab) -> None:
    oci = lab.oci
    process = lab.run("c1", SLEEPER)
    state = oci.state("c1")
    assert state is not None and state["status"] == "running"
    assert pid_alive(process.pid) and pid_alive(process.conmon_pid)
    assert oci.wait("c1", 0.2) is None
    started = time.monotonic()
    oci.kill("c1", signal.SIGTERM)
    assert oci.wait("c1", 5) == 128 + signal.SIGTERM
    assert time.monotonic() - started < 1
    oci.kill("c1", signal.SIGTERM)  # stopped already: fine
    oci.kill("c1", signal.SIGKILL, all_processes=True)
    oci.delete("c1")
    oci.delete("c1")
    oci.delete("c1", force=True)
    assert not lab.alive(process.pid) and not lab.alive(process.conmon_pid)


def test_pid1_without_handler_ignores_sigterm_but_not_sigkill(lab: Lab) -> None:
    oci = lab.oci
    lab.run("c1", ["sleep", "1000"], log=False)
    oci.kill("c1", signal.SIGTERM)
    assert oci.wait("c1", 0.5) is None  # PID 1 of a PID namespace: SIG_DFL is ignored
    oci.kill("c1", signal.SIGKILL)
    assert oci.wait("c1", 5) == 128 + signal.SIGKILL
    oci.delete("c1")


def test_delete_refuses_running_container_without_force(lab: Lab) -> None:
    oci = lab.oci
    lab.run("c1", SLEEPER, log=False)
    with pytest.raises(OciError) as info:
        oci.delete("c1")
    assert info.value.code == "FAILED_PRECONDITION"
    assert "running" in str(info.value)
    state = oci.state("c1")
    assert state is not None and state["status"] == "running"
    oci.delete("c1", force=True)
    assert oci.state("c1") is None
    assert oci.exit_code("c1") is None


def test_delete_of_created_container(lab: Lab) -> None:
    oci = lab.oci
    process = lab.create("c1", SLEEPER)
    oci.delete("c1", force=True)
    assert oci.state("c1") is None
    assert not lab.alive(process.pid) and not lab.alive(process.conmon_pid)


def test_unknown_container(lab: Lab) -> None:
    oci = lab.oci
    oci.delete("nope")
    oci.delete("nope", force=True)
    assert oci.state("nope") is None
    assert oci.exit_code("nope") is None
    assert oci.process("nope") is None
    with pytest.raises(OciError) as info:
        oci.wait("nope", 1)
    assert info.value.code == "NOT_FOUND"
    calls: list[Callable[[], None]] = [lambda: oci.start("nope"), lambda: oci.kill("nope")]
    for call in calls:
        with pytest.raises(OciError) as info:
            call()
        assert info.value.code == "NOT_FOUND"
    with pytest.raises(OciError) as info:
        oci.exec_sync("nope", lab.exec_process(["true"]), timeout=5)
    assert info.value.code == "NOT_FOUND"
    with pytest.raises(OciError) as info:
        oci.state("../etc")
    assert info.value.code == "INVALID_ARGUMENT"


def test_start_of_stopped_container_fails(lab: Lab) -> None:
    oci = lab.oci
    lab.run("c1", ["true"])
    assert oci.wait("c1", 5) == 0
    with pytest.raises(OciError) as info:
        oci.start("c1")
    assert info.value.code == "FAILED_PRECONDITION"
    assert "stopped" in info.value.runtime_message
    oci.delete("c1")


# -- failed creates leave nothing ------------------------------------------------------------


def test_create_with_missing_rootfs(lab: Lab) -> None:
    bundle = make_bundle(
        lab.base / "bundles" / "c1",
        lab.base / "no-such-rootfs",
        ["sh"],
        cgroups_path=f"{lab.cgroup_parent}/c1",
        make_root=False,
    )
    with pytest.raises(OciError) as info:
        lab.oci.create("c1", bundle, log_path=lab.log_path("c1"))
    assert info.value.code == "FAILED_PRECONDITION"
    assert "no-such-rootfs" in str(info.value)
    assert "rootfs" in info.value.runtime_message
    _assert_nothing_left(lab, "c1", bundle)


def test_create_with_bad_args_path(lab: Lab) -> None:
    bundle = lab.bundle("c1", ["/no/such/binary"])
    with pytest.raises(OciError) as info:
        lab.oci.create("c1", bundle, log_path=lab.log_path("c1"))
    assert info.value.code == "FAILED_PRECONDITION"
    assert "/no/such/binary" in str(info.value)
    assert "no such file or directory" in str(info.value)
    assert "runc create failed" in info.value.runtime_message
    _assert_nothing_left(lab, "c1", bundle)
    # the id is free again
    lab.run("c1", ["true"])
    assert lab.oci.wait("c1", 5) == 0
    lab.oci.delete("c1")


def test_create_without_config(lab: Lab) -> None:
    bundle = lab.base / "empty"
    bundle.mkdir()
    with pytest.raises(OciError) as info:
        lab.oci.create("c1", bundle, log_path=None)
    assert info.value.code == "FAILED_PRECONDITION"
    assert "config.json" in str(info.value)


def test_create_with_missing_runtime(lab: Lab) -> None:
    oci = lab.make_oci(OciRuntime("runc", str(lab.base / "no-runc"), lab.base / "r2"), "state2")
    bundle = lab.bundle("c1", ["true"])
    with pytest.raises(OciError) as info:
        oci.create("c1", bundle, log_path=None)
    assert info.value.code == "UNAVAILABLE"
    assert "no-runc" in str(info.value)
    missing_conmon = Oci(oci.runtime, conmon="/no/conmon", state_dir=lab.base / "state3")
    with pytest.raises(OciError) as info:
        missing_conmon.create("c1", bundle, log_path=None)
    assert info.value.code == "UNAVAILABLE"


def test_create_timeout_when_the_runtime_hangs(lab: Lab) -> None:
    hanging = lab.base / "bin" / "hanging-runtime"
    hanging.parent.mkdir()
    hanging.write_text("#!/bin/sh\nwhile :; do sleep 0.1; done\n")
    hanging.chmod(0o755)
    oci = lab.make_oci(OciRuntime("hanging", str(hanging), lab.base / "hang-root"), "hang-state")
    bundle = lab.bundle("c1", ["true"])
    started = time.monotonic()
    with pytest.raises(OciError) as info:
        oci.create("c1", bundle, log_path=lab.log_path("c1"), timeout=1)
    assert info.value.code == "DEADLINE_EXCEEDED"
    assert time.monotonic() - started < 3
    assert oci.containers() == []
    assert not lab.log_path("c1").exists()
    assert sorted(p.name for p in bundle.iterdir()) == ["config.json"]
    deadline = time.monotonic() + 2  # the runtime dies of conmon's death (PDEATHSIG)
    while _processes_mentioning(str(lab.base)) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _processes_mentioning(str(lab.base)) == []


def test_create_duplicate_id(lab: Lab) -> None:
    oci = lab.oci
    process = lab.run("c1", SLEEPER)
    with pytest.raises(OciError) as info:
        oci.create("c1", process.bundle, log_path=None)
    assert info.value.code == "ALREADY_EXISTS"
    state = oci.state("c1")
    assert state is not None and state["status"] == "running"
    assert oci.process("c1") == process
    oci.delete("c1", force=True)


# -- exec ------------------------------------------------------------------------------------


def test_exec_sync(lab: Lab) -> None:
    oci = lab.oci
    process = lab.run("c1", SLEEPER)
    assert oci.exec_sync("c1", lab.exec_process(["echo", "hi"]), timeout=10) == (0, b"hi\n", b"")
    script = "echo out; echo err >&2; echo more; exit 7"
    assert oci.exec_sync("c1", lab.exec_process(["sh", "-c", script]), timeout=None) == (
        7,
        b"out\nmore\n",
        b"err\n",
    )
    assert oci.exec_sync("c1", lab.exec_process(["sh", "-c", "kill -9 $$"]), timeout=10)[0] == (
        128 + signal.SIGKILL
    )
    big = oci.exec_sync("c1", lab.exec_process(["head", "-c", "3000000", "/dev/zero"]), timeout=10)
    assert big == (0, bytes(3_000_000), b"")
    # a background child keeping stdout open does not hold the answer back
    started = time.monotonic()
    code, out, _ = oci.exec_sync(
        "c1", lab.exec_process(["sh", "-c", "sleep 30 & echo bg"]), timeout=10
    )
    assert (code, out) == (0, b"bg\n")
    assert time.monotonic() - started < 2
    deadline = time.monotonic() + 5  # the background child may not have exec'd sleep yet
    while "sleep 30" not in container_processes(process.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "sleep 30" in container_processes(process.pid)
    oci.delete("c1", force=True)


def test_exec_sync_timeout_kills_the_process_tree(lab: Lab) -> None:
    oci = lab.oci
    process = lab.run("c1", SLEEPER)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        oci.exec_sync("c1", lab.exec_process(["sleep", "10"]), timeout=1)
    assert time.monotonic() - started < 2
    assert container_processes(process.pid) == ["/bin/catatonit -- sleep 1000", "sleep 1000"]
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        oci.exec_sync(
            "c1",
            lab.exec_process(["sh", "-c", "sleep 11 & sh -c 'sleep 12; echo x'; echo y"]),
            timeout=1,
        )
    assert time.monotonic() - started < 2
    assert container_processes(process.pid) == ["/bin/catatonit -- sleep 1000", "sleep 1000"]
    code, out, _ = oci.exec_sync("c1", lab.exec_process(["ps"]), timeout=5)
    assert code == 0
    assert b"sleep 1" not in out.replace(b"sleep 1000", b""), out
    oci.delete("c1", force=True)


def test_exec_sync_output_limit(lab: Lab) -> None:
    oci = lab.oci
    process = lab.run("c1", SLEEPER)
    started = time.monotonic()
    with pytest.raises(OciError) as info:
        oci.exec_sync("c1", lab.exec_process(["yes"]), timeout=30, max_output=1 << 20)
    assert info.value.code == "RESOURCE_EXHAUSTED"
    assert str(1 << 20) in str(info.value)
    assert time.monotonic() - started < 5
    assert container_processes(process.pid) == ["/bin/catatonit -- sleep 1000", "sleep 1000"]
    # stdout and stderr count together
    with pytest.raises(OciError):
        oci.exec_sync(
            "c1",
            lab.exec_process(["sh", "-c", "head -c 600 /dev/zero; head -c 600 /dev/zero >&2"]),
            timeout=10,
            max_output=1000,
        )
    assert oci.exec_sync(
        "c1", lab.exec_process(["head", "-c", "1000", "/dev/zero"]), timeout=10, max_output=1000
    ) == (0, bytes(1000), b"")
    oci.delete("c1", force=True)


def test_exec_sync_failures(lab: Lab) -> None:
    oci = lab.oci
    lab.run("c1", SLEEPER)
    with pytest.raises(OciError) as info:
        oci.exec_sync("c1", lab.exec_process(["no-such-command"]), timeout=10)
    assert "no-such-command" in str(info.value)
    assert "executable file not found" in info.value.runtime_message
    oci.kill("c1", signal.SIGKILL)
    assert oci.wait("c1", 5) == 137
    with pytest.raises(OciError) as info:
        oci.exec_sync("c1", lab.exec_process(["true"]), timeout=10)
    assert info.value.code == "FAILED_PRECONDITION"
    assert "stopped" in str(info.value)
    oci.delete("c1")


def test_concurrent_containers(lab: Lab) -> None:
    oci = lab.oci
    bundles = {f"p{i}": lab.bundle(f"p{i}", SLEEPER) for i in range(8)}

    def lifecycle(name: str) -> tuple[int, bytes, int | None]:
        process = oci.create(name, bundles[name], log_path=lab.log_path(name))
        lab.processes.append(process)
        oci.start(name)
        code, out, _ = oci.exec_sync(name, lab.exec_process(["echo", name]), timeout=10)
        oci.kill(name, signal.SIGTERM)
        exit_code = oci.wait(name, 10)
        oci.delete(name)
        return code, out, exit_code

    with ThreadPoolExecutor(4) as pool:
        results = dict(zip(bundles, pool.map(lifecycle, bundles), strict=True))
    assert results == {name: (0, f"{name}\n".encode(), 143) for name in bundles}
    assert oci.containers() == []


# -- surviving us ----------------------------------------------------------------------------

CREATE_SCRIPT = """
import json, sys
from pathlib import Path
from criadapt_runc.oci import Oci, OciRuntime
state, root, bundle, log = map(Path, sys.argv[1:5])
oci = Oci(OciRuntime.runc(root), state_dir=state)
process = oci.create(sys.argv[5], bundle, log_path=log)
oci.start(sys.argv[5])
print(json.dumps(process.to_json()))
"""


def _create_in_other_process(lab: Lab, name: str, args: Sequence[str]) -> ContainerProcess:
    bundle = lab.bundle(name, args)
    oci = lab.oci
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            CREATE_SCRIPT,
            str(oci.state_dir),
            str(oci.runtime.root),
            str(bundle),
            str(lab.log_path(name)),
            name,
        ],
        capture_output=True,
        timeout=60,
        check=True,
    )
    process = ContainerProcess.from_json(json.loads(result.stdout))
    lab.processes.append(process)
    return process


def test_conmon_survives_the_process_that_created_the_container(lab: Lab) -> None:
    process = _create_in_other_process(lab, "c1", SLEEPER)
    # a new Oci on the same state dir (a restarted daemon) finds everything
    oci = lab.make_oci(lab.oci.runtime)
    assert oci.containers() == ["c1"]
    assert oci.process("c1") == process
    # the creating process has exited; conmon (re-parented to PID 1, or to a subreaper such
    # as this test process when the backend made it one) lives on
    assert pid_alive(process.conmon_pid)
    state = oci.state("c1")
    assert state is not None and state["status"] == "running"
    oci.kill("c1", signal.SIGTERM)
    assert oci.wait("c1", 5) == 143
    assert oci.exit_code("c1") == 143
    oci.delete("c1")
    assert not lab.alive(process.conmon_pid)


def test_exit_code_recorded_while_nobody_waits(lab: Lab) -> None:
    process = _create_in_other_process(lab, "c1", ["sh", "-c", "sleep 0.3; echo bye; exit 5"])
    assert lab.oci.exit_code("c1") is None
    deadline = time.monotonic() + 10
    while not process.exit_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert Oci(lab.oci.runtime, state_dir=lab.oci.state_dir).exit_code("c1") == 5
    assert lab.oci.wait("c1", 0) == 5
    assert [m["text"] for m in lab.log_lines("c1")] == ["bye"]
    lab.oci.delete("c1")


# -- terminal, stdin and attach, log reopening -----------------------------------------------


def test_terminal(lab: Lab) -> None:
    oci = lab.oci
    lab.run("c1", ["sh", "-c", "test -t 0 && test -t 1 && echo on-a-tty; stty size"], terminal=True)
    assert oci.wait("c1", 10) == 0
    texts = [m["text"].rstrip("\r") for m in lab.log_lines("c1")]
    assert texts[0] == "on-a-tty"
    assert all(m["stream"] == "stdout" for m in lab.log_lines("c1"))
    oci.delete("c1")


def test_stdin_through_attach_socket(lab: Lab) -> None:
    oci = lab.oci
    process = lab.create("c1", ["cat"], stdin=True, stdin_once=True)
    assert process.attach_socket is not None
    with connect_attach(process.attach_socket) as sock:
        oci.start("c1")
        sock.sendall(b"ping\n")
        sock.settimeout(5)
        packet = sock.recv(65536)
        assert packet == b"\x02ping\n"  # 2: stdout
        sock.shutdown(socket.SHUT_WR)  # stdin_once: the container's stdin closes with us
        assert oci.wait("c1", 5) == 0
    assert [m["text"] for m in lab.log_lines("c1")] == ["ping"]
    oci.delete("c1")


def test_reopen_log(lab: Lab) -> None:
    oci = lab.oci
    script = "echo one; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo two"
    lab.run("c1", ["sh", "-c", script])
    log = lab.log_path("c1")
    deadline = time.monotonic() + 5
    while "one" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.02)
    log.rename(log.with_suffix(".1"))
    oci.reopen_log("c1")
    assert log.exists()  # reopen_log waits for conmon to create the new file
    assert oci.exec_sync("c1", lab.exec_process(["touch", "/tmp/go"]), timeout=5)[0] == 0
    assert oci.wait("c1", 5) == 0
    assert [m["text"] for m in lab.log_lines("c1")] == ["two"]
    assert "stdout F one" in log.with_suffix(".1").read_text()
    oci.delete("c1")
    with pytest.raises(OciError) as info:
        oci.reopen_log("c1")
    assert info.value.code == "NOT_FOUND"


# -- crun ------------------------------------------------------------------------------------


@pytest.mark.skipif(not os.access(CRUN, os.X_OK), reason="needs crun")
def test_crun_through_wrapper(lab: Lab) -> None:
    oci = lab.make_oci(
        OciRuntime.crun(lab.base / "crun-root", wrapper=lab.base / "bin" / "crun"), "crun-state"
    )
    assert os.access(oci.runtime.path, os.X_OK)
    lab.create("c1", ["sh", "-c", "echo hello; echo oops >&2; exit 3"], oci=oci)
    oci.start("c1")
    assert oci.wait("c1", 10) == 3
    lines = {(m["stream"], m["text"]) for m in lab.log_lines("c1")}
    assert lines == {("stdout", "hello"), ("stderr", "oops")}
    oci.delete("c1")
    lab.run("c2", SLEEPER, oci=oci)
    state = oci.state("c2")
    assert state is not None and state["status"] == "running"
    assert oci.exec_sync("c2", lab.exec_process(["echo", "hi"]), timeout=10) == (0, b"hi\n", b"")
    oci.kill("c2", signal.SIGTERM)
    assert oci.wait("c2", 5) == 143
    oci.kill("c2", signal.SIGTERM)
    oci.delete("c2")
    oci.delete("c2")
    assert oci.state("c2") is None
    bundle = lab.bundle("c3", ["/no/such/binary"])
    with pytest.raises(OciError) as info:
        oci.create("c3", bundle, log_path=lab.log_path("c3"))
    assert info.value.code == "FAILED_PRECONDITION"
    assert "/no/such/binary" in str(info.value)
    assert oci.containers() == []


# -- latency ---------------------------------------------------------------------------------


def test_latency_create_start_kill_delete(lab: Lab) -> None:
    """Median of 10 create+start+kill+delete: via conmon vs bare runc (printed with -s)."""
    oci = lab.oci
    via_conmon = []
    for index in range(10):
        name = f"m{index}"
        bundle = lab.bundle(name, ["sleep", "1000"])
        started = time.perf_counter()
        process = oci.create(name, bundle, log_path=lab.log_path(name))
        oci.start(name)
        oci.kill(name, signal.SIGKILL)
        oci.delete(name, force=True)
        via_conmon.append(time.perf_counter() - started)
        lab.processes.append(process)
    bare = []
    root = lab.base / "bare-root"
    for index in range(10):
        name = f"b{index}"
        bundle = lab.bundle(name, ["sleep", "1000"])
        started = time.perf_counter()
        for args in (
            ["create", "--bundle", str(bundle), name],
            ["start", name],
            ["kill", name, "KILL"],
            ["delete", "--force", name],
        ):
            subprocess.run(
                [RUNC, f"--root={root}", *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=True,
            )
        bare.append(time.perf_counter() - started)
    conmon_ms = statistics.median(via_conmon) * 1000
    bare_ms = statistics.median(bare) * 1000
    print(f"\ncreate+start+kill+delete median of 10: conmon+runc {conmon_ms:.1f} ms, "
          f"bare runc {bare_ms:.1f} ms")  # fmt: skip
    assert conmon_ms < 2000
    shutil.rmtree(root, ignore_errors=True)
