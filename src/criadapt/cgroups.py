"""Container and pod resource usage read straight from cgroupfs, ``/proc`` and the filesystem.

Shared by the runc, docker and podman backends to fill ``ContainerStats`` and
``PodSandboxStats`` with the same numbers kubelet's cAdvisor path would compute, without a
subprocess or an engine round trip per call:

* :class:`Cgroups` reads one cgroup (cgroup v1 / hybrid hierarchies or the v2 unified
  hierarchy) into a :class:`CgroupSample`. The memory working set is
  ``usage - inactive_file`` floored at 0, like cAdvisor and containerd (v1:
  ``memory.usage_in_bytes`` and the hierarchical ``total_inactive_file`` of
  ``memory.stat``; v2: ``memory.current`` and ``inactive_file``). Limits at or above 2^62
  (v1 reports ``PAGE_COUNTER_MAX`` rounded to pages; v2 writes ``max``) mean "unlimited" and
  are reported as ``None``; ``memory_available`` is then ``None`` too.
* :class:`Sampler` samples tracked cgroups on a daemon thread so that ``List*Stats`` calls
  only read memory, and derives ``usage_nano_cores`` from the two latest samples of a key
  (:func:`nano_cores`, the computation containerd's CRI plugin does between two calls).
* :func:`network_stats` reads ``/proc/<pid>/net/dev`` (the counters of that process's
  network namespace); :func:`filesystem_usage` measures a container's writable layer.

Cgroup paths are the OCI ``linux.cgroupsPath`` values: cgroupfs style (``/kubepods/pod<uid>/<id>``,
relative to the hierarchy roots) or systemd style (``slice:prefix:name``, expanded the way
runc does). Every read is an ``open``/``read``/``close`` of a small pseudo file; a file that
is missing or unreadable yields ``None`` for the fields it feeds (for instance swap without
``memory.memsw.*``, or every memory field when the memory controller is not mounted).
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from pathlib import Path

import attrs

__all__ = [
    "UNLIMITED_THRESHOLD",
    "CgroupSample",
    "Cgroups",
    "Sampler",
    "filesystem_usage",
    "nano_cores",
    "network_stats",
]

_LOG = logging.getLogger(__name__)

#: limits at or above this many bytes are "unlimited" (containerd's and cAdvisor's rule: the
#: v1 default is PAGE_COUNTER_MAX * PAGE_SIZE = 0x7FFFFFFFFFFFF000, not 2^63 - 1)
UNLIMITED_THRESHOLD = 1 << 62

#: v1 controllers whose hierarchy directories the stats come from
_V1_CONTROLLERS = ("cpuacct", "cpu", "memory", "pids", "blkio")

_NS_PER_S = 1_000_000_000


@attrs.frozen
class CgroupSample:
    """One reading of a cgroup; ``None`` marks a value the host does not provide."""

    #: wall clock (``time.time_ns()``) when the sample was taken
    timestamp_ns: int
    #: cumulative CPU time in ns (v1 ``cpuacct.usage``; v2 ``cpu.stat`` usage_usec * 1000)
    cpu_usage_ns: int | None = None
    #: v1 ``memory.usage_in_bytes``; v2 ``memory.current``
    memory_usage: int | None = None
    #: ``memory_usage - inactive_file``, at least 0 (kubelet's eviction signal)
    memory_working_set: int | None = None
    #: v1 ``total_rss``; v2 ``anon``
    memory_rss: int | None = None
    #: v1 ``total_pgfault``; v2 ``pgfault``
    memory_page_faults: int | None = None
    #: v1 ``total_pgmajfault``; v2 ``pgmajfault``
    memory_major_page_faults: int | None = None
    #: ``memory_limit - memory_working_set`` (at least 0) when there is a limit
    memory_available: int | None = None
    #: v1 ``memory.limit_in_bytes``; v2 ``memory.max``; ``None`` when unlimited
    memory_limit: int | None = None
    #: v1 ``total_swap`` of ``memory.stat`` (= ``memory.memsw.usage_in_bytes -
    #: memory.usage_in_bytes``; ``None`` without swap accounting); v2 ``memory.swap.current``
    swap_usage: int | None = None
    #: ``pids.current`` (tasks: processes and threads)
    pids: int | None = None
    #: bytes read / written by block I/O (v1 ``blkio.throttle.io_service_bytes_recursive``;
    #: v2 ``io.stat`` rbytes / wbytes), summed over devices
    io_read_bytes: int | None = None
    io_write_bytes: int | None = None
    #: OOM kills (v1 ``memory.oom_control`` oom_kill; v2 ``memory.events`` oom_kill)
    oom_kills: int | None = None


# --------------------------------------------------------------------------- file reading


def _read(path: str) -> bytes | None:
    """The whole content of a small pseudo file, ``None`` when it cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.read(fd, 65536)
        if len(data) < 65536:
            return data
        chunks = [data]
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def _read_int(path: str) -> int | None:
    data = _read(path)
    if data is None:
        return None
    try:
        return int(data)
    except ValueError:
        return None


