"""List and status call latency at N running containers: criadapt-runc vs containerd 1.6 (CRI).

    python -m benchmarks.lists [--counts 10,50,200] [--calls 50] [--install] [--profile]

The same machinery as :mod:`benchmarks.pod_lifecycle` (imported from it): a real
``criadapt serve --backend=runc`` subprocess and Debian's containerd 1.6 with its own config,
both in the run's folder, images from a local registry, everything removed at the end.

Both runtimes are ramped up to each of ``--counts`` running containers, alternately (one pod
on one runtime, then one on the other): 10, measure, 40 more, measure, 150 more, measure.
Pods use the HOST network (no CNI per pod: 200 pods stay cheap; the same for both), PID per
container and IPC per pod; ``--containers-per-pod`` (default 1) ``sleep 3600`` containers of a
busybox image each; kubelet-like labels and annotations, so that list responses have a
realistic size. containerd also runs a pause container (catatonit) per pod, criadapt none.

At every N (and at N=0 before the first pod), after ``--settle`` seconds of quiet (during
which the idle CPU of each runtime is measured), each call gets 5 warm-up calls and then
``--calls`` calls per runtime, in rounds alternating which runtime goes first:
ListContainerStats, ListContainers, ListPodSandbox (all unfiltered, as kubelet calls them),
ContainerStatus of one container, and Version (an empty call, for reference). Calls go
through :class:`criadapt.client.Client` (encode request, gRPC unary call, decode response);
the time of the bare gRPC round trip (without the client's protobuf → model decoding) is
recorded too, as are the response sizes.

Memory: VmRSS (and PSS) of criadapt's daemon + its conmon processes vs containerd + its
shims, at 0 running containers and at every N (goal at 50). The containers' own processes
(``sleep``, containerd's pause) are not counted.

``--profile``: at the largest N, after the timed calls, py-spy (``record --idle --format
raw``) is attached to criadapt's server once per call type while ``--profile-calls`` more
calls (not timed) are made; the report then says where each call's time goes, and the raw
stacks of the RPC handlers are saved next to it.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import pod_lifecycle as pl
from criadapt import models as m
from criadapt.client import Client
from criadapt.testing.images import busybox_image
from criadapt.testing.registry import Registry

RESULTS = pl.RESULTS
CRIADAPT = pl.CRIADAPT
CONTAINERD = pl.CONTAINERD

# bridges and subnets of their own (never used: pods are host-network, but both runtimes
# want a CNI config to report NetworkReady), so that this can run beside pod_lifecycle
CRIADAPT_NET = ("crbench-a1", "10.89.242.0/24")
CONTAINERD_NET = ("crbench-c1", "10.89.243.0/24")

LIST_STATS = "ListContainerStats"
LIST_CTRS = "ListContainers"
LIST_PODS = "ListPodSandbox"
STATUS = "ContainerStatus"
VERSION = "Version"
RPCS = (LIST_STATS, LIST_CTRS, LIST_PODS, STATUS, VERSION)
#: RPC → (goal of the issue, later goal) for criadapt / containerd at the largest N
GOALS: dict[str, tuple[float, float | None]] = {
    LIST_STATS: (0.2, 0.2),
    LIST_CTRS: (1.0, 0.5),
    LIST_PODS: (1.0, 0.5),
    STATUS: (1.0, None),
}
GOAL_RSS = 0.3
RSS_AT = 50
WARMUP_CALLS = 5

#: criadapt hook → RPC, for the profile
HOOKS = {
    "criadapt_list_container_stats": LIST_STATS,
    "criadapt_list_containers": LIST_CTRS,
    "criadapt_list_pod_sandbox": LIST_PODS,
    "criadapt_container_status": STATUS,
    "criadapt_version": VERSION,
}


def log(message: str) -> None:
    print(f"[lists] {message}", file=sys.stderr, flush=True)


# -- the client ------------------------------------------------------------------------------


class TimedClient(Client):
    """:class:`Client` that also records the bare gRPC round trip of its last call.

    Every call still goes through ``Client._call`` (encode, call, decode); only the channel's
    callable is wrapped to time the round trip and keep the size of the reply."""

    last_wire = 0.0
    last_bytes = 0

    def _unary(self, version: str, service: str, rpc: str) -> Any:
        method = super()._unary(version, service, rpc)
        clock = time.perf_counter

        def timed(request: bytes, timeout: float | None = None) -> bytes:
            started = clock()
            reply: bytes = method(request, timeout=timeout)
            self.last_wire = clock() - started
            self.last_bytes = len(reply)
            return reply

        return timed


# -- pods ------------------------------------------------------------------------------------


def pod_config(name: str, index: int, logs: Path, cgroup_parent: str) -> m.PodSandboxConfig:
    """A host-network pod with the labels and annotations kubelet would give it."""
    namespaces = m.NamespaceOption(
        network=m.NamespaceMode.NODE, pid=m.NamespaceMode.CONTAINER, ipc=m.NamespaceMode.POD
    )
    uid = f"00000000-0000-4000-8000-{index:012d}"
    return m.PodSandboxConfig(
        metadata=m.PodSandboxMetadata(name=name, namespace="bench", uid=uid),
        log_directory=str(logs / name),
        labels={
            "app": "lists-bench",
            "pod-template-hash": "5d8f7c9b6d",
            "io.kubernetes.pod.name": name,
            "io.kubernetes.pod.namespace": "bench",
            "io.kubernetes.pod.uid": uid,
        },
        annotations={
            "kubernetes.io/config.seen": "2026-11-29T10:00:00.000000000Z",
            "kubernetes.io/config.source": "api",
        },
        linux=m.LinuxPodSandboxConfig(
            cgroup_parent=cgroup_parent,
            security_context=m.LinuxSandboxSecurityContext(namespace_options=namespaces),
        ),
    )


def container_config(image: str, pod: m.PodSandboxConfig, index: int) -> m.ContainerConfig:
    namespaces = m.NamespaceOption(
        network=m.NamespaceMode.NODE, pid=m.NamespaceMode.CONTAINER, ipc=m.NamespaceMode.POD
    )
    assert pod.metadata is not None
    name = f"sleep-{index}"
    return m.ContainerConfig(
        metadata=m.ContainerMetadata(name=name),
        image=m.ImageSpec(image=image),
        command=["sleep", "3600"],
        log_path=f"{name}/0.log",
        labels={
            "io.kubernetes.container.name": name,
            "io.kubernetes.pod.name": pod.metadata.name,
            "io.kubernetes.pod.namespace": pod.metadata.namespace,
            "io.kubernetes.pod.uid": pod.metadata.uid,
        },
        annotations={
            "io.kubernetes.container.hash": "8e5b3f1a",
            "io.kubernetes.container.restartCount": "0",
            "io.kubernetes.container.terminationMessagePath": "/dev/termination-log",
            "io.kubernetes.container.terminationMessagePolicy": "File",
            "io.kubernetes.pod.terminationGracePeriod": "30",
        },
        linux=m.LinuxContainerConfig(
            resources=m.LinuxContainerResources(),
            security_context=m.LinuxContainerSecurityContext(namespace_options=namespaces),
        ),
    )


@dataclass
class Side:
    """One runtime under test: the daemon, a timed client, its pods and containers."""

    runtime: pl.CriRuntime
    client: TimedClient
    prefix: str
    pods: list[str] = field(default_factory=list)
    containers: list[str] = field(default_factory=list)
    add_times: list[float] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.runtime.name

    @property
    def pid(self) -> int:
        assert self.runtime.proc is not None
        return self.runtime.proc.pid

    def add_pod(self, per_pod: int) -> None:
        """RunPodSandbox + (CreateContainer + StartContainer) * per_pod."""
        index = len(self.pods)
        name = f"{self.prefix}-{index}"
        rt = self.runtime
        pconf = pod_config(name, index, rt.logs, rt.cgroup_parent)
        started = time.perf_counter()
        pod = self.client.run_pod_sandbox(config=pconf).pod_sandbox_id
        self.pods.append(pod)
        if isinstance(rt, pl.ContainerdRuntime):
            rt.sandbox_ids.add(pod)  # for the shim sockets' clean-up
        for j in range(per_pod):
            ctr = self.client.create_container(
                pod_sandbox_id=pod,
                config=container_config(rt.image, pconf, j),
                sandbox_config=pconf,
            ).container_id
            self.client.start_container(container_id=ctr)
            self.containers.append(ctr)
        self.add_times.append(time.perf_counter() - started)

    def check(self, expected: int) -> None:
        running = m.ContainerStateValue(state=m.ContainerState.CONTAINER_RUNNING)
        found = len(self.client.list_containers(filter=m.ContainerFilter(state=running)).containers)
        if found != expected:
            raise pl.BenchmarkError(f"{self.name}: {found} running containers, not {expected}")


def wait_stats(sides: Sequence[Side], expected: int, timeout: float = 30) -> dict[str, int]:
    """Wait until ListContainerStats of every side has CPU and memory for every container;
    returns how many entries have both, per side."""
    deadline = time.monotonic() + timeout
    complete: dict[str, int] = {}
    while True:
        for side in sides:
            stats = side.client.list_container_stats().stats
            complete[side.name] = sum(
                1 for s in stats if s.cpu is not None and s.memory is not None
            )
        if all(n >= expected for n in complete.values()) or time.monotonic() > deadline:
            return complete
        time.sleep(0.5)


# -- processes: memory and CPU ---------------------------------------------------------------


def _status_kb(pid: int, key: str, path: str = "status") -> int:
    try:
        for line in Path(f"/proc/{pid}/{path}").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def rss_kb(pid: int) -> int:
    return _status_kb(pid, "VmRSS")


def pss_kb(pid: int) -> int:
    return _status_kb(pid, "Pss", "smaps_rollup")


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return b""


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _in_cgroup(pid: int, cgroup_parent: str) -> bool:
    try:
        return f"{cgroup_parent}/" in Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return False


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def helpers(side: Side) -> dict[int, str]:
    """The runtime's helper processes (pid → comm): conmon for criadapt, the shims for
    containerd. They name the runtime's folder on their command line (conmon: its bundle
    and state paths; a shim: ``-address <socket>``); containers' processes are excluded."""
    base = str(side.runtime.base).encode()
    out = {}
    for pid in _pids():
        if pid in (side.pid, os.getpid()) or _in_cgroup(pid, side.runtime.cgroup_parent):
            continue
        if base in _cmdline(pid):
            out[pid] = _comm(pid)
    return out


