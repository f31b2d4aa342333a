"""The RuntimeService of the runc backend: pod sandboxes and containers.

Pods have no infra process unless they share a PID namespace: their network, IPC and UTS
namespaces are pinned files (:mod:`criadapt_runc.namespaces`), configured by CNI
(:mod:`criadapt.cni`). Containers run on runc (or another OCI runtime) under conmon
(:mod:`criadapt_runc.oci`), which keeps their stdio, writes the CRI log and records the exit
code, and outlives criadapt: a restart finds every container again.

Locking: ``_lock`` guards only the in-memory tables and is never held across slow work, so
List and Status calls never wait behind a stop with a long grace period or a pull. Slow work
on one object holds that object's own lock.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from criadapt import hookimpl
from criadapt import models as m
from criadapt.call import CallContext
from criadapt.cni import CniManager, PortMapping
from criadapt.config import Config
from criadapt.errors import (
    AlreadyExists,
    CriError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from criadapt.filters import matches_labels, resolve_id
from criadapt.images import parse_reference
from criadapt.streaming import server as streaming_server
from criadapt_runc.config import RuncConfig
from criadapt_runc.events import EventBus
from criadapt_runc.images.store import ImageStore, StoredImage
from criadapt_runc.namespaces import NamespacePins
from criadapt_runc.oci import Oci, OciRuntime, pid_alive
from criadapt_runc.records import CREATED, ContainerRecord, RecordDir, SandboxRecord
from criadapt_runc.security import SeccompProfiles, check_apparmor
from criadapt_runc.spec import HostFacts, ImageInfo, SandboxInfo, build_spec, linux_resources

log = logging.getLogger("criadapt.runc")

READY = int(m.PodSandboxState.SANDBOX_READY)
NOTREADY = int(m.PodSandboxState.SANDBOX_NOTREADY)
C_CREATED = int(m.ContainerState.CONTAINER_CREATED)
C_RUNNING = int(m.ContainerState.CONTAINER_RUNNING)
C_EXITED = int(m.ContainerState.CONTAINER_EXITED)
C_UNKNOWN = int(m.ContainerState.CONTAINER_UNKNOWN)

DEFAULT_RESOLV = "/etc/resolv.conf"
HOSTS_HEADER = (
    "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n"
    "ff02::2\tip6-allrouters\n"
)


def now_ns() -> int:
    return time.time_ns()


def new_id() -> str:
    return secrets.token_hex(32)


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text)
    os.chmod(temp, mode)
    os.replace(temp, path)


class _Locks:
    """One lock per object id, created on demand."""

    def __init__(self) -> None:
        self._locks: dict[str, threading.RLock] = {}
        self._guard = threading.Lock()

    @contextlib.contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._guard:
            lock = self._locks.setdefault(key, threading.RLock())
        with lock:
            yield

    def forget(self, key: str) -> None:
        with self._guard:
            self._locks.pop(key, None)


class RuntimeService:
    """Hooks of every pod and container RPC of the runc backend."""

    store: ImageStore

    def init_runtime(self, config: Config, options: RuncConfig, store: ImageStore) -> None:
        self.config = config
        self.options = options
        self.store = store
        self.root = Path(config.root) / "runc"
        self.state_dir = Path(config.state) / "runc"
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o711)
        self.pins = NamespacePins(self.state_dir / "ns")
        self.cni = CniManager(
            Path(config.cni.conf_dir),
            [Path(p) for p in config.cni.bin_dirs],
            cache_dir=self.root / "cni-cache",
        )
        self.runtimes = self._runtimes(options)
        self._ocis: dict[str, Oci] = {}
        self.pod_records = RecordDir(self.root / "pods", SandboxRecord)
        self.ctr_records = RecordDir(self.root / "containers", ContainerRecord)
        self.host = HostFacts.detect()
        self.seccomp = SeccompProfiles(
            default_profile=Path(options.seccomp_default_profile),
            unset_means=options.seccomp_unset,
        )
        self._lock = threading.Lock()
        self._pods: dict[str, SandboxRecord] = {}
        self._ctrs: dict[str, ContainerRecord] = {}
        self._names: dict[str, str] = {}
        self._object_locks = _Locks()
        self.pod_cidr = ""
        self.events = EventBus()
        become_subreaper()
        self.recover()
        self.reaper = Reaper(on_tick=self._watch_exits)
        self.reaper.start()

    # -- runtimes ---------------------------------------------------------------------------
    def _runtimes(self, options: RuncConfig) -> dict[str, OciRuntime]:
        found: dict[str, OciRuntime] = {}
        for name, path in options.runtimes.items():
            if not shutil.which(path):
                log.warning("runtime handler %s: %s not found; handler not offered", name, path)
                continue
            root = self.state_dir / f"{name}-root"
            if Path(path).name == "crun":
                wrapper = self.state_dir / f"{name}-wrapper"
                found[name] = OciRuntime.crun(root, wrapper=wrapper, crun=path)
            else:
                found[name] = OciRuntime(name=name, path=path, root=root)
        return found

    def oci(self, handler: str) -> Oci:
        name = handler or self.options.default_runtime
        runtime = self.runtimes.get(name)
        if runtime is None:
            known = ", ".join(sorted(self.runtimes)) or "none"
            raise InvalidArgument(f"unknown runtime handler {handler!r} (configured: {known})")
        oci = self._ocis.get(name)
        if oci is None:
            oci = Oci(
                runtime, conmon=self.options.conmon, state_dir=self.state_dir / "conmon" / name
            )
            self._ocis[name] = oci
        return oci

    # -- recovery ---------------------------------------------------------------------------
    def recover(self) -> None:
        """Load records; roll back half-made objects; refresh container states."""
        for pod in self.pod_records.load_all():
            if pod.phase != CREATED:
                log.warning("rolling back sandbox %s left half-created", pod.id[:12])
                self._rollback_pod(pod)
                continue
            self._pods[pod.id] = pod
            self._names[pod.name_key] = pod.id
        for ctr in self.ctr_records.load_all():
            if ctr.phase != CREATED or ctr.sandbox_id not in self._pods:
                log.warning("rolling back container %s left half-created", ctr.id[:12])
                self._destroy_container(ctr)
                continue
            self._ctrs[ctr.id] = ctr
            self._names[ctr.name_key] = ctr.id
            self._refresh(ctr)
        for pod in self._pods.values():
            if pod.state == READY and any(
                not self.pins.pinned(path) for path in pod.namespaces.values()
            ):
                log.warning("sandbox %s lost its namespaces (host reboot?)", pod.id[:12])
                pod.state = NOTREADY
                self.pod_records.save(pod)
        known_pods = set(self._pods)
        for orphan in self.pins.known_pods():
            if orphan not in known_pods:
                self.pins.remove(orphan)
        log.info("recovered %d sandboxes and %d containers", len(self._pods), len(self._ctrs))

    def _refresh(self, ctr: ContainerRecord) -> None:
        """Bring a RUNNING/CREATED container's state up to date from its exit file."""
        if ctr.state not in (C_RUNNING, C_CREATED):
            return
        oci = self.oci(ctr.runtime)
        code = oci.exit_code(ctr.id)
        if code is None:
            process = oci.process(ctr.id)
            if process is not None and pid_alive(process.conmon_pid):
                return  # its conmon still watches it: running (no `runc state` needed)
            if oci.state(ctr.id) is None:
                # the runtime no longer knows it and no exit was recorded (host reboot)
                self._mark_exited(ctr, 255, "Unknown", "container state was lost")
            return
        if ctr.state == C_CREATED and not ctr.started_at:
            self._mark_exited(ctr, code, "Error", "the container exited before it started")
            return
        self._mark_exited(ctr, code, "Completed" if code == 0 else "Error", "")

    def _reap_conmon(self, ctr: ContainerRecord) -> None:
        """Collect the conmon of a finished container if it is our zombie child.

        criadapt is a child subreaper, so conmons started by this process are re-parented to
        it; without this they would stay zombies on hosts whose PID 1 does not reap.
        """
        process = self.oci(ctr.runtime).process(ctr.id)
        if process is not None and process.conmon_pid > 0:
            reap_zombie(process.conmon_pid)

    def _mark_exited(self, ctr: ContainerRecord, code: int, reason: str, message: str) -> None:
        self._reap_conmon(ctr)
        if reason == "Error" and self.oci(ctr.runtime).oom_killed(ctr.id):
            reason = "OOMKilled"
        ctr.state = C_EXITED
        ctr.exit_code = code
        ctr.reason = reason
        ctr.message = message
        finished = ctr.finished_at or self._exit_time(ctr) or now_ns()
        ctr.finished_at = max(finished, ctr.started_at)  # clocks of files and of us may differ
        self.ctr_records.save(ctr)
        self._emit(m.ContainerEventType.CONTAINER_STOPPED_EVENT, ctr.id, ctr.sandbox_id)

    def _exit_time(self, ctr: ContainerRecord) -> int:
        path = self.oci(ctr.runtime).exit_file(ctr.id)
        try:
            return path.stat().st_mtime_ns
        except (FileNotFoundError, AttributeError):
            return 0

    # -- extension points (stats) -----------------------------------------------------------
    def track_container(self, ctr: ContainerRecord) -> None:
        """A container started: stats sampling may begin (overridden by the stats mixin)."""

    def untrack_container(self, container_id: str) -> None:
        """A container is going away (overridden by the stats mixin)."""

    # -- events -----------------------------------------------------------------------------
    def _emit(self, kind: m.ContainerEventType, object_id: str, pod_id: str) -> None:
        with self._lock:
            pod = self._pods.get(pod_id)
        if pod is None or not hasattr(self, "reaper"):  # no events while recovering
            return
        self.events.publish(
            m.ContainerEventResponse(
                container_id=object_id,
                container_event_type=kind,
                created_at=now_ns(),
                pod_sandbox_status=self._sandbox_status(pod),
                containers_statuses=[
                    self._container_status(c) for c in self._containers_of(pod_id)
                ],
            )
        )

    def _watch_exits(self) -> None:
        """Notice containers whose process exited (one stat per running container)."""
        with self._lock:
            running = [c for c in self._ctrs.values() if c.state == C_RUNNING]
        for ctr in running:
            self._refresh_quick(ctr)

    @hookimpl
    def criadapt_get_container_events(
        self, call: CallContext
    ) -> Iterable[m.ContainerEventResponse]:
        return self.events.subscribe(call)

    # -- helpers ----------------------------------------------------------------------------
    def _pod(self, pod_id: str) -> SandboxRecord:
        with self._lock:
            pod = self._pods.get(pod_id)
        if pod is None:
            raise NotFound(f"pod sandbox {pod_id} not found")
        return pod

    def _ctr(self, container_id: str) -> ContainerRecord:
        with self._lock:
            ctr = self._ctrs.get(container_id)
        if ctr is None:
            raise NotFound(f"container {container_id} not found")
        return ctr

    def _reserve(self, key: str, object_id: str, what: str) -> None:
        with self._lock:
            holder = self._names.get(key)
            if holder is not None:
                raise AlreadyExists(f"{what} name {key!r} is reserved by {holder}")
            self._names[key] = object_id

    def _release(self, key: str, object_id: str) -> None:
        with self._lock:
            if self._names.get(key) == object_id:
                del self._names[key]

    def _pod_dir(self, pod_id: str) -> Path:
        return self.state_dir / "pods" / pod_id

    def _ctr_state_dir(self, container_id: str) -> Path:
        return self.state_dir / "containers" / container_id

    def _ctr_root_dir(self, container_id: str) -> Path:
        return self.root / "containers" / container_id

    # ========================================================================================
    # Sandboxes
    # ========================================================================================
    @hookimpl
    def criadapt_run_pod_sandbox(
        self, config: m.PodSandboxConfig, runtime_handler: str
    ) -> m.RunPodSandboxResponse:
        self.oci(runtime_handler)  # validates the handler
        assert config.metadata is not None
        md = config.metadata
        pod_id = new_id()
        key = f"{md.name}_{md.namespace}_{md.uid}_{md.attempt}"
        self._reserve(key, pod_id, "sandbox")
        linux = config.linux or m.LinuxPodSandboxConfig()
        sc = linux.security_context or m.LinuxSandboxSecurityContext()
        ns = sc.namespace_options or m.NamespaceOption()
        pod = SandboxRecord(
            id=pod_id,
            name_key=key,
            config_pb=SandboxRecord.pack(config),
            runtime_handler=runtime_handler,
            created_at=now_ns(),
            host_network=ns.network == m.NamespaceMode.NODE,
            host_ipc=ns.ipc == m.NamespaceMode.NODE,
            host_pid=ns.pid == m.NamespaceMode.NODE,
            cgroup_parent=linux.cgroup_parent,
        )
        try:
            self.pod_records.save(pod)  # phase "creating": rolled back if we die from here on
            with self._object_locks.hold(pod_id):
                self._setup_pod(pod, config)
                pod.phase = CREATED
                pod.state = READY
                self.pod_records.save(pod)
        except BaseException:
            self._rollback_pod(pod)
            raise
        with self._lock:
            self._pods[pod_id] = pod
        self._emit(m.ContainerEventType.CONTAINER_CREATED_EVENT, pod_id, pod_id)
        self._emit(m.ContainerEventType.CONTAINER_STARTED_EVENT, pod_id, pod_id)
        log.info(
            "sandbox %s (%s/%s) ready, ip %s",
            pod_id[:12],
            md.namespace,
            md.name,
            ",".join(pod.ips) or "host",
        )
        return m.RunPodSandboxResponse(pod_sandbox_id=pod_id)

    def _setup_pod(self, pod: SandboxRecord, config: m.PodSandboxConfig) -> None:
        folder = self._pod_dir(pod.id)
        folder.mkdir(parents=True, exist_ok=True, mode=0o711)
        pod.files_dir = str(folder)
        linux = config.linux or m.LinuxPodSandboxConfig()
        kinds = set()
        if not pod.host_network:
            kinds |= {"network", "uts"}
        if not pod.host_ipc:
            kinds.add("ipc")
        hostname = config.hostname or (self.host.hostname if pod.host_network else "")
        pod.namespaces = self.pins.create(pod.id, kinds, hostname=hostname, sysctls=linux.sysctls)
        _write(folder / "hostname", f"{hostname}\n")
        _write(folder / "resolv.conf", self._resolv_conf(config.dns_config, pod.host_network))
        _write(folder / "hosts", self._hosts(pod.host_network))
        if config.log_directory:
            Path(config.log_directory).mkdir(parents=True, exist_ok=True, mode=0o755)
        if not pod.host_network:
            ready, reason, message = self.cni.status()
            if not ready:
                raise FailedPrecondition(f"network not ready: {reason}: {message}")
            md = config.metadata
            assert md is not None
            attachment = self.cni.setup(
                container_id=pod.id,
                netns=pod.namespaces["network"],
                pod_name=md.name,
                pod_namespace=md.namespace,
                pod_uid=md.uid,
                port_mappings=[
                    PortMapping(
                        host_port=p.host_port,
                        container_port=p.container_port,
                        protocol=m.Protocol(p.protocol).name.lower(),
                        host_ip=p.host_ip,
                    )
                    for p in config.port_mappings
                ],
                dns=self._cni_dns(config.dns_config),
                cgroup_path=pod.cgroup_parent,
                annotations=config.annotations,
            )
            pod.network_attached = True
            pod.ips = list(attachment.ips)
            # the pod's own name resolves to its IP (kubelet may mount its own hosts file)
            if pod.ips and hostname:
                _write(folder / "hosts", self._hosts(False) + f"{pod.ips[0]}\t{hostname}\n")
        ns = (linux.security_context or m.LinuxSandboxSecurityContext()).namespace_options
        if self.options.sandbox_image or (ns is not None and ns.pid == m.NamespaceMode.POD):
            self._start_infra(pod, config)

    # -- the infra process of pods that share one PID namespace ------------------------------
    def _infra_rootfs(self) -> Path:
        """A read-only rootfs holding only a static catatonit, shared by every infra process."""
        rootfs = self.state_dir / "infra-rootfs"
        binary = rootfs / "catatonit"
        if not binary.exists():
            source = shutil.which(self.options.infra_binary)
            if source is None:
                raise FailedPrecondition(
                    f"{self.options.infra_binary} not found: it holds the PID namespace of pods "
                    "that share one (install Debian's catatonit)"
                )
            for folder in ("proc", "dev", "sys", "etc"):
                (rootfs / folder).mkdir(parents=True, exist_ok=True)
            temp = rootfs / ".catatonit.tmp"
            shutil.copy2(source, temp)
            os.replace(temp, binary)
        return rootfs

    def _sandbox_image(self, pod: SandboxRecord) -> StoredImage:
        """The configured sandbox image, pulled if it is not in the store yet."""
        name = self.options.sandbox_image
        image = self.store.lookup(name)
        if image is None:
            puller = getattr(self, "puller", None)
            if puller is None:
                raise NotFound(f"sandbox image {name!r} is not in the store")
            image = puller.pull(parse_reference(name))
        self.store.add_lease(f"sandbox-{pod.id}", image)
        return image

    def _start_infra(self, pod: SandboxRecord, config: m.PodSandboxConfig) -> None:
        """Run the pod's infra process: the sandbox image if one is configured, else catatonit
        in pause mode as the PID 1 of a shared PID namespace."""
        bundle = self._pod_dir(pod.id) / "infra"
        bundle.mkdir(parents=True, exist_ok=True, mode=0o700)
        image_config: Mapping[str, Any] = {}
        if self.options.sandbox_image:
            image = self._sandbox_image(pod)
            rootfs = bundle / "rootfs"
            rootfs.mkdir(exist_ok=True)
            _overlay(rootfs, self.store.snapshot_dirs(image), self.root / "pods-rw" / pod.id)
            image_config = image.runtime_config
            command: list[str] = []
        else:
            rootfs = self._infra_rootfs()
            command = ["/catatonit", "-P"]
        infra_config = m.ContainerConfig(
            metadata=m.ContainerMetadata(name="infra"),
            image=m.ImageSpec(image=self.options.sandbox_image or "criadapt-infra"),
            command=command,
            linux=m.LinuxContainerConfig(
                security_context=m.LinuxContainerSecurityContext(
                    readonly_rootfs=not self.options.sandbox_image,
                    namespace_options=m.NamespaceOption(
                        network=m.NamespaceMode.NODE if pod.host_network else m.NamespaceMode.POD,
                        ipc=m.NamespaceMode.NODE if pod.host_ipc else m.NamespaceMode.POD,
                        pid=m.NamespaceMode.CONTAINER,
                    ),
                )
            ),
        )
        spec = build_spec(
            container_id=pod.id,
            config=infra_config,
            sandbox=self._sandbox_info(pod, config),
            image=ImageInfo(config=image_config),
            rootfs=rootfs,
            annotations={
                "io.kubernetes.cri.container-type": "sandbox",
                "io.kubernetes.cri.sandbox-id": pod.id,
            },
            host=self.host,
        )
        _write(bundle / "config.json", json.dumps(spec), 0o600)
        oci = self.oci(pod.runtime_handler)
        pod.infra_id = pod.id
        oci.create(pod.id, bundle, log_path=None)
        oci.start(pod.id)

    def _infra_pid_ns(self, pod: SandboxRecord) -> str | None:
        if not pod.infra_id:
            return None
        state = self.oci(pod.runtime_handler).state(pod.infra_id) or {}
        pid = int(state.get("pid") or 0)
        if not pid or state.get("status") != "running":
            raise FailedPrecondition(f"the infra process of pod sandbox {pod.id} is not running")
        return f"/proc/{pid}/ns/pid"

    def _stop_infra(self, pod: SandboxRecord) -> None:
        if not pod.infra_id:
            return
        oci = self.oci(pod.runtime_handler)
        with contextlib.suppress(NotFound):  # already gone
            oci.kill(pod.infra_id, int(signal.SIGKILL), all_processes=True)
            oci.wait(pod.infra_id, 10)
        oci.delete(pod.infra_id, force=True)
        pod.infra_id = ""
        _unmount(self._pod_dir(pod.id) / "infra" / "rootfs")
        shutil.rmtree(self.root / "pods-rw" / pod.id, ignore_errors=True)
        self.store.remove_lease(f"sandbox-{pod.id}")

    @staticmethod
    def _resolv_conf(dns: m.DNSConfig | None, host_network: bool) -> str:
        if dns is None or not (dns.servers or dns.searches or dns.options):
            try:
                return Path(DEFAULT_RESOLV).read_text()
            except OSError:
                return ""
        lines = [f"nameserver {server}" for server in dns.servers]
        if dns.searches:
            lines.append("search " + " ".join(dns.searches))
        if dns.options:
            lines.append("options " + " ".join(dns.options))
        return "\n".join(lines) + "\n"

    @staticmethod
    def _hosts(host_network: bool) -> str:
        if host_network:
            try:
                return Path("/etc/hosts").read_text()
            except OSError:
                return HOSTS_HEADER
        return HOSTS_HEADER

    @staticmethod
    def _cni_dns(dns: m.DNSConfig | None) -> dict[str, Any] | None:
        if dns is None:
            return None
        return {
            "servers": list(dns.servers),
            "searches": list(dns.searches),
            "options": list(dns.options),
        }

    def _teardown_network(self, pod: SandboxRecord, config: m.PodSandboxConfig | None) -> None:
        if not pod.network_attached:
            return
        md = config.metadata if config is not None else None
        self.cni.teardown(
            container_id=pod.id,
            netns=pod.namespaces.get("network"),
            pod_name=md.name if md else "",
            pod_namespace=md.namespace if md else "",
            pod_uid=md.uid if md else "",
        )
        pod.network_attached = False
        pod.ips = []

    def _rollback_pod(self, pod: SandboxRecord) -> None:
        """Undo whatever exists of a sandbox (idempotent, best effort, logs failures)."""
        try:
            config: m.PodSandboxConfig | None = pod.config
        except CriError:
            config = None
        if not pod.host_network and (pod.network_attached or pod.phase != CREATED):
            try:
                pod.network_attached = True  # a half-made pod may have attached: DEL anyway
                self._teardown_network(pod, config)
            except CriError as exc:
                log.warning("CNI DEL of sandbox %s failed: %s", pod.id[:12], exc)
        try:
            self._stop_infra(pod)
        except CriError as exc:
            log.warning("removing the infra process of sandbox %s: %s", pod.id[:12], exc)
        _unmount(self._pod_dir(pod.id) / "infra" / "rootfs")
        shutil.rmtree(self.root / "pods-rw" / pod.id, ignore_errors=True)
        self.store.remove_lease(f"sandbox-{pod.id}")
        self.pins.remove(pod.id)
        shutil.rmtree(self._pod_dir(pod.id), ignore_errors=True)
        self.pod_records.delete(pod.id)
        self._release(pod.name_key, pod.id)
        with self._lock:
            self._pods.pop(pod.id, None)

    @hookimpl
    def criadapt_stop_pod_sandbox(self, pod_sandbox_id: str) -> m.StopPodSandboxResponse:
        with self._lock:
            pod = self._pods.get(pod_sandbox_id)
        if pod is None:
            return m.StopPodSandboxResponse()
        for ctr in self._containers_of(pod.id):
            self._stop_container(ctr, 0)
        with self._object_locks.hold(pod.id):
            self._stop_infra(pod)
            self._teardown_network(pod, pod.config)
            self.pins.remove(pod.id)
            pod.namespaces = {}
            was_ready = pod.state == READY
            pod.state = NOTREADY
            self.pod_records.save(pod)
        if was_ready:
            self._emit(m.ContainerEventType.CONTAINER_STOPPED_EVENT, pod.id, pod.id)
        return m.StopPodSandboxResponse()

    @hookimpl
    def criadapt_remove_pod_sandbox(self, pod_sandbox_id: str) -> m.RemovePodSandboxResponse:
        with self._lock:
            pod = self._pods.get(pod_sandbox_id)
        if pod is None:
            return m.RemovePodSandboxResponse()
        self.criadapt_stop_pod_sandbox(pod_sandbox_id)
        for ctr in self._containers_of(pod.id):
            self._remove_container(ctr)
        self._emit(m.ContainerEventType.CONTAINER_DELETED_EVENT, pod.id, pod.id)
        with self._object_locks.hold(pod.id):
            self._rollback_pod(pod)
        self._object_locks.forget(pod.id)
        log.info("sandbox %s removed", pod.id[:12])
        return m.RemovePodSandboxResponse()

    def _containers_of(self, pod_id: str) -> list[ContainerRecord]:
        with self._lock:
            return [c for c in self._ctrs.values() if c.sandbox_id == pod_id]

    def _sandbox_status(self, pod: SandboxRecord) -> m.PodSandboxStatus:
        config = pod.config
        linux = config.linux or m.LinuxPodSandboxConfig()
        sc = linux.security_context or m.LinuxSandboxSecurityContext()
        network = None
        if pod.ips:
            network = m.PodSandboxNetworkStatus(
                ip=pod.ips[0], additional_ips=[m.PodIP(ip=ip) for ip in pod.ips[1:]]
            )
        elif not pod.host_network:
            network = m.PodSandboxNetworkStatus()
        return m.PodSandboxStatus(
            id=pod.id,
            metadata=config.metadata,
            state=m.PodSandboxState(pod.state),
            created_at=pod.created_at,
            network=network,
            linux=m.LinuxPodSandboxStatus(
                namespaces=m.Namespace(options=sc.namespace_options or m.NamespaceOption())
            ),
            labels=config.labels,
            annotations=config.annotations,
            runtime_handler=pod.runtime_handler,
        )

    @hookimpl
    def criadapt_pod_sandbox_status(
        self, pod_sandbox_id: str, verbose: bool
    ) -> m.PodSandboxStatusResponse:
        pod = self._pod(pod_sandbox_id)
        info = {}
        if verbose:
            info["info"] = json.dumps(
                {
                    "namespaces": pod.namespaces,
                    "hostNetwork": pod.host_network,
                    "runtimeHandler": pod.runtime_handler,
                    "cgroupParent": pod.cgroup_parent,
                    "files": pod.files_dir,
                    "cniNetwork": (self.cni.network() or ("", {}))[0],
                }
            )
        return m.PodSandboxStatusResponse(
            status=self._sandbox_status(pod), info=info, timestamp=now_ns()
        )

    @hookimpl
    def criadapt_list_pod_sandbox(
        self, filter: m.PodSandboxFilter | None
    ) -> m.ListPodSandboxResponse:
        with self._lock:
            pods = list(self._pods.values())
        if filter is not None:
            if filter.id:
                wanted = set(resolve_id(filter.id, [p.id for p in pods]))
                pods = [p for p in pods if p.id in wanted]
            if filter.state is not None:
                pods = [p for p in pods if p.state == filter.state.state]
        items = []
        for pod in pods:
            config = pod.config
            if filter is not None and not matches_labels(config.labels, filter.label_selector):
                continue
            items.append(
                m.PodSandbox(
                    id=pod.id,
                    metadata=config.metadata,
                    state=m.PodSandboxState(pod.state),
                    created_at=pod.created_at,
                    labels=config.labels,
                    annotations=config.annotations,
                    runtime_handler=pod.runtime_handler,
                )
            )
        return m.ListPodSandboxResponse(items=items)

    # ========================================================================================
    # Containers
    # ========================================================================================
    @hookimpl
    def criadapt_create_container(
        self,
        pod_sandbox_id: str,
        config: m.ContainerConfig,
        sandbox_config: m.PodSandboxConfig | None,
    ) -> m.CreateContainerResponse:
        pod = self._pod(pod_sandbox_id)
        if pod.state != READY:
            raise FailedPrecondition(f"pod sandbox {pod_sandbox_id} is not ready")
        assert config.metadata is not None and config.image is not None
        image = self.store.lookup(config.image.image)
        if image is None:
            raise NotFound(f"image {config.image.image!r} not found; pull it first")
        ctr_id = new_id()
        key = f"{pod.id}/{config.metadata.name}_{config.metadata.attempt}"
        self._reserve(key, ctr_id, "container")
        ctr = ContainerRecord(
            id=ctr_id,
            sandbox_id=pod.id,
            name_key=key,
            config_pb=ContainerRecord.pack(config),
            image_ref=config.image.image,
            image_id=image.id,
            image_digest_ref=image.repo_digests[0] if image.repo_digests else image.id,
            created_at=now_ns(),
            runtime=pod.runtime_handler or self.options.default_runtime,
        )
        pod_config = pod.config
        if config.log_path and pod_config.log_directory:
            ctr.log_path = str(Path(pod_config.log_directory) / config.log_path)
        try:
            self.ctr_records.save(ctr)
            with self._object_locks.hold(ctr_id):
                self._create_container(ctr, pod, pod_config, config, image)
                ctr.phase = CREATED
                ctr.state = C_CREATED
                self.ctr_records.save(ctr)
        except BaseException:
            self._destroy_container(ctr)
            raise
        with self._lock:
            self._ctrs[ctr_id] = ctr
        self._emit(m.ContainerEventType.CONTAINER_CREATED_EVENT, ctr_id, pod.id)
        log.info(
            "container %s (%s) created in sandbox %s",
            ctr_id[:12],
            config.metadata.name,
            pod.id[:12],
        )
        return m.CreateContainerResponse(container_id=ctr_id)

    def _create_container(
        self,
        ctr: ContainerRecord,
        pod: SandboxRecord,
        pod_config: m.PodSandboxConfig,
        config: m.ContainerConfig,
        image: StoredImage,
    ) -> None:
        bundle = self._ctr_state_dir(ctr.id)
        rootfs = bundle / "rootfs"
        rootfs.mkdir(parents=True, mode=0o755)
        ctr.bundle = str(bundle)
        self.store.add_lease(ctr.id, image)
        self._mount_rootfs(ctr, image)
        sandbox = self._sandbox_info(pod, pod_config)
        assert config.metadata is not None
        md = pod_config.metadata
        annotations = {
            "io.kubernetes.cri.container-type": "container",
            "io.kubernetes.cri.container-name": config.metadata.name,
            "io.kubernetes.cri.sandbox-id": pod.id,
            "io.kubernetes.cri.sandbox-name": md.name if md else "",
            "io.kubernetes.cri.sandbox-namespace": md.namespace if md else "",
            "io.kubernetes.cri.sandbox-uid": md.uid if md else "",
            "io.kubernetes.cri.image-name": ctr.image_ref,
        }
        target = self._target_pid_ns(config)
        sc = (config.linux or m.LinuxContainerConfig()).security_context
        check_apparmor(sc)  # a clear error if a profile is asked for on a host without AppArmor
        spec = build_spec(
            container_id=ctr.id,
            config=config,
            sandbox=sandbox,
            image=ImageInfo(config=image.runtime_config),
            rootfs=rootfs,
            annotations=annotations,
            target_pid_ns=target,
            host=self.host,
        )
        profile = self.seccomp.resolve(
            sc,
            capabilities=spec["process"].get("capabilities", {}).get("bounding", []),
            privileged=bool(sc and sc.privileged),
        )
        if profile is not None:
            spec.setdefault("linux", {})["seccomp"] = profile
        _write(bundle / "config.json", json.dumps(spec), 0o600)
        if ctr.log_path:
            Path(ctr.log_path).parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        self.oci(ctr.runtime).create(
            ctr.id,
            bundle,
            log_path=Path(ctr.log_path) if ctr.log_path else None,
            terminal=config.tty,
            stdin=config.stdin,
            stdin_once=config.stdin_once,
        )

    def _sandbox_info(self, pod: SandboxRecord, pod_config: m.PodSandboxConfig) -> SandboxInfo:
        """What the pod gives its containers: namespaces, files, cgroup parent, sysctls."""
        namespaces = dict(pod.namespaces)
        pid_ns = self._infra_pid_ns(pod)
        if pid_ns is not None:
            namespaces["pid"] = pid_ns
        return SandboxInfo(
            id=pod.id,
            namespaces=namespaces,
            host_namespaces=frozenset(
                kind
                for kind, on in (
                    ("network", pod.host_network),
                    ("uts", pod.host_network),
                    ("ipc", pod.host_ipc),
                    ("pid", pod.host_pid),
                )
                if on
            ),
            hostname=(Path(pod.files_dir) / "hostname").read_text().strip(),
            etc_files={
                "/etc/hosts": str(Path(pod.files_dir) / "hosts"),
                "/etc/resolv.conf": str(Path(pod.files_dir) / "resolv.conf"),
                "/etc/hostname": str(Path(pod.files_dir) / "hostname"),
            },
            cgroup_parent=pod.cgroup_parent,
            sysctls=(pod_config.linux.sysctls if pod_config.linux else {}),
            privileged=bool(
                pod_config.linux
                and pod_config.linux.security_context
                and pod_config.linux.security_context.privileged
            ),
        )

    def _target_pid_ns(self, config: m.ContainerConfig) -> str | None:
        linux = config.linux or m.LinuxContainerConfig()
        sc = linux.security_context or m.LinuxContainerSecurityContext()
        ns = sc.namespace_options or m.NamespaceOption()
        if ns.pid != m.NamespaceMode.TARGET:
            return None
        target = self._ctr(ns.target_id) if ns.target_id else None
        if target is None:
            raise InvalidArgument("pid namespace mode TARGET needs target_id")
        state = self.oci(target.runtime).state(target.id)
        pid = int((state or {}).get("pid") or 0)
        if not pid:
            raise FailedPrecondition(f"target container {ns.target_id} is not running")
        return f"/proc/{pid}/ns/pid"

    def _mount_rootfs(self, ctr: ContainerRecord, image: StoredImage) -> None:
        _overlay(
            Path(ctr.bundle) / "rootfs", self.store.snapshot_dirs(image), self._ctr_root_dir(ctr.id)
        )

    def _destroy_container(self, ctr: ContainerRecord) -> None:
        """Remove every trace of a container (idempotent, best effort)."""
        self.untrack_container(ctr.id)
        try:
            oci = self.oci(ctr.runtime)
            self._reap_conmon(ctr)
            oci.delete(ctr.id, force=True)
        except CriError as exc:
            log.warning("deleting container %s: %s", ctr.id[:12], exc)
        _unmount(Path(ctr.bundle or self._ctr_state_dir(ctr.id)) / "rootfs")
        shutil.rmtree(self._ctr_state_dir(ctr.id), ignore_errors=True)
        shutil.rmtree(self._ctr_root_dir(ctr.id), ignore_errors=True)
        self.store.remove_lease(ctr.id)
        self.ctr_records.delete(ctr.id)
        self._release(ctr.name_key, ctr.id)
        with self._lock:
            self._ctrs.pop(ctr.id, None)

    @hookimpl
    def criadapt_start_container(self, container_id: str) -> m.StartContainerResponse:
        ctr = self._ctr(container_id)
        with self._object_locks.hold(ctr.id):
            self._refresh(ctr)
            if ctr.state != C_CREATED:
                state = m.ContainerState(ctr.state).name
                raise FailedPrecondition(f"container {container_id} is {state}, not CREATED")
            pod = self._pod(ctr.sandbox_id)
            if pod.state != READY:
                raise FailedPrecondition(f"pod sandbox {pod.id} is not ready")
            started = now_ns()  # before: a short command may exit before start() returns
            try:
                self.oci(ctr.runtime).start(ctr.id)
            except CriError as exc:
                self._mark_exited(ctr, 128, "StartError", str(exc))
                raise
            ctr.started_at = started
            ctr.state = C_RUNNING
            self.ctr_records.save(ctr)
            self.track_container(ctr)
            self._emit(m.ContainerEventType.CONTAINER_STARTED_EVENT, ctr.id, ctr.sandbox_id)
            self._refresh(ctr)  # a command that exits at once
        return m.StartContainerResponse()

    def _stop_signal(self, ctr: ContainerRecord) -> int:
        config = ctr.config
        if config.stop_signal:
            name = m.Signal(config.stop_signal).name
            return int(getattr(signal, name, signal.SIGTERM))
        image = self.store.get(ctr.image_id)
        text = str((image.runtime_config.get("StopSignal") if image else "") or "")
        if text:
            name = text.upper() if text.upper().startswith("SIG") else f"SIG{text.upper()}"
            if text.isdigit():
                return int(text)
            value = getattr(signal, name, None)
            if isinstance(value, signal.Signals):
                return int(value)
        return int(signal.SIGTERM)

    def _stop_container(self, ctr: ContainerRecord, timeout: int) -> None:
        with self._object_locks.hold(ctr.id):
            self._refresh(ctr)
            if ctr.state == C_CREATED:
                # never started: kill the held process so nothing lingers
                oci = self.oci(ctr.runtime)
                oci.kill(ctr.id, int(signal.SIGKILL), all_processes=True)
                oci.wait(ctr.id, 10)
                self._mark_exited(
                    ctr, oci.exit_code(ctr.id) or 137, "Error", "stopped before start"
                )
                return
            if ctr.state != C_RUNNING:
                return
            oci = self.oci(ctr.runtime)
            ctr.stopped_by_us = True
            code: int | None = None
            if timeout > 0:
                oci.kill(ctr.id, self._stop_signal(ctr))
                code = oci.wait(ctr.id, timeout)
            if code is None:
                oci.kill(ctr.id, int(signal.SIGKILL), all_processes=True)
                code = oci.wait(ctr.id, 30)
            if code is None:
                raise FailedPrecondition(f"container {ctr.id} did not stop after SIGKILL")
            self._mark_exited(ctr, code, "Completed" if code == 0 else "Error", "")

    @hookimpl
    def criadapt_stop_container(self, container_id: str, timeout: int) -> m.StopContainerResponse:
        with self._lock:
            ctr = self._ctrs.get(container_id)
        if ctr is not None:
            self._stop_container(ctr, timeout)
        return m.StopContainerResponse()

    def _remove_container(self, ctr: ContainerRecord) -> None:
        with self._object_locks.hold(ctr.id):
            self._refresh(ctr)
            if ctr.state in (C_RUNNING, C_CREATED):
                oci = self.oci(ctr.runtime)
                oci.kill(ctr.id, int(signal.SIGKILL), all_processes=True)
                oci.wait(ctr.id, 30)
            image_gone = self.store.get(ctr.image_id) is None
            self._emit(m.ContainerEventType.CONTAINER_DELETED_EVENT, ctr.id, ctr.sandbox_id)
            self._destroy_container(ctr)
        self._object_locks.forget(ctr.id)
        if image_gone:
            self.store.gc()  # the image was removed while in use: free its layers now

    @hookimpl
    def criadapt_remove_container(self, container_id: str) -> m.RemoveContainerResponse:
        with self._lock:
            ctr = self._ctrs.get(container_id)
        if ctr is not None:
            self._remove_container(ctr)
        return m.RemoveContainerResponse()

    def _container_status(self, ctr: ContainerRecord) -> m.ContainerStatus:
        config = ctr.config
        return m.ContainerStatus(
            id=ctr.id,
            metadata=config.metadata,
            state=m.ContainerState(ctr.state),
            created_at=ctr.created_at,
            started_at=ctr.started_at,
            finished_at=ctr.finished_at,
            exit_code=ctr.exit_code,
            image=m.ImageSpec(
                image=ctr.image_ref, annotations=config.image.annotations if config.image else {}
            ),
            image_ref=ctr.image_digest_ref,
            image_id=ctr.image_id,
            reason=ctr.reason,
            message=ctr.message,
            labels=config.labels,
            annotations=config.annotations,
            mounts=config.mounts,
            log_path=ctr.log_path,
            resources=m.ContainerResources(
                linux=ctr.resources or (config.linux.resources if config.linux else None)
            ),
        )

    @hookimpl
    def criadapt_container_status(
        self, container_id: str, verbose: bool
    ) -> m.ContainerStatusResponse:
        ctr = self._ctr(container_id)
        self._refresh_quick(ctr)
        info = {}
        if verbose:
            state = self.oci(ctr.runtime).state(ctr.id) or {}
            info["info"] = json.dumps(
                {
                    "pid": state.get("pid", 0),
                    "bundle": ctr.bundle,
                    "runtime": ctr.runtime,
                    "sandboxID": ctr.sandbox_id,
                }
            )
        return m.ContainerStatusResponse(status=self._container_status(ctr), info=info)

    def _refresh_quick(self, ctr: ContainerRecord) -> None:
        """A refresh that never waits behind a slow operation on the container."""
        if (
            ctr.state in (C_RUNNING, C_CREATED)
            and self.oci(ctr.runtime).exit_code(ctr.id) is not None
        ):
            with self._object_locks.hold(ctr.id):
                self._refresh(ctr)

    @hookimpl
    def criadapt_list_containers(
        self, filter: m.ContainerFilter | None
    ) -> m.ListContainersResponse:
        with self._lock:
            ctrs = list(self._ctrs.values())
        for ctr in ctrs:
            self._refresh_quick(ctr)
        if filter is not None:
            if filter.id:
                wanted = set(resolve_id(filter.id, [c.id for c in ctrs]))
                ctrs = [c for c in ctrs if c.id in wanted]
            if filter.pod_sandbox_id:
                with self._lock:
                    pod_ids = list(self._pods)
                pods = set(resolve_id(filter.pod_sandbox_id, pod_ids))
                ctrs = [c for c in ctrs if c.sandbox_id in pods]
            if filter.state is not None:
                ctrs = [c for c in ctrs if c.state == filter.state.state]
        items = []
        for ctr in ctrs:
            config = ctr.config
            if filter is not None and not matches_labels(config.labels, filter.label_selector):
                continue
            items.append(
                m.Container(
                    id=ctr.id,
                    pod_sandbox_id=ctr.sandbox_id,
                    metadata=config.metadata,
                    image=m.ImageSpec(image=ctr.image_ref),
                    image_ref=ctr.image_digest_ref,
                    image_id=ctr.image_id,
                    state=m.ContainerState(ctr.state),
                    created_at=ctr.created_at,
                    labels=config.labels,
                    annotations=config.annotations,
                )
            )
        return m.ListContainersResponse(containers=items)

    # -- logs and resources -----------------------------------------------------------------
    @hookimpl
    def criadapt_reopen_container_log(self, container_id: str) -> m.ReopenContainerLogResponse:
        ctr = self._running(container_id)  # not running: an error, and no file is created
        self.oci(ctr.runtime).reopen_log(ctr.id)
        return m.ReopenContainerLogResponse()

    @hookimpl
    def criadapt_update_container_resources(
        self, container_id: str, linux: m.LinuxContainerResources | None
    ) -> m.UpdateContainerResourcesResponse:
        ctr = self._ctr(container_id)
        with self._object_locks.hold(ctr.id):
            self._refresh(ctr)
            if ctr.state not in (C_CREATED, C_RUNNING):
                state = m.ContainerState(ctr.state).name
                raise FailedPrecondition(f"container {container_id} is {state}")
            if linux is None:
                return m.UpdateContainerResourcesResponse()
            resources = linux_resources(linux, self.host)
            runtime = self.oci(ctr.runtime).runtime
            result = subprocess.run(
                [runtime.path, f"--root={runtime.root}", "update", "--resources", "-", ctr.id],
                input=json.dumps(resources).encode(),
                capture_output=True,
                check=False,
                timeout=30,
            )
            if result.returncode != 0:
                problem = result.stderr.decode(errors="replace").strip()
                raise FailedPrecondition(f"cannot update container {container_id}: {problem}")
            ctr.resources_pb = ContainerRecord.pack(linux)
            self.ctr_records.save(ctr)
        return m.UpdateContainerResourcesResponse()

    # -- exec -------------------------------------------------------------------------------
    def _running(self, container_id: str) -> ContainerRecord:
        ctr = self._ctr(container_id)
        self._refresh_quick(ctr)
        if ctr.state != C_RUNNING:
            state = m.ContainerState(ctr.state).name
            raise FailedPrecondition(f"container {container_id} is {state}, not running")
        return ctr

    @hookimpl
    def criadapt_exec_sync(
        self, container_id: str, cmd: Sequence[str], timeout: int
    ) -> m.ExecSyncResponse:
        ctr = self._running(container_id)
        spec = json.loads((Path(ctr.bundle) / "config.json").read_text())
        process = dict(spec["process"])
        process["args"] = list(cmd)
        process["terminal"] = False
        process.pop("consoleSize", None)
        code, out, err = self.oci(ctr.runtime).exec_sync(
            ctr.id, process, timeout=float(timeout) if timeout > 0 else None
        )
        return m.ExecSyncResponse(stdout=out, stderr=err, exit_code=code)

    @hookimpl
    def criadapt_exec(
        self,
        container_id: str,
        cmd: Sequence[str],
        tty: bool,
        stdin: bool,
        stdout: bool,
        stderr: bool,
    ) -> m.ExecResponse:
        self._running(container_id)
        request = m.ExecRequest(
            container_id=container_id, cmd=cmd, tty=tty, stdin=stdin, stdout=stdout, stderr=stderr
        )
        return m.ExecResponse(url=streaming_server.url_for("exec", request))

    @hookimpl
    def criadapt_attach(
        self, container_id: str, tty: bool, stdin: bool, stdout: bool, stderr: bool
    ) -> m.AttachResponse:
        ctr = self._running(container_id)
        if tty != ctr.config.tty:
            raise InvalidArgument(f"tty={tty} does not match the container's tty={ctr.config.tty}")
        request = m.AttachRequest(
            container_id=container_id, tty=tty, stdin=stdin, stdout=stdout, stderr=stderr
        )
        return m.AttachResponse(url=streaming_server.url_for("attach", request))

    @hookimpl
    def criadapt_port_forward(
        self, pod_sandbox_id: str, port: Sequence[int]
    ) -> m.PortForwardResponse:
        pod = self._pod(pod_sandbox_id)
        if pod.state != READY:
            raise FailedPrecondition(f"pod sandbox {pod_sandbox_id} is not ready")
        request = m.PortForwardRequest(pod_sandbox_id=pod_sandbox_id, port=port)
        return m.PortForwardResponse(url=streaming_server.url_for("portforward", request))

    # -- runtime ----------------------------------------------------------------------------
    @hookimpl
    def criadapt_status(self, verbose: bool) -> m.StatusResponse:
        runtime = self.runtimes.get(self.options.default_runtime)
        missing = [
            path
            for path in ([runtime.path] if runtime else []) + [self.options.conmon]
            if not shutil.which(path)
        ]
        runtime_ready = m.RuntimeCondition(
            type="RuntimeReady",
            status=not missing and runtime is not None,
            reason="" if not missing else "RuntimeBinaryMissing",
            message="" if not missing else f"not found: {', '.join(missing)}",
        )
        ready, reason, message = self.cni.status()
        network_ready = m.RuntimeCondition(
            type="NetworkReady",
            status=ready,
            reason="" if ready else reason,
            message="" if ready else message,
        )
        info = {}
        if verbose:
            info["config"] = json.dumps(
                {
                    "runtimes": {k: v.path for k, v in self.runtimes.items()},
                    "defaultRuntime": self.options.default_runtime,
                    "cniConfDir": str(self.config.cni.conf_dir),
                    "root": str(self.root),
                    "state": str(self.state_dir),
                }
            )
        return m.StatusResponse(
            status=m.RuntimeStatus(conditions=[runtime_ready, network_ready]),
            info=info,
            runtime_handlers=[
                m.RuntimeHandler(name=name if name != self.options.default_runtime else "")
                for name in sorted(self.runtimes)
            ],
        )

    @hookimpl
    def criadapt_update_runtime_config(
        self, runtime_config: m.RuntimeConfig | None
    ) -> m.UpdateRuntimeConfigResponse:
        if runtime_config is not None and runtime_config.network_config is not None:
            self.pod_cidr = runtime_config.network_config.pod_cidr
        return m.UpdateRuntimeConfigResponse()

    @hookimpl
    def criadapt_runtime_config(self) -> m.RuntimeConfigResponse:
        return m.RuntimeConfigResponse(
            linux=m.LinuxRuntimeConfiguration(cgroup_driver=m.CgroupDriver.CGROUPFS)
        )


