"""criadapt.cgroups against fake cgroupfs trees (v1 hybrid and v2) and fake /proc files."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import criadapt.cgroups as cg
from criadapt.cgroups import Cgroups, CgroupSample, Sampler, filesystem_usage, nano_cores

MIB = 1 << 20
V1_UNLIMITED = "9223372036854771712"  # PAGE_COUNTER_MAX * 4096, what the kernel prints

V1_MEMORY_STAT = """\
cache 2256896
rss 1343488
rss_huge 0
shmem 0
mapped_file 270336
dirty 0
writeback 0
swap 4096
pgpgin 1494
pgpgout 629
pgfault 2079
pgmajfault 3
inactive_anon 1339392
active_anon 4096
inactive_file 1200000
active_file 1056896
unevictable 0
hierarchical_memory_limit 67108864
hierarchical_memsw_limit 9223372036854771712
total_cache 2256896
total_rss 1343488
total_rss_huge 0
total_shmem 0
total_mapped_file 270336
total_dirty 0
total_writeback 0
total_swap 4096
total_pgpgin 1494
total_pgpgout 629
total_pgfault 2080
total_pgmajfault 4
total_inactive_anon 1339392
total_active_anon 4096
total_inactive_file 1200128
total_active_file 1056768
total_unevictable 0
"""

V2_MEMORY_STAT = """\
anon 1343488
file 2256896
kernel 352256
kernel_stack 16384
pagetables 45056
sec_pagetables 0
percpu 0
sock 0
vmalloc 0
shmem 0
zswap 0
zswapped 0
file_mapped 270336
file_dirty 0
file_writeback 0
swapcached 0
anon_thp 0
file_thp 0
shmem_thp 0
inactive_anon 1339392
active_anon 4096
inactive_file 1200128
active_file 1056768
unevictable 0
slab_reclaimable 102400
slab_unreclaimable 151552
slab 253952
workingset_refault_anon 0
workingset_refault_file 0
workingset_activate_anon 0
workingset_activate_file 0
workingset_restore_anon 0
workingset_restore_file 0
workingset_nodereclaim 0
pgscan 0
pgsteal 0
pgscan_kswapd 0
pgscan_direct 0
pgsteal_kswapd 0
pgsteal_direct 0
pgfault 2080
pgmajfault 4
pgrefill 0
pgactivate 0
pgdeactivate 0
pglazyfree 0
pglazyfreed 0
thp_fault_alloc 0
thp_collapse_alloc 0
"""

V2_CPU_STAT = """\
usage_usec 1500250
user_usec 1200000
system_usec 300250
core_sched.force_idle_usec 0
nr_periods 0
nr_throttled 0
throttled_usec 0
nr_bursts 0
burst_usec 0
"""

V1_BLKIO = """\
8:0 Read 4096
8:0 Write 8192
8:0 Sync 8192
8:0 Async 4096
8:0 Discard 0
8:0 Total 12288
8:16 Read 1000
8:16 Write 0
8:16 Sync 0
8:16 Async 1000
8:16 Discard 0
8:16 Total 1000
Total 13288
"""

V2_IO_STAT = """\
8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0
8:16 rbytes=1000 wbytes=0 rios=1 wios=0 dbytes=0 dios=0
"""

PATH = "/kubepods/pod1234/abcdef"


def write(folder: Path, files: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / name).write_text(content)


def make_v1_root(tmp_path: Path, *, combined_cpu: bool = True) -> Path:
    """A hybrid host: per-controller hierarchies (cpu,cpuacct combined with symlinks, as on
    many distributions), a named systemd hierarchy and a controller-less unified mount."""
    root = tmp_path / "cgroup"
    root.mkdir()
    names = ["memory", "pids", "blkio", "devices", "freezer", "cpuset", "systemd"]
    if combined_cpu:
        names.append("cpu,cpuacct")
    else:
        names += ["cpu", "cpuacct"]
    for name in names:
        write(root / name, {"cgroup.procs": "1\n", "tasks": "1\n"})
    if combined_cpu:
        (root / "cpu").symlink_to("cpu,cpuacct")
        (root / "cpuacct").symlink_to("cpu,cpuacct")
    write(root / "unified", {"cgroup.controllers": "\n", "cgroup.procs": "1\n"})
    return root


def make_v1_cgroup(
    root: Path,
    path: str = PATH,
    *,
    usage: int = 5 * MIB,
    limit: str = str(64 * MIB),
    memsw: int | None = 5 * MIB + 4096,
    memory_stat: str = V1_MEMORY_STAT,
    oom_control: str = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
    cpu_ns: int = 1_500_250_000,
    pids: int = 3,
    procs: str = "42\n43\n44\n",
) -> None:
    rel = path.strip("/")
    memory = {
        "memory.usage_in_bytes": f"{usage}\n",
        "memory.limit_in_bytes": f"{limit}\n",
        "memory.stat": memory_stat,
        "memory.oom_control": oom_control,
        "memory.max_usage_in_bytes": f"{usage}\n",
        "cgroup.procs": procs,
    }
    if memsw is not None:
        memory["memory.memsw.usage_in_bytes"] = f"{memsw}\n"
        memory["memory.memsw.limit_in_bytes"] = f"{V1_UNLIMITED}\n"
    write(root / "memory" / rel, memory)
    write(
        root / "cpu,cpuacct" / rel if (root / "cpu,cpuacct").exists() else root / "cpuacct" / rel,
        {
            "cpuacct.usage": f"{cpu_ns}\n",
            "cpuacct.stat": "user 120\nsystem 30\n",
            "cpu.shares": "1024\n",
            "cgroup.procs": procs,
        },
    )
    write(
        root / "pids" / rel,
        {"pids.current": f"{pids}\n", "pids.max": "max\n", "cgroup.procs": procs},
    )
    write(
        root / "blkio" / rel,
        {
            "blkio.throttle.io_service_bytes_recursive": V1_BLKIO,
            "blkio.throttle.io_service_bytes": "Total 0\n",
            "cgroup.procs": procs,
        },
    )
    for name in ("devices", "freezer", "cpuset", "systemd"):
        write(root / name / rel, {"cgroup.procs": procs})


def make_v2_root(tmp_path: Path, name: str = "cgroup") -> Path:
    root = tmp_path / name
    write(
        root,
        {
            "cgroup.controllers": "cpuset cpu io memory hugetlb pids rdma misc\n",
            "cgroup.subtree_control": "cpuset cpu io memory pids\n",
            "cgroup.procs": "1\n",
            "cpu.stat": V2_CPU_STAT,
        },
    )
    return root


def make_v2_cgroup(
    root: Path,
    path: str = PATH,
    *,
    current: int = 5 * MIB,
    limit: str = str(64 * MIB),
    swap: int | None = 8192,
    memory_stat: str = V2_MEMORY_STAT,
    events: str = "low 0\nhigh 0\nmax 7\noom 2\noom_kill 2\noom_group_kill 0\n",
    cpu_stat: str = V2_CPU_STAT,
    pids: int = 3,
    procs: str = "42\n43\n44\n",
) -> None:
    files = {
        "cgroup.controllers": "cpu io memory pids\n",
        "cgroup.procs": procs,
        "cpu.stat": cpu_stat,
        "memory.current": f"{current}\n",
        "memory.max": f"{limit}\n",
        "memory.stat": memory_stat,
        "memory.events": events,
        "pids.current": f"{pids}\n",
        "io.stat": V2_IO_STAT,
    }
    if swap is not None:
        files["memory.swap.current"] = f"{swap}\n"
        files["memory.swap.max"] = "max\n"
    write(root / path.strip("/"), files)


# --------------------------------------------------------------------------- detection


def test_v1_hybrid_detection_with_combined_cpu_cpuacct(tmp_path: Path) -> None:
    root = make_v1_root(tmp_path)
    cgroups = Cgroups(root)
    assert cgroups.version == 1
    assert cgroups.controllers["cpuacct"] == str(root / "cpu,cpuacct")
    assert cgroups.controllers["cpu"] == str(root / "cpu,cpuacct")
    assert cgroups.controllers["memory"] == str(root / "memory")
    # symlinked duplicates are one hierarchy; named and unified mounts are hierarchies too
    reals = [os.path.realpath(h) for h in cgroups.hierarchies]
    assert len(reals) == len(set(reals))
    assert str(root / "unified") in cgroups.hierarchies
    assert str(root / "systemd") in cgroups.hierarchies


def test_v1_detection_with_separate_cpu_and_cpuacct(tmp_path: Path) -> None:
    root = make_v1_root(tmp_path, combined_cpu=False)
    cgroups = Cgroups(root)
    assert cgroups.version == 1
    assert cgroups.controllers["cpuacct"] == str(root / "cpuacct")
    assert cgroups.controllers["cpu"] == str(root / "cpu")


def test_v2_detection(tmp_path: Path) -> None:
    root = make_v2_root(tmp_path)
    cgroups = Cgroups(root)
    assert cgroups.version == 2
    assert cgroups.hierarchies == [str(root)]
    assert "version=2" in repr(cgroups)


def test_unified_only_below_a_tmpfs_is_v2(tmp_path: Path) -> None:
    """No v1 controller mounted, controllers on root/unified: use that as v2."""
    root = tmp_path / "cgroup"
    make_v2_root(root, "unified")
    write(root / "systemd", {"cgroup.procs": "1\n"})
    make_v2_cgroup(root / "unified")
    cgroups = Cgroups(root)
    assert cgroups.version == 2
    sample = cgroups.sample(PATH)
    assert sample is not None
    assert sample.cpu_usage_ns == 1_500_250_000


def test_missing_root_gives_an_empty_v1(tmp_path: Path) -> None:
    cgroups = Cgroups(tmp_path / "nothing")
    assert cgroups.version == 1
    assert cgroups.controllers == {}
    assert cgroups.sample(PATH) is None
    assert not cgroups.exists(PATH)


# --------------------------------------------------------------------------- v1


def test_v1_sample_every_field(tmp_path: Path) -> None:
    root = make_v1_root(tmp_path)
    make_v1_cgroup(root)
    before = time.time_ns()
    sample = Cgroups(root).sample(PATH)
    assert sample is not None
    assert before <= sample.timestamp_ns <= time.time_ns()
    assert sample.cpu_usage_ns == 1_500_250_000
    assert sample.memory_usage == 5 * MIB
    # hierarchical total_inactive_file, not the cgroup-local inactive_file
    assert sample.memory_working_set == 5 * MIB - 1200128
    assert sample.memory_rss == 1343488
    assert sample.memory_page_faults == 2080  # total_pgfault
    assert sample.memory_major_page_faults == 4  # total_pgmajfault
    assert sample.memory_limit == 64 * MIB
    assert sample.memory_available == 64 * MIB - (5 * MIB - 1200128)
    assert sample.swap_usage == 4096  # total_swap (= memsw - usage)
    assert sample.pids == 3
    assert sample.io_read_bytes == 4096 + 1000  # the recursive file, summed over devices
    assert sample.io_write_bytes == 8192
    assert sample.oom_kills == 2


def test_v1_unlimited_memory(tmp_path: Path) -> None:
    root = make_v1_root(tmp_path)
    make_v1_cgroup(root, limit=V1_UNLIMITED)
    sample = Cgroups(root).sample(PATH)
    assert sample is not None
    assert sample.memory_limit is None
    assert sample.memory_available is None
    assert sample.memory_working_set == 5 * MIB - 1200128


def test_v1_limit_just_below_the_threshold_is_a_limit(tmp_path: Path) -> None:
    root = make_v1_root(tmp_path)
    make_v1_cgroup(root, limit=str((1 << 62) - 4096))
    sample = Cgroups(root).sample(PATH)
    assert sample is not None
    assert sample.memory_limit == (1 << 62) - 4096


NO_SWAP_ACCOUNTING_STAT = "".join(
    line + "\n" for line in V1_MEMORY_STAT.splitlines() if not line.endswith("swap 4096")
)


def test_v1_without_swap_accounting_or_oom_kill_counter(tmp_path: Path) -> None:
    root = make_v1_root(tmp_path)
    make_v1_cgroup(
        root,
        memsw=None,
        memory_stat=NO_SWAP_ACCOUNTING_STAT,
        oom_control="oom_kill_disable 0\nunder_oom 0\n",
    )
    sample = Cgroups(root).sample(PATH)
    assert sample is not None
    assert sample.swap_usage is None
    assert sample.oom_kills is None
    assert sample.memory_usage == 5 * MIB


def test_v1_swap_from_memsw_when_memory_stat_lacks_it(tmp_path: Path) -> None:
    root = make_v1_root(tmp_path)
    make_v1_cgroup(root, memsw=5 * MIB + 8192, memory_stat=NO_SWAP_ACCOUNTING_STAT)
    sample = Cgroups(root).sample(PATH)
    assert sample is not None
    assert sample.swap_usage == 8192


def test_v1_swap_never_negative(tmp_path: Path) -> None:
    root = make_v1_root(tmp_path)
    # the two files are read at different times: memsw may lag behind usage
    make_v1_cgroup(root, memsw=5 * MIB - 4096, memory_stat=NO_SWAP_ACCOUNTING_STAT)
    sample = Cgroups(root).sample(PATH)
    assert sample is not None
    assert sample.swap_usage == 0


def test_v1_working_set_floored_at_zero(tmp_path: Path) -> None:
    root = make_v1_root(tmp_path)
    make_v1_cgroup(root, usage=1_000_000)  # total_inactive_file 1200128 > usage
    sample = Cgroups(root).sample(PATH)
    assert sample is not None
    assert sample.memory_working_set == 0
    assert sample.memory_available == 64 * MIB


def test_v1_without_hierarchical_keys_uses_local_ones(tmp_path: Path) -> None:
    local_only = "".join(
        line + "\n" for line in V1_MEMORY_STAT.splitlines() if not line.startswith("total_")
    )
    root = make_v1_root(tmp_path)
    make_v1_cgroup(root, memory_stat=local_only)
    sample = Cgroups(root).sample(PATH)
    assert sample is not None
    assert sample.memory_working_set == 5 * MIB - 1200000
    assert sample.memory_page_faults == 2079
    assert sample.memory_major_page_faults == 3


def test_v1_without_inactive_file_working_set_is_usage(tmp_path: Path) -> None:
    stat = "".join(
        line + "\n" for line in V1_MEMORY_STAT.splitlines() if "inactive_file" not in line
    )
    root = make_v1_root(tmp_path)
    make_v1_cgroup(root, memory_stat=stat)
    sample = Cgroups(root).sample(PATH)
    assert sample is not None
    assert sample.memory_working_set == 5 * MIB


def test_v1_non_recursive_blkio_fallback(tmp_path: Path) -> None:
    root = make_v1_root(tmp_path)
    make_v1_cgroup(root)
    (root / "blkio" / PATH.strip("/") / "blkio.throttle.io_service_bytes_recursive").unlink()
    (root / "blkio" / PATH.strip("/") / "blkio.throttle.io_service_bytes").write_text(
        "8:0 Read 10\n8:0 Write 20\n8:0 Total 30\nTotal 30\n"
    )
    sample = Cgroups(root).sample(PATH)
    assert sample is not None
    assert (sample.io_read_bytes, sample.io_write_bytes) == (10, 20)


def test_v1_controller_not_mounted_gives_none_fields(tmp_path: Path) -> None:
    root = make_v1_root(tmp_path)
    make_v1_cgroup(root)
    for name in ("blkio", "pids"):
        for folder in sorted((root / name).rglob("*"), reverse=True):
            folder.unlink() if folder.is_file() else folder.rmdir()
        (root / name).rmdir()
    sample = Cgroups(root).sample(PATH)
    assert sample is not None
    assert sample.pids is None
    assert sample.io_read_bytes is None and sample.io_write_bytes is None
    assert sample.cpu_usage_ns == 1_500_250_000


def test_v1_garbage_values_are_none(tmp_path: Path) -> None:
    root = make_v1_root(tmp_path)
    make_v1_cgroup(root, limit="garbage", memory_stat="total_rss notanumber\nbroken\n")
    sample = Cgroups(root).sample(PATH)
    assert sample is not None
    assert sample.memory_limit is None
    assert sample.memory_rss is None
    assert sample.memory_working_set == 5 * MIB


def test_v1_gone_cgroup(tmp_path: Path) -> None:
    root = make_v1_root(tmp_path)
    cgroups = Cgroups(root)
    assert cgroups.sample(PATH) is None
    assert not cgroups.exists(PATH)
    assert cgroups.pids(PATH) == []
    assert cgroups.dirs(PATH) == []


def test_v1_cgroup_only_in_controllers_without_stats_still_samples(tmp_path: Path) -> None:
    root = make_v1_root(tmp_path)
    write(root / "freezer" / "only-here", {"cgroup.procs": ""})
    sample = Cgroups(root).sample("/only-here")
    assert sample is not None
    assert sample.cpu_usage_ns is None and sample.memory_usage is None


def test_v1_root_cgroup(tmp_path: Path) -> None:
    root = make_v1_root(tmp_path)
    (root / "cpu,cpuacct" / "cpuacct.usage").write_text("99\n")
    cgroups = Cgroups(root)
    for path in ("/", ""):
        sample = cgroups.sample(path)
        assert sample is not None
        assert sample.cpu_usage_ns == 99


def test_v1_pids_exists_and_dirs(tmp_path: Path) -> None:
    root = make_v1_root(tmp_path)
    make_v1_cgroup(root, "/kubepods/pod1234/aaa", procs="10\n11\n")
    make_v1_cgroup(root, "/kubepods/pod1234/bbb", procs="12\n")
    write(root / "pids" / "kubepods" / "pod1234", {"cgroup.procs": "9\n"})
    cgroups = Cgroups(root)
    assert cgroups.exists("/kubepods/pod1234/aaa")
    assert cgroups.exists("kubepods/pod1234")  # leading slash optional
    assert cgroups.pids("/kubepods/pod1234/aaa") == [10, 11]
    assert cgroups.pids("/kubepods/pod1234") == [9]
    assert cgroups.pids("/kubepods/pod1234", recursive=True) == [9, 10, 11, 12]
    dirs = cgroups.dirs("/kubepods/pod1234/aaa")
    assert {str(d) for d in dirs} == {
        str(root / name / "kubepods/pod1234/aaa")
        for name in (
            *("memory", "cpu,cpuacct", "pids", "blkio"),
            *("devices", "freezer", "cpuset", "systemd"),
        )
    }


# --------------------------------------------------------------------------- v2


def test_v2_sample_every_field(tmp_path: Path) -> None:
    root = make_v2_root(tmp_path)
    make_v2_cgroup(root)
    sample = Cgroups(root).sample(PATH)
    assert sample is not None
    assert sample.cpu_usage_ns == 1_500_250_000  # usage_usec * 1000
    assert sample.memory_usage == 5 * MIB
    assert sample.memory_working_set == 5 * MIB - 1200128
    assert sample.memory_rss == 1343488  # anon
    assert sample.memory_page_faults == 2080
    assert sample.memory_major_page_faults == 4
    assert sample.memory_limit == 64 * MIB
    assert sample.memory_available == 64 * MIB - (5 * MIB - 1200128)
    assert sample.swap_usage == 8192
    assert sample.pids == 3
    assert sample.io_read_bytes == 5096
    assert sample.io_write_bytes == 8192
    assert sample.oom_kills == 2


def test_v2_unlimited_and_missing_files(tmp_path: Path) -> None:
    root = make_v2_root(tmp_path)
    make_v2_cgroup(root, limit="max", swap=None, events="low 0\nhigh 0\nmax 0\noom 0\n")
    folder = root / PATH.strip("/")
    (folder / "io.stat").unlink()
    (folder / "pids.current").unlink()  # pids controller not enabled for this cgroup
    sample = Cgroups(root).sample(PATH)
    assert sample is not None
    assert sample.memory_limit is None
    assert sample.memory_available is None
    assert sample.swap_usage is None
    assert sample.oom_kills is None
    assert sample.pids is None
    assert sample.io_read_bytes is None and sample.io_write_bytes is None
    assert sample.memory_working_set == 5 * MIB - 1200128


def test_v2_working_set_floored_and_empty_io_stat(tmp_path: Path) -> None:
    root = make_v2_root(tmp_path)
    make_v2_cgroup(root, current=4096)
    (root / PATH.strip("/") / "io.stat").write_text("")
    sample = Cgroups(root).sample(PATH)
    assert sample is not None
    assert sample.memory_working_set == 0
    assert (sample.io_read_bytes, sample.io_write_bytes) == (0, 0)


def test_v2_memory_controller_not_enabled(tmp_path: Path) -> None:
    root = make_v2_root(tmp_path)
    write(root / "system.slice" / "x.scope", {"cpu.stat": V2_CPU_STAT, "cgroup.procs": "5\n"})
    sample = Cgroups(root).sample("/system.slice/x.scope")
    assert sample is not None
    assert sample.cpu_usage_ns == 1_500_250_000
    assert sample.memory_usage is None
    assert sample.memory_working_set is None
    assert sample.memory_available is None
    assert sample.memory_limit is None


def test_v2_gone_cgroup_pids_and_dirs(tmp_path: Path) -> None:
    root = make_v2_root(tmp_path)
    make_v2_cgroup(root, "/kubepods/pod1/a", procs="7\n8\n")
    make_v2_cgroup(root, "/kubepods/pod1/b", procs="9\n")
    cgroups = Cgroups(root)
    assert cgroups.sample("/kubepods/pod1/c") is None
    assert not cgroups.exists("/kubepods/pod1/c")
    assert cgroups.pids("/kubepods/pod1/a") == [7, 8]
    assert cgroups.pids("/kubepods/pod1", recursive=True) == [7, 8, 9]
    assert cgroups.dirs("/kubepods/pod1/a") == [root / "kubepods/pod1/a"]


def test_systemd_cgroups_paths(tmp_path: Path) -> None:
    root = make_v2_root(tmp_path)
    rel = (
        "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12.slice/"
        "cri-containerd-abc.scope"
    )
    make_v2_cgroup(root, rel)
    cgroups = Cgroups(root)
    sample = cgroups.sample("kubepods-besteffort-pod12.slice:cri-containerd:abc")
    assert sample is not None and sample.memory_usage == 5 * MIB
    assert cgroups.dirs("kubepods-besteffort-pod12.slice:cri-containerd:abc") == [root / rel]
    assert cg._relative(":docker:abc") == "system.slice/docker-abc.scope"
    assert cg._relative("-.slice:p:n") == "p-n.scope"
    assert cg._relative("a-b.slice::c.slice") == "a.slice/a-b.slice/c.slice"


@pytest.mark.parametrize(
    "path", ["/a/../b", "../x", "a/b/..", "bad-.slice:p:n", "a.slice:p:", "x.scope:p:n", "/a\0b"]
)
def test_invalid_paths(tmp_path: Path, path: str) -> None:
    with pytest.raises(ValueError):
        Cgroups(make_v2_root(tmp_path)).sample(path)


# --------------------------------------------------------------------------- nano cores


def sample_at(seconds: float, cpu_ns: int | None) -> CgroupSample:
    return CgroupSample(timestamp_ns=int(seconds * 1e9), cpu_usage_ns=cpu_ns)


def test_nano_cores_math() -> None:
    assert nano_cores(sample_at(100, 1_000_000_000), sample_at(101, 1_500_000_000)) == 500_000_000
    assert nano_cores(sample_at(100, 0), sample_at(100.5, 1_000_000_000)) == 2_000_000_000
    assert nano_cores(sample_at(100, 5), sample_at(110, 5)) == 0


@pytest.mark.parametrize(
    ("prev", "cur"),
    [
        (sample_at(100, 10), sample_at(100, 20)),  # no time elapsed
        (sample_at(101, 10), sample_at(100, 20)),  # clock went backwards
        (sample_at(100, 20), sample_at(101, 10)),  # counter reset: cgroup recreated
        (sample_at(100, None), sample_at(101, 10)),
        (sample_at(100, 10), sample_at(101, None)),
    ],
)
def test_nano_cores_undefined(prev: CgroupSample, cur: CgroupSample) -> None:
    assert nano_cores(prev, cur) is None


# --------------------------------------------------------------------------- Sampler


class FakeClock:
    """Stands in for the ``time`` module inside criadapt.cgroups."""

    def __init__(self) -> None:
        self.now_ns = 1_700_000_000 * 1_000_000_000

    def time_ns(self) -> int:
        return self.now_ns

    def monotonic(self) -> float:
        return self.now_ns / 1e9

    def advance(self, seconds: float) -> None:
        self.now_ns += int(seconds * 1e9)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(cg, "time", fake)
    return fake


def set_cpu(root: Path, path: str, cpu_ns: int) -> None:
    (root / "cpu,cpuacct" / path.strip("/") / "cpuacct.usage").write_text(f"{cpu_ns}\n")


def test_sampler_rate_between_rounds(tmp_path: Path, clock: FakeClock) -> None:
    root = make_v1_root(tmp_path)
    make_v1_cgroup(root, cpu_ns=1_000_000_000)
    sampler = Sampler(Cgroups(root), interval=1.0)
    sampler.track("c1", PATH)
    assert sampler.tracked() == {"c1": PATH}
    assert sampler.latest("nope") is None
    sampler.sample_all()
    first = sampler.latest("c1")
    assert first is not None
    assert first[0].cpu_usage_ns == 1_000_000_000
    assert first[1] is None  # one sample: no rate yet
    clock.advance(1.0)
    set_cpu(root, PATH, 1_500_000_000)
    sampler.sample_all()
    latest = sampler.latest("c1")
    assert latest is not None
    assert latest[0].cpu_usage_ns == 1_500_000_000
    assert latest[1] == 500_000_000
    # reading is cached: changing the file does not change the answer until the next round
    set_cpu(root, PATH, 9_000_000_000)
    again = sampler.latest("c1")
    assert again is not None and again[0] is latest[0]


def test_sampler_samples_synchronously_when_stale(tmp_path: Path, clock: FakeClock) -> None:
    root = make_v1_root(tmp_path)
    make_v1_cgroup(root, cpu_ns=0)
    sampler = Sampler(Cgroups(root), interval=1.0)  # max_age 2 s; thread not started
    sampler.track("c1", PATH)
    first = sampler.latest("c1")  # nothing sampled yet: sampled now
    assert first is not None and first[0].cpu_usage_ns == 0 and first[1] is None
    clock.advance(2.5)
    set_cpu(root, PATH, 2_500_000_000)
    second = sampler.latest("c1")
    assert second is not None
    assert second[0].cpu_usage_ns == 2_500_000_000
    assert second[1] == 1_000_000_000


def test_sampler_keeps_a_minimum_window(tmp_path: Path, clock: FakeClock) -> None:
    root = make_v1_root(tmp_path)
    make_v1_cgroup(root, cpu_ns=0)
    sampler = Sampler(Cgroups(root), interval=1.0)
    sampler.track("c1", PATH)
    sampler.sample_all()
    clock.advance(0.1)  # too close to the first sample to make a second one
    set_cpu(root, PATH, 50_000_000)
    sampler.sample_all()
    result = sampler.latest("c1")
    assert result is not None and result[0].cpu_usage_ns == 0 and result[1] is None
    clock.advance(0.9)
    set_cpu(root, PATH, 500_000_000)
    sampler.sample_all()
    clock.advance(0.1)
    set_cpu(root, PATH, 600_000_000)
    sampler.sample_all()  # replaces the newest sample, keeps the older anchor
    result = sampler.latest("c1")
    assert result is not None
    assert result[0].cpu_usage_ns == 600_000_000
    assert result[1] == pytest.approx(600_000_000 / 1.1, rel=1e-6)


def test_sampler_gone_untrack_and_retrack(tmp_path: Path, clock: FakeClock) -> None:
    root = make_v1_root(tmp_path)
    make_v1_cgroup(root)
    sampler = Sampler(Cgroups(root), interval=1.0)
    sampler.track("c1", PATH)
    sampler.track("c1", PATH)  # idempotent
    sampler.sample_all()
    assert sampler.latest("c1") is not None
    for folder in sorted(root.rglob("abcdef"), reverse=True):
        for child in folder.iterdir():
            child.unlink()
        folder.rmdir()
    clock.advance(1.0)
    sampler.sample_all()
    assert sampler.latest("c1") is None  # gone
    make_v1_cgroup(root, "/other")
    sampler.track("c1", "/other")  # another path: history reset
    result = sampler.latest("c1")
    assert result is not None and result[1] is None
    sampler.untrack("c1")
    sampler.untrack("c1")
    assert sampler.latest("c1") is None
    assert sampler.tracked() == {}
    with pytest.raises(ValueError):
        sampler.track("bad", "/../x")
    with pytest.raises(ValueError):
        Sampler(Cgroups(root), interval=0)


def test_sampler_survives_a_failing_reader(tmp_path: Path, clock: FakeClock) -> None:
    class Broken(Cgroups):
        def sample(self, path: str) -> CgroupSample | None:
            raise RuntimeError("boom")

    sampler = Sampler(Broken(make_v1_root(tmp_path)), interval=1.0)
    sampler.track("c1", PATH)
    sampler.sample_all()
    assert sampler.latest("c1") is None


@pytest.fixture
def running_sampler(tmp_path: Path) -> Iterator[tuple[Sampler, Path]]:
    root = make_v1_root(tmp_path)
    make_v1_cgroup(root, cpu_ns=0)
    sampler = Sampler(Cgroups(root), interval=0.02)
    yield sampler, root
    sampler.stop()


def test_sampler_thread(running_sampler: tuple[Sampler, Path]) -> None:
    sampler, root = running_sampler
    sampler.track("c1", PATH)
    sampler.start()
    sampler.start()  # no-op
    assert any(t.name == "criadapt-cgroup-sampler" and t.daemon for t in threading.enumerate())
    set_cpu(root, PATH, 10_000_000_000)  # cumulative counter keeps rising
    deadline = time.monotonic() + 5
    result = None
    while time.monotonic() < deadline:
        result = sampler.latest("c1")
        if result is not None and result[1] is not None:
            break
        time.sleep(0.01)
    assert result is not None and result[1] is not None and result[1] >= 0
    assert sampler.last_round_seconds < 1
    sampler.stop()
    assert not any(t.name == "criadapt-cgroup-sampler" for t in threading.enumerate())
    sampler.stop()  # no-op


# --------------------------------------------------------------------------- network


NET_DEV = """\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    1234      12    0    0    0     0          0         0     1234      12    0    0    0     0       0          0
  eth0: 123456789  98765    3    1    0     0          0        17 98765432   54321    2    0    0     0       0          0
