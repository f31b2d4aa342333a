"""Pod lifecycle benchmark: criadapt-runc vs containerd 1.6 (CRI) vs bare runc, one machine.

    python -m benchmarks.pod_lifecycle [--pods 30] [--warmup 3] [--install] [--profile]

One run measures, with the same client code (:class:`criadapt.client.Client`) and the same pod
and container configuration, the seven CRI calls of a pod's life (RunPodSandbox,
CreateContainer, StartContainer, StopContainer, RemoveContainer, StopPodSandbox,
RemovePodSandbox), each and end to end, for:

criadapt-runc
    a real ``criadapt serve`` subprocess (runc backend) with its own root, state, socket and
    CNI conf dir (bridge + host-local on a benchmark-only bridge, 10.89.240.0/24).
containerd
    containerd 1.6 (Debian's package; ``--install`` installs it) with its own ``--config``:
    root, state and socket in the run's folder, ``restrict_oom_score_adj = true`` (root lacks
    CAP_SYS_RESOURCE here), a pause image built here (Debian's static catatonit, ``-P``),
    the local registry as a plain-HTTP mirror, the same CNI conflist type on another bridge
    and subnet (10.89.241.0/24), overlayfs, runc through the runc v2 shim, cgroupfs.
the floor
    ``runc create/start/kill/delete`` twice per pod (a sandbox-like ``catatonit -P`` and a
    ``sleep 3600``), a prepared busybox bundle, no CNI, no image, no daemon.

Same choices for both CRI runtimes: pod network namespace through CNI (so CNI ADD/DEL is
paid by both), kubelet's namespace defaults (network and IPC per pod, PID per container), one
cgroup parent for all pods (as kubelet's pod cgroup, cgroupfs), container ``sleep 3600``,
StopContainer with timeout 0 (both go straight to SIGKILL: the same kill path; ``sleep`` as
PID 1 ignores SIGTERM anyway). Images are pulled before the timed part. Each runtime gets
``--warmup`` pods that are checked (RUNNING, pod IP in 10.89.x, exit code 137) and not
counted; then pods run one at a time, rounds rotating which runtime goes first so that
background load hits all alike. p50 is the median, p95 nearest-rank. The results go to
``benchmarks/results/<date>-pod-lifecycle.md``.

``--profile`` then runs ``--profile-pods`` more criadapt pods (not counted) under
``py-spy record --idle`` (pip install py-spy) attached to the server, saves the samples
(``raw`` collapsed stacks by default, or ``speedscope``/``flamegraph`` SVG) next to the
report and, for ``raw``, adds where each RPC's wall time goes.

Everything the run creates (processes, mounts, bridges, cgroups, shim sockets, folders) is
removed at the end, also after a failure, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import datetime
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType

from criadapt import errors
from criadapt import models as m
from criadapt.client import Client
from criadapt.testing.images import FileSpec, Image, build_image, busybox_image, tar_layer
from criadapt.testing.registry import Registry
from criadapt_runc.testing_bundles import CATATONIT, bundle_config, make_rootfs

RESULTS = Path(__file__).resolve().parent / "results"

CALLS = (
    "RunPodSandbox",
    "CreateContainer",
    "StartContainer",
    "StopContainer",
    "RemoveContainer",
    "StopPodSandbox",
    "RemovePodSandbox",
)
E2E = "end to end"
VERSION = "Version (empty call, for reference)"
CRIADAPT = "criadapt-runc"
CONTAINERD = "containerd"
FLOOR = "runc floor"

#: goals of the issue: pod lifecycle end to end
GOAL_VS_CONTAINERD = 0.8
GOAL_VS_FLOOR = 1.5

CRIADAPT_NET = ("crbench-a0", "10.89.240.0/24")
CONTAINERD_NET = ("crbench-c0", "10.89.241.0/24")

DEBIAN_PACKAGES = (
    "runc",
    "conmon",
    "catatonit",
    "containernetworking-plugins",
    "busybox-static",
    "docker-registry",
)
CONTAINERD_DISABLED_PLUGINS = (
    "io.containerd.internal.v1.opt",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.tracing.processor.v1.otlp",
    "io.containerd.internal.v1.tracing",
)
SHIM_SOCKET_DIR = Path("/run/containerd/s")
#: fixed host folders: shim sockets (containerd), libcni's result cache (containerd's CNI)
HOST_DIRS = (
    SHIM_SOCKET_DIR,
    SHIM_SOCKET_DIR.parent,
    Path("/var/lib/cni/results"),
    Path("/var/lib/cni"),
)

#: criadapt hook → CRI call, to attribute profile samples
HOOKS = {
    "criadapt_run_pod_sandbox": "RunPodSandbox",
    "criadapt_create_container": "CreateContainer",
    "criadapt_start_container": "StartContainer",
    "criadapt_stop_container": "StopContainer",
    "criadapt_remove_container": "RemoveContainer",
    "criadapt_stop_pod_sandbox": "StopPodSandbox",
    "criadapt_remove_pod_sandbox": "RemovePodSandbox",
}

Timings = dict[str, float]


class BenchmarkError(RuntimeError):
    """A runtime failed to start or a pod failed its checks."""


# -- small helpers ---------------------------------------------------------------------------


def p50(values: Sequence[float]) -> float:
    return statistics.median(values)


def p95(values: Sequence[float]) -> float:
    """Nearest-rank 95th percentile (as benchmarks.pull)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def run(cmd: Sequence[str], *, check: bool = True, timeout: float = 60) -> str:
    result = subprocess.run(list(cmd), capture_output=True, text=True, check=False, timeout=timeout)
    if check and result.returncode != 0:
        raise BenchmarkError(f"{' '.join(cmd)}: exit {result.returncode}: {result.stderr.strip()}")
    return result.stdout


