"""Pods and containers on real runc + conmon + CNI, through a real criadapt server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from criadapt import errors
from criadapt import models as m
from criadapt.client import Client
from criadapt.testing.registry import Registry
from criadapt_runc.testing import (
    RuncServer,
    ctr_config,
    log_lines,
    pod_config,
    run,
    wait_exited,
    write_cni_conflist,
)

NODE = m.NamespaceMode.NODE


@pytest.fixture
def cni_conf(tmp_path: Path) -> Iterator[str]:
    """A bridge + host-local conflist on a test-only bridge and subnet."""
    bridge = f"crt{os.getpid() % 10000}"
    yield write_cni_conflist(
        tmp_path / "cni",
        name="criadapt-test",
        bridge=bridge,
        subnet=f"10.89.{os.getpid() % 200 + 20}.0/24",
        ipam_dir=tmp_path / "ipam",
        portmap=True,
    )
    subprocess.run(["ip", "link", "delete", bridge], capture_output=True, check=False)


def test_container_lifecycle_logs_and_exit_codes(
    runc_server: Callable[..., RuncServer], busybox_ref: str, tmp_path: Path
) -> None:
    cri = runc_server().client
    assert cri is not None
    cri.pull_image(image=m.ImageSpec(image=busybox_ref))
    pconf = pod_config(tmp_path, "life", labels={"app": "life"}, annotations={"a": "1"})
    pod = cri.run_pod_sandbox(config=pconf).pod_sandbox_id
    sandbox = cri.pod_sandbox_status(pod_sandbox_id=pod).status
    assert sandbox is not None and sandbox.state == m.PodSandboxState.SANDBOX_READY
    assert sandbox.labels == {"app": "life"} and sandbox.annotations == {"a": "1"}
    script = "echo hello; echo oops >&2; printf partial; sleep 0.2; echo; exit 3"
    cconf = ctr_config("c", busybox_ref, ["sh", "-c", script], labels={"x": "y"})
    cid = cri.create_container(pod_sandbox_id=pod, config=cconf, sandbox_config=pconf)
    created = cri.container_status(container_id=cid.container_id).status
    assert created is not None and created.state == m.ContainerState.CONTAINER_CREATED
    cri.start_container(container_id=cid.container_id)
    status = wait_exited(cri, cid.container_id)
    assert status.state == m.ContainerState.CONTAINER_EXITED
    assert status.exit_code == 3
    assert status.reason == "Error"
    assert 0 < status.created_at <= status.started_at <= status.finished_at
    assert status.labels == {"x": "y"}
    assert status.log_path == str(tmp_path / "logs" / "life" / "c" / "0.log")
    assert status.image_id == cri.image_status(image=m.ImageSpec(image=busybox_ref)).image.id  # type: ignore[union-attr]
    lines = log_lines(status.log_path)
    assert ("stdout", "F", "hello") in lines
    assert ("stderr", "F", "oops") in lines
    assert ("stdout", "P", "partial") in lines
    ok = run(cri, pod, pconf, ctr_config("ok", busybox_ref, ["true"]))
    done = wait_exited(cri, ok)
    assert (done.exit_code, done.reason) == (0, "Completed")
    with pytest.raises(errors.FailedPrecondition):
        cri.start_container(container_id=ok)
    cri.stop_pod_sandbox(pod_sandbox_id=pod)
    cri.remove_pod_sandbox(pod_sandbox_id=pod)
    assert cri.list_containers().containers == ()


def test_stop_with_grace_and_with_kill(
    runc_server: Callable[..., RuncServer], busybox_ref: str, tmp_path: Path
) -> None:
    cri = runc_server().client
    assert cri is not None
    cri.pull_image(image=m.ImageSpec(image=busybox_ref))
    pconf = pod_config(tmp_path, "stop")
    pod = cri.run_pod_sandbox(config=pconf).pod_sandbox_id
    graceful = run(
        cri,
        pod,
        pconf,
        ctr_config(
            "graceful",
            busybox_ref,
            ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.1; done"],
        ),
    )
    stubborn = run(
        cri,
        pod,
        pconf,
        ctr_config(
            "stubborn", busybox_ref, ["sh", "-c", "trap '' TERM; while true; do sleep 0.1; done"]
        ),
    )
    time.sleep(0.5)
    started = time.monotonic()
    cri.stop_container(container_id=graceful, timeout=10)
    assert time.monotonic() - started < 5
    status = cri.container_status(container_id=graceful).status
    assert status is not None and (status.exit_code, status.reason) == (0, "Completed")
    started = time.monotonic()
    cri.stop_container(container_id=stubborn, timeout=1)
    assert 0.9 < time.monotonic() - started < 10
    status = cri.container_status(container_id=stubborn).status
    assert status is not None and status.exit_code == 137
    # idempotent stop and remove, also of unknown ids
    cri.stop_container(container_id=stubborn, timeout=1)
    cri.stop_container(container_id="f" * 64, timeout=1)
    cri.remove_container(container_id=stubborn)
    cri.remove_container(container_id=stubborn)
    # a running container is force-removed
    running = run(cri, pod, pconf, ctr_config("running", busybox_ref, ["sleep", "1000"]))
    cri.remove_container(container_id=running)
    with pytest.raises(errors.NotFound):
        cri.container_status(container_id=running)
    cri.remove_pod_sandbox(pod_sandbox_id=pod)
    cri.remove_pod_sandbox(pod_sandbox_id=pod)
    cri.stop_pod_sandbox(pod_sandbox_id=pod)


def test_exec_sync(
    runc_server: Callable[..., RuncServer], busybox_ref: str, tmp_path: Path
) -> None:
    cri = runc_server().client
    assert cri is not None
    cri.pull_image(image=m.ImageSpec(image=busybox_ref))
    pconf = pod_config(tmp_path, "exec")
    pod = cri.run_pod_sandbox(config=pconf).pod_sandbox_id
    cid = run(
        cri,
        pod,
        pconf,
        ctr_config(
            "c", busybox_ref, ["sleep", "1000"], envs=[m.KeyValue(key="GREETING", value="hi")]
        ),
    )
    result = cri.exec_sync(container_id=cid, cmd=["sh", "-c", "echo $GREETING; echo e >&2; exit 4"])
    assert (result.stdout, result.stderr, result.exit_code) == (b"hi\n", b"e\n", 4)
    started = time.monotonic()
    with pytest.raises(errors.DeadlineExceeded):
        cri.exec_sync(container_id=cid, cmd=["sleep", "30"], timeout=1)
    assert time.monotonic() - started < 5
    left = cri.exec_sync(container_id=cid, cmd=["ps", "-o", "comm"]).stdout.decode().split()
    assert left.count("sleep") == 1, left  # only the container's own sleep
    cri.stop_container(container_id=cid, timeout=0)
    with pytest.raises(errors.FailedPrecondition):
        cri.exec_sync(container_id=cid, cmd=["true"])
    cri.remove_pod_sandbox(pod_sandbox_id=pod)


def test_cni_pod_with_two_containers_sharing_the_network(
    runc_server: Callable[..., RuncServer], busybox_ref: str, tmp_path: Path, cni_conf: str
) -> None:
    server = runc_server(cni_conf)
    cri = server.client
    assert cri is not None
    status = cri.status().status
    assert status is not None
    conditions = {c.type: c.status for c in status.conditions}
    assert conditions == {"RuntimeReady": True, "NetworkReady": True}
    cri.pull_image(image=m.ImageSpec(image=busybox_ref))
    pconf = pod_config(tmp_path, "web", host_network=False)
    pod = cri.run_pod_sandbox(config=pconf).pod_sandbox_id
    sandbox = cri.pod_sandbox_status(pod_sandbox_id=pod).status
    assert sandbox is not None and sandbox.network is not None
    assert sandbox.network.ip.startswith("10.89.")
    www = "mkdir -p /www && echo served-from-pod > /www/index.html && httpd -f -p 8080 -h /www"
    run(cri, pod, pconf, ctr_config("server", busybox_ref, ["sh", "-c", www]))
    fetch = "for i in 1 2 3 4 5 6 7 8 9 10; do wget -qO- http://127.0.0.1:8080/ && exit 0; sleep 0.3; done; exit 1"
    client = run(cri, pod, pconf, ctr_config("client", busybox_ref, ["sh", "-c", fetch]))
    done = wait_exited(cri, client)
    assert done.exit_code == 0
    assert ("stdout", "F", "served-from-pod") in log_lines(done.log_path)
    server_ids = [c.id for c in cri.list_containers().containers if c.id != client]
    hostname = cri.exec_sync(container_id=server_ids[0], cmd=["hostname"]).stdout
    assert hostname == b"web\n"
    veths_before = veths()
    cri.stop_pod_sandbox(pod_sandbox_id=pod)
    stopped = cri.pod_sandbox_status(pod_sandbox_id=pod).status
    assert stopped is not None and stopped.state == m.PodSandboxState.SANDBOX_NOTREADY
    ipam = tmp_path / "ipam" / "criadapt-test"
    assert not [p for p in ipam.iterdir() if p.name.startswith("10.89.")]
    assert len(veths()) == len(veths_before) - 1  # the pod's host-side veth is gone
    cri.remove_pod_sandbox(pod_sandbox_id=pod)
    assert_no_leaks(server.base, serving=True, ids=[pod, client, *server_ids])


def test_failed_create_can_be_retried_with_the_same_name(
    runc_server: Callable[..., RuncServer], busybox_ref: str, tmp_path: Path
) -> None:
    cri = runc_server().client
    assert cri is not None
    cri.pull_image(image=m.ImageSpec(image=busybox_ref))
    pconf = pod_config(tmp_path, "retry")
    pod = cri.run_pod_sandbox(config=pconf).pod_sandbox_id
    bad = ctr_config(
        "c",
        busybox_ref,
        ["true"],
        mounts=[m.Mount(container_path="/data", host_path=str(tmp_path / "does-not-exist"))],
    )
    with pytest.raises(errors.InvalidArgument, match="does-not-exist"):
        cri.create_container(pod_sandbox_id=pod, config=bad, sandbox_config=pconf)
    good = ctr_config("c", busybox_ref, ["true"])
    cid = cri.create_container(pod_sandbox_id=pod, config=good, sandbox_config=pconf).container_id
    with pytest.raises(errors.AlreadyExists):
        cri.create_container(pod_sandbox_id=pod, config=good, sandbox_config=pconf)
    with pytest.raises(errors.NotFound):
        cri.create_container(pod_sandbox_id="0" * 64, config=good, sandbox_config=pconf)
    with pytest.raises(errors.NotFound):
        cri.create_container(
            pod_sandbox_id=pod,
            config=ctr_config("x", "never/pulled:1", ["true"]),
            sandbox_config=pconf,
        )
    assert cid
    cri.remove_pod_sandbox(pod_sandbox_id=pod)
    # the sandbox name is free again
    again = cri.run_pod_sandbox(config=pconf).pod_sandbox_id
    cri.remove_pod_sandbox(pod_sandbox_id=again)


def test_list_filters(
    runc_server: Callable[..., RuncServer], busybox_ref: str, tmp_path: Path
) -> None:
    cri = runc_server().client
    assert cri is not None
    cri.pull_image(image=m.ImageSpec(image=busybox_ref))
    one = pod_config(tmp_path, "one", labels={"tier": "a"})
    two = pod_config(tmp_path, "two", labels={"tier": "b"})
    p1 = cri.run_pod_sandbox(config=one).pod_sandbox_id
    p2 = cri.run_pod_sandbox(config=two).pod_sandbox_id
    c1 = run(cri, p1, one, ctr_config("c", busybox_ref, ["sleep", "100"], labels={"k": "1"}))
    c2 = cri.create_container(
        pod_sandbox_id=p2, config=ctr_config("c", busybox_ref, ["sleep", "100"]), sandbox_config=two
    ).container_id
    sel = m.PodSandboxFilter(label_selector={"tier": "b"})
    assert [p.id for p in cri.list_pod_sandbox(filter=sel).items] == [p2]
    assert [p.id for p in cri.list_pod_sandbox(filter=m.PodSandboxFilter(id=p1[:10])).items] == [p1]
    running = m.ContainerFilter(
        state=m.ContainerStateValue(state=m.ContainerState.CONTAINER_RUNNING)
    )
    assert [c.id for c in cri.list_containers(filter=running).containers] == [c1]
    by_pod = m.ContainerFilter(pod_sandbox_id=p2)
    assert [c.id for c in cri.list_containers(filter=by_pod).containers] == [c2]
    by_label = m.ContainerFilter(label_selector={"k": "1"})
    assert [c.id for c in cri.list_containers(filter=by_label).containers] == [c1]
    cri.remove_pod_sandbox(pod_sandbox_id=p1)
    cri.remove_pod_sandbox(pod_sandbox_id=p2)


SERVE_CONFIG = """
backend = "runc"
listen = "unix://{sock}"
root = "{root}"
state = "{state}"
"""


def test_daemon_sigkill_and_restart(registry: Registry, busybox_ref: str, tmp_path: Path) -> None:
    """Containers keep running while criadapt is dead; exits meanwhile are recorded."""
    sock = tmp_path / "cri.sock"
    config = tmp_path / "criadapt.toml"
    config.write_text(
        SERVE_CONFIG.format(sock=sock, root=tmp_path / "root", state=tmp_path / "state")
    )

    def serve() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "criadapt", "serve", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with Client(f"unix://{sock}", timeout=2) as probe:
                    probe.version()
                    return proc
            except errors.CriError:
                time.sleep(0.2)
        proc.kill()
        raise AssertionError(proc.stderr.read().decode() if proc.stderr else "no output")

    first = serve()
    try:
        with Client(f"unix://{sock}") as cri:
            cri.pull_image(image=m.ImageSpec(image=busybox_ref))
            pconf = pod_config(tmp_path, "survivor")
            pod = cri.run_pod_sandbox(config=pconf).pod_sandbox_id
            long = run(cri, pod, pconf, ctr_config("long", busybox_ref, ["sleep", "1000"]))
            short = run(
                cri, pod, pconf, ctr_config("short", busybox_ref, ["sh", "-c", "sleep 1; exit 7"])
            )
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    time.sleep(2)  # "short" exits while nobody watches
    second = serve()
    try:
        with Client(f"unix://{sock}") as cri:
            assert [p.id for p in cri.list_pod_sandbox().items] == [pod]
            status = cri.container_status(container_id=long).status
            assert status is not None and status.state == m.ContainerState.CONTAINER_RUNNING
            status = cri.container_status(container_id=short).status
            assert status is not None and status.state == m.ContainerState.CONTAINER_EXITED
            assert status.exit_code == 7
            assert cri.exec_sync(container_id=long, cmd=["echo", "alive"]).stdout == b"alive\n"
            cri.stop_pod_sandbox(pod_sandbox_id=pod)
            cri.remove_pod_sandbox(pod_sandbox_id=pod)
            assert cri.list_pod_sandbox().items == ()
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)
    assert_no_leaks(tmp_path, ids=[pod, long, short])


def veths() -> list[str]:
    out = subprocess.run(
        ["ip", "-o", "link", "show", "type", "veth"], capture_output=True, text=True, check=True
    ).stdout
    return out.splitlines()


def assert_no_leaks(base: Path, *, serving: bool = False, ids: list[str] | None = None) -> None:
    """Nothing of ours left: processes, mounts, namespace pins, state folders.

    While a server runs (``serving``) its private mount of the namespace folder stays.
    """
    text = str(base)
    with open("/proc/self/mountinfo", encoding="utf-8") as info:
        mounts = [line.split()[4] for line in info if text in line.split()[4]]
    allowed = [str(base / "state" / "runc" / "ns")] if serving else []
    assert mounts in ([], allowed), mounts
    procs = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if text.encode() in cmdline and b"pytest" not in cmdline:
                procs.append(cmdline.decode(errors="replace"))
    assert procs == [], procs
    for folder in ("pods", "containers"):
        records = base / "root" / "runc" / folder
        assert not records.exists() or list(records.iterdir()) == []
    for object_id in ids or []:  # no cgroup of these containers in any hierarchy
        left = list(Path("/sys/fs/cgroup").glob(f"*/criadapt/{object_id}"))
        left += list(Path("/sys/fs/cgroup").glob(f"*/*/{object_id}"))
        assert left == [], left
    assert not list((base / "state" / "runc" / "ns").glob("*")), "namespace pins left"


def test_no_zombie_conmon_after_exit(
    runc_server: Callable[..., RuncServer], busybox_ref: str, tmp_path: Path
) -> None:
    server = runc_server()
    cri = server.client
    assert cri is not None
    cri.pull_image(image=m.ImageSpec(image=busybox_ref))
    pconf = pod_config(tmp_path, "zombie")
    pod = cri.run_pod_sandbox(config=pconf).pod_sandbox_id
    cid = run(cri, pod, pconf, ctr_config("c", busybox_ref, ["true"]))
    wait_exited(cri, cid)
    process = server.pm.get_plugin("runc-backend").oci("").process(cid)
    assert process is not None
    time.sleep(2.5)  # the reaper sweeps every 2 s
    stat = Path(f"/proc/{process.conmon_pid}/stat")
    assert not stat.exists() or stat.read_bytes().split(b") ")[1][:1] != b"Z"
    cri.remove_pod_sandbox(pod_sandbox_id=pod)


def test_shared_pid_namespace_uses_an_infra_process(
    runc_server: Callable[..., RuncServer], busybox_ref: str, tmp_path: Path
) -> None:
    cri = runc_server().client
    assert cri is not None
    cri.pull_image(image=m.ImageSpec(image=busybox_ref))
    base = pod_config(tmp_path, "shared")
    assert base.linux is not None and base.linux.security_context is not None
    ns = m.NamespaceOption(network=NODE, pid=m.NamespaceMode.POD, ipc=m.NamespaceMode.POD)
    pconf = m.PodSandboxConfig(
        metadata=base.metadata,
        hostname="shared",
        log_directory=base.log_directory,
        linux=m.LinuxPodSandboxConfig(
            security_context=m.LinuxSandboxSecurityContext(namespace_options=ns)
        ),
    )
    pod = cri.run_pod_sandbox(config=pconf).pod_sandbox_id
    shared_pid = m.LinuxContainerConfig(
        security_context=m.LinuxContainerSecurityContext(
            namespace_options=m.NamespaceOption(network=NODE, pid=m.NamespaceMode.POD)
        )
    )
    a = run(cri, pod, pconf, ctr_config("a", busybox_ref, ["sleep", "1000"], linux=shared_pid))
    b = run(cri, pod, pconf, ctr_config("b", busybox_ref, ["sleep", "2000"], linux=shared_pid))
    procs = cri.exec_sync(container_id=b, cmd=["ps", "-o", "pid,args"]).stdout.decode()
    assert "catatonit" in procs and "sleep 1000" in procs and "sleep 2000" in procs
    first = procs.splitlines()[1].split()
    assert first[0] == "1" and "catatonit" in first[1]
    assert a
    cri.stop_pod_sandbox(pod_sandbox_id=pod)
    cri.remove_pod_sandbox(pod_sandbox_id=pod)


def test_lists_do_not_wait_behind_a_slow_stop(
    runc_server: Callable[..., RuncServer], busybox_ref: str, tmp_path: Path
) -> None:
    import threading

    server = runc_server()
    cri = server.client
    assert cri is not None
    cri.pull_image(image=m.ImageSpec(image=busybox_ref))
    pconf = pod_config(tmp_path, "slowstop")
    pod = cri.run_pod_sandbox(config=pconf).pod_sandbox_id
    stubborn = run(
        cri,
        pod,
        pconf,
        ctr_config("c", busybox_ref, ["sh", "-c", "trap '' TERM; while true; do sleep 0.1; done"]),
    )
    time.sleep(0.3)
    stopper = threading.Thread(
        target=lambda: Client(server.config.listen, timeout=60).stop_container(
            container_id=stubborn, timeout=4
        )
    )
    stopper.start()
    time.sleep(0.5)
    slowest = 0.0
    for _ in range(10):
        for call in (
            lambda: cri.list_containers(),
            lambda: cri.list_pod_sandbox(),
            lambda: cri.container_status(container_id=stubborn),
            lambda: cri.pod_sandbox_status(pod_sandbox_id=pod),
        ):
            started = time.monotonic()
            call()
            slowest = max(slowest, time.monotonic() - started)
    assert stopper.is_alive(), "the stop should still be in its grace period"
    assert slowest < 0.5, slowest
    stopper.join(30)
    status = cri.container_status(container_id=stubborn).status
    assert status is not None and status.exit_code == 137
    cri.remove_pod_sandbox(pod_sandbox_id=pod)


def test_configured_sandbox_image_runs_as_infra_container(
    runc_server: Callable[..., RuncServer], registry: Registry, busybox_ref: str, tmp_path: Path
) -> None:
    from criadapt.testing.images import FileSpec, build_image, tar_layer

    catatonit = Path("/usr/bin/catatonit").read_bytes()
    pause = build_image(
        [
            tar_layer(
                {
                    "catatonit": FileSpec.file(catatonit, mode=0o755),
                    "proc": FileSpec.dir(),
                    "dev": FileSpec.dir(),
                    "sys": FileSpec.dir(),
                    "etc": FileSpec.dir(),
                }
            )
        ],
        config={"Entrypoint": ["/catatonit", "-P"]},
    )
    pause_ref = registry.push(pause, "pods/pause", "3.10")
    server = runc_server(f'[backends.runc]\nsandbox_image = "{pause_ref}"\n')
    cri = server.client
    assert cri is not None
    cri.pull_image(image=m.ImageSpec(image=busybox_ref))
    pconf = pod_config(tmp_path, "paused")
    pod = cri.run_pod_sandbox(config=pconf).pod_sandbox_id
    backend = server.pm.get_plugin("runc-backend")
    state = backend.oci("").state(pod)
    assert state is not None and state["status"] == "running"
    assert (
        cri.image_status(image=m.ImageSpec(image=pause_ref)).image is not None
    )  # pulled on demand
    cid = run(cri, pod, pconf, ctr_config("c", busybox_ref, ["sleep", "100"]))
    assert cri.exec_sync(container_id=cid, cmd=["true"]).exit_code == 0
    cri.stop_pod_sandbox(pod_sandbox_id=pod)
    assert backend.oci("").state(pod) is None
    cri.remove_pod_sandbox(pod_sandbox_id=pod)
    assert_no_leaks(server.base, serving=True, ids=[pod, cid])