PR_SET_CHILD_SUBREAPER = 36


def become_subreaper(on: bool = True) -> None:
    """Make orphaned descendants (conmon after its double fork) our children (or stop)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) != 0:
        log.warning("cannot set the child subreaper flag: errno %d", ctypes.get_errno())


def reap_zombie_conmons() -> int:
    """Reap every zombie ``conmon`` child of ours (a scan of /proc); return how many."""
    me = os.getpid()
    reaped = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_bytes()
        except OSError:
            continue
        name = raw[raw.find(b"(") + 1 : raw.rfind(b")")]
        fields = raw[raw.rfind(b")") + 2 :].split()
        if name == b"conmon" and fields[0] == b"Z" and int(fields[1]) == me:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(int(entry), os.WNOHANG)
                reaped += 1
    return reaped


class Reaper(threading.Thread):
    """Every ``interval`` seconds: notice containers that exited (``on_tick``) and reap the
    conmons that exited (as their subreaper we must collect them)."""

    def __init__(self, interval: float = 1.0, on_tick: Callable[[], None] | None = None) -> None:
        super().__init__(name="conmon-reaper", daemon=True)
        self.interval = interval
        self.on_tick = on_tick
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                if self.on_tick is not None:
                    self.on_tick()
                reap_zombie_conmons()
            except Exception:  # never let the monitor die
                log.exception("watching containers failed")

    def stop(self) -> None:
        self.stopped.set()


def reap_zombie(pid: int) -> None:
    """waitpid() ``pid`` only if it is a zombie child of ours (never steals another status)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return
    fields = raw[raw.rfind(b")") + 2 :].split()
    if fields[0] != b"Z" or int(fields[1]) != os.getpid():
        return
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _overlay(rootfs: Path, layers: Sequence[Path], rw_root: Path) -> None:
    """Mount an overlayfs of ``layers`` (bottom first) with a writable layer under ``rw_root``."""
    if _is_mounted(rootfs):
        return
    if not layers:
        raise FailedPrecondition("the image has no layers")
    (rw_root / "upper").mkdir(parents=True, exist_ok=True, mode=0o755)
    (rw_root / "work").mkdir(exist_ok=True, mode=0o700)
    options = (
        f"lowerdir={':'.join(str(p) for p in reversed(layers))},"
        f"upperdir={rw_root / 'upper'},workdir={rw_root / 'work'}"
    )
    result = subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", options, str(rootfs)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise FailedPrecondition(f"cannot mount the rootfs: {result.stderr.strip()}")


def _unmount(path: Path) -> None:
    if _is_mounted(path):
        subprocess.run(["umount", str(path)], check=False, capture_output=True)
        if _is_mounted(path):
            subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def _is_mounted(path: Path) -> bool:
    text = str(path)
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as info:
            return any(line.split()[4] == text for line in info)
    except OSError:
        return False