def loadavg() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def log(message: str) -> None:
    print(f"[pod-lifecycle] {message}", file=sys.stderr, flush=True)


def set_child_subreaper() -> None:
    """Become the subreaper of our descendants (PR_SET_CHILD_SUBREAPER = 36).

    PID 1 of these machines does not reap orphans: without this, containerd's shims and the
    floor's containers would stay zombies. As a subreaper we reap them ourselves."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(36, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def _proc_stat(pid: int) -> tuple[str, int] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[1])


def reap_orphans(managed: set[int]) -> int:
    """Reap zombie children that no Popen object waits for (orphans we inherited)."""
    me = os.getpid()
    reaped = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in managed:
            continue
        stat = _proc_stat(int(entry.name))
        if stat is not None and stat[0] == "Z" and stat[1] == me:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(int(entry.name), os.WNOHANG)
                reaped += 1
    return reaped


def stop_process(proc: subprocess.Popen[bytes] | None, sig: int, grace: float) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def conflist(name: str, bridge: str, subnet: str, ipam_dir: Path) -> str:
    """bridge + host-local on a benchmark-only bridge (no portmap: no iptables chains)."""
    return json.dumps(
        {
            "cniVersion": "1.0.0",
            "name": name,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": bridge,
                    "isGateway": True,
                    "ipMasq": False,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": subnet}]],
                        "dataDir": str(ipam_dir),
                    },
                }
            ],
        },
        indent=1,
    )


def pause_image() -> Image:
    """A static pause image: Debian's catatonit in one layer, ``/catatonit -P``."""
    layer = tar_layer(
        {
            "catatonit": FileSpec.file(CATATONIT.read_bytes(), mode=0o755),
            **{name: FileSpec.dir() for name in ("proc", "dev", "sys", "etc")},
        }
    )
    return build_image([layer], config={"Entrypoint": ["/catatonit", "-P"]})


def wait_ready(endpoint: str, alive: Callable[[], bool], what: str, timeout: float = 60) -> Client:
    """A client once the runtime answers Version and reports RuntimeReady and NetworkReady."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if not alive():
            raise BenchmarkError(f"{what} exited during start-up")
        client = Client(endpoint, timeout=120)
        try:
            client.version()
            status = client.status().status
            conditions = {c.type: c for c in (status.conditions if status else ())}
            if all(c.status for c in conditions.values()) and len(conditions) >= 2:
                return client
            last = "; ".join(
                f"{c.type}={c.status} {c.reason} {c.message}" for c in conditions.values()
            )
        except errors.CriError as exc:
            last = str(exc)
        client.close()
        time.sleep(0.2)
    raise BenchmarkError(f"{what} not ready after {timeout:.0f} s: {last}")


# -- the pod and container configuration of both CRI runtimes -----------------------------------


def pod_config(name: str, logs: Path, cgroup_parent: str) -> m.PodSandboxConfig:
    namespaces = m.NamespaceOption(
        network=m.NamespaceMode.POD, pid=m.NamespaceMode.CONTAINER, ipc=m.NamespaceMode.POD
    )
    return m.PodSandboxConfig(
        metadata=m.PodSandboxMetadata(name=name, namespace="bench", uid=f"uid-{name}"),
        hostname=name,
        log_directory=str(logs / name),
        labels={"app": "pod-lifecycle-bench"},
        linux=m.LinuxPodSandboxConfig(
            cgroup_parent=cgroup_parent,
            security_context=m.LinuxSandboxSecurityContext(namespace_options=namespaces),
        ),
    )


def container_config(image: str) -> m.ContainerConfig:
    namespaces = m.NamespaceOption(
        network=m.NamespaceMode.POD, pid=m.NamespaceMode.CONTAINER, ipc=m.NamespaceMode.POD
    )
    return m.ContainerConfig(
        metadata=m.ContainerMetadata(name="sleep"),
        image=m.ImageSpec(image=image),
        command=["sleep", "3600"],
        log_path="sleep/0.log",
        linux=m.LinuxContainerConfig(
            resources=m.LinuxContainerResources(),
            security_context=m.LinuxContainerSecurityContext(namespace_options=namespaces),
        ),
    )


def check_running(cri: Client, pod: str, container: str) -> None:
    status = cri.container_status(container_id=container).status
    if status is None or status.state != m.ContainerState.CONTAINER_RUNNING:
        raise BenchmarkError(f"container {container[:12]} is not running: {status}")
    sandbox = cri.pod_sandbox_status(pod_sandbox_id=pod).status
    ip = sandbox.network.ip if sandbox is not None and sandbox.network is not None else ""
    if not ip.startswith("10.89."):
        raise BenchmarkError(f"pod {pod[:12]} has no CNI address: {ip!r}")


def check_killed(cri: Client, container: str) -> None:
    status = cri.container_status(container_id=container).status
    if status is None or status.state != m.ContainerState.CONTAINER_EXITED:
        raise BenchmarkError(f"container {container[:12]} did not exit: {status}")
    if status.exit_code != 137:
        raise BenchmarkError(f"container {container[:12]} exit code {status.exit_code}, not 137")


def cri_pod(
    cri: Client, image: str, name: str, logs: Path, cgroup_parent: str, *, check: bool
) -> tuple[Timings, str]:
    """One pod's life through CRI; returns the per-call and end-to-end seconds and its id."""
    pconf = pod_config(name, logs, cgroup_parent)
    cconf = container_config(image)
    times: Timings = {}
    pod = container = ""
    clock = time.perf_counter

    try:
        started = clock()
        pod = cri.run_pod_sandbox(config=pconf).pod_sandbox_id
        times["RunPodSandbox"] = clock() - started
        t = clock()
        container = cri.create_container(
            pod_sandbox_id=pod, config=cconf, sandbox_config=pconf
        ).container_id
        times["CreateContainer"] = clock() - t
        t = clock()
        cri.start_container(container_id=container)
        times["StartContainer"] = clock() - t
        if check:  # warm-up pods only: not timed (not in the end-to-end time either)
            paused = clock()
            check_running(cri, pod, container)
            started += clock() - paused
        t = clock()
        cri.stop_container(container_id=container, timeout=0)
        times["StopContainer"] = clock() - t
        if check:
            paused = clock()
            check_killed(cri, container)
            started += clock() - paused
        t = clock()
        cri.remove_container(container_id=container)
        times["RemoveContainer"] = clock() - t
        t = clock()
        cri.stop_pod_sandbox(pod_sandbox_id=pod)
        times["StopPodSandbox"] = clock() - t
        t = clock()
        cri.remove_pod_sandbox(pod_sandbox_id=pod)
        now = clock()
        times["RemovePodSandbox"] = now - t
        times[E2E] = now - started
    except BaseException:
        if pod:  # best effort: leave nothing behind
            with contextlib.suppress(Exception):
                cri.stop_pod_sandbox(pod_sandbox_id=pod)
                cri.remove_pod_sandbox(pod_sandbox_id=pod)
        raise
    return times, pod