def pause_processes(cgroup_parent: str) -> list[int]:
    """containerd's pause containers (our catatonit image; criadapt runs none)."""
    return [p for p in _pids() if _comm(p) == "catatonit" and _in_cgroup(p, cgroup_parent)]


@dataclass
class Memory:
    daemon_rss: int
    helper_rss: int
    daemon_pss: int
    helper_pss: int
    helpers: collections.Counter[str]

    @property
    def total_rss(self) -> int:
        return self.daemon_rss + self.helper_rss

    @property
    def total_pss(self) -> int:
        return self.daemon_pss + self.helper_pss


def memory(side: Side) -> Memory:
    procs = helpers(side)
    return Memory(
        daemon_rss=rss_kb(side.pid),
        helper_rss=sum(rss_kb(p) for p in procs),
        daemon_pss=pss_kb(side.pid),
        helper_pss=sum(pss_kb(p) for p in procs),
        helpers=collections.Counter(procs.values()),
    )


def cpu_ticks(pids: Sequence[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            raw = Path(f"/proc/{pid}/stat").read_text()
            fields = raw[raw.rindex(")") + 2 :].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
    return total


def idle_cpu(sides: Sequence[Side], seconds: float) -> dict[str, float]:
    """Share of one core each runtime (daemon + helpers) uses while nobody calls it."""
    groups = {side.name: [side.pid, *helpers(side)] for side in sides}
    before = {name: cpu_ticks(pids) for name, pids in groups.items()}
    started = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - started
    hz = os.sysconf("SC_CLK_TCK")
    return {name: (cpu_ticks(pids) - before[name]) / hz / elapsed for name, pids in groups.items()}


# -- measuring -------------------------------------------------------------------------------


@dataclass
class Samples:
    total: list[float] = field(default_factory=list)
    wire: list[float] = field(default_factory=list)
    size: int = 0
    items: int = 0


def _count(reply: Any) -> int:
    for name in ("stats", "containers", "items"):
        value = getattr(reply, name, None)
        if value is not None:
            return len(value)
    return 1


def caller(rpc: str, side: Side) -> Callable[[], Any]:
    cri = side.client
    if rpc == LIST_STATS:
        return cri.list_container_stats
    if rpc == LIST_CTRS:
        return cri.list_containers
    if rpc == LIST_PODS:
        return cri.list_pod_sandbox
    if rpc == STATUS:
        first = side.containers[0] if side.containers else ""
        return lambda: cri.container_status(container_id=first)
    return cri.version


def measure(sides: list[Side], calls: int, n: int) -> dict[tuple[str, str], Samples]:
    """Every call of RPCS, warm-up first, then rounds alternating which runtime goes first."""
    out: dict[tuple[str, str], Samples] = {}
    clock = time.perf_counter
    for rpc in RPCS:
        if rpc == STATUS and n == 0:
            continue
        fns = {side.name: caller(rpc, side) for side in sides}
        for side in sides:
            for _ in range(WARMUP_CALLS):
                fns[side.name]()
            out[(side.name, rpc)] = Samples()
        for round_ in range(calls):
            order = sides[round_ % len(sides) :] + sides[: round_ % len(sides)]
            for side in order:
                started = clock()
                reply = fns[side.name]()
                elapsed = clock() - started
                samples = out[(side.name, rpc)]
                samples.total.append(elapsed)
                samples.wire.append(side.client.last_wire)
                samples.size = side.client.last_bytes
                samples.items = _count(reply)
    return out


# -- profile ---------------------------------------------------------------------------------


def _frame(frame: str) -> tuple[str, str]:
    """``fn (criadapt/wire/converter.py:123)`` → (``fn``, ``criadapt/wire/converter.py``)."""
    name, _, where = frame.partition(" (")
    return name, where.rstrip(")").rsplit(":", 1)[0]


def _short(frame: str) -> str:
    """The function's own name (``Dispatcher._unary_behaviour.<locals>.behaviour``: the
    last part)."""
    return _frame(frame)[0].rsplit(".", 1)[-1]


def _label(frame: str) -> str:
    """``fn (converter.py)`` for criadapt's code, ``fn (cattrs/converters.py)`` for others."""
    name, path = _frame(frame)
    if path.startswith("<"):  # cattrs' generated functions: "<cattrs generated ...>"
        return f"{name} (cattrs generated)"
    parts = path.split("/")
    ours = parts[0] in ("criadapt", "criadapt_runc")
    return f"{name} ({'/'.join(parts[-1:] if ours else parts[-2:])})"


def _ours(frame: str) -> bool:
    return frame.partition(" (")[2].startswith(("criadapt/", "criadapt_runc/"))


#: first function under the servicer's ``behaviour`` → phase
PHASES = {
    "decode": "decode request (bytes → protobuf → model)",
    "_context": "call context",
    "call": "Dispatcher.call: the backend's hook",
    "encode": "encode response (model → dicts → protobuf → bytes)",
    "debug": "logging",
}
#: first function under grpc's ``_unary_response_in_pool`` (outside ``behaviour``) → phase
GRPC_PHASES = {
    "_status": "grpc: send the response (start_server_batch)",
    "unary_request": "grpc: receive the request",
    "_serialize_response": "grpc: serialize (identity)",
}
#: innermost functions of a thread that waits (an idle sample, not work)
WAITS = {
    *("wait", "_worker", "_serve", "get", "sleep", "select", "poll", "_wait_for_tstate_lock"),
    *("accept", "recv", "recv_into", "recvmsg", "readinto"),
}


@dataclass
class RpcProfile:
    """Samples of one recording: ``calls`` calls of ``rpc`` in ``seconds`` of sampling."""

    rpc: str
    calls: int
    seconds: float
    ticks: int = 0  # samples of the main thread: one per sampling round
    call_seconds: float = 0.0  # one client call (mean) while py-spy sampled
    samples: int = 0  # samples in the RPC handler (grpc's pool thread, busy)
    phases: collections.Counter[str] = field(default_factory=collections.Counter)
    inclusive: collections.Counter[str] = field(default_factory=collections.Counter)
    self_time: collections.Counter[str] = field(default_factory=collections.Counter)
    background: collections.Counter[str] = field(default_factory=collections.Counter)
    background_leaf: dict[str, collections.Counter[str]] = field(
        default_factory=lambda: collections.defaultdict(collections.Counter)
    )
    lines: list[str] = field(default_factory=list)

    def ms(self, samples: int) -> float:
        """Samples → ms per call, at the rate py-spy achieved (it falls behind at times)."""
        if not self.ticks or not self.calls:
            return 0.0
        return samples / self.ticks * self.seconds * 1000.0 / self.calls

    def ms_per_s(self, samples: int) -> float:
        return samples / self.ticks * 1000.0 if self.ticks else 0.0


def analyse(rpc: str, raw: str, calls: int, seconds: float) -> RpcProfile:
    prof = RpcProfile(rpc, calls, seconds)
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        names = [_short(f) for f in frames]
        if names and names[0] == "_run_module_as_main":
            prof.ticks += count
        at = next((i for i, n in enumerate(names) if n == "_unary_response_in_pool"), None)
        if at is None:
            # a busy background thread (whole stacks only: a torn sample has no root)
            if names[0] in ("_bootstrap", "_run_module_as_main") and names[-1] not in WAITS:
                entry = next((_label(f) for f in frames if _ours(f)), "")
                if not entry and "_serve" in names:
                    entry = "grpc's poller thread (_serve)"
                entry = entry or _label(frames[min(3, len(frames) - 1)])
                prof.background[entry] += count
                prof.background_leaf[entry][_label(frames[-1])] += count
            continue
        prof.lines.append(f"{rpc};{';'.join(frames[at:])} {count}")
        prof.samples += count
        below = frames[at + 1 :]
        handler = next((i for i, n in enumerate(names) if n == "behaviour"), None)
        if handler is not None:
            first = names[handler + 1] if handler + 1 < len(names) else "behaviour"
            prof.phases[PHASES.get(first, first)] += count
        else:
            first = names[at + 1] if at + 1 < len(names) else "_unary_response_in_pool"
            prof.phases[GRPC_PHASES.get(first, f"grpc: {first}")] += count
        for label in dict.fromkeys(_label(f) for f in below):
            prof.inclusive[label] += count
        leaf = _label(frames[-1])
        parent = next((_label(f) for f in reversed(below[:-1]) if _ours(f)), "")
        prof.self_time[f"{leaf} ← {parent}" if parent and parent != leaf else leaf] += count
    return prof


@contextlib.contextmanager
def py_spy(pid: int, output: Path, rate: int) -> Iterator[list[float]]:
    """py-spy ``record --idle --nonblocking --format raw`` on ``pid``; yields a list that
    holds, after the block, the seconds py-spy sampled (from its "Sampling" line to Ctrl-C).

    ``--nonblocking``: py-spy does not stop the server for each sample (it would slow it
    down many times at this rate), at the price of a few torn samples (counted as errors)."""
    binary = pl.py_spy_binary()
    assert binary is not None
    cmd = [binary, "record", "--pid", str(pid), "--idle", "--nonblocking", "--rate", str(rate)]
    cmd += ["--format", "raw", "--output", str(output)]
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    sampling = threading.Event()
    started: list[float] = []

    def drain() -> None:  # py-spy's messages: wait for "Sampling", never let the pipe fill
        assert proc.stdout is not None
        for line in proc.stdout:
            if b"Sampling process" in line and not sampling.is_set():
                started.append(time.monotonic())
                sampling.set()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    seconds: list[float] = []
    try:
        if not sampling.wait(15):
            raise pl.BenchmarkError(f"py-spy did not start sampling pid {pid}")
        time.sleep(0.2)
        yield seconds
        seconds.append(time.monotonic() - started[0])
    finally:
        pl.stop_process(proc, signal.SIGINT, 30)  # SIGINT: py-spy writes its output and exits
        reader.join(5)


def profile_rpcs(side: Side, calls: int, rate: int, folder: Path) -> list[RpcProfile]:
    out = []
    for rpc in RPCS:
        raw = folder / f"profile-{rpc}.txt"
        fn = caller(rpc, side)
        log(f"profiling {calls} calls of {rpc} on criadapt")
        with py_spy(side.pid, raw, rate) as seconds:
            started = time.perf_counter()
            for _ in range(calls):
                fn()
            loop = time.perf_counter() - started
            time.sleep(0.2)
        text = raw.read_text() if raw.exists() else ""
        prof = analyse(rpc, text, calls, seconds[0] if seconds else 0.0)
        prof.call_seconds = loop / calls
        out.append(prof)
    return out


def profile_report(
    profiles: Sequence[RpcProfile],
    results: dict[int, dict[tuple[str, str], Samples]],
    n: int,
    rate: int,
) -> list[str]:
    calls = profiles[0].calls if profiles else 0
    lines = [
        f"py-spy `record --idle --nonblocking --rate {rate} --format raw` attached to "
        f"criadapt's server while it answered {calls} more calls of each kind at N={n} (one "
        "recording per call kind, after the timed calls, not timed). Counted: the stacks of "
        "grpc's pool thread running the call (`_unary_response_in_pool`: receive the "
        "request, the servicer's `behaviour` = decode → hook → encode, send the response). "
        "ms per call, from the share of sampling rounds the stack was seen in and the "
        "sampling time (py-spy falls behind its rate at times; that is accounted for). Native "
        "code counts in the Python function that calls it: `to_pb` = the protobuf "
        "constructor building the message from nested dicts (C), `encode` = "
        "SerializeToString, `_status` = grpc's C core queueing the response. The rest of the "
        "measured time (rpc only, without a profiler) is the transport and the client.",
        "",
    ]
    for prof in profiles:
        timed = results.get(n, {}).get((CRIADAPT, prof.rpc))
        other = results.get(n, {}).get((CONTAINERD, prof.rpc))
        measured = ""
        if timed:
            measured = (
                f"; the client calls took {pl.fmt_ms(prof.call_seconds)} ms each under the "
                f"profiler, {pl.fmt_ms(pl.p50(timed.total))} ms (p50) timed without it "
                f"(rpc only {pl.fmt_ms(pl.p50(timed.wire))} ms"
            )
            if other:
                measured += f"; containerd {pl.fmt_ms(pl.p50(other.wire))} ms"
            measured += ")"
        lines += [
            f"**{prof.rpc}** at N={n}: {prof.ms(prof.samples):.2f} ms per call in the server's "
            f"call thread{measured}",
            "",
            "| phase | ms per call | % |",
            "|---|---|---|",
        ]
        for phase, count in prof.phases.most_common():
            share = 100 * count / max(1, prof.samples)
            lines.append(f"| {phase} | {prof.ms(count):.2f} | {share:.0f} |")
        lines += ["", "| inclusive (function and callees) | ms | self (leaf ← caller) | ms |"]
        lines.append("|---|---|---|---|")
        inc = [
            (k, v)
            for k, v in prof.inclusive.most_common()
            if not k.startswith(("_call_behavior (", "behaviour (", "Dispatcher._unary_behaviour"))
        ][:14]
        own = prof.self_time.most_common(14)
        for i in range(max(len(inc), len(own))):
            a = (f"`{inc[i][0]}`", f"{prof.ms(inc[i][1]):.2f}") if i < len(inc) else ("", "")
            b = (f"`{own[i][0]}`", f"{prof.ms(own[i][1]):.2f}") if i < len(own) else ("", "")
            lines.append(f"| {a[0]} | {a[1]} | {b[0]} | {b[1]} |")
        lines.append("")
    background: collections.Counter[str] = collections.Counter()
    leaves: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    ticks = sum(p.ticks for p in profiles)
    for prof in profiles:
        background.update(prof.background)
        for entry, counter in prof.background_leaf.items():
            leaves[entry].update(counter)
    if background and ticks:
        lines += [
            f"Background threads at N={n}, busy (not waiting), over all {len(profiles)} "
            "recordings: they take the GIL from the calls.",
            "",
            "| thread (outermost criadapt function) | ms per second | innermost functions |",
            "|---|---|---|",
        ]
        for entry, count in background.most_common(8):
            top = ", ".join(f"`{leaf}`" for leaf, _ in leaves[entry].most_common(3))
            lines.append(f"| `{entry}` | {count / ticks * 1000:.1f} | {top} |")
        lines.append("")
    return lines


# -- report ----------------------------------------------------------------------------------


def _kb_mb(kb: int) -> str:
    return f"{kb / 1024:.1f}"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def git_state() -> str:
    root = Path(__file__).resolve().parent.parent
    head = pl.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], check=False).strip()
    dirty = pl.run(
        ["git", "-C", str(root), "status", "--porcelain", "--", "src", "backends"], check=False
    ).strip()
    return f"{head or '?'}{' + uncommitted changes in src/ or backends/' if dirty else ''}"