def _read_limit(path: str) -> int | None:
    """A byte limit; ``None`` when unlimited (``max`` or >= 2^62) or unreadable."""
    data = _read(path)
    if data is None:
        return None
    data = data.strip()
    if data == b"max":
        return None
    try:
        value = int(data)
    except ValueError:
        return None
    return None if value >= UNLIMITED_THRESHOLD else value


def _parse_flat_keyed(data: bytes | None) -> dict[bytes, int]:
    """``key value`` lines (``memory.stat``, ``cpu.stat``, ``memory.events``...)."""
    result: dict[bytes, int] = {}
    if not data:
        return result
    for line in data.splitlines():
        key, _, value = line.partition(b" ")
        try:
            result[key] = int(value)
        except ValueError:
            continue
    return result


def _parse_blkio_v1(data: bytes | None) -> tuple[int | None, int | None]:
    """``blkio.*io_service_bytes*``: ``MAJ:MIN Op value`` lines plus a ``Total`` line."""
    if data is None:
        return None, None
    read = write = 0
    for line in data.splitlines():
        parts = line.split()
        if len(parts) != 3:
            continue
        try:
            value = int(parts[2])
        except ValueError:
            continue
        if parts[1] == b"Read":
            read += value
        elif parts[1] == b"Write":
            write += value
    return read, write


def _parse_io_stat_v2(data: bytes | None) -> tuple[int | None, int | None]:
    """``io.stat``: ``MAJ:MIN rbytes=N wbytes=N rios=N ...`` per device."""
    if data is None:
        return None, None
    read = write = 0
    for line in data.splitlines():
        for field in line.split()[1:]:
            key, _, value = field.partition(b"=")
            try:
                if key == b"rbytes":
                    read += int(value)
                elif key == b"wbytes":
                    write += int(value)
            except ValueError:
                continue
    return read, write


def _first(stats: dict[bytes, int], *keys: bytes) -> int | None:
    for key in keys:
        value = stats.get(key)
        if value is not None:
            return value
    return None


def _memory_derived(
    usage: int | None, inactive_file: int | None, limit: int | None
) -> tuple[int | None, int | None]:
    """(working set, available) from usage, inactive_file and limit (cAdvisor's rules)."""
    if usage is None:
        return None, None
    working_set = max(0, usage - (inactive_file or 0))
    available = None if limit is None else max(0, limit - working_set)
    return working_set, available


# --------------------------------------------------------------------------- cgroup paths


def _expand_systemd_slice(slice_name: str) -> str:
    """``a-b-c.slice`` → ``a.slice/a-b.slice/a-b-c.slice`` (``-.slice``: the root)."""
    if slice_name in ("", "-.slice"):
        return ""
    if not slice_name.endswith(".slice") or "/" in slice_name:
        raise ValueError(f"invalid systemd slice {slice_name!r}")
    stem = slice_name.removesuffix(".slice")
    if not stem or stem.startswith("-") or stem.endswith("-") or "--" in stem:
        raise ValueError(f"invalid systemd slice {slice_name!r}")
    parts: list[str] = []
    prefix = ""
    for component in stem.split("-"):
        prefix = f"{prefix}-{component}" if prefix else component
        parts.append(f"{prefix}.slice")
    return "/".join(parts)


def _relative(path: str) -> str:
    """The cgroup path relative to the hierarchy roots (``""``: the root cgroup).

    ``/a/b`` and ``a/b`` are cgroupfs paths; ``slice:prefix:name`` is the systemd driver's
    form, mapped like runc does: ``<expanded slice>/<prefix>-<name>.scope`` (a ``name``
    ending in ``.slice`` is used as is; an empty slice is ``system.slice``).
    """
    if not path.startswith("/") and path.count(":") == 2:
        slice_name, prefix, name = path.split(":")
        parent = _expand_systemd_slice(slice_name or "system.slice")
        if not name or "/" in name:
            raise ValueError(f"invalid systemd cgroup path {path!r}")
        # runc's unit name: a slice as is, else "<prefix>-<name>.scope"
        unit = name if name.endswith(".slice") else f"{prefix}-{name}.scope"
        return f"{parent}/{unit}" if parent else unit
    parts = [part for part in path.split("/") if part and part != "."]
    if any(part == ".." for part in parts) or "\0" in path:
        raise ValueError(f"invalid cgroup path {path!r}")
    return "/".join(parts)