def remove_all_pods(cri: Client) -> None:
    """Stop and remove every container and pod the runtime has (all are ours)."""
    for ctr in cri.list_containers().containers:
        with contextlib.suppress(errors.CriError):
            cri.stop_container(container_id=ctr.id, timeout=0)
            cri.remove_container(container_id=ctr.id)
    for pod in cri.list_pod_sandbox().items:
        with contextlib.suppress(errors.CriError):
            cri.stop_pod_sandbox(pod_sandbox_id=pod.id)
            cri.remove_pod_sandbox(pod_sandbox_id=pod.id)


# -- the runtimes ----------------------------------------------------------------------------


class CriRuntime:
    """A CRI daemon started by the benchmark, in its own folder."""

    name = ""
    prefix = "pod"

    def __init__(self, base: Path, net: tuple[str, str], cgroup_parent: str) -> None:
        self.base = base
        self.bridge, self.subnet = net
        self.cgroup_parent = cgroup_parent
        self.sock = base / "cri.sock"
        self.logs = base / "logs"
        self.cni_dir = base / "cni"
        self.log_path = base / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.client: Client | None = None
        self.version = ""
        self.image = ""

    def write_cni(self, network: str) -> None:
        self.cni_dir.mkdir(parents=True, exist_ok=True)
        text = conflist(network, self.bridge, self.subnet, self.base / "ipam")
        (self.cni_dir / "10-bench.conflist").write_text(text)

    def command(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        raise NotImplementedError

    def start(self) -> Client:
        self.base.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        self.prepare()
        with self.log_path.open("ab") as daemon_log:
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=daemon_log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches us only; we stop it in order
            )
        proc = self.proc
        try:
            self.client = wait_ready(f"unix://{self.sock}", lambda: proc.poll() is None, self.name)
        except BenchmarkError as exc:
            raise BenchmarkError(f"{exc}\n--- {self.log_path} (tail):\n{self.log_tail()}") from exc
        version = self.client.version()
        self.version = f"{version.runtime_name} {version.runtime_version}"
        return self.client

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def pull(self, ref: str) -> None:
        assert self.client is not None
        self.client.pull_image(image=m.ImageSpec(image=ref))

    def pod(self, index: int, *, check: bool) -> Timings:
        assert self.client is not None
        name = f"{self.prefix}-{index}"
        times, _pod = cri_pod(
            self.client, self.image, name, self.logs, self.cgroup_parent, check=check
        )
        return times

    def stop(self) -> None:
        """Remove what is left through CRI, then stop the daemon (SIGTERM, then SIGKILL)."""
        if self.client is not None:
            with contextlib.suppress(errors.CriError):
                remove_all_pods(self.client)
            self.client.close()
            self.client = None
        stop_process(self.proc, signal.SIGTERM, 20)
        run(["ip", "link", "delete", self.bridge], check=False)


class CriadaptRuntime(CriRuntime):
    name = CRIADAPT
    prefix = "crit"

    def prepare(self) -> None:
        self.write_cni("criadapt-bench")
        (self.base / "criadapt.toml").write_text(
            f"""backend = "runc"
listen = "unix://{self.sock}"
root = "{self.base / "root"}"
state = "{self.base / "state"}"
grace_period = 2.0
[streaming]
address = "127.0.0.1"
port = 0
[cni]
conf_dir = "{self.cni_dir}"
bin_dirs = ["/usr/lib/cni"]
"""
        )

    def command(self) -> list[str]:
        config = str(self.base / "criadapt.toml")
        return [sys.executable, "-m", "criadapt", "serve", "--config", config]