net1:42 1 0 0 0 0 0 0 84 2 5 0 0 0 0 0
 broken: 1 2 3
"""  # noqa: E501


def test_network_stats_parsing(tmp_path: Path) -> None:
    (tmp_path / "4242" / "net").mkdir(parents=True)
    (tmp_path / "4242" / "net" / "dev").write_text(NET_DEV)
    assert cg.network_stats(4242, proc_root=tmp_path) == [
        ("eth0", 123456789, 3, 98765432, 2),
        ("net1", 42, 0, 84, 5),
    ]
    assert cg.network_stats(4343, proc_root=tmp_path) == []


def test_network_stats_of_this_process() -> None:
    names = [entry[0] for entry in cg.network_stats(os.getpid())]
    assert "lo" not in names
    assert all(isinstance(v, int) for entry in cg.network_stats(os.getpid()) for v in entry[1:])


# --------------------------------------------------------------------------- filesystem


def test_filesystem_usage_hard_links_and_symlinks(tmp_path: Path) -> None:
    tree = tmp_path / "upper"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "big").write_bytes(os.urandom(100_000))
    (tree / "a" / "b" / "small").write_bytes(b"x")
    os.link(tree / "big", tree / "a" / "big-link")
    os.link(tree / "big", tree / "a" / "b" / "big-link2")
    (tree / "outside-link").symlink_to(tmp_path)  # not followed
    (tree / "empty").touch()

    def blocks(path: Path) -> int:
        return os.lstat(path).st_blocks * 512

    used, inodes = filesystem_usage(tree)
    expected = sum(
        blocks(p)
        for p in (
            tree,
            tree / "a",
            tree / "a" / "b",
            tree / "big",
            tree / "a" / "b" / "small",
            tree / "outside-link",
            tree / "empty",
        )
    )
    assert used == expected
    assert used >= 100_000
    # tree, a, b, big (3 names, 1 inode), small, the symlink, empty
    assert inodes == 7


def test_filesystem_usage_of_a_file_and_missing_path(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x" * 5000)
    used, inodes = filesystem_usage(tmp_path / "f")
    assert inodes == 1 and used == os.lstat(tmp_path / "f").st_blocks * 512
    with pytest.raises(FileNotFoundError):
        filesystem_usage(tmp_path / "missing")


def test_filesystem_usage_unreadable_subdir_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "t" / "d").mkdir(parents=True)
    (tmp_path / "t" / "d" / "f").write_bytes(b"x")
    real_scandir = os.scandir

    def scandir(path: str) -> object:
        if path.endswith("/d"):
            raise PermissionError(path)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    _used, inodes = filesystem_usage(tmp_path / "t")
    assert inodes == 2  # t and d; d's content could not be listed