@dataclass
class Run:
    args: argparse.Namespace
    versions: dict[str, str] = field(default_factory=dict)
    results: dict[int, dict[tuple[str, str], Samples]] = field(default_factory=dict)
    memory: dict[int, dict[str, Memory]] = field(default_factory=dict)
    pause_rss: dict[int, tuple[int, int]] = field(default_factory=dict)
    idle: dict[int, dict[str, float]] = field(default_factory=dict)
    stats_complete: dict[int, dict[str, int]] = field(default_factory=dict)
    add_p50: dict[str, float] = field(default_factory=dict)
    load: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    profile: list[str] = field(default_factory=list)


def report(run: Run) -> list[str]:
    args = run.args
    counts = sorted(run.results)
    command = f"python -m benchmarks.lists --counts {args.counts} --calls {args.calls}"
    if args.containers_per_pod != 1:
        command += f" --containers-per-pod {args.containers_per_pod}"
    command += " --install" * args.install + " --profile" * args.profile
    per_pod = args.containers_per_pod
    pods_text = "N" if per_pod == 1 else f"N/{per_pod}"
    lines = [
        f"# List and status calls at N running containers, {datetime.date.today()}",
        "",
        f"Machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, kernel "
        f"{platform.release()}, Python {platform.python_version()}; criadapt at "
        f"{git_state()}; load average at start / end: {' / '.join(run.load)}. Command: "
        f"`{command}`.",
        "",
        "Runtimes: " + "; ".join(f"{name}: {v}" for name, v in run.versions.items()) + ".",
        "",
        f"N running containers per runtime, {per_pod} per pod ({pods_text} host-network "
        "pods), both runtimes up at the same time and ramped alternately. "
        f"p50 / p95 (nearest rank) of {args.calls} calls each after {WARMUP_CALLS} warm-up "
        "calls, in ms, through `criadapt.client.Client` (request encode + gRPC + response "
        "decode into models, the same for both). `rpc only`: the gRPC round trip alone, "
        "without the client's decoding (what the server costs; the client's decoding is the "
        "same work for both and makes the ratios of the full call closer to 1). KB: size of "
        "one response.",
        "",
        "| call | N | criadapt p50 | p95 | containerd p50 | p95 | ratio p50 | rpc only: "
        "criadapt p50 | containerd p50 | ratio | KB criadapt / containerd |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for rpc in RPCS:
        for n in counts:
            a = run.results[n].get((CRIADAPT, rpc))
            b = run.results[n].get((CONTAINERD, rpc))
            if a is None:
                continue
            cells = [
                pl.fmt_ms(pl.p50(a.total)),
                pl.fmt_ms(pl.p95(a.total)),
                pl.fmt_ms(pl.p50(b.total)) if b else "-",
                pl.fmt_ms(pl.p95(b.total)) if b else "-",
                _ratio(pl.p50(a.total), pl.p50(b.total)) if b else "-",
                pl.fmt_ms(pl.p50(a.wire)),
                pl.fmt_ms(pl.p50(b.wire)) if b else "-",
                _ratio(pl.p50(a.wire), pl.p50(b.wire)) if b else "-",
                f"{a.size / 1024:.1f} / {b.size / 1024:.1f}" if b else f"{a.size / 1024:.1f}",
            ]
            lines.append(f"| {rpc} | {n} | " + " | ".join(cells) + " |")

    top = counts[-1] if counts else 0
    lines += [
        "",
        f"Goals of the issue at N={top} (ratio of p50, criadapt / containerd):",
        "",
        "| call | ratio (client call) | ratio (rpc only) | goal | met | later goal | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for rpc, (goal, later) in GOALS.items():
        a = run.results.get(top, {}).get((CRIADAPT, rpc))
        b = run.results.get(top, {}).get((CONTAINERD, rpc))
        if a is None or b is None:
            lines.append(f"| {rpc} | - | - | ≤ {goal}x | skipped | | |")
            continue
        full = pl.p50(a.total) / pl.p50(b.total)
        wire = pl.p50(a.wire) / pl.p50(b.wire)

        def met(goal_: float | None, full: float = full, wire: float = wire) -> str:
            if goal_ is None:
                return ""
            if full <= goal_ and wire <= goal_:
                return "yes"
            if full <= goal_ or wire <= goal_:
                return f"{'client call' if full <= goal_ else 'rpc only'} only"
            return "**no**"

        lines.append(
            f"| {rpc} | {full:.2f}x | {wire:.2f}x | ≤ {goal}x | {met(goal)} "
            f"| {'' if later is None else f'≤ {later}x'} | {met(later)} |"
        )

    lines += [
        "",
        "Memory (MiB): VmRSS of the daemon + the sum of its helpers' VmRSS (criadapt: its "
        "conmon processes; containerd: its shims); PSS (proportional: shared pages split "
        "among the processes that map them) for comparison. Containers' own processes are "
        "not counted.",
        "",
        "| N | criadapt daemon | conmon (n) | criadapt total | containerd daemon | shims (n) "
        "| containerd total | ratio RSS | criadapt PSS | containerd PSS | ratio PSS | goal |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n in sorted(run.memory):
        a_mem = run.memory[n].get(CRIADAPT)
        b_mem = run.memory[n].get(CONTAINERD)
        if a_mem is None:
            continue
        rss_goal = ""
        if b_mem is not None and n == RSS_AT:
            ok = a_mem.total_rss / b_mem.total_rss <= GOAL_RSS
            rss_goal = f"≤ {GOAL_RSS}x: {'yes' if ok else '**no**'}"
        conmons = sum(a_mem.helpers.values())
        cells = [
            _kb_mb(a_mem.daemon_rss),
            f"{_kb_mb(a_mem.helper_rss)} ({conmons})",
            _kb_mb(a_mem.total_rss),
        ]
        if b_mem is not None:
            cells += [
                _kb_mb(b_mem.daemon_rss),
                f"{_kb_mb(b_mem.helper_rss)} ({sum(b_mem.helpers.values())})",
                _kb_mb(b_mem.total_rss),
                _ratio(a_mem.total_rss, b_mem.total_rss),
                _kb_mb(a_mem.total_pss),
                _kb_mb(b_mem.total_pss),
                _ratio(a_mem.total_pss, b_mem.total_pss),
            ]
        else:
            cells += ["-"] * 6 + [_kb_mb(a_mem.total_pss), "-", "-"]
        lines.append(f"| {n} | " + " | ".join(cells) + f" | {rss_goal} |")
    helper_kinds = {
        name: sorted({k for mem in run.memory.values() if name in mem for k in mem[name].helpers})
        for name in (CRIADAPT, CONTAINERD)
    }
    lines += [
        "",
        "Helper processes found: "
        + "; ".join(f"{name}: {', '.join(kinds) or 'none'}" for name, kinds in helper_kinds.items())
        + ". containerd's pause containers (not counted above), VmRSS total: "
        + ", ".join(
            f"N={n}: {_kb_mb(kb)} MiB ({count})" for n, (count, kb) in sorted(run.pause_rss.items())
        )
        + ".",
        "",
        "Idle CPU (% of one core, daemon + helpers, over the "
        f"{args.settle:.0f} s of quiet before each measurement; includes criadapt's stats "
        "sampler, which reads every running container's cgroup once a second): "
        + "; ".join(
            f"N={n}: "
            + ", ".join(f"{name} {100 * share:.1f}%" for name, share in sorted(shares.items()))
            for n, shares in sorted(run.idle.items())
        )
        + ".",
        "",
        "ListContainerStats entries with CPU and memory when measuring: "
        + "; ".join(
            f"N={n}: " + ", ".join(f"{name} {c}" for name, c in sorted(done.items()))
            for n, done in sorted(run.stats_complete.items())
        )
        + ". Time to add a pod (RunPodSandbox + CreateContainer + StartContainer, p50 ms): "
        + ", ".join(f"{name} {pl.fmt_ms(t)}" for name, t in run.add_p50.items())
        + ".",
        "",
        "Method: the two daemons of `benchmarks.pod_lifecycle` (criadapt `serve` with the "
        "runc backend; containerd 1.6 with its own config, restrict_oom_score_adj, overlayfs, "
        "runc v2 shim, cgroupfs, our catatonit pause image), both up for the whole run. Pods "
        "are host-network (no CNI per pod), PID per container, IPC per pod, one cgroup "
        "parent; containers `sleep 3600` of a busybox image from a local registry; pod and "
        "container labels and annotations as kubelet sets them (4 or 5 labels, 2 or 5 "
        "annotations). The calls are unfiltered, as kubelet's PLEG relist and stats provider "
        "make them; ContainerStatus asks for the first container. containerd's "
        "ListContainerStats asks every shim for its container's cgroup metrics (ttrpc) per "
        "call; criadapt answers from the last sample of its background sampler (≤ 1 s old).",
    ]
    if run.notes:
        lines += ["", "Notes:", ""] + [f"- {note}" for note in run.notes]
    if run.profile:
        lines += ["", "## Where criadapt's time goes (profile)", "", *run.profile]
    lines.append("")
    return lines


# -- main ------------------------------------------------------------------------------------


def parse_counts(text: str) -> list[int]:
    counts = sorted({int(part) for part in text.split(",") if part.strip()})
    if not counts or counts[0] <= 0:
        raise argparse.ArgumentTypeError("counts must be positive integers")
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--counts", default="10,50,200", help="running containers, ramped up")
    parser.add_argument("--calls", type=int, default=50, help="timed calls per call and N")
    parser.add_argument("--containers-per-pod", type=int, default=1)
    parser.add_argument("--settle", type=float, default=5.0, help="quiet seconds before measuring")
    parser.add_argument(
        "--install", action="store_true", help="apt-get install containerd and the rest if needed"
    )
    parser.add_argument("--no-containerd", action="store_true", help="criadapt only")
    parser.add_argument("--profile", action="store_true", help="py-spy criadapt at the largest N")
    parser.add_argument("--profile-calls", type=int, default=400, help="per call kind")
    parser.add_argument("--profile-rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--output", type=Path, help="report path (default: benchmarks/results)")
    args = parser.parse_args(argv)
    counts = parse_counts(args.counts)
    per_pod = args.containers_per_pod
    if any(n % per_pod for n in counts):
        parser.error(f"every count must be a multiple of --containers-per-pod {per_pod}")
    if os.geteuid() != 0:
        parser.error("needs root (runc, mounts, cgroups)")

    missing = pl.missing_packages(pl.DEBIAN_PACKAGES)
    if missing and args.install:
        pl.apt_install(missing)
    elif missing:
        parser.error(f"missing Debian packages {' '.join(missing)} (use --install)")
    run = Run(args)
    if not args.no_containerd:
        version, why = pl.containerd_version(args.install)
        if version is None:
            log(why)
            run.notes.append(why)
            args.no_containerd = True
    if args.profile and pl.py_spy_binary() is None:
        log("py-spy not found (pip install py-spy): --profile ignored")
        run.notes.append("--profile asked, but py-spy is not installed: no profile")
        args.profile = False

    if os.getloadavg()[0] > (os.cpu_count() or 1):
        run.notes.append(
            f"the machine was busy at the start (load average {pl.loadavg()} on "
            f"{os.cpu_count()} cores): absolute times run high, compare the ratios"
        )
    signal.signal(signal.SIGTERM, pl._terminate)
    pl.set_child_subreaper()
    for bridge, _subnet in (CRIADAPT_NET, CONTAINERD_NET):
        if Path(f"/sys/class/net/{bridge}").exists():
            raise SystemExit(f"bridge {bridge} exists: another benchmark running? (or delete it)")

    base = Path(tempfile.mkdtemp(prefix="criadapt-listbench-"))
    cgroup_parent = f"/criadapt-listbench-{os.getpid()}"
    run.load.append(pl.loadavg())
    sweeper = pl.Sweeper(base, cgroup_parent, [CRIADAPT_NET[0], CONTAINERD_NET[0]])
    profiles: list[RpcProfile] = []
    with contextlib.ExitStack() as stack:
        stack.callback(sweeper.sweep)
        registry = stack.enter_context(Registry(root=base / "registry"))
        if registry.process is not None:
            sweeper.managed.add(registry.process.pid)
        busybox_ref = registry.push(busybox_image(), "bench/busybox", "latest")
        pause_ref = registry.push(pl.pause_image(), "bench/pause", "3.9")
        log(f"registry {registry.host}: {busybox_ref}, {pause_ref}")

        sides: list[Side] = []
        crit = pl.CriadaptRuntime(base / "criadapt", CRIADAPT_NET, cgroup_parent)
        stack.callback(crit.stop)
        crit.start()
        assert crit.proc is not None
        sweeper.managed.add(crit.proc.pid)
        crit.pull(busybox_ref)
        crit.image = busybox_ref
        run.versions[CRIADAPT] = crit.version
        crit_client = TimedClient(f"unix://{crit.sock}", timeout=120)
        stack.callback(crit_client.close)
        sides.append(Side(crit, crit_client, "crit"))
        log(f"{crit.version} ready")

        if not args.no_containerd:
            ctrd = pl.ContainerdRuntime(
                base / "containerd", CONTAINERD_NET, cgroup_parent, registry.host, pause_ref
            )
            stack.callback(ctrd.stop)
            ctrd.start()
            assert ctrd.proc is not None
            sweeper.managed.add(ctrd.proc.pid)
            ctrd.pull(pause_ref)
            ctrd.pull(busybox_ref)
            ctrd.image = busybox_ref
            version = pl.run(["containerd", "--version"]).strip()
            run.versions[CONTAINERD] = f"{ctrd.version} (`{version}`)"
            ctrd_client = TimedClient(f"unix://{ctrd.sock}", timeout=120)
            stack.callback(ctrd_client.close)
            sides.append(Side(ctrd, ctrd_client, "ctrd"))
            log(f"{ctrd.version} ready")

        def step(n: int) -> None:
            pl.reap_orphans(sweeper.managed)
            run.idle[n] = idle_cpu(sides, args.settle)
            if n:
                run.stats_complete[n] = wait_stats(sides, n)
            log(f"N={n}: measuring ({args.calls} calls of {len(RPCS)} kinds per runtime)")
            run.results[n] = measure(sides, args.calls, n)
            run.memory[n] = {side.name: memory(side) for side in sides}
            pauses = pause_processes(cgroup_parent)
            run.pause_rss[n] = (len(pauses), sum(rss_kb(p) for p in pauses))
            for side in sides:
                a = run.results[n][(side.name, LIST_CTRS)]
                log(
                    f"N={n} {side.name}: ListContainers p50 {pl.fmt_ms(pl.p50(a.total))} ms, "
                    f"RSS {_kb_mb(run.memory[n][side.name].total_rss)} MiB"
                )

        step(0)
        for n in counts:
            pods = n // per_pod
            log(f"ramping up to {n} running containers ({pods} pods) per runtime")
            index = len(sides[0].pods)
            while index < pods:
                order = sides[index % len(sides) :] + sides[: index % len(sides)]
                for side in order:
                    side.add_pod(per_pod)
                index += 1
                if index % 25 == 0:
                    pl.reap_orphans(sweeper.managed)
                    log(f"  {index}/{pods} pods")
            for side in sides:
                side.check(n)
            step(n)

        for side in sides:
            if side.add_times:
                run.add_p50[side.name] = pl.p50(side.add_times)

        if args.profile:
            folder = base / "profile"
            folder.mkdir()
            profiles = profile_rpcs(sides[0], args.profile_calls, args.profile_rate, folder)
            run.profile = profile_report(profiles, run.results, counts[-1], args.profile_rate)
        run.load.append(pl.loadavg())

    RESULTS.mkdir(exist_ok=True)
    out = args.output or RESULTS / f"{datetime.date.today()}-lists.md"
    if profiles:
        raw = out.with_name(f"{out.stem}-criadapt-profile.txt")
        raw.write_text("".join(f"{line}\n" for prof in profiles for line in prof.lines))
        shown = raw.relative_to(RESULTS.parent.parent) if raw.is_relative_to(RESULTS) else raw
        run.profile[:0] = [f"Samples (the handlers' stacks, the RPC as root frame): `{shown}`.", ""]
    lines = report(run)
    out.write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted; everything the run created is cleaned up")
        sys.exit(130)