class ContainerdRuntime(CriRuntime):
    name = CONTAINERD

    def __init__(
        self, base: Path, net: tuple[str, str], cgroup_parent: str, registry: str, pause: str
    ) -> None:
        super().__init__(base, net, cgroup_parent)
        self.registry = registry
        self.pause = pause
        self.sandbox_ids: set[str] = set()

    def prepare(self) -> None:
        self.write_cni("containerd-bench")
        state = self.base / "state"
        disabled = ", ".join(f'"{p}"' for p in CONTAINERD_DISABLED_PLUGINS)
        cri = '[plugins."io.containerd.grpc.v1.cri"'
        (self.base / "config.toml").write_text(
            f"""version = 2
root = "{self.base / "root"}"
state = "{state}"
disabled_plugins = [{disabled}]

[grpc]
  address = "{self.sock}"

{cri}]
  sandbox_image = "{self.pause}"
  # root lacks CAP_SYS_RESOURCE: without this every pod fails with "can't get final
  # child's PID from pipe: EOF" (/proc/self/oom_score_adj: Permission denied)
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false

{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

{cri}.containerd.runtimes.runc.options]
  BinaryName = "/usr/sbin/runc"
  Root = "{state / "runc"}"
  SystemdCgroup = false

{cri}.cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "{self.cni_dir}"
  max_conf_num = 1

{cri}.registry.mirrors."{self.registry}"]
  endpoint = ["http://{self.registry}"]

{cri}.registry.configs."{self.registry}".tls]
  insecure_skip_verify = true
"""
        )

    def command(self) -> list[str]:
        config = str(self.base / "config.toml")
        return ["containerd", "--config", config, "--log-level", "info"]

    def pod(self, index: int, *, check: bool) -> Timings:
        assert self.client is not None
        name = f"ctrd-{index}"
        times, pod = cri_pod(
            self.client, self.image, name, self.logs, self.cgroup_parent, check=check
        )
        self.sandbox_ids.add(pod)
        return times

    def stop(self) -> None:
        if self.client is not None:
            with contextlib.suppress(errors.CriError):
                self.sandbox_ids.update(p.id for p in self.client.list_pod_sandbox().items)
        super().stop()
        self.remove_shim_sockets()

    def remove_shim_sockets(self) -> None:
        """Shim sockets live in the fixed /run/containerd/s/sha256(address/ns/id)."""
        import hashlib

        for sandbox in self.sandbox_ids:
            digest = hashlib.sha256(f"{self.sock}/k8s.io/{sandbox}".encode()).hexdigest()
            with contextlib.suppress(FileNotFoundError):
                (SHIM_SOCKET_DIR / digest).unlink()


class RuncFloor:
    """``runc create/start/kill/delete`` of two prepared bundles: the bare floor.

    Our process is the subreaper of the containers (runc create exits and they are
    reparented to us), so we wait for their exit as conmon or a shim would."""

    name = FLOOR

    def __init__(self, base: Path, cgroup_parent: str, *, separate_namespaces: bool) -> None:
        self.base = base
        self.cgroup_parent = cgroup_parent
        self.separate_namespaces = separate_namespaces
        self.root = base / "runc-root"
        self.rootfs = base / "rootfs"
        self.version = ""
        self.live: dict[str, int] = {}
        self.steps: dict[str, list[float]] = collections.defaultdict(list)

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        make_rootfs(self.rootfs)
        if not (self.rootfs / "bin" / "catatonit").exists():
            raise BenchmarkError(f"{CATATONIT} missing: apt-get install catatonit")
        self.version = run(["runc", "--version"]).splitlines()[0]

    def _bundle(self, ctr_id: str, args: Sequence[str], join: int | None = None) -> Path:
        """A bundle; with *join*, the container joins that process's network, IPC and UTS
        namespaces (as a pod's container joins its sandbox's)."""
        bundle = self.base / "bundles" / ctr_id
        bundle.mkdir(parents=True, exist_ok=True)
        config = bundle_config(
            args,
            rootfs=str(self.rootfs),
            cgroups_path=f"{self.cgroup_parent}/{ctr_id}",
            hostname="floor",
        )
        if join is not None:
            shared = {"network": "net", "ipc": "ipc", "uts": "uts"}
            config["linux"]["namespaces"] = [
                {**ns, "path": f"/proc/{join}/ns/{shared[ns['type']]}"}
                if ns["type"] in shared
                else ns
                for ns in config["linux"]["namespaces"]
            ]
            config.pop("hostname", None)  # the UTS namespace is not ours to name
        (bundle / "config.json").write_text(json.dumps(config))
        return bundle

    def _runc(self, *args: str) -> None:
        # runc create hands its stdio to the container: a file, not a pipe we would wait on
        errors_path = self.base / "runc.stderr"
        with errors_path.open("w+b") as stderr:
            code = subprocess.run(
                ["runc", "--root", str(self.root), *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                check=False,
                timeout=60,
            ).returncode
        if code != 0:
            message = errors_path.read_text(errors="replace").strip()
            raise BenchmarkError(f"runc {' '.join(args)}: exit {code}: {message}")

    def _up(self, ctr_id: str, bundle: Path, steps: dict[str, list[float]]) -> None:
        pid_file = bundle / "pid"
        t = time.perf_counter()
        self._runc("create", "--bundle", str(bundle), "--pid-file", str(pid_file), ctr_id)
        self.live[ctr_id] = int(pid_file.read_text())
        steps["create"].append(time.perf_counter() - t)
        t = time.perf_counter()
        self._runc("start", ctr_id)
        steps["start"].append(time.perf_counter() - t)

    def _down(self, ctr_id: str, steps: dict[str, list[float]]) -> None:
        t = time.perf_counter()
        self._runc("kill", ctr_id, "KILL")
        os.waitpid(self.live.pop(ctr_id), 0)
        steps["kill + wait"].append(time.perf_counter() - t)
        t = time.perf_counter()
        self._runc("delete", ctr_id)
        steps["delete"].append(time.perf_counter() - t)

    def pod(self, index: int, *, check: bool) -> Timings:
        sandbox, container = f"floor-{index}-pod", f"floor-{index}-ctr"
        sandbox_bundle = self._bundle(sandbox, ["/bin/catatonit", "-P"])
        if self.separate_namespaces:
            container_bundle = self._bundle(container, ["sleep", "3600"])
        steps: dict[str, list[float]] = collections.defaultdict(list)
        started = time.perf_counter()
        self._up(sandbox, sandbox_bundle, steps)
        if not self.separate_namespaces:  # needs the sandbox's pid: written in the timed part
            container_bundle = self._bundle(container, ["sleep", "3600"], self.live[sandbox])
        self._up(container, container_bundle, steps)
        self._down(container, steps)
        self._down(sandbox, steps)
        elapsed = time.perf_counter() - started
        if not check:  # warm-up step times are not kept
            for key, values in steps.items():
                self.steps[key].extend(values)
        shutil.rmtree(self.base / "bundles", ignore_errors=True)
        return {E2E: elapsed}

    def stop(self) -> None:
        for ctr_id, pid in list(self.live.items()):
            self._runc_quiet("kill", ctr_id, "KILL")
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            self.live.pop(ctr_id, None)
        if self.root.is_dir():
            for ctr_id in [p.name for p in self.root.iterdir() if p.is_dir()]:
                self._runc_quiet("delete", "--force", ctr_id)

    def _runc_quiet(self, *args: str) -> None:
        subprocess.run(["runc", "--root", str(self.root), *args], capture_output=True, check=False)


# -- installation ---------------------------------------------------------------------------


def apt_install(packages: Sequence[str]) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log(f"apt-get install {' '.join(packages)}")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )


