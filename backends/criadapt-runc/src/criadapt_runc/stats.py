"""Container and pod stats from cgroups, sampled in the background at a bounded age.

A :class:`criadapt.cgroups.Sampler` reads every running container's cgroup once a second, so
``ListContainerStats`` answers from memory instead of reading files per call; CPU usage in
nano-cores is the rate between two samples. The writable layer's disk usage is walked at most
every ``LAYER_USAGE_MAX_AGE`` seconds per container.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from criadapt import hookimpl
from criadapt import models as m
from criadapt.cgroups import Cgroups, CgroupSample, Sampler, filesystem_usage, network_stats
from criadapt.errors import NotFound
from criadapt.filters import matches_labels
from criadapt_runc.records import ContainerRecord, SandboxRecord

LAYER_USAGE_MAX_AGE = 10.0
C_RUNNING = int(m.ContainerState.CONTAINER_RUNNING)
READY = int(m.PodSandboxState.SANDBOX_READY)


def _u64(value: int | None) -> m.UInt64Value | None:
    return None if value is None else m.UInt64Value(value=max(0, value))


def cpu_usage(sample: CgroupSample, nano_cores: float | None) -> m.CpuUsage:
    return m.CpuUsage(
        timestamp=sample.timestamp_ns,
        usage_core_nano_seconds=_u64(sample.cpu_usage_ns),
        usage_nano_cores=_u64(None if nano_cores is None else int(nano_cores)),
    )


def memory_usage(sample: CgroupSample) -> m.MemoryUsage:
    return m.MemoryUsage(
        timestamp=sample.timestamp_ns,
        working_set_bytes=_u64(sample.memory_working_set),
        available_bytes=_u64(sample.memory_available),
        usage_bytes=_u64(sample.memory_usage),
        rss_bytes=_u64(sample.memory_rss),
        page_faults=_u64(sample.memory_page_faults),
        major_page_faults=_u64(sample.memory_major_page_faults),
    )


class StatsService:
    """Hooks of ContainerStats, ListContainerStats, PodSandboxStats, ListPodSandboxStats.

    Mixed into the runc backend after :class:`criadapt_runc.runtime.RuntimeService`, whose
    tables and helpers it uses.
    """

    # provided by RuntimeService
    _lock: threading.Lock
    _ctrs: dict[str, ContainerRecord]
    _pods: dict[str, SandboxRecord]

    def init_stats(self) -> None:
        self.cgroups = Cgroups()
        self.sampler = Sampler(self.cgroups, interval=1.0)
        self._layer_usage: dict[str, tuple[float, int, int]] = {}
        with self._lock:
            running = [c for c in self._ctrs.values() if c.state == C_RUNNING]
        for ctr in running:
            self.track_container(ctr)
        self.sampler.start()

    def close_stats(self) -> None:
        self.sampler.stop()

    @staticmethod
    def cgroup_path(ctr: ContainerRecord) -> str | None:
        try:
            spec = json.loads((Path(ctr.bundle) / "config.json").read_text())
        except (OSError, ValueError):
            return None
        path = spec.get("linux", {}).get("cgroupsPath")
        return str(path) if path else None

    def track_container(self, ctr: ContainerRecord) -> None:
        path = self.cgroup_path(ctr)
        if path is not None:
            self.sampler.track(ctr.id, path)

    def untrack_container(self, container_id: str) -> None:
        self.sampler.untrack(container_id)
        self._layer_usage.pop(container_id, None)

    # -- containers -------------------------------------------------------------------------
    def _writable_layer(self, ctr: ContainerRecord, now: float) -> m.FilesystemUsage | None:
        upper = self.root / "containers" / ctr.id / "upper"  # type: ignore[attr-defined]
        cached = self._layer_usage.get(ctr.id)
        if cached is None or now - cached[0] > LAYER_USAGE_MAX_AGE:
            try:
                used, inodes = filesystem_usage(upper)
            except FileNotFoundError:
                return None
            cached = (now, used, inodes)
            self._layer_usage[ctr.id] = cached
        return m.FilesystemUsage(
            timestamp=int(cached[0] * 1e9),
            fs_id=m.FilesystemIdentifier(mountpoint=str(upper)),
            used_bytes=m.UInt64Value(value=cached[1]),
            inodes_used=m.UInt64Value(value=cached[2]),
        )

    def _container_stats(self, ctr: ContainerRecord, now: float) -> m.ContainerStats:
        config = ctr.config
        stats = m.ContainerStats(
            attributes=m.ContainerAttributes(
                id=ctr.id,
                metadata=config.metadata,
                labels=config.labels,
                annotations=config.annotations,
            ),
            writable_layer=self._writable_layer(ctr, now),
        )
        latest = self.sampler.latest(ctr.id) if ctr.state == C_RUNNING else None
        if latest is None:
            return stats
        sample, nano_cores = latest
        swap = None
        if sample.swap_usage is not None:
            swap = m.SwapUsage(
                timestamp=sample.timestamp_ns, swap_usage_bytes=_u64(sample.swap_usage)
            )
        return m.ContainerStats(
            attributes=stats.attributes,
            cpu=cpu_usage(sample, nano_cores),
            memory=memory_usage(sample),
            writable_layer=stats.writable_layer,
            swap=swap,
        )

    @hookimpl
    def criadapt_container_stats(self, container_id: str) -> m.ContainerStatsResponse:
        with self._lock:
            ctr = self._ctrs.get(container_id)
        if ctr is None:
            raise NotFound(f"container {container_id} not found")
        return m.ContainerStatsResponse(stats=self._container_stats(ctr, time.time()))

    @hookimpl
    def criadapt_list_container_stats(
        self, filter: m.ContainerStatsFilter | None
    ) -> m.ListContainerStatsResponse:
        with self._lock:
            ctrs = [c for c in self._ctrs.values() if c.state == C_RUNNING]
        if filter is not None:
            if filter.id:
                ctrs = [c for c in ctrs if c.id == filter.id]
            if filter.pod_sandbox_id:
                ctrs = [c for c in ctrs if c.sandbox_id.startswith(filter.pod_sandbox_id)]
            if filter.label_selector:
                ctrs = [c for c in ctrs if matches_labels(c.config.labels, filter.label_selector)]
        now = time.time()
        return m.ListContainerStatsResponse(stats=[self._container_stats(c, now) for c in ctrs])

    # -- pods -------------------------------------------------------------------------------
    def _pod_stats(self, pod: SandboxRecord, now: float) -> m.PodSandboxStats:
        config = pod.config
        with self._lock:
            ctrs = [c for c in self._ctrs.values() if c.sandbox_id == pod.id]
        containers = [self._container_stats(c, now) for c in ctrs if c.state == C_RUNNING]
        timestamp = int(now * 1e9)
        cpu_ns = cores = 0.0
        usage = working = rss = 0
        have_cpu = have_memory = False
        pids = 0
        for ctr in ctrs:
            latest = self.sampler.latest(ctr.id) if ctr.state == C_RUNNING else None
            if latest is None:
                continue
            sample, nano_cores = latest
            if sample.cpu_usage_ns is not None:
                have_cpu = True
                cpu_ns += sample.cpu_usage_ns
                cores += nano_cores or 0
            if sample.memory_usage is not None:
                have_memory = True
                usage += sample.memory_usage
                working += sample.memory_working_set or 0
                rss += sample.memory_rss or 0
            pids += sample.pids or 0
        linux = m.LinuxPodSandboxStats(
            cpu=m.CpuUsage(
                timestamp=timestamp,
                usage_core_nano_seconds=m.UInt64Value(value=int(cpu_ns)),
                usage_nano_cores=m.UInt64Value(value=int(cores)),
            )
            if have_cpu
            else None,
            memory=m.MemoryUsage(
                timestamp=timestamp,
                working_set_bytes=m.UInt64Value(value=working),
                usage_bytes=m.UInt64Value(value=usage),
                rss_bytes=m.UInt64Value(value=rss),
            )
            if have_memory
            else None,
            network=self._network(pod, ctrs, timestamp),
            process=m.ProcessUsage(timestamp=timestamp, process_count=m.UInt64Value(value=pids)),
            containers=containers,
        )
        return m.PodSandboxStats(
            attributes=m.PodSandboxAttributes(
                id=pod.id,
                metadata=config.metadata,
                labels=config.labels,
                annotations=config.annotations,
            ),
            linux=linux,
        )

    def _network(
        self, pod: SandboxRecord, ctrs: Sequence[ContainerRecord], timestamp: int
    ) -> m.NetworkUsage | None:
        if pod.host_network:
            return None
        for ctr in ctrs:
            if ctr.state != C_RUNNING:
                continue
            process = self.oci(ctr.runtime).process(ctr.id)  # type: ignore[attr-defined]
            if process is None:
                continue
            interfaces = [
                m.NetworkInterfaceUsage(
                    name=name,
                    rx_bytes=m.UInt64Value(value=rx),
                    rx_errors=m.UInt64Value(value=rx_errors),
                    tx_bytes=m.UInt64Value(value=tx),
                    tx_errors=m.UInt64Value(value=tx_errors),
                )
                for name, rx, rx_errors, tx, tx_errors in network_stats(process.pid)
            ]
            if interfaces:
                default = next((i for i in interfaces if i.name == "eth0"), interfaces[0])
                return m.NetworkUsage(
                    timestamp=timestamp, default_interface=default, interfaces=interfaces
                )
        return None

    @hookimpl
    def criadapt_pod_sandbox_stats(self, pod_sandbox_id: str) -> m.PodSandboxStatsResponse:
        with self._lock:
            pod = self._pods.get(pod_sandbox_id)
        if pod is None:
            raise NotFound(f"pod sandbox {pod_sandbox_id} not found")
        return m.PodSandboxStatsResponse(stats=self._pod_stats(pod, time.time()))

    @hookimpl
    def criadapt_list_pod_sandbox_stats(
        self, filter: m.PodSandboxStatsFilter | None
    ) -> m.ListPodSandboxStatsResponse:
        with self._lock:
            pods = [p for p in self._pods.values() if p.state == READY]
        if filter is not None:
            if filter.id:
                pods = [p for p in pods if p.id == filter.id]
            if filter.label_selector:
                pods = [p for p in pods if matches_labels(p.config.labels, filter.label_selector)]
        now = time.time()
        return m.ListPodSandboxStatsResponse(stats=[self._pod_stats(p, now) for p in pods])
