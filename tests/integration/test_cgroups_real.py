"""criadapt.cgroups against real runc containers on this host's cgroupfs (v1 hybrid or v2).

Every container gets the cgroupfs path ``/criadapt-cgtest/<id>`` and a private runc state
root under ``tmp_path``. Teardown runs ``runc delete --force`` and then removes what is
left of ``/criadapt-cgtest/<id>`` and ``/criadapt-cgtest`` in every hierarchy (rmdir,
deepest first); ``/criadapt-cgtest`` is kept only while a concurrent run still has a child
in it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from criadapt.cgroups import Cgroups, Sampler, filesystem_usage, nano_cores, network_stats

RUNC = shutil.which("runc") or "/usr/sbin/runc"
PARENT = "/criadapt-cgtest"
MIB = 1 << 20

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        os.geteuid() != 0 or not os.access(RUNC, os.X_OK) or not Path("/bin/busybox").is_file(),
        reason="needs root, runc and busybox-static",
    ),
]


def runc(state: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run runc; output goes through files because a detached container inherits them."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.run(
            [RUNC, "--root", str(state), *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            timeout=60,
            check=False,
        )
        out.seek(0)
        err.seek(0)
        result = subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), err.read())
    if check and result.returncode != 0:
        raise AssertionError(f"runc {args} failed ({result.returncode}): {result.stderr}")
    return result


def remove_cgroup_tree(cgroups: Cgroups, path: str) -> None:
    """rmdir ``path`` and its descendants in every hierarchy, deepest first."""
    for top in cgroups.dirs(path):
        folders = sorted(
            (Path(dirpath) for dirpath, _dirs, _files in os.walk(top)),
            key=lambda p: len(p.parts),
            reverse=True,
        )
        for folder in folders:
            with contextlib.suppress(FileNotFoundError):
                folder.rmdir()


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from criadapt_runc.testing_bundles import make_rootfs

    return make_rootfs(tmp_path_factory.mktemp("cgroups-rootfs") / "rootfs")


class Containers:
    """Starts runc containers under ``/criadapt-cgtest`` and cleans all of them up."""

    def __init__(self, folder: Path, rootfs: Path) -> None:
        self.folder = folder
        self.rootfs = rootfs
        self.state = folder / "runc-state"
        self.state.mkdir()
        self.started: list[tuple[str, str]] = []

    def start(self, args: list[str], memory_limit: int | None = None) -> tuple[str, str, int]:
        """(container id, cgroups path, init pid) of a new running container."""
        from criadapt_runc.testing_bundles import make_bundle

        cid = f"cgtest-{uuid.uuid4().hex[:12]}"
        cgroups_path = f"{PARENT}/{cid}"
        bundle = make_bundle(self.folder / cid, self.rootfs, args, cgroups_path=cgroups_path)
        config: dict[str, Any] = json.loads((bundle / "config.json").read_text())
        resources = config["linux"]["resources"]
        resources["pids"] = {"limit": 64}
        if memory_limit is not None:
            resources["memory"] = {"limit": memory_limit, "swap": memory_limit}
        (bundle / "config.json").write_text(json.dumps(config))
        self.started.append((cid, cgroups_path))
        runc(self.state, "run", "--detach", "--bundle", str(bundle), cid)
        pid = int(json.loads(runc(self.state, "state", cid).stdout)["pid"])
        return cid, cgroups_path, pid

    def delete(self, cid: str) -> None:
        runc(self.state, "delete", "--force", cid)

    def cleanup(self) -> None:
        cgroups = Cgroups()
        for cid, cgroups_path in self.started:
            runc(self.state, "delete", "--force", cid, check=False)
            remove_cgroup_tree(cgroups, cgroups_path)
            assert not cgroups.dirs(cgroups_path), f"{cgroups_path} left behind"
        for folder in sorted(cgroups.dirs(PARENT), key=lambda p: len(p.parts), reverse=True):
            try:
                folder.rmdir()
            except OSError as exc:  # a concurrent run still has a container below it
                if exc.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                    raise


@pytest.fixture
def containers(tmp_path: Path, rootfs: Path) -> Iterator[Containers]:
    handle = Containers(tmp_path, rootfs)
    try:
        yield handle
    finally:
        handle.cleanup()


def test_busy_container_sample(containers: Containers) -> None:
    cgroups = Cgroups()
    _cid, path, pid = containers.start(["sh", "-c", "while true; do :; done"], 64 * MIB)
    assert cgroups.exists(path)
    assert pid in cgroups.pids(path)
    assert cgroups.pids(PARENT, recursive=True)  # includes ours
    first = cgroups.sample(path)
    time.sleep(1.5)
    second = cgroups.sample(path)
    assert first is not None and second is not None
    assert first.cpu_usage_ns is not None and second.cpu_usage_ns is not None
    assert second.cpu_usage_ns > first.cpu_usage_ns
    rate = nano_cores(first, second)
    assert rate is not None and rate > 100_000_000, rate
    assert second.memory_usage is not None and second.memory_usage > 0
    assert second.memory_working_set is not None
    assert 0 <= second.memory_working_set <= second.memory_usage
    assert second.memory_limit == 64 * MIB
    assert second.memory_available == 64 * MIB - second.memory_working_set
    assert second.memory_rss is not None and second.memory_page_faults is not None
    assert second.memory_major_page_faults is not None
    assert second.pids is not None and second.pids >= 1
    assert second.oom_kills == 0
    # the container has a network namespace of its own with only "lo"
    assert network_stats(pid) == []
    # parent cgroup: hierarchical numbers include the container
    parent = cgroups.sample(PARENT)
    assert parent is not None and parent.cpu_usage_ns is not None
    assert parent.cpu_usage_ns >= second.cpu_usage_ns
    assert parent.memory_limit is None  # no limit on the parent


def test_sampler_on_a_real_container(containers: Containers) -> None:
    _cid, path, _pid = containers.start(["sh", "-c", "while true; do :; done"])
    sampler = Sampler(Cgroups(), interval=0.25)
    sampler.track("busy", path)
    sampler.start()
    try:
        deadline = time.monotonic() + 10
        result = None
        while time.monotonic() < deadline:
            result = sampler.latest("busy")
            if result is not None and result[1] is not None:
                break
            time.sleep(0.05)
        time.sleep(0.6)
        result = sampler.latest("busy")
        assert result is not None
        sample, rate = result
        assert rate is not None and rate > 100_000_000, rate
        assert sample.memory_limit is None
        assert time.time_ns() - sample.timestamp_ns < 2 * sampler.max_age * 1e9
    finally:
        sampler.stop()


def test_oom_kill_is_counted(containers: Containers) -> None:
    cgroups = Cgroups()
    # busybox tail keeps a newline-free /dev/zero in memory until the OOM killer stops it
    _cid, path, _pid = containers.start(
        ["sh", "-c", "tail /dev/zero; while true; do sleep 1; done"], 16 * MIB
    )
    deadline = time.monotonic() + 20
    sample = cgroups.sample(path)
    while time.monotonic() < deadline:
        sample = cgroups.sample(path)
        assert sample is not None
        if sample.oom_kills:
            break
        time.sleep(0.1)
    assert sample is not None
    if sample.oom_kills is None:
        pytest.skip("this kernel does not count OOM kills per cgroup")
    assert sample.oom_kills >= 1
    assert sample.memory_limit == 16 * MIB


def test_gone_container_samples_none(containers: Containers) -> None:
    cgroups = Cgroups()
    cid, path, _pid = containers.start(["sleep", "1000"])
    assert cgroups.sample(path) is not None
    containers.delete(cid)
    assert cgroups.sample(path) is None
    assert not cgroups.exists(path)
    assert cgroups.pids(path) == []


def test_filesystem_usage_does_not_cross_mounts(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "mnt").mkdir(parents=True)
    (tree / "file").write_bytes(os.urandom(8192))
    before = filesystem_usage(tree)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(tree / "mnt")], check=True
    )
    try:
        (tree / "mnt" / "inside").write_bytes(os.urandom(65536))
        after = filesystem_usage(tree)
    finally:
        subprocess.run(["umount", str(tree / "mnt")], check=True)
    # the mount point's directory is on the tmpfs now: neither it nor its content counts
    assert after[1] == before[1] - 1
    assert after[0] < before[0] + 65536