def missing_packages(packages: Sequence[str]) -> list[str]:
    return [
        p
        for p in packages
        if subprocess.run(["dpkg", "-s", p], capture_output=True, check=False).returncode != 0
    ]


def containerd_version(install: bool) -> tuple[str | None, str]:
    """(``containerd --version`` or None, why containerd is skipped)."""
    if shutil.which("containerd") is None:
        if not install:
            return None, (
                "containerd is not installed: containerd skipped "
                "(run with --install to apt-get install Debian's containerd 1.6)"
            )
        apt_install(["containerd"])
    if shutil.which("containerd") is None:
        return None, "containerd is still missing after apt-get install: containerd skipped"
    version = run(["containerd", "--version"]).strip()
    if " 1.6." not in version:
        log(f"warning: expected containerd 1.6, found {version!r}")
    return version, ""


# -- clean-up of what the run created --------------------------------------------------------


class Sweeper:
    """The safety net run last: processes, mounts, cgroups, bridges, folders of this run."""

    def __init__(self, base: Path, cgroup_parent: str, bridges: Sequence[str]) -> None:
        self.base = base
        self.cgroup_parent = cgroup_parent
        self.bridges = list(bridges)
        self.managed: set[int] = {os.getpid()}
        self.ip_forward = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
        # fixed host paths the runtimes may create: removed at the end if new and empty
        self.new_dirs = [p for p in HOST_DIRS if not p.exists()]

    def ours(self, pid: int) -> bool:
        """A process of this run: its command line names our folder, or it is in our cgroup."""
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            cgroups = Path(f"/proc/{pid}/cgroup").read_text()
        except OSError:
            return False
        return str(self.base).encode() in cmdline or f"{self.cgroup_parent}/" in cgroups

    def kill_leftovers(self) -> list[int]:
        killed = []
        for entry in Path("/proc").iterdir():
            if (
                entry.name.isdigit()
                and int(entry.name) != os.getpid()
                and self.ours(int(entry.name))
            ):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(entry.name), signal.SIGKILL)
                    killed.append(int(entry.name))
        if killed:
            time.sleep(0.3)
        reap_orphans(set())
        return killed

    def unmount(self) -> list[str]:
        prefix = str(self.base) + "/"
        points = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(prefix):
                points.append(point)
        for point in reversed(points):
            run(["umount", "-l", point], check=False)
        return points

    def remove_cgroups(self) -> None:
        name = self.cgroup_parent.strip("/")
        for hierarchy in Path("/sys/fs/cgroup").iterdir():
            top = hierarchy / name
            if not top.is_dir():
                continue
            for folder in sorted(
                (p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)
            ):
                with contextlib.suppress(OSError):
                    folder.rmdir()
            with contextlib.suppress(OSError):
                top.rmdir()

    def sweep(self) -> None:
        killed = self.kill_leftovers()
        points = self.unmount()
        for bridge in self.bridges:
            run(["ip", "link", "delete", bridge], check=False)
        self.remove_cgroups()
        if self.ip_forward == "0":
            Path("/proc/sys/net/ipv4/ip_forward").write_text("0\n")
        for folder in self.new_dirs:
            with contextlib.suppress(OSError):
                folder.rmdir()
        shutil.rmtree(self.base, ignore_errors=True)
        if killed or points:
            log(f"clean-up: killed {len(killed)} leftover processes, unmounted {len(points)}")


