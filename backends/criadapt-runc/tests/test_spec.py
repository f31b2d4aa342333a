"""Tests of the OCI runtime spec built for a CRI container (``criadapt_runc.spec``).

Unit tests fix the host facts (:class:`HostFacts`) so they don't depend on the machine; two
smoke tests run a real busybox container with ``runc`` (root only).
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from criadapt import models as m
from criadapt.errors import FailedPrecondition, InvalidArgument
from criadapt_runc.spec import (
    CAPABILITIES,
    DEFAULT_CAPABILITIES,
    DEFAULT_MASKED_PATHS,
    DEFAULT_READONLY_PATHS,
    HostFacts,
    ImageInfo,
    SandboxInfo,
    build_spec,
    resolve_user,
)

NS = m.NamespaceMode
BIDIRECTIONAL = m.MountPropagation.PROPAGATION_BIDIRECTIONAL
HOST_TO_CONTAINER = m.MountPropagation.PROPAGATION_HOST_TO_CONTAINER
ALL_BUT_SYS_RESOURCE = tuple("CAP_" + c for c in CAPABILITIES if c != "SYS_RESOURCE")
HOST = HostFacts(
    capabilities=ALL_BUT_SYS_RESOURCE,
    oom_score_adj=0,
    nofile_hard=20000,
    cgroup_v2=False,
    swap_controller=True,
    hugetlb_controller=True,
    hostname="node-1",
)
POD_NS = {
    "network": "/run/netns/pod",
    "ipc": "/proc/42/ns/ipc",
    "uts": "/proc/42/ns/uts",
    "pid": "/proc/42/ns/pid",
}


# -- helpers -------------------------------------------------------------------------------


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\n"
        "# a comment\n"
        "malformed line\n"
        "app:x:1000:1000:App:/home/app:/bin/sh\n"
        "nobody:x:65534:65534::/:/bin/false\n"
    )
    (root / "etc" / "group").write_text(
        "root:x:0:\n"
        "wheel:x:10:root,app\n"
        "app:x:1000:\n"
        "audio:x:29:app\n"
        "video:x:44: app , other\n"
        "nogroup:x:65534:\n"
    )
    return root


def config(**kwargs: Any) -> m.ContainerConfig:
    kwargs.setdefault("metadata", m.ContainerMetadata(name="ctr"))
    kwargs.setdefault("image", m.ImageSpec(image="busybox"))
    return m.ContainerConfig(**kwargs)


def security(**kwargs: Any) -> m.LinuxContainerConfig:
    return m.LinuxContainerConfig(security_context=m.LinuxContainerSecurityContext(**kwargs))


def sandbox(**kwargs: Any) -> SandboxInfo:
    kwargs.setdefault("id", "sb1")
    kwargs.setdefault("namespaces", POD_NS)
    kwargs.setdefault("hostname", "pod-host")
    return SandboxInfo(**kwargs)


def build(
    rootfs: Path,
    cfg: m.ContainerConfig | None = None,
    *,
    sb: SandboxInfo | None = None,
    image: dict[str, Any] | None = None,
    host: HostFacts = HOST,
    **kwargs: Any,
) -> dict[str, Any]:
    spec = build_spec(
        container_id="c1",
        config=cfg if cfg is not None else config(command=["sh"]),
        sandbox=sb or sandbox(),
        image=ImageInfo(image if image is not None else {}),
        rootfs=rootfs,
        host=host,
        **kwargs,
    )
    json.dumps(spec)  # always serialisable
    return spec


def mount_at(spec: dict[str, Any], destination: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [
        mnt for mnt in spec["mounts"] if mnt["destination"] == destination
    ]
    assert len(found) == 1, (destination, spec["mounts"])
    return found[0]


def namespaces(spec: dict[str, Any]) -> dict[str, str | None]:
    return {ns["type"]: ns.get("path") for ns in spec["linux"]["namespaces"]}


# -- resolve_user ---------------------------------------------------------------------------


def test_resolve_numeric_uid_uses_passwd_gid_and_group_membership(rootfs: Path) -> None:
    assert resolve_user(rootfs, "1000") == (1000, 1000, [10, 29, 44])


def test_resolve_name(rootfs: Path) -> None:
    assert resolve_user(rootfs, "app") == (1000, 1000, [10, 29, 44])
    assert resolve_user(rootfs, "root") == (0, 0, [10])


def test_resolve_empty_is_root(rootfs: Path) -> None:
    assert resolve_user(rootfs, "") == (0, 0, [10])


def test_resolve_numeric_uid_not_in_passwd(rootfs: Path) -> None:
    assert resolve_user(rootfs, "4242") == (4242, 0, [])
    assert resolve_user(rootfs, "4242:7") == (4242, 7, [])


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ("app:44", (1000, 44, [10, 29, 44])),
        ("app:audio", (1000, 29, [10, 29, 44])),
        ("1000:audio", (1000, 29, [10, 29, 44])),
        ("0:0", (0, 0, [10])),
        ("65534:nogroup", (65534, 65534, [])),
    ],
)
def test_resolve_user_and_group(
    rootfs: Path, user: str, expected: tuple[int, int, list[int]]
) -> None:
    assert resolve_user(rootfs, user) == expected


def test_resolve_unknown_user_names_it(rootfs: Path) -> None:
    with pytest.raises(FailedPrecondition, match="ghost"):
        resolve_user(rootfs, "ghost")


def test_resolve_unknown_group_names_it(rootfs: Path) -> None:
    with pytest.raises(FailedPrecondition, match="ghosts"):
        resolve_user(rootfs, "app:ghosts")


def test_resolve_without_passwd(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert resolve_user(tmp_path / "empty", "123:45") == (123, 45, [])
    assert resolve_user(tmp_path / "empty", "0") == (0, 0, [])
    with pytest.raises(FailedPrecondition, match="app"):
        resolve_user(tmp_path / "empty", "app")


@pytest.mark.parametrize("user", ["a:b:c", ":5", "-1", "99999999999", "1:-3"])
def test_resolve_invalid(rootfs: Path, user: str) -> None:
    with pytest.raises(InvalidArgument):
        resolve_user(rootfs, user)


def test_resolve_passwd_symlink_absolute_stays_in_rootfs(rootfs: Path) -> None:
    # /etc/passwd -> /lib/passwd: /lib/passwd of the rootfs, not of the host.
    (rootfs / "lib").mkdir()
    (rootfs / "etc" / "passwd").rename(rootfs / "lib" / "passwd")
    (rootfs / "etc" / "passwd").symlink_to("/lib/passwd")
    assert not Path("/lib/passwd").exists()
    assert resolve_user(rootfs, "app") == (1000, 1000, [10, 29, 44])


def test_resolve_passwd_symlink_never_reads_the_host(rootfs: Path) -> None:
    # The host has /etc/hostname; the rootfs doesn't: the link must resolve to nothing.
    assert Path("/etc/hostname").exists() or Path("/etc/os-release").exists()
    target = "/etc/hostname" if Path("/etc/hostname").exists() else "/etc/os-release"
    (rootfs / "etc" / "passwd").unlink()
    (rootfs / "etc" / "passwd").symlink_to(target)
    with pytest.raises(FailedPrecondition, match="app"):
        resolve_user(rootfs, "app")


def test_resolve_relative_symlink_escape_is_clamped(rootfs: Path) -> None:
    (rootfs / "srv").mkdir()
    (rootfs / "etc" / "passwd").rename(rootfs / "srv" / "passwd")
    (rootfs / "etc" / "passwd").symlink_to("../../../../../../../../srv/passwd")
    assert resolve_user(rootfs, "app")[0] == 1000


def test_resolve_symlinked_etc_directory(rootfs: Path) -> None:
    (rootfs / "etc").rename(rootfs / "real-etc")
    (rootfs / "etc").symlink_to("/real-etc")
    assert resolve_user(rootfs, "app") == (1000, 1000, [10, 29, 44])


def test_resolve_symlink_loop(rootfs: Path) -> None:
    (rootfs / "etc" / "passwd").unlink()
    (rootfs / "etc" / "passwd").symlink_to("passwd")
    with pytest.raises(FailedPrecondition, match="symbolic links"):
        resolve_user(rootfs, "app")


def test_resolve_passwd_not_a_regular_file(rootfs: Path) -> None:
    (rootfs / "etc" / "passwd").unlink()
    os.mkfifo(rootfs / "etc" / "passwd")  # must not block on it
    with pytest.raises(FailedPrecondition):
        resolve_user(rootfs, "app")
    assert resolve_user(rootfs, "7") == (7, 0, [])


# -- top level ------------------------------------------------------------------------------


def test_top_level_fields(rootfs: Path) -> None:
    spec = build(rootfs)
    assert spec["ociVersion"] == "1.0.2-dev"
    assert spec["root"] == {"path": str(rootfs), "readonly": False}
    assert "hostname" not in spec  # joins the sandbox's UTS namespace
    assert "apparmorProfile" not in spec["process"]
    assert "seccomp" not in spec["linux"]
    assert "sysctl" not in spec["linux"]
    assert "oomScoreAdj" not in spec["process"]


# -- command --------------------------------------------------------------------------------

IMAGE = {"Entrypoint": ["/entry"], "Cmd": ["--default"]}


@pytest.mark.parametrize(
    ("command", "args", "image", "argv"),
    [
        ([], [], IMAGE, ["/entry", "--default"]),
        ([], ["--mine"], IMAGE, ["/entry", "--mine"]),
        (["/bin/cmd"], [], IMAGE, ["/bin/cmd"]),  # the image Cmd is dropped too
        (["/bin/cmd"], ["a", "b"], IMAGE, ["/bin/cmd", "a", "b"]),
        ([], [], {"Cmd": ["sh", "-c", "x"]}, ["sh", "-c", "x"]),
        ([], ["echo"], {"Entrypoint": None, "Cmd": ["sh"]}, ["echo"]),
        ([], [], {"Entrypoint": [""], "Cmd": ["sh"]}, ["sh"]),  # Docker's reset entrypoint
    ],
)
def test_command_rules(
    rootfs: Path, command: list[str], args: list[str], image: dict[str, Any], argv: list[str]
) -> None:
    spec = build(rootfs, config(command=command, args=args), image=image)
    assert spec["process"]["args"] == argv


def test_no_command(rootfs: Path) -> None:
    with pytest.raises(InvalidArgument, match="no command specified"):
        build(rootfs, config(), image={"Entrypoint": None, "Cmd": None})


# -- env ------------------------------------------------------------------------------------


def test_env_defaults(rootfs: Path) -> None:
    env = build(rootfs)["process"]["env"]
    assert env == [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOSTNAME=pod-host",
    ]


def test_env_image_then_config_override_in_place(rootfs: Path) -> None:
    cfg = config(
        command=["sh"],
        tty=True,
        envs=[m.KeyValue(key="B", value="config"), m.KeyValue(key="D", value="d=1")],
    )
    image = {"Env": ["PATH=/img/bin", "A=a", "B=image", "C=c"]}
    env = build(rootfs, cfg, image=image)["process"]["env"]
    assert env == [
        "PATH=/img/bin",
        "TERM=xterm",
        "HOSTNAME=pod-host",
        "A=a",
        "B=config",
        "C=c",
        "D=d=1",
    ]


def test_env_image_entry_without_value_unsets(rootfs: Path) -> None:
    env = build(rootfs, image={"Env": ["A=1", "A"]})["process"]["env"]
    assert not any(e.startswith("A") for e in env)


def test_env_hostname_falls_back_to_the_node(rootfs: Path) -> None:
    env = build(rootfs, sb=sandbox(hostname=""))["process"]["env"]
    assert "HOSTNAME=node-1" in env


# -- cwd, terminal --------------------------------------------------------------------------


def test_cwd(rootfs: Path) -> None:
    assert build(rootfs)["process"]["cwd"] == "/"
    assert build(rootfs, image={"WorkingDir": "/img"})["process"]["cwd"] == "/img"
    cfg = config(command=["sh"], working_dir="/work")
    assert build(rootfs, cfg, image={"WorkingDir": "/img"})["process"]["cwd"] == "/work"


def test_terminal_only_with_tty(rootfs: Path) -> None:
    assert build(rootfs, config(command=["sh"], stdin=True))["process"]["terminal"] is False
    assert build(rootfs, config(command=["sh"], tty=True, stdin=True))["process"]["terminal"]


# -- user -----------------------------------------------------------------------------------


def user_of(rootfs: Path, image: dict[str, Any] | None = None, **sc: Any) -> dict[str, Any]:
    spec = build(rootfs, config(command=["sh"], linux=security(**sc)), image=image or {})
    user: dict[str, Any] = spec["process"]["user"]
    return user


def test_user_default_is_root_with_its_groups(rootfs: Path) -> None:
    assert user_of(rootfs) == {"uid": 0, "gid": 0, "additionalGids": [0, 10]}


def test_user_from_image(rootfs: Path) -> None:
    assert user_of(rootfs, {"User": "app"}) == {
        "uid": 1000,
        "gid": 1000,
        "additionalGids": [1000, 10, 29, 44],
    }
    assert user_of(rootfs, {"User": "app:audio"})["gid"] == 29


def test_user_run_as_user_overrides_image(rootfs: Path) -> None:
    user = user_of(rootfs, {"User": "root"}, run_as_user=m.Int64Value(value=1000))
    assert (user["uid"], user["gid"]) == (1000, 1000)


def test_user_run_as_group(rootfs: Path) -> None:
    user = user_of(
        rootfs, run_as_user=m.Int64Value(value=1000), run_as_group=m.Int64Value(value=3000)
    )
    assert user == {"uid": 1000, "gid": 3000, "additionalGids": [3000, 10, 29, 44]}


def test_user_run_as_username(rootfs: Path) -> None:
    user = user_of(rootfs, run_as_username="nobody")
    assert (user["uid"], user["gid"]) == (65534, 65534)
    with pytest.raises(FailedPrecondition, match="ghost"):
        user_of(rootfs, run_as_username="ghost")


def test_user_supplemental_groups_merged_and_deduplicated(rootfs: Path) -> None:
    user = user_of(
        rootfs, run_as_user=m.Int64Value(value=1000), supplemental_groups=[29, 5000, 1000, 5000]
    )
    assert user["additionalGids"] == [1000, 10, 29, 44, 5000]


def test_user_supplemental_groups_strict_policy(rootfs: Path) -> None:
    user = user_of(
        rootfs,
        run_as_user=m.Int64Value(value=1000),
        supplemental_groups=[5000],
        supplemental_groups_policy=m.SupplementalGroupsPolicy.Strict,
    )
    assert user["additionalGids"] == [1000, 5000]


# -- mounts ---------------------------------------------------------------------------------


def test_default_mounts(rootfs: Path) -> None:
    spec = build(rootfs, sb=sandbox(etc_files={}))
    assert [mnt["destination"] for mnt in spec["mounts"]] == [
        "/proc",
        "/dev",
        "/sys",
        "/dev/pts",
        "/dev/shm",
        "/dev/mqueue",
        "/sys/fs/cgroup",
    ]
    assert mount_at(spec, "/proc")["type"] == "proc"
    assert mount_at(spec, "/dev")["type"] == "tmpfs"
    assert mount_at(spec, "/dev/pts")["options"] == [
        "nosuid",
        "noexec",
        "newinstance",
        "ptmxmode=0666",
        "mode=0620",
        "gid=5",
    ]
    shm = mount_at(spec, "/dev/shm")
    assert shm["type"] == "tmpfs"
    assert "size=65536k" in shm["options"]
    assert mount_at(spec, "/dev/mqueue")["type"] == "mqueue"
    assert "ro" in mount_at(spec, "/sys")["options"]
    cgroup = mount_at(spec, "/sys/fs/cgroup")
    assert cgroup["type"] == "cgroup"
    assert "ro" in cgroup["options"]


def test_shm_shared_with_the_pod(rootfs: Path) -> None:
    spec = build(rootfs, sb=sandbox(etc_files={"/dev/shm": "/run/sb1/shm"}))
    shm = mount_at(spec, "/dev/shm")
    assert shm["type"] == "bind"
    assert shm["source"] == "/run/sb1/shm"
    assert shm["options"] == ["rbind", "rprivate", "rw"]


def test_shm_with_host_ipc(rootfs: Path) -> None:
    sb = sandbox(namespaces={}, host_namespaces={"ipc"}, etc_files={"/dev/shm": "/x"})
    shm = mount_at(build(rootfs, sb=sb), "/dev/shm")
    assert (shm["type"], shm["source"]) == ("bind", "/dev/shm")


ETC = {"/etc/hosts": "/run/sb1/hosts", "/etc/resolv.conf": "/run/sb1/resolv.conf"}


def test_etc_files_bound(rootfs: Path) -> None:
    spec = build(rootfs, sb=sandbox(etc_files=ETC))
    hosts = mount_at(spec, "/etc/hosts")
    assert hosts == {
        "destination": "/etc/hosts",
        "type": "bind",
        "source": "/run/sb1/hosts",
        "options": ["rbind", "rprivate", "rw"],
    }
    assert mount_at(spec, "/etc/resolv.conf")["source"] == "/run/sb1/resolv.conf"


def test_etc_files_read_only_with_a_read_only_rootfs(rootfs: Path) -> None:
    cfg = config(command=["sh"], linux=security(readonly_rootfs=True))
    spec = build(rootfs, cfg, sb=sandbox(etc_files=ETC))
    assert mount_at(spec, "/etc/hosts")["options"][-1] == "ro"
    assert spec["root"]["readonly"] is True


@pytest.mark.parametrize(
    ("propagation", "option", "rootfs_propagation"),
    [
        (m.MountPropagation.PROPAGATION_PRIVATE, "rprivate", None),
        (m.MountPropagation.PROPAGATION_HOST_TO_CONTAINER, "rslave", "rslave"),
        (m.MountPropagation.PROPAGATION_BIDIRECTIONAL, "rshared", "rshared"),
    ],
)
def test_user_mount_propagation(
    rootfs: Path,
    tmp_path: Path,
    propagation: m.MountPropagation,
    option: str,
    rootfs_propagation: str | None,
) -> None:
    mount = m.Mount(container_path="/data", host_path=str(tmp_path), propagation=propagation)
    spec = build(rootfs, config(command=["sh"], mounts=[mount]))
    assert mount_at(spec, "/data") == {
        "destination": "/data",
        "type": "bind",
        "source": str(tmp_path),
        "options": ["rbind", option, "rw"],
    }
    assert spec["linux"].get("rootfsPropagation") == rootfs_propagation


def test_rshared_wins_rootfs_propagation(rootfs: Path, tmp_path: Path) -> None:
    mounts = [
        m.Mount(container_path="/a", host_path=str(tmp_path), propagation=BIDIRECTIONAL),
        m.Mount(container_path="/b", host_path=str(tmp_path), propagation=HOST_TO_CONTAINER),
    ]
    assert build(rootfs, config(command=["sh"], mounts=mounts))["linux"]["rootfsPropagation"] == (
        "rshared"
    )


def test_user_mount_read_only_and_recursive(rootfs: Path, tmp_path: Path) -> None:
    mounts = [
        m.Mount(container_path="/ro", host_path=str(tmp_path), readonly=True),
        m.Mount(
            container_path="/rro",
            host_path=str(tmp_path),
            readonly=True,
            recursive_read_only=True,
            selinux_relabel=True,  # ignored
        ),
    ]
    spec = build(rootfs, config(command=["sh"], mounts=mounts))
    assert mount_at(spec, "/ro")["options"] == ["rbind", "rprivate", "ro"]
    assert mount_at(spec, "/rro")["options"] == ["rbind", "rprivate", "rro"]


@pytest.mark.parametrize(
    "mount",
    [
        m.Mount(container_path="/x", host_path="/tmp", recursive_read_only=True),
        m.Mount(
            container_path="/x",
            host_path="/tmp",
            readonly=True,
            recursive_read_only=True,
            propagation=m.MountPropagation.PROPAGATION_HOST_TO_CONTAINER,
        ),
        m.Mount(container_path="/x", image=m.ImageSpec(image="busybox")),
        m.Mount(
            container_path="/x",
            host_path="/tmp",
            uidMappings=[m.IDMapping(host_id=1000, container_id=0, length=1)],
        ),
    ],
)
def test_user_mount_refused(rootfs: Path, mount: m.Mount) -> None:
    with pytest.raises(InvalidArgument):
        build(rootfs, config(command=["sh"], mounts=[mount]))


def test_user_mount_missing_host_path(rootfs: Path, tmp_path: Path) -> None:
    missing = str(tmp_path / "nope")
    mount = m.Mount(container_path="/data", host_path=missing)
    with pytest.raises(InvalidArgument, match=r"host path .*nope.* does not exist"):
        build(rootfs, config(command=["sh"], mounts=[mount]))


def test_user_mount_file_and_symlink(rootfs: Path, tmp_path: Path) -> None:
    target = tmp_path / "file.txt"
    target.write_text("x")
    link = tmp_path / "link"
    link.symlink_to(target)
    mount = m.Mount(container_path="/etc/app.conf", host_path=str(link))
    spec = build(rootfs, config(command=["sh"], mounts=[mount]))
    assert mount_at(spec, "/etc/app.conf")["source"] == str(target)


def test_user_mount_overrides_default_and_sandbox_mounts(rootfs: Path, tmp_path: Path) -> None:
    mounts = [
        m.Mount(container_path="/etc/hosts", host_path=str(tmp_path)),
        m.Mount(container_path="/dev/shm", host_path=str(tmp_path)),
        m.Mount(container_path="/sys/fs/cgroup/", host_path=str(tmp_path)),
    ]
    spec = build(rootfs, config(command=["sh"], mounts=mounts), sb=sandbox(etc_files=ETC))
    for destination in ("/etc/hosts", "/dev/shm", "/sys/fs/cgroup"):
        assert mount_at(spec, destination)["source"] == str(tmp_path)
    assert mount_at(spec, "/etc/resolv.conf")["source"] == "/run/sb1/resolv.conf"


def test_user_dev_mount_drops_default_dev_mounts(rootfs: Path) -> None:
    mount = m.Mount(container_path="/dev", host_path="/dev")
    spec = build(rootfs, config(command=["sh"], mounts=[mount]))
    destinations = [mnt["destination"] for mnt in spec["mounts"]]
    assert mount_at(spec, "/dev")["type"] == "bind"
    assert not [d for d in destinations if d.startswith("/dev/")]


def test_mounts_parents_before_children(rootfs: Path, tmp_path: Path) -> None:
    mounts = [
        m.Mount(container_path="/a/b/c", host_path=str(tmp_path)),
        m.Mount(container_path="/a/b", host_path=str(tmp_path)),
        m.Mount(container_path="/a", host_path=str(tmp_path)),
        m.Mount(container_path="/etc", host_path=str(tmp_path)),
    ]
    spec = build(rootfs, config(command=["sh"], mounts=mounts), sb=sandbox(etc_files=ETC))
    order = [mnt["destination"] for mnt in spec["mounts"]]
    for parent, child in [
        ("/a", "/a/b"),
        ("/a/b", "/a/b/c"),
        ("/etc", "/etc/hosts"),
        ("/dev", "/dev/pts"),
        ("/sys", "/sys/fs/cgroup"),
    ]:
        assert order.index(parent) < order.index(child), order


# -- devices --------------------------------------------------------------------------------


def test_devices(rootfs: Path) -> None:
    devices = [
        m.Device(container_path="/dev/mynull", host_path="/dev/null", permissions="rw"),
        m.Device(container_path="/dev/zero", host_path="/dev/zero", permissions="mrw"),
    ]
    spec = build(rootfs, config(command=["sh"], devices=devices))
    null = os.stat("/dev/null")
    assert spec["linux"]["devices"][0] == {
        "path": "/dev/mynull",
        "type": "c",
        "major": os.major(null.st_rdev),
        "minor": os.minor(null.st_rdev),
        "fileMode": null.st_mode & 0o7777,
        "uid": null.st_uid,
        "gid": null.st_gid,
    }
    rules = spec["linux"]["resources"]["devices"]
    assert rules[0] == {"allow": False, "access": "rwm"}
    assert rules[1] == {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"}
    assert rules[2] == {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "mrw"}


def test_device_symlink_resolved(rootfs: Path, tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to("/dev/null")
    device = m.Device(container_path="/dev/x", host_path=str(tmp_path / "link"))
    spec = build(rootfs, config(command=["sh"], devices=[device]))
    node = spec["linux"]["devices"][0]
    assert (node["path"], node["type"], node["major"], node["minor"]) == ("/dev/x", "c", 1, 3)
    assert spec["linux"]["resources"]["devices"][1]["access"] == "rwm"  # default permissions


@pytest.mark.parametrize(
    ("host_path", "permissions"),
    [("/dev/does-not-exist", "rw"), ("/etc/hostname", "rw"), ("/dev/null", "rwx")],
)
def test_device_refused(rootfs: Path, host_path: str, permissions: str) -> None:
    if not os.path.exists(host_path) and "does-not" not in host_path:
        pytest.skip(f"{host_path} is missing here")
    device = m.Device(container_path="/dev/x", host_path=host_path, permissions=permissions)
    with pytest.raises(InvalidArgument):
        build(rootfs, config(command=["sh"], devices=[device]))


# -- namespaces -----------------------------------------------------------------------------


def test_namespaces_join_the_sandbox(rootfs: Path) -> None:
    cfg = config(command=["sh"], linux=security(namespace_options=m.NamespaceOption(pid=NS.POD)))
    assert namespaces(build(rootfs, cfg)) == {**POD_NS, "mount": None}


def test_pid_container_mode(rootfs: Path) -> None:
    cfg = config(
        command=["sh"], linux=security(namespace_options=m.NamespaceOption(pid=NS.CONTAINER))
    )
    ns = namespaces(build(rootfs, cfg))
    assert ns["pid"] is None
    assert ns["network"] == POD_NS["network"]


def test_host_namespaces_are_omitted(rootfs: Path) -> None:
    sb = sandbox(namespaces={"uts": "/proc/42/ns/uts"}, host_namespaces={"network", "ipc", "pid"})
    cfg = config(
        command=["sh"],
        linux=security(
            namespace_options=m.NamespaceOption(network=NS.NODE, ipc=NS.NODE, pid=NS.NODE)
        ),
    )
    assert namespaces(build(rootfs, cfg, sb=sb)) == {"uts": "/proc/42/ns/uts", "mount": None}


def test_pid_node_needs_a_host_pid_sandbox(rootfs: Path) -> None:
    cfg = config(command=["sh"], linux=security(namespace_options=m.NamespaceOption(pid=NS.NODE)))
    with pytest.raises(InvalidArgument):
        build(rootfs, cfg)


def test_pid_target(rootfs: Path) -> None:
    options = m.NamespaceOption(pid=NS.TARGET, target_id="other")
    cfg = config(command=["sh"], linux=security(namespace_options=options))
    assert namespaces(build(rootfs, cfg, target_pid_ns="/proc/77/ns/pid"))["pid"] == (
        "/proc/77/ns/pid"
    )
    with pytest.raises(InvalidArgument, match="other"):
        build(rootfs, cfg)


def test_new_namespaces_and_hostname(rootfs: Path) -> None:
    spec = build(rootfs, sb=sandbox(namespaces={}, host_namespaces={"network"}))
    assert namespaces(spec) == {"ipc": None, "uts": None, "pid": None, "mount": None}
    assert spec["hostname"] == "pod-host"


def test_cgroup_namespace_on_cgroup_v2(rootfs: Path) -> None:
    host = HostFacts(capabilities=ALL_BUT_SYS_RESOURCE, cgroup_v2=True)
    assert "cgroup" in namespaces(build(rootfs, host=host))
    assert "cgroup" not in namespaces(build(rootfs))


@pytest.mark.parametrize("mode", [NS.POD, NS.CONTAINER])
def test_user_namespaces_refused(rootfs: Path, mode: NS) -> None:
    options = m.NamespaceOption(userns_options=m.UserNamespace(mode=mode))
    cfg = config(command=["sh"], linux=security(namespace_options=options))
    with pytest.raises(InvalidArgument, match="user namespaces are not supported"):
        build(rootfs, cfg)


def test_user_namespace_node_mode_is_fine(rootfs: Path) -> None:
    options = m.NamespaceOption(userns_options=m.UserNamespace(mode=NS.NODE))
    cfg = config(command=["sh"], linux=security(namespace_options=options))
    assert "user" not in namespaces(build(rootfs, cfg))


# -- capabilities and privileges ------------------------------------------------------------


def caps_of(rootfs: Path, **capability: Any) -> dict[str, list[str]]:
    cfg = config(command=["sh"], linux=security(capabilities=m.Capability(**capability)))
    caps: dict[str, list[str]] = build(rootfs, cfg)["process"]["capabilities"]
    return caps


def test_default_capabilities(rootfs: Path) -> None:
    caps = build(rootfs)["process"]["capabilities"]
    assert caps == {
        "bounding": list(DEFAULT_CAPABILITIES),
        "effective": list(DEFAULT_CAPABILITIES),
        "permitted": list(DEFAULT_CAPABILITIES),
    }
    assert len(DEFAULT_CAPABILITIES) == 14


def test_capabilities_add_and_drop(rootfs: Path) -> None:
    caps = caps_of(
        rootfs,
        add_capabilities=["net_admin", "CAP_SYS_TIME"],
        drop_capabilities=["KILL", "cap_chown"],
    )
    expected = [c for c in DEFAULT_CAPABILITIES if c not in ("CAP_KILL", "CAP_CHOWN")]
    assert caps["bounding"] == [*expected, "CAP_NET_ADMIN", "CAP_SYS_TIME"]
    assert caps["effective"] == caps["permitted"] == caps["bounding"]
    assert "inheritable" not in caps and "ambient" not in caps


def test_capabilities_drop_all_then_add(rootfs: Path) -> None:
    caps = caps_of(rootfs, drop_capabilities=["ALL"], add_capabilities=["NET_BIND_SERVICE"])
    assert caps["bounding"] == ["CAP_NET_BIND_SERVICE"]


def test_capabilities_add_all_then_drop(rootfs: Path) -> None:
    caps = caps_of(rootfs, add_capabilities=["all"], drop_capabilities=["SYS_ADMIN"])
    assert caps["bounding"] == [c for c in ALL_BUT_SYS_RESOURCE if c != "CAP_SYS_ADMIN"]


def test_capabilities_ambient(rootfs: Path) -> None:
    caps = caps_of(rootfs, add_ambient_capabilities=["NET_ADMIN"])
    assert "CAP_NET_ADMIN" in caps["bounding"]
    assert caps["ambient"] == caps["inheritable"] == ["CAP_NET_ADMIN"]


def test_capability_unknown(rootfs: Path) -> None:
    with pytest.raises(InvalidArgument, match="CAP_BOGUS"):
        caps_of(rootfs, add_capabilities=["BOGUS"])


def test_capability_the_runtime_lacks(rootfs: Path) -> None:
    with pytest.raises(FailedPrecondition, match="CAP_SYS_RESOURCE"):
        caps_of(rootfs, add_capabilities=["SYS_RESOURCE"])


def privileged_config(**sc: Any) -> m.ContainerConfig:
    return config(command=["sh"], linux=security(privileged=True, **sc))


def test_privileged(rootfs: Path) -> None:
    spec = build(
        rootfs,
        privileged_config(capabilities=m.Capability(drop_capabilities=["ALL"])),
        sb=sandbox(privileged=True),
        seccomp_profile={"defaultAction": "SCMP_ACT_ERRNO"},
    )
    caps = spec["process"]["capabilities"]
    assert caps["bounding"] == list(ALL_BUT_SYS_RESOURCE)  # what the runtime itself holds
    assert "maskedPaths" not in spec["linux"] and "readonlyPaths" not in spec["linux"]
    assert "seccomp" not in spec["linux"]
    assert "rw" in mount_at(spec, "/sys")["options"]
    assert "rw" in mount_at(spec, "/sys/fs/cgroup")["options"]
    assert spec["linux"]["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    paths = {d["path"] for d in spec["linux"]["devices"]}
    assert "/dev/null" in paths
    assert not [p for p in paths if p.startswith(("/dev/pts/", "/dev/shm/"))]
    assert "/dev/console" not in paths


def test_privileged_needs_a_privileged_sandbox(rootfs: Path) -> None:
    with pytest.raises(InvalidArgument, match="privileged"):
        build(rootfs, privileged_config())


def test_no_new_privileges(rootfs: Path) -> None:
    assert build(rootfs)["process"]["noNewPrivileges"] is False
    spec = build(rootfs, config(command=["sh"], linux=security(no_new_privs=True)))
    assert spec["process"]["noNewPrivileges"] is True


def test_masked_and_readonly_paths(rootfs: Path) -> None:
    spec = build(rootfs)
    assert spec["linux"]["maskedPaths"] == list(DEFAULT_MASKED_PATHS)
    assert spec["linux"]["readonlyPaths"] == list(DEFAULT_READONLY_PATHS)
    assert "/proc/kcore" in DEFAULT_MASKED_PATHS and "/proc/sys" in DEFAULT_READONLY_PATHS
    cfg = config(command=["sh"], linux=security(masked_paths=["/proc/x"], readonly_paths=["/y"]))
    spec = build(rootfs, cfg)
    assert spec["linux"]["maskedPaths"] == ["/proc/x"]
    assert spec["linux"]["readonlyPaths"] == ["/y"]


def test_seccomp_extension_point(rootfs: Path) -> None:
    profile = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": []}
    assert build(rootfs, seccomp_profile=profile)["linux"]["seccomp"] == profile


def test_apparmor(rootfs: Path) -> None:
    default = m.SecurityProfile(profile_type=m.ProfileType.RuntimeDefault)
    spec = build(rootfs, config(command=["sh"], linux=security(apparmor=default)))
    assert "apparmorProfile" not in spec["process"]
    localhost = m.SecurityProfile(profile_type=m.ProfileType.Localhost, localhost_ref="p")
    with pytest.raises(InvalidArgument, match="apparmor"):
        build(rootfs, config(command=["sh"], linux=security(apparmor=localhost)))
    with pytest.raises(InvalidArgument, match="apparmor"):
        build(rootfs, config(command=["sh"], linux=security(apparmor_profile="localhost/p")))


# -- sysctls --------------------------------------------------------------------------------


def test_sysctls_namespaced(rootfs: Path) -> None:
    sysctls = {
        "net.ipv4.ip_unprivileged_port_start": "0",
        "net/ipv4/conf/eth0.100/rp_filter": "1",
        "kernel.shm_rmid_forced": "1",
        "kernel.msgmax": "65536",
        "kernel.sem": "250 32000 100 128",
        "fs.mqueue.msg_max": "20",
    }
    spec = build(rootfs, sb=sandbox(sysctls=sysctls))
    assert spec["linux"]["sysctl"] == {
        "net.ipv4.ip_unprivileged_port_start": "0",
        "net.ipv4.conf.eth0/100.rp_filter": "1",
        "kernel.shm_rmid_forced": "1",
        "kernel.msgmax": "65536",
        "kernel.sem": "250 32000 100 128",
        "fs.mqueue.msg_max": "20",
    }


@pytest.mark.parametrize(
    ("sysctls", "host"),
    [
        ({"net.core.somaxconn": "1024"}, {"network"}),
        ({"kernel.shmmax": "1"}, {"ipc"}),
        ({"vm.swappiness": "10"}, set()),
        ({"kernel.pid_max": "10"}, set()),
    ],
)
def test_sysctls_refused(rootfs: Path, sysctls: dict[str, str], host: set[str]) -> None:
    sb = sandbox(namespaces={}, host_namespaces=host, sysctls=sysctls)
    with pytest.raises(InvalidArgument, match=next(iter(sysctls))):
        build(rootfs, sb=sb)


# -- resources, cgroups, rlimits ------------------------------------------------------------


def resources_config(**resources: Any) -> m.ContainerConfig:
    linux = m.LinuxContainerConfig(resources=m.LinuxContainerResources(**resources))
    return config(command=["sh"], linux=linux)


def test_resources(rootfs: Path) -> None:
    cfg = resources_config(
        cpu_shares=512,
        cpu_quota=50000,
        cpu_period=100000,
        cpuset_cpus="0-1",
        cpuset_mems="0",
        memory_limit_in_bytes=64 << 20,
        memory_swap_limit_in_bytes=128 << 20,
        hugepage_limits=[m.HugepageLimit(page_size="2MB", limit=0)],
        unified={"memory.high": "1000"},
    )
    resources = build(rootfs, cfg)["linux"]["resources"]
    assert resources["cpu"] == {
        "shares": 512,
        "quota": 50000,
        "period": 100000,
        "cpus": "0-1",
        "mems": "0",
    }
    assert resources["memory"] == {"limit": 64 << 20, "swap": 128 << 20}
    assert resources["hugepageLimits"] == [{"pageSize": "2MB", "limit": 0}]
    assert "unified" not in resources  # cgroup v1 host
    assert "pids" not in resources


def test_resources_swap_defaults_to_the_memory_limit(rootfs: Path) -> None:
    cfg = resources_config(memory_limit_in_bytes=64 << 20)
    assert build(rootfs, cfg)["linux"]["resources"]["memory"] == {
        "limit": 64 << 20,
        "swap": 64 << 20,
    }
    host = HostFacts(capabilities=ALL_BUT_SYS_RESOURCE, swap_controller=False)
    assert build(rootfs, cfg, host=host)["linux"]["resources"]["memory"] == {"limit": 64 << 20}


def test_resources_without_hugetlb_and_on_cgroup_v2(rootfs: Path) -> None:
    cfg = resources_config(
        hugepage_limits=[m.HugepageLimit(page_size="2MB", limit=0)], unified={"io.weight": "50"}
    )
    host = HostFacts(capabilities=ALL_BUT_SYS_RESOURCE, cgroup_v2=True, hugetlb_controller=False)
    resources = build(rootfs, cfg, host=host)["linux"]["resources"]
    assert "hugepageLimits" not in resources
    assert resources["unified"] == {"io.weight": "50"}


def test_resources_zero_means_unset(rootfs: Path) -> None:
    resources = build(rootfs, resources_config())["linux"]["resources"]
    assert resources == {"devices": [{"allow": False, "access": "rwm"}]}


@pytest.mark.parametrize(
    ("requested", "current", "expected"),
    [(-997, 0, 0), (1000, 0, 1000), (100, 500, 500), (-999, -500, -500), (2, 0, 2)],
)
def test_oom_score_adj_is_clamped(
    rootfs: Path, requested: int, current: int, expected: int
) -> None:
    host = HostFacts(capabilities=ALL_BUT_SYS_RESOURCE, oom_score_adj=current)
    spec = build(rootfs, resources_config(oom_score_adj=requested), host=host)
    assert spec["process"]["oomScoreAdj"] == expected


def test_cgroups_path(rootfs: Path) -> None:
    assert build(rootfs)["linux"]["cgroupsPath"] == "/criadapt/c1"
    sb = sandbox(cgroup_parent="/kubepods/besteffort/pod123/")
    assert build(rootfs, sb=sb)["linux"]["cgroupsPath"] == "/kubepods/besteffort/pod123/c1"


@pytest.mark.parametrize("parent", ["kubepods-besteffort-pod1.slice", "/kubepods.slice/x.slice"])
def test_cgroups_systemd_parent_refused(rootfs: Path, parent: str) -> None:
    with pytest.raises(InvalidArgument, match="use cgroupfs"):
        build(rootfs, sb=sandbox(cgroup_parent=parent))


@pytest.mark.parametrize(("hard", "expected"), [(20000, 20000), (4_000_000, 1048576)])
def test_rlimits(rootfs: Path, hard: int, expected: int) -> None:
    host = HostFacts(capabilities=ALL_BUT_SYS_RESOURCE, nofile_hard=hard)
    assert build(rootfs, host=host)["process"]["rlimits"] == [
        {"type": "RLIMIT_NOFILE", "hard": expected, "soft": expected}
    ]


# -- annotations ----------------------------------------------------------------------------


def test_annotations(rootfs: Path) -> None:
    cfg = config(command=["sh"], annotations={"a": "1", "io.kubernetes.cri.container-type": "x"})
    spec = build(
        rootfs,
        cfg,
        annotations={
            "io.kubernetes.cri.container-type": "container",
            "io.kubernetes.cri.sandbox-id": "sb1",
        },
    )
    assert spec["annotations"] == {
        "a": "1",
        "io.kubernetes.cri.container-type": "container",
        "io.kubernetes.cri.sandbox-id": "sb1",
    }


# -- host facts -----------------------------------------------------------------------------


def test_host_facts_detect() -> None:
    facts = HostFacts.detect()
    assert set(facts.capabilities) <= {"CAP_" + c for c in CAPABILITIES}
    assert "CAP_CHOWN" in facts.capabilities or os.geteuid() != 0
    assert facts.oom_score_adj == int(Path("/proc/self/oom_score_adj").read_text())
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert facts.nofile_hard == (1048576 if hard == resource.RLIM_INFINITY else hard)
    assert facts.cgroup_v2 == os.path.exists("/sys/fs/cgroup/cgroup.controllers")


# -- smoke tests with runc ------------------------------------------------------------------

CGROUP_PARENT = "/criadapt-spec-test"
RUNC = shutil.which("runc")
BUSYBOX = shutil.which("busybox") or "/bin/busybox"

smoke = pytest.mark.skipif(
    os.geteuid() != 0 or RUNC is None or not os.path.exists(BUSYBOX),
    reason="needs root, runc and busybox",
)


@pytest.fixture
def bundle(tmp_path: Path) -> Iterator[Path]:
    bundle = tmp_path / "bundle"
    root = bundle / "rootfs"
    (root / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    for applet in ("sh", "echo", "id", "hostname", "touch", "cat"):
        (root / "bin" / applet).symlink_to("busybox")
    (root / "etc").mkdir()
    (root / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"
    )
    (root / "etc" / "group").write_text("root:x:0:\napp:x:1000:\nextra:x:2000:app\n")
    yield bundle
    _remove_cgroup_parent()


def _remove_cgroup_parent() -> None:
    base = Path("/sys/fs/cgroup")
    name = CGROUP_PARENT.strip("/")
    for controller in base.iterdir() if base.is_dir() else []:
        top = controller / name
        if not top.is_dir():
            continue
        for dirpath, _, _ in sorted(os.walk(top), key=lambda w: -w[0].count("/")):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)


def _run(bundle: Path, spec: dict[str, Any]) -> tuple[int, str, str]:
    assert RUNC is not None
    (bundle / "config.json").write_text(json.dumps(spec))
    state = bundle.parent / "runc-state"
    cid = f"spec-smoke-{uuid.uuid4().hex[:12]}"
    out, err = bundle.parent / "stdout", bundle.parent / "stderr"
    try:
        with open(out, "wb") as o, open(err, "wb") as e:
            proc = subprocess.run(
                [RUNC, "--root", str(state), "run", "--bundle", str(bundle), cid],
                stdin=subprocess.DEVNULL,
                stdout=o,
                stderr=e,
                timeout=60,
                check=False,
            )
    finally:
        subprocess.run(
            [RUNC, "--root", str(state), "delete", "--force", cid],
            capture_output=True,
            timeout=30,
            check=False,
        )
    return proc.returncode, out.read_text(), err.read_text()


@smoke
def test_smoke_runc_runs_the_spec(bundle: Path, tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost smoke-marker\n")
    cfg = config(
        command=["sh", "-c", "id; echo $HOSTNAME; hostname; cat /etc/hosts"],
        envs=[m.KeyValue(key="GREETING", value="hi")],
    )
    sb = SandboxInfo(
        id="sb-smoke",
        namespaces={},
        host_namespaces={"network"},
        hostname="smoke-host",
        etc_files={"/etc/hosts": str(hosts)},
        cgroup_parent=CGROUP_PARENT,
    )
    spec = build_spec(
        container_id="smoke1",
        config=cfg,
        sandbox=sb,
        image=ImageInfo({"User": "app"}),
        rootfs=bundle / "rootfs",
    )
    rc, out, err = _run(bundle, spec)
    assert rc == 0, (out, err)
    lines = out.splitlines()
    assert lines[0].startswith("uid=1000(app) gid=1000(app)"), out
    assert "2000(extra)" in lines[0]
    assert lines[1] == "smoke-host"
    assert lines[2] == "smoke-host"
    assert "smoke-marker" in out


@smoke
def test_smoke_readonly_rootfs(bundle: Path) -> None:
    cfg = config(
        command=["sh", "-c", "touch /x; echo rc=$?; touch /dev/shm/ok && echo shm-ok"],
        linux=security(readonly_rootfs=True),
    )
    sb = SandboxInfo(
        id="sb-smoke", host_namespaces={"network"}, hostname="ro", cgroup_parent=CGROUP_PARENT
    )
    spec = build_spec(
        container_id="smoke2", config=cfg, sandbox=sb, image=ImageInfo({}), rootfs=bundle / "rootfs"
    )
    rc, out, err = _run(bundle, spec)
    assert rc == 0, (out, err)
    assert "rc=1" in out, out
    assert "Read-only file system" in err, err
    assert "shm-ok" in out
    assert not (bundle / "rootfs" / "x").exists()