def _join(base: str, rel: str) -> str:
    return f"{base}/{rel}" if rel else base


# --------------------------------------------------------------------------- Cgroups


class Cgroups:
    """Reads cgroups under ``root`` (cgroup v2 unified, or v1 / hybrid hierarchies).

    The layout is detected once: a ``cgroup.controllers`` file at ``root`` means the unified
    hierarchy (v2); otherwise each directory below ``root`` is a v1 hierarchy named after its
    controllers (``cpu,cpuacct`` directories and ``cpu``/``cpuacct`` symlinks both work). On
    hybrid hosts the v2 mount (``root/unified``) is ignored for statistics because the
    controllers live in the v1 hierarchies; only when no v1 controller is mounted at all and
    ``root/unified`` has controllers is that used as the v2 hierarchy.
    """

    def __init__(self, root: Path = Path("/sys/fs/cgroup")) -> None:
        self.root = root
        #: v1 controller name → hierarchy directory
        self.controllers: dict[str, str] = {}
        #: every hierarchy directory (v1: each mount incl. named and unified ones; v2: one)
        self.hierarchies: list[str] = []
        self._v2_base = ""
        if (root / "cgroup.controllers").is_file():
            self.version = 2
            self._v2_base = str(root)
            self.hierarchies = [self._v2_base]
            return
        self.version = 1
        canonical: dict[str, str] = {}  # real path → the directory used for it
        try:
            with os.scandir(root) as iterator:
                # real directories first: "cpu,cpuacct" is preferred over its "cpu" symlink
                entries = sorted(iterator, key=lambda e: (e.is_symlink(), e.name))
        except OSError:
            entries = []
        for entry in entries:
            if not entry.is_dir():  # follows symlinks
                continue
            real = os.path.realpath(entry.path)
            if real not in canonical:
                canonical[real] = entry.path
                self.hierarchies.append(entry.path)
            for name in (*entry.name.split(","), *os.path.basename(real).split(",")):
                if name in _V1_CONTROLLERS:
                    self.controllers.setdefault(name, canonical[real])
        unified = root / "unified"
        if not self.controllers and (unified / "cgroup.controllers").is_file():
            listed = (unified / "cgroup.controllers").read_text().split()
            if listed:
                self.version = 2
                self._v2_base = str(unified)
                self.hierarchies = [self._v2_base]

    def __repr__(self) -> str:
        return f"Cgroups(root={str(self.root)!r}, version={self.version})"

    # ------------------------------------------------------------------ paths and processes

    def dirs(self, path: str) -> list[Path]:
        """The directories of cgroup ``path`` that exist, one per hierarchy."""
        rel = _relative(path)
        return [
            Path(_join(base, rel)) for base in self.hierarchies if os.path.isdir(_join(base, rel))
        ]

    def exists(self, path: str) -> bool:
        """Whether cgroup ``path`` exists (in any hierarchy on v1)."""
        rel = _relative(path)
        return any(os.path.isdir(_join(base, rel)) for base in self._pid_bases())

    def pids(self, path: str, *, recursive: bool = False) -> list[int]:
        """Process ids in cgroup ``path`` (``recursive``: and in its descendants), sorted.

        ``[]`` when the cgroup does not exist. v1 reads the ``pids``, ``memory`` or
        ``cpuacct`` hierarchy (the first that has the cgroup).
        """
        rel = _relative(path)
        for base in self._pid_bases():
            top = _join(base, rel)
            if not os.path.isdir(top):
                continue
            found: set[int] = set()
            folders = [top]
            while folders:
                folder = folders.pop()
                data = _read(f"{folder}/cgroup.procs")
                if data:
                    found.update(int(line) for line in data.split() if line.isdigit())
                if recursive:
                    try:
                        with os.scandir(folder) as iterator:
                            folders.extend(
                                entry.path
                                for entry in iterator
                                if entry.is_dir(follow_symlinks=False)
                            )
                    except OSError:
                        pass
            return sorted(found)
        return []

    def _pid_bases(self) -> list[str]:
        if self.version == 2:
            return [self._v2_base]
        bases = [
            self.controllers[name]
            for name in ("pids", "memory", "cpuacct")
            if name in self.controllers
        ]
        bases.extend(base for base in self.hierarchies if base not in bases)
        return bases

    # ------------------------------------------------------------------ sampling

    def sample(self, path: str) -> CgroupSample | None:
        """Read cgroup ``path``; ``None`` when the cgroup does not exist (any more)."""
        rel = _relative(path)
        if self.version == 2:
            return self._sample_v2(rel)
        return self._sample_v1(rel)

    def _sample_v1(self, rel: str) -> CgroupSample | None:
        timestamp = time.time_ns()
        controllers = self.controllers
        cpu_usage = None
        cpuacct = controllers.get("cpuacct")
        if cpuacct is not None:
            cpu_usage = _read_int(f"{_join(cpuacct, rel)}/cpuacct.usage")
            if cpu_usage is None and not self.exists("/" + rel):
                return None  # gone: skip the other reads

        memory_fields: dict[str, int | None] = {}
        memory = controllers.get("memory")
        if memory is not None:
            memory_fields = self._memory_v1(_join(memory, rel))

        pids = None
        pids_base = controllers.get("pids")
        if pids_base is not None:
            pids = _read_int(f"{_join(pids_base, rel)}/pids.current")

        io_read = io_write = None
        blkio = controllers.get("blkio")
        if blkio is not None:
            folder = _join(blkio, rel)
            data = _read(f"{folder}/blkio.throttle.io_service_bytes_recursive")
            if data is None:
                data = _read(f"{folder}/blkio.throttle.io_service_bytes")
            io_read, io_write = _parse_blkio_v1(data)

        nothing_read = (
            cpu_usage is None and memory_fields.get("memory_usage") is None and pids is None
        )
        if nothing_read and not self.exists("/" + rel):
            return None  # gone (a cgroup without those controllers still gets a sample)
        return CgroupSample(
            timestamp_ns=timestamp,
            cpu_usage_ns=cpu_usage,
            pids=pids,
            io_read_bytes=io_read,
            io_write_bytes=io_write,
            **memory_fields,
        )

    @staticmethod
    def _memory_v1(folder: str) -> dict[str, int | None]:
        usage = _read_int(f"{folder}/memory.usage_in_bytes")
        stats = _parse_flat_keyed(_read(f"{folder}/memory.stat"))
        limit = _read_limit(f"{folder}/memory.limit_in_bytes")
        # cAdvisor's v1 swap: total_swap of memory.stat (shown only with swap accounting,
        # i.e. when memory.memsw.* exists); memsw - usage is the same number
        swap = _first(stats, b"total_swap", b"swap")
        if swap is None:
            memsw = _read_int(f"{folder}/memory.memsw.usage_in_bytes")
            if memsw is not None and usage is not None:
                swap = max(0, memsw - usage)
        oom_control = _read(f"{folder}/memory.oom_control")
        oom_kills = _parse_flat_keyed(oom_control).get(b"oom_kill")
        working_set, available = _memory_derived(
            usage, _first(stats, b"total_inactive_file", b"inactive_file"), limit
        )
        return {
            "memory_usage": usage,
            "memory_working_set": working_set,
            "memory_rss": _first(stats, b"total_rss", b"rss"),
            "memory_page_faults": _first(stats, b"total_pgfault", b"pgfault"),
            "memory_major_page_faults": _first(stats, b"total_pgmajfault", b"pgmajfault"),
            "memory_available": available,
            "memory_limit": limit,
            "swap_usage": swap,
            "oom_kills": oom_kills,
        }

    def _sample_v2(self, rel: str) -> CgroupSample | None:
        timestamp = time.time_ns()
        folder = _join(self._v2_base, rel)
        cpu_stat = _read(f"{folder}/cpu.stat")
        if cpu_stat is None and not os.path.isdir(folder):
            return None
        usage_usec = _parse_flat_keyed(cpu_stat).get(b"usage_usec")
        usage = _read_int(f"{folder}/memory.current")
        stats = _parse_flat_keyed(_read(f"{folder}/memory.stat"))
        limit = _read_limit(f"{folder}/memory.max")
        working_set, available = _memory_derived(usage, stats.get(b"inactive_file"), limit)
        events = _read(f"{folder}/memory.events")
        io_read, io_write = _parse_io_stat_v2(_read(f"{folder}/io.stat"))
        return CgroupSample(
            timestamp_ns=timestamp,
            cpu_usage_ns=None if usage_usec is None else usage_usec * 1000,
            memory_usage=usage,
            memory_working_set=working_set,
            memory_rss=stats.get(b"anon"),
            memory_page_faults=stats.get(b"pgfault"),
            memory_major_page_faults=stats.get(b"pgmajfault"),
            memory_available=available,
            memory_limit=limit,
            swap_usage=_read_int(f"{folder}/memory.swap.current"),
            pids=_read_int(f"{folder}/pids.current"),
            io_read_bytes=io_read,
            io_write_bytes=io_write,
            oom_kills=_parse_flat_keyed(events).get(b"oom_kill"),
        )