# -- profiling -------------------------------------------------------------------------------


def py_spy_binary() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


@contextlib.contextmanager
def py_spy(pid: int, output: Path, fmt: str, rate: int) -> Iterator[subprocess.Popen[bytes]]:
    binary = py_spy_binary()
    assert binary is not None
    cmd = [binary, "record", "--pid", str(pid), "--idle", "--rate", str(rate)]
    cmd += ["--format", fmt, "--output", str(output)]
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        time.sleep(1.0)  # let it attach
        yield proc
    finally:
        stop_process(proc, signal.SIGINT, 30)  # SIGINT: py-spy writes its output and exits


def _frame_name(frame: str) -> str:
    """``Class.fn (criadapt_runc/oci.py:123)`` → ``Class.fn (oci.py)``."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({path.rsplit('/', 1)[-1]})"


def _is_ours(frame: str) -> bool:
    where = frame.partition(" (")[2]
    return where.startswith(("criadapt/", "criadapt_runc/")) or "/criadapt" in where


def keep_handler_stacks(raw: Path) -> None:
    """Drop the stacks of idle threads (gRPC pollers, the reaper) from a raw profile."""
    lines = raw.read_text().splitlines()
    hooks = tuple(f".{hook} (" for hook in HOOKS)
    raw.write_text("".join(f"{line}\n" for line in lines if any(h in line for h in hooks)))


def analyse_raw(raw: Path, rate: int, pods: int, top: int = 8) -> list[str]:
    """Per RPC: wall time per pod in the handler and the criadapt functions it is spent in."""
    per_rpc: dict[str, int] = collections.Counter()
    inclusive: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    waits: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        functions = [f.partition(" (")[0].rsplit(".", 1)[-1] for f in frames]
        hook_at = next((i for i, name in enumerate(functions) if name in HOOKS), None)
        if hook_at is None:
            continue
        rpc = HOOKS[functions[hook_at]]
        per_rpc[rpc] += count
        below = frames[hook_at + 1 :]
        ours = [_frame_name(f) for f in below if _is_ours(f)]
        for name in dict.fromkeys(ours):
            inclusive[rpc][name] += count
        innermost = ours[-1] if ours else _frame_name(frames[hook_at])
        leaf = frames[-1].partition(" (")[0]
        waits[rpc][
            f"{innermost} → {leaf}" if below and not _is_ours(frames[-1]) else innermost
        ] += count
    ms = 1000.0 / rate / pods
    lines = [
        f"py-spy at {rate} samples/s, idle (blocked) time included, over {pods} pods, times "
        "in ms per pod. `inclusive`: time in a criadapt function and what it calls; `where`: "
        "the innermost criadapt function and the innermost frame (`select`/`_poll_readable`"
        "/`_wait` = waiting for a child process: runc, conmon, a CNI plugin, unshare). "
        "py-spy stops the server for every sample, so these times run higher than the "
        "measured calls above: read them for the split within a call. The samples file keeps "
        "only the stacks inside the RPC handlers.",
        "",
    ]
    for rpc in CALLS:
        if not per_rpc[rpc]:
            continue
        lines += [
            f"**{rpc}**: {per_rpc[rpc] * ms:.1f} ms per pod in the handler",
            "",
            "| inclusive | ms | where | ms |",
            "|---|---|---|---|",
        ]
        inc = inclusive[rpc].most_common(top)
        wai = waits[rpc].most_common(top)
        for i in range(max(len(inc), len(wai))):
            a = (f"`{inc[i][0]}`", f"{inc[i][1] * ms:.1f}") if i < len(inc) else ("", "")
            b = (f"`{wai[i][0]}`", f"{wai[i][1] * ms:.1f}") if i < len(wai) else ("", "")
            lines.append(f"| {a[0]} | {a[1]} | {b[0]} | {b[1]} |")
        lines.append("")
    return lines


# -- the report ------------------------------------------------------------------------------


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}"


def report(
    args: argparse.Namespace,
    results: dict[str, dict[str, list[float]]],
    versions: dict[str, str],
    notes: list[str],
    floor_steps: dict[str, list[float]],
    load: tuple[str, str],
    profile: list[str],
) -> list[str]:
    crit = results.get(CRIADAPT, {})
    ctrd = results.get(CONTAINERD, {})
    floor = results.get(FLOOR, {})
    counts = {name: len(r.get(E2E, [])) for name, r in results.items()}
    command = f"python -m benchmarks.pod_lifecycle --pods {args.pods} --warmup {args.warmup}"
    command += " --install" * args.install + " --profile" * args.profile
    lines = [
        f"# Pod lifecycle benchmark, {datetime.date.today()}",
        "",
        f"Machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, kernel "
        f"{platform.release()}, Python {platform.python_version()}; load average at start / "
        f"end: {load[0]} / {load[1]}. Command: `{command}`. Pods per runtime: "
        + ", ".join(f"{name} {n}" for name, n in counts.items())
        + f" (after {args.warmup} warm-up pods each, not counted), one at a time, rounds "
        "rotating which runtime goes first. Times in ms; p95 is nearest-rank.",
        "",
        "Runtimes: " + "; ".join(f"{name}: {v}" for name, v in versions.items()) + ".",
        "",
        "| call | criadapt p50 | criadapt p95 | containerd p50 | containerd p95 "
        "| ratio p50 (criadapt / containerd) |",
        "|---|---|---|---|---|---|",
    ]

    def cell(data: dict[str, list[float]], key: str, fn: Callable[[Sequence[float]], float]) -> str:
        return fmt_ms(fn(data[key])) if data.get(key) else "-"

    def ratio(a: dict[str, list[float]], b: dict[str, list[float]], key: str) -> str:
        if not a.get(key) or not b.get(key):
            return "-"
        return f"{p50(a[key]) / p50(b[key]):.2f}x"

    for call in (*CALLS, E2E, VERSION):
        bold = "**" if call == E2E else ""
        lines.append(
            f"| {bold}{call}{bold} | {cell(crit, call, p50)} | {cell(crit, call, p95)} "
            f"| {cell(ctrd, call, p50)} | {cell(ctrd, call, p95)} | {ratio(crit, ctrd, call)} |"
        )
    lines += [
        "",
        "The work is not split the same way: containerd's CreateContainer only prepares the "
        "snapshot and spec, its StartContainer starts a shim that runs `runc create` and "
        "`runc start`; criadapt runs `runc create` (through conmon) in CreateContainer. "
        "containerd's RunPodSandbox also starts the pause container, criadapt's pins the "
        "namespaces without a process. Compare end to end. The Version row is 100 calls "
        "after the pods.",
        "",
        "End to end (RunPodSandbox → RemovePodSandbox) and the goals of the issue:",
        "",
        "| runtime | pods | p50 | p95 | criadapt / it (p50) | goal | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, data, goal in (
        (CRIADAPT, crit, None),
        (CONTAINERD, ctrd, GOAL_VS_CONTAINERD),
        (FLOOR, floor, GOAL_VS_FLOOR),
    ):
        if not data.get(E2E):
            lines.append(f"| {name} | 0 | - | - | - | | skipped |")
            continue
        rel = p50(crit[E2E]) / p50(data[E2E]) if crit.get(E2E) else None
        met = "" if goal is None or rel is None else ("yes" if rel <= goal else "**no**")
        lines.append(
            f"| {name} | {len(data[E2E])} | {cell(data, E2E, p50)} | {cell(data, E2E, p95)} "
            f"| {'' if rel is None or goal is None else f'{rel:.2f}x'} "
            f"| {'' if goal is None else f'≤ {goal}x'} | {met} |"
        )
    if floor_steps:
        lines += [
            "",
            "The floor per runc step (two containers per pod, so two of each per pod): "
            + ", ".join(
                f"{step} p50 {fmt_ms(p50(v))} / p95 {fmt_ms(p95(v))}"
                for step, v in floor_steps.items()
                if v
            )
            + ".",
        ]
    lines += [
        "",
        "Method: both CRI runtimes get the same requests from the same client code "
        "(`criadapt.client.Client`, CRI v1 over a unix socket): a pod with its own network "
        "namespace set up by CNI (bridge + host-local, no portmap, each runtime on its own "
        "benchmark bridge and 10.89.x subnet, so CNI ADD/DEL is in RunPodSandbox / "
        "StopPodSandbox of both), network and IPC per pod and PID per container (kubelet's "
        "defaults), the same cgroup parent (cgroupfs); one container `sleep 3600` of a "
        "busybox image pulled beforehand from a local docker-registry; StopContainer with "
        "timeout 0, so both go straight to SIGKILL (the same kill path; `sleep` as PID 1 "
        "ignores SIGTERM anyway). containerd runs a pause container per pod (our static "
        "catatonit image), criadapt pins the pod namespaces with bind mounts and runs no "
        "infra process when the PID namespace is per container. The floor is `runc "
        "create/start/kill/delete` of two prepared bundles per pod (a `catatonit -P` and a "
        "`sleep 3600` that "
        + (
            "has namespaces of its own"
            if args.floor_separate_namespaces
            else "joins the first's network, IPC and UTS namespaces"
        )
        + "; the network namespace stays empty: no CNI, no image, no daemon), waited for as a "
        "subreaper: what any runc-based CRI runtime pays at least.",
    ]
    if notes:
        lines += ["", "Notes:", ""] + [f"- {note}" for note in notes]
    if profile:
        lines += ["", "## Where criadapt's time goes (profile)", "", *profile]
    lines.append("")
    return lines


# -- main ------------------------------------------------------------------------------------


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--pods", type=int, default=30, help="measured pods per runtime")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up pods per runtime")
    parser.add_argument(
        "--install",
        action="store_true",
        help="apt-get install containerd (and other missing Debian packages) if needed",
    )
    parser.add_argument("--no-containerd", action="store_true", help="skip containerd")
    parser.add_argument("--no-floor", action="store_true", help="skip the runc floor")
    parser.add_argument(
        "--floor-separate-namespaces",
        action="store_true",
        help="floor: the second container gets its own network/IPC/UTS namespaces "
        "(default: it joins the first's, as a pod's container joins its sandbox's)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="profile extra criadapt pods with py-spy"
    )
    parser.add_argument("--profile-pods", type=int, default=30)
    parser.add_argument("--profile-rate", type=int, default=500, help="py-spy samples per second")
    parser.add_argument(
        "--profile-format", choices=["raw", "speedscope", "flamegraph"], default="raw"
    )
    parser.add_argument("--output", type=Path, help="report path (default: benchmarks/results)")
    args = parser.parse_args(argv)

    if os.geteuid() != 0:
        parser.error("needs root (runc, CNI, mounts)")
    if args.pods < 30:
        log(f"warning: --pods {args.pods} < 30: percentiles are rough")
    missing = missing_packages(DEBIAN_PACKAGES)
    if missing and args.install:
        apt_install(missing)
    elif missing:
        parser.error(f"missing Debian packages {' '.join(missing)} (use --install)")
    notes: list[str] = []
    versions: dict[str, str] = {}
    if not args.no_containerd:
        version, why = containerd_version(args.install)
        if version is None:
            log(why)
            notes.append(why)
    if args.profile and py_spy_binary() is None:
        log("py-spy not found (pip install py-spy): --profile ignored")
        notes.append("--profile asked, but py-spy is not installed: no profile")
        args.profile = False

    signal.signal(signal.SIGTERM, _terminate)
    set_child_subreaper()
    for bridge, _subnet in (CRIADAPT_NET, CONTAINERD_NET):
        if Path(f"/sys/class/net/{bridge}").exists():
            raise SystemExit(f"bridge {bridge} exists: another benchmark running? (or delete it)")

    base = Path(tempfile.mkdtemp(prefix="criadapt-podbench-"))
    cgroup_parent = f"/criadapt-bench-{os.getpid()}"
    load_start = loadavg()
    results: dict[str, dict[str, list[float]]] = {}
    profile_lines: list[str] = []
    floor_steps: dict[str, list[float]] = {}
    sweeper = Sweeper(base, cgroup_parent, [CRIADAPT_NET[0], CONTAINERD_NET[0]])
    with contextlib.ExitStack() as stack:
        stack.callback(sweeper.sweep)
        registry = stack.enter_context(Registry(root=base / "registry"))
        if registry.process is not None:
            sweeper.managed.add(registry.process.pid)
        busybox_ref = registry.push(busybox_image(), "bench/busybox", "latest")
        pause_ref = registry.push(pause_image(), "bench/pause", "3.9")
        log(f"registry {registry.host}: {busybox_ref}, {pause_ref}")

        runners: dict[str, Callable[..., Timings]] = {}
        crit = CriadaptRuntime(base / "criadapt", CRIADAPT_NET, cgroup_parent)
        stack.callback(crit.stop)
        crit.start()
        assert crit.proc is not None and crit.client is not None
        sweeper.managed.add(crit.proc.pid)
        crit.pull(busybox_ref)
        crit.image = busybox_ref
        versions[CRIADAPT] = crit.version
        runners[CRIADAPT] = crit.pod
        log(f"{crit.version} ready")

        ctrd: ContainerdRuntime | None = None
        if not args.no_containerd and shutil.which("containerd") is not None:
            ctrd = ContainerdRuntime(
                base / "containerd", CONTAINERD_NET, cgroup_parent, registry.host, pause_ref
            )
            stack.callback(ctrd.stop)
            ctrd.start()
            assert ctrd.proc is not None
            sweeper.managed.add(ctrd.proc.pid)
            ctrd.pull(pause_ref)
            ctrd.pull(busybox_ref)
            ctrd.image = busybox_ref
            versions[CONTAINERD] = f"{ctrd.version} (`{run(['containerd', '--version']).strip()}`)"
            runners[CONTAINERD] = ctrd.pod
            log(f"{ctrd.version} ready")

        if not args.no_floor:
            floor = RuncFloor(
                base / "floor", cgroup_parent, separate_namespaces=args.floor_separate_namespaces
            )
            stack.callback(floor.stop)
            floor.start()
            versions[FLOOR] = floor.version
            runners[FLOOR] = floor.pod

        results = {name: collections.defaultdict(list) for name in runners}
        names = list(runners)
        for round_ in range(args.warmup + args.pods):
            warm = round_ < args.warmup
            order = names[round_ % len(names) :] + names[: round_ % len(names)]
            for name in order:
                times = runners[name](round_, check=warm)
                if not warm:
                    for key, value in times.items():
                        results[name][key].append(value)
            reap_orphans(sweeper.managed)
            if round_ % 10 == 9 or round_ == args.warmup - 1:
                log(f"round {round_ + 1}/{args.warmup + args.pods}")
        if not args.no_floor:
            floor_steps = dict(floor.steps)
        # the cost of an empty call (transport, (de)serialisation, dispatch) for reference
        for runtime in (crit, ctrd):
            if runtime is not None and runtime.client is not None:
                for _ in range(100):
                    t = time.perf_counter()
                    runtime.client.version()
                    results[runtime.name][VERSION].append(time.perf_counter() - t)

        if args.profile:
            suffix = {"raw": "txt", "speedscope": "json", "flamegraph": "svg"}
            out = RESULTS / (
                f"{datetime.date.today()}-pod-lifecycle-criadapt-profile."
                f"{suffix[args.profile_format]}"
            )
            RESULTS.mkdir(exist_ok=True)
            log(f"profiling {args.profile_pods} criadapt pods with py-spy → {out}")
            with py_spy(crit.proc.pid, out, args.profile_format, args.profile_rate):
                for i in range(args.profile_pods):
                    crit.pod(10_000 + i, check=False)
            if args.profile_format == "raw" and out.exists():
                profile_lines = analyse_raw(out, args.profile_rate, args.profile_pods)
                keep_handler_stacks(out)
            profile_lines.insert(0, f"Samples: `{out.relative_to(RESULTS.parent.parent)}`.")
            profile_lines.insert(1, "")
        load_end = loadavg()

    lines = report(
        args,
        results,
        versions,
        notes,
        floor_steps,
        (load_start, load_end),
        profile_lines,
    )
    RESULTS.mkdir(exist_ok=True)
    out = args.output or RESULTS / f"{datetime.date.today()}-pod-lifecycle.md"
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
