"""Events, log reopening, resource updates and OOM on real runc containers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from criadapt import errors
from criadapt import models as m
from criadapt.client import Client
from criadapt_runc.testing import RuncServer, ctr_config, pod_config, run, wait_exited

E = m.ContainerEventType


def memory_cgroup(container_id: str) -> Path:
    return Path("/sys/fs/cgroup/memory/criadapt") / container_id


def test_events_are_observed_in_order(
    runc_server: Callable[..., RuncServer],
    busybox_ref: str,
    tmp_path: Path,
) -> None:
    server = runc_server()
    cri = server.client
    assert cri is not None
    cri.pull_image(image=m.ImageSpec(image=busybox_ref))
    events: list[m.ContainerEventResponse] = []
    listener = Client(server.config.listen, timeout=None)
    stream = listener.get_container_events()
    ready = threading.Event()

    def consume() -> None:
        ready.set()
        for event in stream:
            events.append(event)
            if len(events) >= 8:
                return

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    ready.wait(5)
    time.sleep(0.3)  # the subscription is in place
    pconf = pod_config(tmp_path, "events")
    pod = cri.run_pod_sandbox(config=pconf).pod_sandbox_id
    cid = run(cri, pod, pconf, ctr_config("c", busybox_ref, ["sh", "-c", "sleep 0.5; exit 2"]))
    wait_exited(cri, cid)
    time.sleep(1.5)  # the exit monitor ticks every second
    cri.remove_container(container_id=cid)
    cri.stop_pod_sandbox(pod_sandbox_id=pod)
    cri.remove_pod_sandbox(pod_sandbox_id=pod)
    thread.join(10)
    stream.close()
    listener.close()
    got = [(e.container_id, e.container_event_type) for e in events]
    assert got == [
        (pod, E.CONTAINER_CREATED_EVENT),
        (pod, E.CONTAINER_STARTED_EVENT),
        (cid, E.CONTAINER_CREATED_EVENT),
        (cid, E.CONTAINER_STARTED_EVENT),
        (cid, E.CONTAINER_STOPPED_EVENT),
        (cid, E.CONTAINER_DELETED_EVENT),
        (pod, E.CONTAINER_STOPPED_EVENT),
        (pod, E.CONTAINER_DELETED_EVENT),
    ]
    stopped = events[4]
    assert stopped.pod_sandbox_status is not None and stopped.pod_sandbox_status.id == pod
    statuses = {s.id: s for s in stopped.containers_statuses}
    assert statuses[cid].state == m.ContainerState.CONTAINER_EXITED
    assert statuses[cid].exit_code == 2
    assert [e.created_at for e in events] == sorted(e.created_at for e in events)


def test_reopen_container_log_after_rotation(
    runc_server: Callable[..., RuncServer],
    busybox_ref: str,
    tmp_path: Path,
) -> None:
    cri = runc_server().client
    assert cri is not None
    cri.pull_image(image=m.ImageSpec(image=busybox_ref))
    pconf = pod_config(tmp_path, "rotate")
    pod = cri.run_pod_sandbox(config=pconf).pod_sandbox_id
    script = "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.05; done"
    cid = run(cri, pod, pconf, ctr_config("c", busybox_ref, ["sh", "-c", script]))
    status = cri.container_status(container_id=cid).status
    assert status is not None
    log = Path(status.log_path)
    time.sleep(0.5)
    rotated = log.with_name(log.name + ".20261129-000000")
    log.rename(rotated)  # what kubelet does before calling ReopenContainerLog
    cri.reopen_container_log(container_id=cid)
    time.sleep(0.5)
    assert log.exists() and rotated.exists()
    assert "stdout F line" in log.read_text()
    last_old = rotated.read_text().splitlines()[-1].rsplit(" ", 1)[-1]
    first_new = log.read_text().splitlines()[0].rsplit(" ", 1)[-1]
    assert int(first_new) > int(last_old)
    cri.stop_container(container_id=cid, timeout=0)
    log.unlink()
    with pytest.raises(errors.FailedPrecondition):
        cri.reopen_container_log(container_id=cid)
    assert not log.exists()  # after an error no new file is created
    cri.remove_pod_sandbox(pod_sandbox_id=pod)


def test_update_container_resources_applies_live(
    runc_server: Callable[..., RuncServer],
    busybox_ref: str,
    tmp_path: Path,
) -> None:
    cri = runc_server().client
    assert cri is not None
    cri.pull_image(image=m.ImageSpec(image=busybox_ref))
    pconf = pod_config(tmp_path, "resources")
    pod = cri.run_pod_sandbox(config=pconf).pod_sandbox_id
    limits = m.LinuxContainerResources(memory_limit_in_bytes=64 << 20, cpu_shares=256)
    cid = run(
        cri,
        pod,
        pconf,
        ctr_config(
            "c", busybox_ref, ["sleep", "1000"], linux=m.LinuxContainerConfig(resources=limits)
        ),
    )
    cgroup = memory_cgroup(cid)
    assert int((cgroup / "memory.limit_in_bytes").read_text()) == 64 << 20
    new = m.LinuxContainerResources(memory_limit_in_bytes=128 << 20, cpu_shares=512)
    cri.update_container_resources(container_id=cid, linux=new)
    assert int((cgroup / "memory.limit_in_bytes").read_text()) == 128 << 20
    shares = Path("/sys/fs/cgroup/cpu/criadapt") / cid / "cpu.shares"
    assert int(shares.read_text()) == 512
    status = cri.container_status(container_id=cid).status
    assert status is not None and status.resources is not None
    assert status.resources.linux is not None
    assert status.resources.linux.memory_limit_in_bytes == 128 << 20
    cri.stop_container(container_id=cid, timeout=0)
    with pytest.raises(errors.FailedPrecondition):
        cri.update_container_resources(container_id=cid, linux=new)
    with pytest.raises(errors.NotFound):
        cri.update_container_resources(container_id="0" * 64, linux=new)
    cri.remove_pod_sandbox(pod_sandbox_id=pod)


def test_oom_killed_container(
    runc_server: Callable[..., RuncServer],
    busybox_ref: str,
    tmp_path: Path,
) -> None:
    cri = runc_server().client
    assert cri is not None
    cri.pull_image(image=m.ImageSpec(image=busybox_ref))
    pconf = pod_config(tmp_path, "oom")
    pod = cri.run_pod_sandbox(config=pconf).pod_sandbox_id
    limits = m.LinuxContainerResources(memory_limit_in_bytes=16 << 20)
    cid = run(
        cri,
        pod,
        pconf,
        ctr_config(
            "c", busybox_ref, ["tail", "/dev/zero"], linux=m.LinuxContainerConfig(resources=limits)
        ),
    )
    status = wait_exited(cri, cid, timeout=30)
    assert status.state == m.ContainerState.CONTAINER_EXITED
    assert (status.exit_code, status.reason) == (137, "OOMKilled")
    cri.remove_pod_sandbox(pod_sandbox_id=pod)


def proc_status(cri: Client, cid: str) -> dict[str, str]:
    text = cri.exec_sync(container_id=cid, cmd=["cat", "/proc/self/status"]).stdout.decode()
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def test_security_context(
    runc_server: Callable[..., RuncServer], busybox_ref: str, tmp_path: Path
) -> None:
    cri = runc_server().client
    assert cri is not None
    cri.pull_image(image=m.ImageSpec(image=busybox_ref))
    pconf = pod_config(tmp_path, "secure")
    pod = cri.run_pod_sandbox(config=pconf).pod_sandbox_id

    def start(name: str, sc: m.LinuxContainerSecurityContext) -> str:
        linux = m.LinuxContainerConfig(security_context=sc)
        return run(cri, pod, pconf, ctr_config(name, busybox_ref, ["sleep", "1000"], linux=linux))

    default = start("default", m.LinuxContainerSecurityContext())
    assert proc_status(cri, default)["Seccomp"].strip() == "2"  # unset means RuntimeDefault
    unconfined = start(
        "unconfined",
        m.LinuxContainerSecurityContext(
            seccomp=m.SecurityProfile(profile_type=m.ProfileType.Unconfined)
        ),
    )
    assert proc_status(cri, unconfined)["Seccomp"].strip() == "0"
    locked = start(
        "locked",
        m.LinuxContainerSecurityContext(
            run_as_user=m.Int64Value(value=1000),
            run_as_group=m.Int64Value(value=2000),
            supplemental_groups=[3000],
            readonly_rootfs=True,
            no_new_privs=True,
            capabilities=m.Capability(drop_capabilities=["ALL"]),
        ),
    )
    ids = cri.exec_sync(container_id=locked, cmd=["id"]).stdout.decode()
    assert "uid=1000" in ids and "gid=2000" in ids and "3000" in ids
    status = proc_status(cri, locked)
    assert int(status["CapEff"], 16) == 0
    assert status["NoNewPrivs"].strip() == "1"
    write = cri.exec_sync(container_id=locked, cmd=["touch", "/new-file"])
    assert write.exit_code != 0 and b"Read-only file system" in write.stderr
    with pytest.raises(errors.InvalidArgument, match="privileged"):
        start("privileged", m.LinuxContainerSecurityContext(privileged=True))
    with pytest.raises(errors.InvalidArgument):
        start(
            "badseccomp",
            m.LinuxContainerSecurityContext(
                seccomp=m.SecurityProfile(
                    profile_type=m.ProfileType.Localhost, localhost_ref="/no/such/profile.json"
                )
            ),
        )
    cri.remove_pod_sandbox(pod_sandbox_id=pod)


def test_stats_are_real_and_moving(
    runc_server: Callable[..., RuncServer], busybox_ref: str, tmp_path: Path
) -> None:
    cri = runc_server().client
    assert cri is not None
    cri.pull_image(image=m.ImageSpec(image=busybox_ref))
    pconf = pod_config(tmp_path, "stats", labels={"app": "stats"})
    pod = cri.run_pod_sandbox(config=pconf).pod_sandbox_id
    burn = "dd if=/dev/zero of=/scratch bs=1M count=3 2>/dev/null; while true; do :; done"
    busy = run(
        cri,
        pod,
        pconf,
        ctr_config("busy", busybox_ref, ["sh", "-c", burn], labels={"role": "busy"}),
    )
    idle = run(cri, pod, pconf, ctr_config("idle", busybox_ref, ["sleep", "1000"]))
    time.sleep(2.5)  # two samples of the 1 s sampler
    first = cri.container_stats(container_id=busy).stats
    assert first is not None and first.cpu is not None and first.memory is not None
    assert first.attributes is not None and first.attributes.labels == {"role": "busy"}
    assert first.cpu.usage_nano_cores is not None
    assert first.cpu.usage_nano_cores.value > 100_000_000  # a busy loop: > 0.1 core
    assert first.memory.working_set_bytes is not None
    assert first.memory.working_set_bytes.value > 0
    assert first.writable_layer is not None and first.writable_layer.used_bytes is not None
    assert first.writable_layer.used_bytes.value >= 3 << 20  # the 3 MiB file it wrote
    time.sleep(1.2)
    second = cri.container_stats(container_id=busy).stats
    assert second is not None and second.cpu is not None
    assert second.cpu.usage_core_nano_seconds is not None
    assert first.cpu.usage_core_nano_seconds is not None
    assert second.cpu.usage_core_nano_seconds.value > first.cpu.usage_core_nano_seconds.value
    listed = cri.list_container_stats(
        filter=m.ContainerStatsFilter(label_selector={"role": "busy"})
    )
    assert [s.attributes.id for s in listed.stats if s.attributes] == [busy]
    everything = cri.list_container_stats().stats
    assert {s.attributes.id for s in everything if s.attributes} == {busy, idle}
    pod_stats = cri.pod_sandbox_stats(pod_sandbox_id=pod).stats
    assert pod_stats is not None and pod_stats.linux is not None
    assert pod_stats.linux.cpu is not None and pod_stats.linux.cpu.usage_nano_cores is not None
    assert pod_stats.linux.cpu.usage_nano_cores.value > 100_000_000
    assert pod_stats.linux.process is not None and pod_stats.linux.process.process_count is not None
    assert pod_stats.linux.process.process_count.value >= 2
    assert len(pod_stats.linux.containers) == 2
    listed_pods = cri.list_pod_sandbox_stats(
        filter=m.PodSandboxStatsFilter(label_selector={"app": "stats"})
    )
    assert [s.attributes.id for s in listed_pods.stats if s.attributes] == [pod]
    with pytest.raises(errors.NotFound):
        cri.container_stats(container_id="0" * 64)
    cri.remove_pod_sandbox(pod_sandbox_id=pod)