# --------------------------------------------------------------------------- CPU rate


def nano_cores(prev: CgroupSample, cur: CgroupSample) -> int | None:
    """CPU usage in nano-cores between two samples of one cgroup (containerd's formula).

    ``None`` when either sample lacks CPU usage, time did not advance, or the counter went
    backwards (the cgroup was recreated).
    """
    if prev.cpu_usage_ns is None or cur.cpu_usage_ns is None:
        return None
    elapsed = cur.timestamp_ns - prev.timestamp_ns
    used = cur.cpu_usage_ns - prev.cpu_usage_ns
    if elapsed <= 0 or used < 0:
        return None
    return used * _NS_PER_S // elapsed


# --------------------------------------------------------------------------- Sampler


@attrs.define
class _Tracked:
    path: str
    prev: CgroupSample | None = None
    cur: CgroupSample | None = None


class Sampler:
    """Samples tracked cgroups every ``interval`` seconds on a daemon thread.

    :meth:`latest` only takes a lock and reads memory while the thread keeps up. When the
    newest sample of a key is older than ``max_age`` (default ``2 * interval``; the thread
    is not started, stalled, or the key was just tracked) it samples synchronously instead,
    so answers are never staler than ``max_age``. The CPU rate is computed between the two
    retained samples of a key, which are kept at least ``interval / 2`` apart so that a
    synchronous sample right after a background one does not produce a noisy rate.
    """

    def __init__(
        self, cgroups: Cgroups, *, interval: float = 1.0, max_age: float | None = None
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.cgroups = cgroups
        self.interval = interval
        self.max_age = 2 * interval if max_age is None else max_age
        self._min_gap_ns = int(interval * _NS_PER_S / 2)
        self._lock = threading.Lock()
        self._tracked: dict[str, _Tracked] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: seconds the last background round took (for diagnostics)
        self.last_round_seconds = 0.0

    def track(self, key: str, path: str) -> None:
        """Sample cgroup ``path`` as ``key`` (re-tracking with another path resets it)."""
        _relative(path)  # validate early
        with self._lock:
            current = self._tracked.get(key)
            if current is not None and current.path == path:
                return
            self._tracked[key] = _Tracked(path)

    def untrack(self, key: str) -> None:
        with self._lock:
            self._tracked.pop(key, None)

    def tracked(self) -> dict[str, str]:
        """key → cgroup path of everything tracked."""
        with self._lock:
            return {key: entry.path for key, entry in self._tracked.items()}

    def latest(self, key: str) -> tuple[CgroupSample, float | None] | None:
        """The newest sample of ``key`` and its CPU usage in nano-cores (``None`` until two
        samples exist); ``None`` when ``key`` is not tracked or its cgroup is gone."""
        with self._lock:
            entry = self._tracked.get(key)
            if entry is None:
                return None
            path = entry.path
            cur = entry.cur
            fresh = cur is not None and (
                time.time_ns() - cur.timestamp_ns <= self.max_age * _NS_PER_S
            )
            if fresh:
                assert cur is not None
                return cur, self._rate(entry.prev, cur)
        sample = self._sample(path)
        with self._lock:
            entry = self._tracked.get(key)
            if entry is not None and entry.path == path:
                self._push(entry, sample)
                if sample is not None and entry.cur is sample:
                    return sample, self._rate(entry.prev, sample)
        if sample is None:
            return None
        return sample, None

    @staticmethod
    def _rate(prev: CgroupSample | None, cur: CgroupSample) -> float | None:
        if prev is None:
            return None
        value = nano_cores(prev, cur)
        return None if value is None else float(value)

    def _sample(self, path: str) -> CgroupSample | None:
        try:
            return self.cgroups.sample(path)
        except Exception:  # a stats reader must never take the sampler down
            _LOG.exception("sampling cgroup %s failed", path)
            return None

    def _push(self, entry: _Tracked, sample: CgroupSample | None) -> None:
        if sample is None:  # gone: forget the history (a recreated cgroup restarts at 0)
            entry.prev = entry.cur = None
            return
        cur = entry.cur
        if cur is None:
            entry.cur = sample
        elif sample.timestamp_ns - cur.timestamp_ns >= self._min_gap_ns:
            entry.prev, entry.cur = cur, sample
        elif entry.prev is not None:
            entry.cur = sample  # prev → sample still spans at least the minimum gap

    def sample_all(self) -> None:
        """One sampling round over every tracked key (what the thread does each interval)."""
        started = time.monotonic()
        with self._lock:
            work = [(key, entry.path) for key, entry in self._tracked.items()]
        results = [(key, path, self._sample(path)) for key, path in work]
        with self._lock:
            for key, path, sample in results:
                entry = self._tracked.get(key)
                if entry is not None and entry.path == path:
                    self._push(entry, sample)
        self.last_round_seconds = time.monotonic() - started

    def start(self) -> None:
        """Start the daemon thread (no-op when running)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name="criadapt-cgroup-sampler", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop the thread and wait for it (no-op when not running)."""
        thread = self._thread
        self._stop.set()
        if thread is not None:
            thread.join(timeout)
        self._thread = None

    def _run(self) -> None:
        next_round = time.monotonic()
        while not self._stop.is_set():
            try:
                self.sample_all()
            except Exception:
                _LOG.exception("cgroup sampling round failed")
            next_round += self.interval
            delay = next_round - time.monotonic()
            if delay < 0:  # overran: skip the missed rounds instead of bursting
                next_round = time.monotonic()
                delay = 0.0
            if self._stop.wait(delay):
                break


# --------------------------------------------------------------------------- network, disk


def network_stats(
    pid: int, *, proc_root: Path = Path("/proc")
) -> list[tuple[str, int, int, int, int]]:
    """``(name, rx_bytes, rx_errors, tx_bytes, tx_errors)`` per interface but ``lo`` of the
    network namespace of process ``pid`` (its ``net/dev``); ``[]`` when the process is gone.
    """
    data = _read(f"{proc_root}/{int(pid)}/net/dev")
    if data is None:
        return []
    result: list[tuple[str, int, int, int, int]] = []
    for line in data.decode(errors="replace").splitlines():
        name, sep, counters = line.partition(":")
        if not sep:
            continue  # the two header lines
        name = name.strip()
        fields = counters.split()
        if name == "lo" or len(fields) < 11:
            continue
        try:
            rx_bytes, rx_errors = int(fields[0]), int(fields[2])
            tx_bytes, tx_errors = int(fields[8]), int(fields[10])
        except ValueError:
            continue
        result.append((name, rx_bytes, rx_errors, tx_bytes, tx_errors))
    return result


def filesystem_usage(path: Path) -> tuple[int, int]:
    """``(bytes used, inodes)`` of the tree at ``path`` (``path`` itself included).

    Bytes are allocated blocks * 512 (sparse files count what they occupy); a hard-linked
    inode counts once; symlinks are not followed; directories on another device (mount
    points) are neither counted nor entered. Entries that vanish during the walk are skipped.
    Raises :class:`FileNotFoundError` when ``path`` does not exist. Cost is one ``lstat``
    per entry: cache the result for big trees.
    """
    top = os.lstat(path)
    device = top.st_dev
    seen: set[int] = set()
    used = top.st_blocks * 512
    inodes = 1
    seen.add(top.st_ino)
    if not stat.S_ISDIR(top.st_mode):
        return used, inodes
    folders = [os.fspath(path)]
    while folders:
        folder = folders.pop()
        try:
            with os.scandir(folder) as iterator:
                entries = list(iterator)
        except OSError:
            continue
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if info.st_dev != device:
                continue  # a mount point (or something bind-mounted in)
            if info.st_nlink > 1 or stat.S_ISDIR(info.st_mode):
                if info.st_ino in seen:
                    continue
                seen.add(info.st_ino)
            used += info.st_blocks * 512
            inodes += 1
            if stat.S_ISDIR(info.st_mode):
                folders.append(entry.path)
    return used, inodes
