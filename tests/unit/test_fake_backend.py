"""The in-memory reference backend (criadapt.testing.fake), driven through the hooks.

Every call builds the RPC's request model first (so the same validation as in the server
runs) and passes all of its fields, plus ``call``, to ``pm.hook.criadapt_<rpc>``.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import attrs
import pluggy
import pytest

from criadapt import errors
from criadapt import models as m
from criadapt.call import CallContext
from criadapt.plugin import check_backend, get_plugin_manager
from criadapt.rpcs import BY_NAME
from criadapt.testing import fake

BUSYBOX = "docker.io/library/busybox:latest"
BUSYBOX_ID = "sha256:" + hashlib.sha256(BUSYBOX.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# helpers


@pytest.fixture
def pm() -> Iterator[pluggy.PluginManager]:
    manager = get_plugin_manager()
    fake.criadapt_configure(config=None, pluginmanager=manager)
    yield manager
    fake.criadapt_unconfigure(config=None)


def rpc(
    pm: pluggy.PluginManager, name: str, *, call: CallContext | None = None, **fields: Any
) -> Any:
    """Call RPC ``name`` with every field of its request (validated as the server would)."""
    spec = BY_NAME[name]
    request = spec.request(**fields)
    kwargs = {field.name: getattr(request, field.name) for field in attrs.fields(spec.request)}
    return getattr(pm.hook, spec.hook)(**kwargs, call=call or CallContext(rpc=name))


def sandbox_config(
    name: str = "pod",
    *,
    attempt: int = 0,
    uid: str = "uid-1",
    labels: dict[str, str] | None = None,
    host_network: bool = False,
    privileged: bool = False,
    log_directory: str = "/var/log/pods/ns_pod_uid-1",
) -> m.PodSandboxConfig:
    return m.PodSandboxConfig(
        metadata=m.PodSandboxMetadata(name=name, uid=uid, namespace="ns", attempt=attempt),
        hostname=name,
        log_directory=log_directory,
        labels=labels if labels is not None else {"app": name},
        annotations={"note": "Kept As-Is ✓", "weird key!": "v"},
        dns_config=m.DNSConfig(servers=("10.96.0.10",), searches=("ns.svc.cluster.local",)),
        linux=m.LinuxPodSandboxConfig(
            security_context=m.LinuxSandboxSecurityContext(
                privileged=privileged,
                namespace_options=m.NamespaceOption(
                    network=m.NamespaceMode.NODE if host_network else m.NamespaceMode.POD,
                    pid=m.NamespaceMode.CONTAINER,
                ),
            )
        ),
    )


def container_config(
    name: str = "app",
    *,
    attempt: int = 0,
    image: str = "busybox",
    labels: dict[str, str] | None = None,
    **kwargs: Any,
) -> m.ContainerConfig:
    kwargs.setdefault("log_path", f"{name}/{attempt}.log")
    return m.ContainerConfig(
        metadata=m.ContainerMetadata(name=name, attempt=attempt),
        image=m.ImageSpec(image=image, annotations={"a": "b"}),
        labels=labels if labels is not None else {"container": name},
        annotations={"io.kubernetes.container.hash": "1234", "free form": "x y"},
        **kwargs,
    )


def pull(pm: pluggy.PluginManager, image: str = "busybox", **spec: Any) -> str:
    return rpc(pm, "PullImage", image=m.ImageSpec(image=image, **spec)).image_ref  # type: ignore[no-any-return]


def run_sandbox(pm: pluggy.PluginManager, **kwargs: Any) -> str:
    handler = kwargs.pop("runtime_handler", "")
    response = rpc(pm, "RunPodSandbox", config=sandbox_config(**kwargs), runtime_handler=handler)
    return response.pod_sandbox_id  # type: ignore[no-any-return]


def create(pm: pluggy.PluginManager, sandbox_id: str, **kwargs: Any) -> str:
    config = container_config(**kwargs)
    response = rpc(pm, "CreateContainer", pod_sandbox_id=sandbox_id, config=config)
    return response.container_id  # type: ignore[no-any-return]


def running_container(pm: pluggy.PluginManager, **kwargs: Any) -> tuple[str, str]:
    pull(pm)
    sandbox_id = run_sandbox(pm)
    container_id = create(pm, sandbox_id, **kwargs)
    rpc(pm, "StartContainer", container_id=container_id)
    return sandbox_id, container_id


def sandbox_status(pm: pluggy.PluginManager, sandbox_id: str, verbose: bool = False) -> Any:
    return rpc(pm, "PodSandboxStatus", pod_sandbox_id=sandbox_id, verbose=verbose)


def status(pm: pluggy.PluginManager, container_id: str, verbose: bool = False) -> Any:
    return rpc(pm, "ContainerStatus", container_id=container_id, verbose=verbose)


def exec_sync(pm: pluggy.PluginManager, container_id: str, *cmd: str, timeout: int = 0) -> Any:
    return rpc(pm, "ExecSync", container_id=container_id, cmd=cmd, timeout=timeout)


# ---------------------------------------------------------------------------------------------
# runtime


def test_every_rpc_is_answered(pm: pluggy.PluginManager) -> None:
    assert check_backend(pm) == []
    info = pm.hook.criadapt_backend_info()
    assert (info.name, info.runtime_name) == ("fake", "criadapt-fake")
    assert "exec_sync" in info.capabilities and "streaming" not in info.capabilities


def test_entry_point_loads_the_module_and_unconfigure_unregisters() -> None:
    manager = get_plugin_manager("fake")
    config = object()
    manager.hook.criadapt_configure(config=config, pluginmanager=manager)
    assert manager.get_plugin(fake.BACKEND_PLUGIN_NAME) is not None
    assert check_backend(manager) == []
    manager.hook.criadapt_unconfigure(config=config)
    assert manager.get_plugin(fake.BACKEND_PLUGIN_NAME) is None


def test_version(pm: pluggy.PluginManager) -> None:
    response = rpc(pm, "Version", version="v1")
    assert response.version == "0.1.0"
    assert response.runtime_name == "criadapt-fake"
    assert response.runtime_api_version == "v1"
    assert response.runtime_version == fake.RUNTIME_VERSION
    assert fake._semver("0.1.0.dev0") == "0.1.0-dev0"
    assert fake._semver("1.2") == "1.2.0"


def test_status_and_runtime_config(pm: pluggy.PluginManager) -> None:
    response = rpc(pm, "Status", verbose=False)
    conditions = {c.type: c.status for c in response.status.conditions}
    assert conditions == {"RuntimeReady": True, "NetworkReady": True}
    assert response.info == {}
    assert [h.name for h in response.runtime_handlers] == ["", "fake"]
    verbose = rpc(pm, "Status", verbose=True)
    assert json.loads(verbose.info["info"])["runtime"] == "criadapt-fake"
    config = rpc(pm, "RuntimeConfig")
    assert config.linux.cgroup_driver == m.CgroupDriver.CGROUPFS


# ---------------------------------------------------------------------------------------------
# sandboxes


def test_sandbox_lifecycle(pm: pluggy.PluginManager) -> None:
    config = sandbox_config()
    sandbox_id = rpc(pm, "RunPodSandbox", config=config, runtime_handler="").pod_sandbox_id
    assert len(sandbox_id) == 64 and int(sandbox_id, 16) >= 0

    response = sandbox_status(pm, sandbox_id)
    got = response.status
    assert got.id == sandbox_id
    assert got.metadata == config.metadata
    assert got.state == m.PodSandboxState.SANDBOX_READY
    assert got.created_at > 0
    assert got.network.ip == "10.88.0.2"
    assert got.labels == config.labels
    assert got.annotations == config.annotations
    assert got.runtime_handler == ""
    assert got.linux.namespaces.options.pid == m.NamespaceMode.CONTAINER
    assert response.info == {}
    assert response.timestamp >= got.created_at
    assert json.loads(sandbox_status(pm, sandbox_id, verbose=True).info["info"])["id"] == sandbox_id

    rpc(pm, "StopPodSandbox", pod_sandbox_id=sandbox_id)
    stopped = sandbox_status(pm, sandbox_id).status
    assert stopped.state == m.PodSandboxState.SANDBOX_NOTREADY
    assert stopped.network.ip == ""  # reclaimed
    rpc(pm, "StopPodSandbox", pod_sandbox_id=sandbox_id)  # idempotent

    rpc(pm, "RemovePodSandbox", pod_sandbox_id=sandbox_id)
    rpc(pm, "RemovePodSandbox", pod_sandbox_id=sandbox_id)  # idempotent
    with pytest.raises(errors.NotFound):
        sandbox_status(pm, sandbox_id)
    assert rpc(pm, "ListPodSandbox", filter=None).items == ()


def test_unknown_sandbox_ids(pm: pluggy.PluginManager) -> None:
    unknown = "0" * 64
    rpc(pm, "StopPodSandbox", pod_sandbox_id=unknown)
    rpc(pm, "RemovePodSandbox", pod_sandbox_id=unknown)
    cases: list[tuple[str, dict[str, Any]]] = [
        ("PodSandboxStatus", {"verbose": False}),
        ("PodSandboxStats", {}),
        ("PortForward", {"port": (80,)}),
        ("UpdatePodSandboxResources", {}),
    ]
    for name, fields in cases:
        with pytest.raises(errors.NotFound):
            rpc(pm, name, pod_sandbox_id=unknown, **fields)
    with pytest.raises(errors.NotFound):
        create(pm, unknown)


def test_runtime_handlers(pm: pluggy.PluginManager) -> None:
    sandbox_id = run_sandbox(pm, runtime_handler="fake")
    assert sandbox_status(pm, sandbox_id).status.runtime_handler == "fake"
    with pytest.raises(errors.InvalidArgument, match="runc"):
        run_sandbox(pm, name="other", runtime_handler="runc")


def test_host_network_sandbox_has_no_ip(pm: pluggy.PluginManager) -> None:
    sandbox_id = run_sandbox(pm, host_network=True)
    got = sandbox_status(pm, sandbox_id).status
    assert got.network.ip == ""
    assert got.linux.namespaces.options.network == m.NamespaceMode.NODE


def test_sandbox_name_is_reserved_until_removed(pm: pluggy.PluginManager) -> None:
    first = run_sandbox(pm)
    with pytest.raises(errors.AlreadyExists, match=first):
        run_sandbox(pm)
    rpc(pm, "StopPodSandbox", pod_sandbox_id=first)
    with pytest.raises(errors.AlreadyExists):
        run_sandbox(pm)
    second_attempt = run_sandbox(pm, attempt=1)
    other_uid = run_sandbox(pm, uid="uid-2")
    rpc(pm, "RemovePodSandbox", pod_sandbox_id=first)
    again = run_sandbox(pm)
    assert len({first, second_attempt, other_uid, again}) == 4


def test_pod_ips_come_from_the_pod_cidr_and_are_reclaimed(pm: pluggy.PluginManager) -> None:
    rpc(pm, "UpdateRuntimeConfig", runtime_config=m.RuntimeConfig())  # nothing to do
    cidr = m.NetworkConfig(pod_cidr="10.244.1.0/24,fd00:10:244:1::/64")
    rpc(pm, "UpdateRuntimeConfig", runtime_config=m.RuntimeConfig(network_config=cidr))
    a = run_sandbox(pm, name="a")
    b = run_sandbox(pm, name="b")
    net_a = sandbox_status(pm, a).status.network
    assert net_a.ip == "10.244.1.2"
    assert [ip.ip for ip in net_a.additional_ips] == ["fd00:10:244:1::2"]
    assert sandbox_status(pm, b).status.network.ip == "10.244.1.3"
    rpc(pm, "StopPodSandbox", pod_sandbox_id=a)
    assert sandbox_status(pm, run_sandbox(pm, name="c")).status.network.ip == "10.244.1.2"
    bad = m.NetworkConfig(pod_cidr="10.0.0.0/33")
    with pytest.raises(errors.InvalidArgument):
        rpc(pm, "UpdateRuntimeConfig", runtime_config=m.RuntimeConfig(network_config=bad))


def test_list_pod_sandbox_filters(
    pm: pluggy.PluginManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = iter(["aa11" + "0" * 60, "aa22" + "0" * 60, "bb33" + "0" * 60])
    monkeypatch.setattr("secrets.token_hex", lambda n: next(ids))
    a = run_sandbox(pm, name="a", labels={"app": "web", "tier": "front"})
    b = run_sandbox(pm, name="b", labels={"app": "web", "tier": "back"})
    c = run_sandbox(pm, name="c", labels={"app": "db"})
    rpc(pm, "StopPodSandbox", pod_sandbox_id=c)

    def listed(**filter_fields: Any) -> list[str]:
        response = rpc(pm, "ListPodSandbox", filter=m.PodSandboxFilter(**filter_fields))
        return [item.id for item in response.items]

    assert [i.id for i in rpc(pm, "ListPodSandbox", filter=None).items] == [a, b, c]
    assert listed(id=b) == [b]
    assert listed(id="aa1") == [a]  # a unique prefix
    assert listed(id="aa") == []  # ambiguous: exact match only
    assert listed(id="zz") == []
    ready = m.PodSandboxStateValue(state=m.PodSandboxState.SANDBOX_READY)
    assert listed(state=ready) == [a, b]
    assert listed(label_selector={"app": "web"}) == [a, b]
    assert listed(label_selector={"app": "web", "tier": "back"}) == [b]
    assert listed(label_selector={"app": "web"}, state=ready, id="aa2") == [b]
    assert listed(label_selector={"missing": "x"}) == []
    item = rpc(pm, "ListPodSandbox", filter=m.PodSandboxFilter(id=a)).items[0]
    assert item.annotations == sandbox_config().annotations
    assert item.created_at > 0 and item.metadata.name == "a"


# ---------------------------------------------------------------------------------------------
# containers


def test_container_lifecycle(pm: pluggy.PluginManager) -> None:
    image_ref = pull(pm)
    sandbox_id = run_sandbox(pm)
    mount = m.Mount(container_path="/data", host_path="/srv/data", readonly=True)
    resources = m.LinuxContainerResources(cpu_shares=512, memory_limit_in_bytes=64 * 2**20)
    config = container_config(mounts=(mount,), linux=m.LinuxContainerConfig(resources=resources))
    container_id = rpc(
        pm, "CreateContainer", pod_sandbox_id=sandbox_id, config=config, sandbox_config=None
    ).container_id

    created = status(pm, container_id).status
    assert created.id == container_id
    assert created.metadata == config.metadata
    assert created.state == m.ContainerState.CONTAINER_CREATED
    assert created.created_at > 0
    assert (created.started_at, created.finished_at, created.exit_code) == (0, 0, 0)
    assert created.image == config.image
    assert created.image_ref == created.image_id == image_ref == BUSYBOX_ID
    assert created.labels == config.labels
    assert created.annotations == config.annotations
    assert created.mounts == (mount,)
    assert created.log_path == "/var/log/pods/ns_pod_uid-1/app/0.log"
    assert created.resources.linux == resources
    assert created.user.linux == m.LinuxContainerUser(uid=0, gid=0, supplemental_groups=(0,))
    assert created.stop_signal == m.Signal.SIGTERM

    rpc(pm, "StartContainer", container_id=container_id)
    started = status(pm, container_id).status
    assert started.state == m.ContainerState.CONTAINER_RUNNING
    assert started.started_at >= started.created_at
    with pytest.raises(errors.FailedPrecondition):
        rpc(pm, "StartContainer", container_id=container_id)

    rpc(pm, "StopContainer", container_id=container_id, timeout=10)
    exited = status(pm, container_id).status
    assert exited.state == m.ContainerState.CONTAINER_EXITED
    assert (exited.exit_code, exited.reason) == (0, "Completed")
    assert exited.finished_at >= exited.started_at > 0
    rpc(pm, "StopContainer", container_id=container_id, timeout=0)  # idempotent, unchanged
    assert status(pm, container_id).status == exited
    with pytest.raises(errors.FailedPrecondition):
        rpc(pm, "StartContainer", container_id=container_id)

    info = json.loads(status(pm, container_id, verbose=True).info["info"])
    assert info["sandboxID"] == sandbox_id
    rpc(pm, "RemoveContainer", container_id=container_id)
    rpc(pm, "RemoveContainer", container_id=container_id)  # idempotent
    with pytest.raises(errors.NotFound):
        status(pm, container_id)


def test_stop_exit_codes(pm: pluggy.PluginManager) -> None:
    sandbox_id, killed = running_container(pm, name="killed")
    rpc(pm, "StopContainer", container_id=killed, timeout=0)
    got = status(pm, killed).status
    assert (got.exit_code, got.reason) == (137, "Error")

    sigkill = create(pm, sandbox_id, name="sigkill", stop_signal=m.Signal.SIGKILL)
    rpc(pm, "StartContainer", container_id=sigkill)
    assert status(pm, sigkill).status.stop_signal == m.Signal.SIGKILL
    rpc(pm, "StopContainer", container_id=sigkill, timeout=30)
    assert status(pm, sigkill).status.exit_code == 137

    never = create(pm, sandbox_id, name="never")
    rpc(pm, "StopContainer", container_id=never, timeout=5)
    got = status(pm, never).status
    assert got.state == m.ContainerState.CONTAINER_EXITED
    assert (got.exit_code, got.reason, got.started_at) == (0, "NeverStarted", 0)
    assert got.finished_at > 0


def test_unknown_container_ids(pm: pluggy.PluginManager) -> None:
    unknown = "f" * 64
    rpc(pm, "StopContainer", container_id=unknown, timeout=0)
    rpc(pm, "RemoveContainer", container_id=unknown)
    cases: list[tuple[str, dict[str, Any]]] = [
        ("StartContainer", {}),
        ("ContainerStatus", {"verbose": True}),
        ("ContainerStats", {}),
        ("UpdateContainerResources", {}),
        ("ReopenContainerLog", {}),
        ("ExecSync", {"cmd": ("true",)}),
        ("Exec", {"cmd": ("sh",), "stdout": True}),
        ("Attach", {"stdout": True}),
        ("CheckpointContainer", {}),
    ]
    for name, fields in cases:
        with pytest.raises(errors.NotFound):
            rpc(pm, name, container_id=unknown, **fields)


def test_create_container_preconditions(pm: pluggy.PluginManager) -> None:
    sandbox_id = run_sandbox(pm)
    with pytest.raises(errors.NotFound, match="image"):
        create(pm, sandbox_id)
    pull(pm)
    first = create(pm, sandbox_id)
    with pytest.raises(errors.AlreadyExists, match=first):
        create(pm, sandbox_id)
    create(pm, sandbox_id, attempt=1)
    other = run_sandbox(pm, name="other")
    create(pm, other)  # the name is per sandbox
    rpc(pm, "RemoveContainer", container_id=first)
    create(pm, sandbox_id)  # released by RemoveContainer

    rpc(pm, "StopPodSandbox", pod_sandbox_id=other)
    with pytest.raises(errors.FailedPrecondition, match="not ready"):
        create(pm, other, name="late")


def test_create_container_contract_checks(pm: pluggy.PluginManager) -> None:
    pull(pm)
    sandbox_id = run_sandbox(pm)

    def linux(**context: Any) -> m.LinuxContainerConfig:
        return m.LinuxContainerConfig(security_context=m.LinuxContainerSecurityContext(**context))

    with pytest.raises(errors.InvalidArgument, match="privileged"):
        create(pm, sandbox_id, name="priv", linux=linux(privileged=True))
    privileged_sandbox = run_sandbox(pm, name="privileged", privileged=True)
    create(pm, privileged_sandbox, name="priv", linux=linux(privileged=True))

    with pytest.raises(errors.FailedPrecondition, match="alice"):
        create(pm, sandbox_id, name="alice", linux=linux(run_as_username="alice"))
    nobody = create(pm, sandbox_id, name="nobody", linux=linux(run_as_username="nobody"))
    assert status(pm, nobody).status.user.linux.uid == 65534
    custom = create(
        pm,
        sandbox_id,
        name="custom",
        linux=linux(
            run_as_user=m.Int64Value(value=1000),
            run_as_group=m.Int64Value(value=3000),
            supplemental_groups=(4000,),
        ),
    )
    user = status(pm, custom).status.user.linux
    assert (user.uid, user.gid, tuple(user.supplemental_groups)) == (1000, 3000, (3000, 4000))

    target = m.NamespaceOption(pid=m.NamespaceMode.TARGET, target_id="nope")
    with pytest.raises(errors.NotFound, match="target"):
        create(pm, sandbox_id, name="debug", linux=linux(namespace_options=target))
    target = attrs.evolve(target, target_id=nobody)
    create(pm, sandbox_id, name="debug", linux=linux(namespace_options=target))

    rro = m.Mount(container_path="/ro", host_path="/x", recursive_read_only=True)
    with pytest.raises(errors.InvalidArgument, match="recursive_read_only"):
        create(pm, sandbox_id, name="rro", mounts=(rro,))
    image_mount = m.Mount(container_path="/img", image=m.ImageSpec(image="alpine"))
    with pytest.raises(errors.NotFound, match="alpine"):
        create(pm, sandbox_id, name="img", mounts=(image_mount,))
    pull(pm, "alpine")
    create(pm, sandbox_id, name="img", mounts=(image_mount,))


def test_stop_and_remove_sandbox_take_the_containers(pm: pluggy.PluginManager) -> None:
    sandbox_id, running = running_container(pm)
    created = create(pm, sandbox_id, name="created")
    rpc(pm, "StopPodSandbox", pod_sandbox_id=sandbox_id)
    got = status(pm, running).status
    assert (got.state, got.exit_code, got.reason) == (
        m.ContainerState.CONTAINER_EXITED,
        137,
        "Error",
    )
    assert status(pm, created).status.state == m.ContainerState.CONTAINER_EXITED
    rpc(pm, "RemovePodSandbox", pod_sandbox_id=sandbox_id)
    assert rpc(pm, "ListContainers", filter=None).containers == ()

    # removing a ready sandbox with a running container works too
    sandbox_id = run_sandbox(pm, name="again")
    container_id = create(pm, sandbox_id)
    rpc(pm, "StartContainer", container_id=container_id)
    rpc(pm, "RemovePodSandbox", pod_sandbox_id=sandbox_id)
    with pytest.raises(errors.NotFound):
        status(pm, container_id)


def test_remove_running_container_forcibly(pm: pluggy.PluginManager) -> None:
    _, container_id = running_container(pm)
    rpc(pm, "RemoveContainer", container_id=container_id)
    with pytest.raises(errors.NotFound):
        status(pm, container_id)


def test_list_containers_filters(pm: pluggy.PluginManager) -> None:
    pull(pm)
    s1 = run_sandbox(pm, name="one")
    s2 = run_sandbox(pm, name="two")
    a = create(pm, s1, name="a", labels={"role": "web"})
    b = create(pm, s1, name="b", labels={"role": "sidecar"})
    c = create(pm, s2, name="c", labels={"role": "web"})
    rpc(pm, "StartContainer", container_id=a)
    rpc(pm, "StartContainer", container_id=c)

    def listed(**filter_fields: Any) -> list[str]:
        response = rpc(pm, "ListContainers", filter=m.ContainerFilter(**filter_fields))
        return [item.id for item in response.containers]

    assert listed() == [a, b, c]
    assert listed(id=b) == [b]
    assert listed(id=b[:20]) == [b]
    running = m.ContainerStateValue(state=m.ContainerState.CONTAINER_RUNNING)
    assert listed(state=running) == [a, c]
    assert listed(pod_sandbox_id=s1) == [a, b]
    assert listed(pod_sandbox_id=s2[:12]) == [c]
    assert listed(label_selector={"role": "web"}) == [a, c]
    assert listed(label_selector={"role": "web"}, pod_sandbox_id=s1, state=running) == [a]
    item = rpc(pm, "ListContainers", filter=m.ContainerFilter(id=a)).containers[0]
    assert item.pod_sandbox_id == s1
    assert item.image_ref == item.image_id == BUSYBOX_ID
    assert item.annotations == container_config().annotations


def test_update_container_resources(pm: pluggy.PluginManager) -> None:
    _, container_id = running_container(pm)
    resources = m.LinuxContainerResources(cpu_quota=50_000, cpu_period=100_000)
    rpc(pm, "UpdateContainerResources", container_id=container_id, linux=resources)
    assert status(pm, container_id).status.resources.linux == resources
    rpc(pm, "StopContainer", container_id=container_id, timeout=0)
    with pytest.raises(errors.FailedPrecondition):
        rpc(pm, "UpdateContainerResources", container_id=container_id, linux=resources)


def test_reopen_container_log(pm: pluggy.PluginManager) -> None:
    sandbox_id, container_id = running_container(pm)
    rpc(pm, "ReopenContainerLog", container_id=container_id)
    created = create(pm, sandbox_id, name="created")
    with pytest.raises(errors.FailedPrecondition, match="not running"):
        rpc(pm, "ReopenContainerLog", container_id=created)


def test_checkpoint_container(pm: pluggy.PluginManager) -> None:
    sandbox_id, container_id = running_container(pm)
    rpc(pm, "CheckpointContainer", container_id=container_id, location="/tmp/cp.tar", timeout=0)
    info = json.loads(status(pm, container_id, verbose=True).info["info"])
    assert info["checkpoints"] == ["/tmp/cp.tar"]
    created = create(pm, sandbox_id, name="created")
    with pytest.raises(errors.FailedPrecondition):
        rpc(pm, "CheckpointContainer", container_id=created, location="", timeout=0)


def test_update_pod_sandbox_resources(pm: pluggy.PluginManager) -> None:
    sandbox_id = run_sandbox(pm)
    resources = m.LinuxContainerResources(cpu_shares=1024)
    rpc(pm, "UpdatePodSandboxResources", pod_sandbox_id=sandbox_id, resources=resources)
    info = json.loads(sandbox_status(pm, sandbox_id, verbose=True).info["info"])
    assert info["resources"]["cpu_shares"] == 1024


# ---------------------------------------------------------------------------------------------
# exec


@pytest.mark.parametrize(
    ("cmd", "exit_code", "stdout", "stderr"),
    [
        (["echo", "hello", "world"], 0, b"hello world\n", b""),
        (["/bin/echo", "-n", "x"], 0, b"x", b""),
        (["true"], 0, b"", b""),
        (["false"], 1, b"", b""),
        (["sh", "-c", "exit 3"], 3, b"", b""),
        (["/bin/sh", "-c", "echo oops >&2; exit 1"], 1, b"", b"oops\n"),
        (["cat", "/etc/hostname"], 0, b"pod\n", b""),
        (["cat", "/nope"], 1, b"", b"cat: /nope: No such file or directory\n"),
        (["frobnicate", "-x"], 127, b"", b"frobnicate: command not found\n"),
        (["sh", "-c", "echo hi > /tmp/f && cat /tmp/f"], 0, b"hi\n", b""),
        (["sh", "-c", "test -f /etc/passwd && echo yes || echo no"], 0, b"yes\n", b""),
        (["sh", "-c", "[ -d /nope ] || echo missing"], 0, b"missing\n", b""),
        (["sh", "-c", "false; echo $?"], 0, b"1\n", b""),
        (["sh", "-c", 'echo "$GREETING, ${WHO}!"'], 0, b"hello, you!\n", b""),
        (["sh", "-c", "echo 'single $GREETING'"], 0, b"single $GREETING\n", b""),
        (["sh", "-c", "echo $1", "sh", "arg1"], 0, b"arg1\n", b""),
        (["sh", "-c", "cat /nope 2>/dev/null"], 1, b"", b""),
        (["sh", "-c", "nosuch"], 127, b"", b"nosuch: command not found\n"),
        (["sh", "-c", "grep x /etc/hosts | wc -l"], 2, b"", None),
        (["sh", "-c", "if true; then echo; fi"], 2, b"", None),
        (["id"], 0, b"uid=0(root) gid=0(root) groups=0(root)\n", b""),
        (["sh", "-c", "cd /etc && pwd"], 0, b"/etc\n", b""),
        (["printenv", "GREETING"], 0, b"hello\n", b""),
        (["sleep", "0.01"], 0, b"", b""),
        (["sleep", "soon"], 1, b"", b"sleep: invalid time interval 'soon'\n"),
    ],
)
def test_exec_sync_interpreter(
    pm: pluggy.PluginManager,
    cmd: list[str],
    exit_code: int,
    stdout: bytes,
    stderr: bytes | None,
) -> None:
    envs = (m.KeyValue(key="GREETING", value="hello"), m.KeyValue(key="WHO", value="you"))
    _, container_id = running_container(pm, envs=envs)
    response = exec_sync(pm, container_id, *cmd)
    assert response.exit_code == exit_code
    assert response.stdout == stdout
    if stderr is None:
        assert b"unsupported syntax" in response.stderr
    else:
        assert response.stderr == stderr


def test_exec_sync_files_persist_per_container(pm: pluggy.PluginManager) -> None:
    sandbox_id, container_id = running_container(pm)
    exec_sync(pm, container_id, "touch", "/tmp/healthy")
    assert exec_sync(pm, container_id, "test", "-e", "/tmp/healthy").exit_code == 0
    other = create(pm, sandbox_id, name="other")
    rpc(pm, "StartContainer", container_id=other)
    assert exec_sync(pm, other, "test", "-e", "/tmp/healthy").exit_code == 1
    exec_sync(pm, container_id, "rm", "/tmp/healthy")
    assert exec_sync(pm, container_id, "cat", "/tmp/healthy").exit_code == 1


def test_exec_sync_needs_a_running_container(pm: pluggy.PluginManager) -> None:
    sandbox_id, container_id = running_container(pm)
    created = create(pm, sandbox_id, name="created")
    with pytest.raises(errors.FailedPrecondition):
        exec_sync(pm, created, "true")
    rpc(pm, "StopContainer", container_id=container_id, timeout=0)
    with pytest.raises(errors.FailedPrecondition):
        exec_sync(pm, container_id, "true")


def test_exec_sync_timeout(pm: pluggy.PluginManager) -> None:
    _, container_id = running_container(pm)
    started = time.monotonic()
    assert exec_sync(pm, container_id, "sleep", "0.05", timeout=1).exit_code == 0
    with pytest.raises(errors.DeadlineExceeded, match="timed out after 1s"):
        exec_sync(pm, container_id, "sh", "-c", "sleep 0.5; sleep 5", timeout=1)
    elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < 3.0


def test_exec_sync_honours_the_callers_deadline(pm: pluggy.PluginManager) -> None:
    _, container_id = running_container(pm)
    call = CallContext(rpc="ExecSync", time_remaining=0.1)
    started = time.monotonic()
    with pytest.raises(errors.DeadlineExceeded):
        rpc(pm, "ExecSync", container_id=container_id, cmd=("sleep", "10"), timeout=0, call=call)
    assert time.monotonic() - started < 2


def test_stopping_the_container_kills_exec_and_lists_do_not_wait(pm: pluggy.PluginManager) -> None:
    _, container_id = running_container(pm)
    results: list[Any] = []
    worker = threading.Thread(
        target=lambda: results.append(exec_sync(pm, container_id, "sleep", "30"))
    )
    worker.start()
    time.sleep(0.1)
    started = time.monotonic()
    assert len(rpc(pm, "ListContainers", filter=None).containers) == 1
    assert status(pm, container_id).status.state == m.ContainerState.CONTAINER_RUNNING
    assert time.monotonic() - started < 0.5
    rpc(pm, "StopContainer", container_id=container_id, timeout=0)
    worker.join(timeout=5)
    assert not worker.is_alive()
    assert results[0].exit_code == 137


def test_streaming_rpcs_validate_then_are_unimplemented(pm: pluggy.PluginManager) -> None:
    sandbox_id, container_id = running_container(pm)
    with pytest.raises(errors.Unimplemented, match="streaming server"):
        rpc(pm, "Exec", container_id=container_id, cmd=("sh",), stdin=True, tty=True)
    with pytest.raises(errors.Unimplemented):
        rpc(pm, "Attach", container_id=container_id, stdout=True)
    with pytest.raises(errors.InvalidArgument, match="tty"):
        rpc(pm, "Attach", container_id=container_id, stdout=True, tty=True)
    with pytest.raises(errors.Unimplemented):
        rpc(pm, "PortForward", pod_sandbox_id=sandbox_id, port=(8080,))
    created = create(pm, sandbox_id, name="created")
    with pytest.raises(errors.FailedPrecondition):
        rpc(pm, "Exec", container_id=created, cmd=("sh",), stdout=True)
    with pytest.raises(errors.FailedPrecondition):
        rpc(pm, "Attach", container_id=created, stdout=True)
    rpc(pm, "StopPodSandbox", pod_sandbox_id=sandbox_id)
    with pytest.raises(errors.FailedPrecondition):
        rpc(pm, "PortForward", pod_sandbox_id=sandbox_id, port=(8080,))


# ---------------------------------------------------------------------------------------------
# stats and metrics


def test_container_stats(pm: pluggy.PluginManager) -> None:
    resources = m.LinuxContainerResources(memory_limit_in_bytes=8 * 2**20)
    sandbox_id, container_id = running_container(
        pm, labels={"k": "v"}, linux=m.LinuxContainerConfig(resources=resources)
    )
    first = rpc(pm, "ContainerStats", container_id=container_id).stats
    assert first.attributes.id == container_id
    assert first.attributes.labels == {"k": "v"}
    assert first.attributes.annotations == container_config().annotations
    assert first.memory.working_set_bytes.value == 2**20
    assert first.memory.available_bytes.value == 7 * 2**20
    assert first.cpu.timestamp > 0
    time.sleep(0.01)
    second = rpc(pm, "ContainerStats", container_id=container_id).stats
    assert second.cpu.usage_core_nano_seconds.value > first.cpu.usage_core_nano_seconds.value

    created = create(pm, sandbox_id, name="idle")
    listed = rpc(pm, "ListContainerStats", filter=None).stats
    assert [s.attributes.id for s in listed] == [container_id]  # running containers only
    assert rpc(pm, "ContainerStats", container_id=created).stats.memory.working_set_bytes.value == 0
    for stats_filter in [
        m.ContainerStatsFilter(id=container_id[:8]),
        m.ContainerStatsFilter(pod_sandbox_id=sandbox_id),
        m.ContainerStatsFilter(label_selector={"k": "v"}),
    ]:
        assert len(rpc(pm, "ListContainerStats", filter=stats_filter).stats) == 1
    assert rpc(pm, "ListContainerStats", filter=m.ContainerStatsFilter(id="nope")).stats == ()


def test_pod_sandbox_stats(pm: pluggy.PluginManager) -> None:
    sandbox_id, container_id = running_container(pm)
    second = create(pm, sandbox_id, name="second")
    rpc(pm, "StartContainer", container_id=second)
    stats = rpc(pm, "PodSandboxStats", pod_sandbox_id=sandbox_id).stats
    assert stats.attributes.id == sandbox_id
    assert stats.attributes.annotations == sandbox_config().annotations
    assert stats.linux.memory.working_set_bytes.value == 2 * 2**20
    assert stats.linux.process.process_count.value == 2
    assert {c.attributes.id for c in stats.linux.containers} == {container_id, second}

    idle = run_sandbox(pm, name="idle", labels={"app": "idle"})
    listed = rpc(pm, "ListPodSandboxStats", filter=None).stats
    assert [s.attributes.id for s in listed] == [sandbox_id, idle]
    by_label = m.PodSandboxStatsFilter(label_selector={"app": "idle"})
    assert [s.attributes.id for s in rpc(pm, "ListPodSandboxStats", filter=by_label).stats] == [
        idle
    ]
    by_id = m.PodSandboxStatsFilter(id=sandbox_id[:10])
    assert len(rpc(pm, "ListPodSandboxStats", filter=by_id).stats) == 1
    rpc(pm, "StopPodSandbox", pod_sandbox_id=idle)
    assert len(rpc(pm, "ListPodSandboxStats", filter=None).stats) == 1  # ready sandboxes only


def test_metrics(pm: pluggy.PluginManager) -> None:
    assert rpc(pm, "ListMetricDescriptors").descriptors == ()
    sandbox_id, container_id = running_container(pm)
    pods = rpc(pm, "ListPodSandboxMetrics").pod_metrics
    assert [p.pod_sandbox_id for p in pods] == [sandbox_id]
    assert [c.container_id for c in pods[0].container_metrics] == [container_id]


# ---------------------------------------------------------------------------------------------
# events


def test_container_events_in_order(pm: pluggy.PluginManager) -> None:
    pull(pm)
    before = run_sandbox(pm, name="before")  # before the subscription: not reported
    stream = rpc(pm, "GetContainerEvents")
    sandbox_id = run_sandbox(pm)
    container_id = create(pm, sandbox_id)
    rpc(pm, "StartContainer", container_id=container_id)
    rpc(pm, "StopContainer", container_id=container_id, timeout=0)
    rpc(pm, "RemoveContainer", container_id=container_id)
    rpc(pm, "RemovePodSandbox", pod_sandbox_id=sandbox_id)
    fake.criadapt_unconfigure(config=None)  # ends the stream

    events = list(stream)
    kinds = m.ContainerEventType
    assert [(e.container_id, e.container_event_type) for e in events] == [
        (sandbox_id, kinds.CONTAINER_CREATED_EVENT),
        (sandbox_id, kinds.CONTAINER_STARTED_EVENT),
        (container_id, kinds.CONTAINER_CREATED_EVENT),
        (container_id, kinds.CONTAINER_STARTED_EVENT),
        (container_id, kinds.CONTAINER_STOPPED_EVENT),
        (container_id, kinds.CONTAINER_DELETED_EVENT),
        (sandbox_id, kinds.CONTAINER_STOPPED_EVENT),
        (sandbox_id, kinds.CONTAINER_DELETED_EVENT),
    ]
    assert before not in {e.container_id for e in events}
    times = [e.created_at for e in events]
    assert times == sorted(times) and len(set(times)) == len(times)
    started = events[3]
    assert started.pod_sandbox_status.id == sandbox_id
    assert started.pod_sandbox_status.state == m.PodSandboxState.SANDBOX_READY
    assert [(s.id, s.state) for s in started.containers_statuses] == [
        (container_id, m.ContainerState.CONTAINER_RUNNING)
    ]
    assert events[5].containers_statuses == ()  # after the removal


def test_container_events_end_at_the_callers_deadline(pm: pluggy.PluginManager) -> None:
    call = CallContext(rpc="GetContainerEvents", time_remaining=0.05)
    started = time.monotonic()
    assert list(rpc(pm, "GetContainerEvents", call=call)) == []
    assert time.monotonic() - started < 2


def test_container_events_end_when_unconfigured_while_waiting(pm: pluggy.PluginManager) -> None:
    stream = iter(rpc(pm, "GetContainerEvents"))
    received: list[Any] = []
    worker = threading.Thread(target=lambda: received.extend(stream))
    worker.start()
    run_sandbox(pm)
    time.sleep(0.05)
    fake.criadapt_unconfigure(config=None)
    worker.join(timeout=5)
    assert not worker.is_alive()
    assert [e.container_event_type for e in received] == [
        m.ContainerEventType.CONTAINER_CREATED_EVENT,
        m.ContainerEventType.CONTAINER_STARTED_EVENT,
    ]
    assert pm.get_plugin(fake.BACKEND_PLUGIN_NAME) is None


# ---------------------------------------------------------------------------------------------
# images


def test_pull_and_inspect_images(pm: pluggy.PluginManager) -> None:
    image_ref = pull(pm, "busybox")
    assert image_ref == BUSYBOX_ID
    assert pull(pm, "docker.io/library/busybox:latest") == image_ref  # same image
    image = rpc(pm, "ImageStatus", image=m.ImageSpec(image="busybox"), verbose=False).image
    assert image.id == image_ref
    assert image.repo_tags == (BUSYBOX,)
    (digest_ref,) = image.repo_digests
    assert digest_ref.startswith("docker.io/library/busybox@sha256:")
    assert image.size == 1_000_000
    assert not image.pinned

    for spelling in [BUSYBOX, "busybox:latest", image_ref, image_ref[7:], digest_ref]:
        found = rpc(pm, "ImageStatus", image=m.ImageSpec(image=spelling), verbose=False).image
        assert found is not None and found.id == image_ref, spelling
    assert pull(pm, digest_ref) == image_ref  # pulling by a known digest finds the image
    verbose = rpc(pm, "ImageStatus", image=m.ImageSpec(image="busybox"), verbose=True)
    assert json.loads(verbose.info["info"])["id"] == image_ref

    missing = rpc(pm, "ImageStatus", image=m.ImageSpec(image="alpine"), verbose=True)
    assert missing.image is None and missing.info == {}

    assert pull(pm, "registry.k8s.io/pause:3.10") != image_ref
    pause = rpc(
        pm, "ImageStatus", image=m.ImageSpec(image="registry.k8s.io/pause:3.10"), verbose=False
    )
    assert pause.image.pinned
    assert pause.image.repo_tags == ("registry.k8s.io/pause:3.10",)


@pytest.mark.parametrize(
    "reference", ["BusyBox", "bad name", "busybox:bad!tag", "busybox@sha256:123", "a//b", "-x"]
)
def test_pull_rejects_invalid_references(pm: pluggy.PluginManager, reference: str) -> None:
    with pytest.raises(errors.InvalidArgument):
        pull(pm, reference)


def test_pull_error_paths(pm: pluggy.PluginManager) -> None:
    with pytest.raises(errors.NotFound, match="notfound"):
        pull(pm, "example.com/team/notfound-app:1.0")
    with pytest.raises(errors.NotFound):
        pull(pm, "sha256:" + "a" * 64)
    with pytest.raises(errors.InvalidArgument, match="runtime handler"):
        pull(pm, "busybox", runtime_handler="kata")
    pull(pm, "busybox", runtime_handler="fake")


def test_list_images(pm: pluggy.PluginManager) -> None:
    busybox = pull(pm, "busybox")
    alpine = pull(pm, "alpine:3.20")
    assert [i.id for i in rpc(pm, "ListImages", filter=None).images] == [busybox, alpine]
    assert [i.id for i in rpc(pm, "ListImages", filter=m.ImageFilter()).images] == [busybox, alpine]

    def listed(image: str) -> list[str]:
        spec_filter = m.ImageFilter(image=m.ImageSpec(image=image))
        return [i.id for i in rpc(pm, "ListImages", filter=spec_filter).images]

    assert listed("alpine:3.20") == [alpine]
    assert listed(busybox) == [busybox]
    assert listed("alpine") == []  # alpine:latest was not pulled


def test_remove_image(pm: pluggy.PluginManager) -> None:
    sandbox_id, container_id = running_container(pm)
    rpc(pm, "RemoveImage", image=m.ImageSpec(image=BUSYBOX_ID))  # in use: removed anyway
    rpc(pm, "RemoveImage", image=m.ImageSpec(image=BUSYBOX_ID))  # idempotent
    rpc(pm, "RemoveImage", image=m.ImageSpec(image="never-pulled"))
    assert rpc(pm, "ImageStatus", image=m.ImageSpec(image="busybox"), verbose=False).image is None
    assert status(pm, container_id).status.image_id == BUSYBOX_ID
    with pytest.raises(errors.NotFound):
        create(pm, sandbox_id, name="second")

    pull(pm, "alpine")
    digest = rpc(pm, "ImageStatus", image=m.ImageSpec(image="alpine"), verbose=False).image
    rpc(pm, "RemoveImage", image=m.ImageSpec(image=digest.repo_digests[0]))
    assert rpc(pm, "ListImages", filter=None).images == ()


def test_image_fs_info(pm: pluggy.PluginManager) -> None:
    empty = rpc(pm, "ImageFsInfo")
    (filesystem,) = empty.image_filesystems
    assert filesystem.fs_id.mountpoint == "/fake/images"
    assert (filesystem.used_bytes.value, filesystem.inodes_used.value) == (0, 0)
    running_container(pm)
    pull(pm, "alpine")
    info = rpc(pm, "ImageFsInfo")
    (filesystem,) = info.image_filesystems
    assert (filesystem.used_bytes.value, filesystem.inodes_used.value) == (2_000_000, 2)
    assert filesystem.timestamp > 0
    (containers,) = info.container_filesystems
    assert containers.inodes_used.value == 1


# ---------------------------------------------------------------------------------------------
# concurrency


def test_concurrent_sandboxes(pm: pluggy.PluginManager) -> None:
    pull(pm)
    ids: list[str] = []
    failures: list[BaseException] = []

    def work(n: int) -> None:
        try:
            sandbox_id = run_sandbox(pm, name=f"pod-{n}", uid=f"uid-{n}")
            container_id = create(pm, sandbox_id)
            rpc(pm, "StartContainer", container_id=container_id)
            assert exec_sync(pm, container_id, "echo", str(n)).stdout == f"{n}\n".encode()
            ids.append(sandbox_id)
        except BaseException as problem:  # pragma: no cover - reported below
            failures.append(problem)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert len(set(ids)) == 16
    ips = {sandbox_status(pm, i).status.network.ip for i in ids}
    assert len(ips) == 16
