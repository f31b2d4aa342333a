"""The OCI runtime spec (``config.json``) of a CRI container, and user lookup in a rootfs.

:func:`build_spec` is a pure function of its arguments plus a few facts about the host
(:class:`HostFacts`: the capabilities this process may grant, its oom_score_adj and
RLIMIT_NOFILE hard limit, the cgroup mode and controllers). It returns the spec as a dict, ready
for ``json.dump``; it creates nothing on the host. The rules follow kubelet's documented
behaviour and containerd's CRI plugin (``internal/cri/server/container_create*.go``,
``internal/cri/opts/spec_*``), with the differences noted below.

Process
    - argv (kubelet's rules): ``command`` replaces the image Entrypoint *and* drops the image
      Cmd; ``args`` replaces the image Cmd. ``Entrypoint: [""]`` (Docker's "reset") counts as
      no entrypoint. Nothing left → InvalidArgument "no command specified".
    - env: ``PATH`` default, ``TERM=xterm`` (tty only), ``HOSTNAME=<sandbox hostname>``, then the
      image Env, then ``config.envs``; a later entry replaces an earlier one with the same key in
      place (containerd's ``replaceOrAppendEnvValues``; an image entry without ``=`` unsets).
    - cwd: ``working_dir``, else the image WorkingDir, else ``/``.
    - user: ``run_as_username``/``run_as_user`` (+ ``run_as_group``), else the image User,
      else ``0``; resolved in the rootfs by :func:`resolve_user`. additionalGids = the primary
      gid, then (policy Merge) the groups of ``/etc/group`` listing the user, plus
      ``supplemental_groups``; sorted and deduplicated (containerd 2.x keeps the primary gid in
      the list as well).
    - ``terminal`` = ``tty``; ``noNewPrivileges`` = ``no_new_privs``; ``oomScoreAdj`` =
      the requested value clamped to [current process's value, 1000] (containerd's
      ``restrict_oom_score_adj``), set only when resources are given.
    - rlimits: only RLIMIT_NOFILE, soft = hard = min(our hard limit, 1048576).
    - capabilities: containerd 1.x's default set in bounding/effective/permitted; ``ALL`` in
      add (all capabilities this process has) then ``ALL`` in drop are applied before the
      single names, as containerd does, so ``drop: [ALL], add: [NET_ADMIN]`` works. Names are
      case-insensitive with or without ``CAP_``. add_ambient_capabilities go to every set,
      ambient and inheritable included (api.proto). Privileged: every capability this process
      holds (cap_last_cap ∩ CapEff: a privileged container can't get what runc lacks, e.g.
      CAP_SYS_RESOURCE here).
Root
    ``root.path`` = the rootfs, ``root.readonly`` = ``readonly_rootfs``.
Mounts (destination-depth order, parents first; stable, so defaults lead at equal depth)
    - defaults: proc, /dev tmpfs, devpts, /dev/shm, mqueue, sysfs (ro unless privileged),
      cgroup (ro unless privileged). /dev/shm is the host's with host IPC, else the sandbox's
      ``etc_files["/dev/shm"]`` when given (shared with the pod), else a 64 MiB tmpfs.
    - sandbox files (``etc_files``: /etc/hosts, /etc/resolv.conf, /etc/hostname): rbind,
      rprivate, read-only when the rootfs is (containerd does the same).
    - ``config.mounts``: rbind + rprivate/rslave/rshared + ro/rw (``rro`` for
      recursive_read_only, which needs readonly and private propagation); the host path's
      symlinks are resolved (api.proto); a missing host path → InvalidArgument. rshared/rslave
      also set ``linux.rootfsPropagation`` (containerd), the host mount's propagation is not
      checked here. selinux_relabel is ignored (no SELinux). A CRI mount replaces any default
      or sandbox mount at the same destination; a CRI ``/dev`` also drops the defaults below
      /dev. Image mounts (``Mount.image``) must have been resolved to a host path by the
      caller; idmapped mounts are refused (no user namespaces).
    - image Volumes are ignored (containerd's ``image_volumes = "ignore"`` mode): nothing is
      mounted there, the image's own content at that path stays visible in the rootfs.
Devices
    Each ``config.devices`` entry (symlinks resolved; a directory adds every device below it)
    becomes a ``linux.devices`` node (type, major, minor, mode, owner from stat) and an allow
    rule after a deny-all rule (runc adds its own defaults: null, zero, tty, ptmx...).
    Privileged: every device node of the host's /dev (as runc's HostDevices walks it) and
    allow-all.
Namespaces
    mount is always new. network/ipc/uts follow the sandbox: its path when given, omitted
    (= host) when it is in ``host_namespaces``, else new (then ``hostname`` is set). pid:
    POD → the sandbox's, CONTAINER → new, NODE → host (the sandbox must be host-pid too),
    TARGET → ``target_pid_ns``. cgroup: new on a cgroup v2 host unless privileged (containerd).
    User namespaces are refused unless absent or NODE.
Security
    masked/readonly paths: the config's, else kubelet's defaults; none when privileged.
    ``seccomp_profile`` (the caller's, already resolved) goes to ``linux.seccomp`` unless
    privileged. AppArmor: no profile is set; a Localhost profile → InvalidArgument (not
    supported here). SELinux options are ignored. A privileged container needs a privileged
    sandbox.
Sysctls
    The sandbox's namespaced sysctls (net.*, kernel.shm*, kernel.msg*, kernel.sem,
    fs.mqueue.*) go to ``linux.sysctl``; a net.* one with host network, an IPC one with host
    IPC or any other sysctl → InvalidArgument naming it. Slash-separated names are converted.
Resources and cgroup
    cpu shares/quota/period/cpus/mems, memory limit (swap = memory_swap_limit_in_bytes, or =
    the limit to forbid swapping, when the swap controller exists), hugepage limits (skipped
    when there is no hugetlb controller, like containerd's tolerate_missing_hugetlb_controller),
    ``unified`` only on cgroup v2 hosts. ``cgroupsPath`` = ``<parent or /criadapt>/<id>``
    (cgroupfs driver; a systemd slice parent → InvalidArgument).
Annotations
    ``config.annotations`` then ``annotations`` (ours win) into ``annotations``.
"""

from __future__ import annotations

import logging
import os
import posixpath
import resource
import socket
import stat
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from criadapt import models as m
from criadapt.errors import FailedPrecondition, InvalidArgument

log = logging.getLogger("criadapt.runc.spec")

OCI_VERSION = "1.0.2-dev"
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_CGROUP_PARENT = "/criadapt"
MAX_NOFILE = 1048576
MAX_OOM_SCORE_ADJ = 1000
MAX_ID = 2**31 - 1  # runc refuses larger uids/gids

#: Linux capability names by number (``include/uapi/linux/capability.h``), without ``CAP_``.
CAPABILITIES: tuple[str, ...] = tuple(
    """
    CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP LINUX_IMMUTABLE
    NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER SYS_MODULE SYS_RAWIO
    SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME
    SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP MAC_OVERRIDE MAC_ADMIN SYSLOG
    WAKE_ALARM BLOCK_SUSPEND AUDIT_READ PERFMON BPF CHECKPOINT_RESTORE
    """.split()  # noqa: SIM905
)

#: containerd 1.x's default capabilities (``pkg/oci/spec.go``), Docker's set.
DEFAULT_CAPABILITIES: tuple[str, ...] = tuple(
    "CAP_" + name
    for name in """
    CHOWN DAC_OVERRIDE FSETID FOWNER MKNOD NET_RAW SETGID SETUID SETFCAP SETPCAP
    NET_BIND_SERVICE SYS_CHROOT KILL AUDIT_WRITE
    """.split()  # noqa: SIM905
)

#: kubelet's defaults (k8s.io/kubernetes pkg/securitycontext: DefaultProcMount).
DEFAULT_MASKED_PATHS: tuple[str, ...] = (
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
DEFAULT_READONLY_PATHS: tuple[str, ...] = (
    "/proc/asound",
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)

_PROPAGATION = {
    m.MountPropagation.PROPAGATION_PRIVATE: "rprivate",
    m.MountPropagation.PROPAGATION_HOST_TO_CONTAINER: "rslave",
    m.MountPropagation.PROPAGATION_BIDIRECTIONAL: "rshared",
}

_USER_FILE_LIMIT = 16 * 1024 * 1024
_MAX_SYMLINKS = 40


# -- inputs ---------------------------------------------------------------------------------


def _frozen_map(value: Mapping[str, str] | None) -> Mapping[str, str]:
    return dict(value or {})


def _names(value: Iterable[str] | None) -> frozenset[str]:
    return frozenset(value or ())


@attrs.frozen(kw_only=True)
class SandboxInfo:
    """What a sandbox gives its containers.

    ``namespaces`` maps an OCI namespace type ("network", "ipc", "uts", "pid") to the path the
    container joins. A type absent from it is new for the container, unless it is in
    ``host_namespaces`` (the sandbox runs in the host's namespace: NODE mode), in which case the
    container stays in the host's namespace too. The mount namespace is always new.
    """

    id: str
    namespaces: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_map)
    host_namespaces: frozenset[str] = attrs.field(factory=frozenset, converter=_names)
    hostname: str = ""
    #: container path → host file, bind-mounted ("/etc/hosts", "/etc/resolv.conf",
    #: "/etc/hostname"; "/dev/shm" for the pod's shared shm).
    etc_files: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_map)
    #: cgroupfs path of the pod ("/kubepods/besteffort/pod<uid>"); "" → /criadapt.
    cgroup_parent: str = ""
    #: the sandbox config's sysctls; containers carry the namespaced ones.
    sysctls: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_map)
    privileged: bool = False


@attrs.frozen
class ImageInfo:
    """The image config's ``config`` object (Entrypoint, Cmd, Env, WorkingDir, User, ...)."""

    config: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class HostFacts:
    """The host facts :func:`build_spec` depends on; :meth:`detect` reads them."""

    #: capabilities (``CAP_*``) this process may grant: known to the kernel and effective.
    capabilities: tuple[str, ...]
    #: this process's oom_score_adj: a container can't go lower without CAP_SYS_RESOURCE.
    oom_score_adj: int = 0
    #: this process's RLIMIT_NOFILE hard limit.
    nofile_hard: int = 1024
    cgroup_v2: bool = False
    swap_controller: bool = False
    hugetlb_controller: bool = False
    #: the node's hostname, for sandboxes without one (host network).
    hostname: str = ""
    #: where privileged containers' host devices are found.
    dev_root: str = "/dev"

    @classmethod
    def detect(cls) -> HostFacts:
        cgroup_v2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
        if cgroup_v2:
            controllers = _read_text("/sys/fs/cgroup/cgroup.controllers").split()
            hugetlb = "hugetlb" in controllers
            swap = _cgroup2_self_has("memory.swap.max")
        else:
            hugetlb = os.path.isdir("/sys/fs/cgroup/hugetlb")
            swap = os.path.exists("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        return cls(
            capabilities=_current_capabilities(),
            oom_score_adj=int(_read_text("/proc/self/oom_score_adj").strip() or 0),
            nofile_hard=MAX_NOFILE if hard == resource.RLIM_INFINITY else hard,
            cgroup_v2=cgroup_v2,
            swap_controller=swap,
            hugetlb_controller=hugetlb,
            hostname=socket.gethostname(),
        )


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return ""


def _cgroup2_self_has(name: str) -> bool:
    for line in _read_text("/proc/self/cgroup").splitlines():
        if line.startswith("0::"):
            return os.path.exists(posixpath.join("/sys/fs/cgroup", line[3:].lstrip("/"), name))
    return False


def _current_capabilities() -> tuple[str, ...]:
    """Capabilities known to the kernel (cap_last_cap) that this process has in CapEff."""
    try:
        last = int(_read_text("/proc/sys/kernel/cap_last_cap").strip())
    except ValueError:
        last = len(CAPABILITIES) - 1
    effective = (1 << (last + 1)) - 1
    for line in _read_text("/proc/self/status").splitlines():
        if line.startswith("CapEff:"):
            effective = int(line.split()[1], 16)
    return tuple(
        "CAP_" + CAPABILITIES[bit]
        for bit in range(min(last + 1, len(CAPABILITIES)))
        if effective >> bit & 1
    )


# -- users ----------------------------------------------------------------------------------


def resolve_user(rootfs: Path, user: str) -> tuple[int, int, list[int]]:
    """``(uid, gid, groups)`` of an OCI image ``User`` string, looked up in ``rootfs``.

    ``user`` is ``uid``, ``name``, ``uid:gid``, ``name:group``, ``uid:group`` or ``name:gid``
    ("" means root). A name is looked up in the rootfs's /etc/passwd (/etc/group for a
    group); an unknown one raises FailedPrecondition naming it (api.proto: the runtime MUST
    error). A numeric uid missing from /etc/passwd is used as is, with gid 0 unless given
    (containerd's WithUserID). ``groups`` are the gids of the /etc/group entries that list the
    user's name as a member, sorted and unique; the primary gid is not added.

    The files are read without following any symlink out of the rootfs: every path component
    is opened with ``O_NOFOLLOW`` from a directory fd, and a symlink (say /etc/passwd →
    /usr/share/base-passwd/passwd, or → ../../../../host/etc/passwd) is resolved against the
    rootfs, ``..`` stopping at its root.
    """
    user = user.strip()
    if not user:
        user = "0"
    if user.count(":") > 1:
        raise InvalidArgument(f"invalid user {user!r}: expected user[:group]")
    user_part, _, group_part = user.partition(":")
    if not user_part:
        raise InvalidArgument(f"invalid user {user!r}: no user before ':'")
    uid_value = _parse_id(user_part, "uid", user)
    gid_value = _parse_id(group_part, "gid", user) if group_part else None

    passwd = _parse_passwd(_read_in_root(rootfs, "/etc/passwd"))
    entry: tuple[str, int, int] | None
    if uid_value is None:
        entry = next((p for p in passwd if p[0] == user_part), None)
        if entry is None:
            raise FailedPrecondition(
                f"user {user_part!r} not found in the image's /etc/passwd"
                + ("" if passwd else " (none or empty)")
            )
    else:
        entry = next((p for p in passwd if p[1] == uid_value), None)
    name = entry[0] if entry else None
    uid = entry[1] if entry else (uid_value or 0)
    gid = entry[2] if entry else 0

    groups_data = _read_in_root(rootfs, "/etc/group")
    groups = _parse_group(groups_data)
    if group_part:
        if gid_value is None:
            found = next((g for g in groups if g[0] == group_part), None)
            if found is None:
                raise FailedPrecondition(
                    f"group {group_part!r} not found in the image's /etc/group"
                )
            gid = found[1]
        else:
            gid = gid_value
    extra = sorted({g[1] for g in groups if name is not None and name in g[2]})
    return uid, gid, extra


def _parse_id(text: str, what: str, user: str) -> int | None:
    """The number in ``text``, or None when it is a name."""
    if not text.isdigit():
        if text.lstrip("-+").isdigit():
            raise InvalidArgument(f"invalid user {user!r}: {what} out of range")
        return None
    value = int(text)
    if value > MAX_ID:
        raise InvalidArgument(f"invalid user {user!r}: {what} out of range")
    return value


def _parse_passwd(data: bytes | None) -> list[tuple[str, int, int]]:
    out: list[tuple[str, int, int]] = []
    for line in (data or b"").decode("utf-8", "replace").splitlines():
        fields = line.strip().split(":")
        if len(fields) < 4 or not fields[0] or fields[0].startswith("#"):
            continue
        if fields[2].isdigit() and fields[3].isdigit():
            out.append((fields[0], int(fields[2]), int(fields[3])))
    return out


def _parse_group(data: bytes | None) -> list[tuple[str, int, list[str]]]:
    out: list[tuple[str, int, list[str]]] = []
    for line in (data or b"").decode("utf-8", "replace").splitlines():
        fields = line.strip().split(":")
        if len(fields) < 3 or not fields[0] or fields[0].startswith("#"):
            continue
        if fields[2].isdigit():
            members = [u.strip() for u in fields[3].split(",")] if len(fields) > 3 else []
            out.append((fields[0], int(fields[2]), [u for u in members if u]))
    return out


def _read_in_root(rootfs: Path, path: str) -> bytes | None:
    """The content of the regular file ``path`` of ``rootfs`` (symlinks resolved inside it).

    None when it doesn't exist or isn't a regular file.
    """
    try:
        root_fd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise FailedPrecondition(f"cannot open the container rootfs {rootfs}: {exc}") from exc
    try:
        fd = _open_in_root(root_fd, path)
    finally:
        os.close(root_fd)
    if fd is None:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        # Reopening an O_PATH fd through /proc follows no path: it is that very inode.
        with open(f"/proc/self/fd/{fd}", "rb") as f:
            data = f.read(_USER_FILE_LIMIT + 1)
    finally:
        os.close(fd)
    if len(data) > _USER_FILE_LIMIT:
        raise FailedPrecondition(f"the image's {path} is larger than {_USER_FILE_LIMIT} bytes")
    return data


def _open_in_root(root_fd: int, path: str) -> int | None:
    """An ``O_PATH`` fd of ``path`` resolved inside ``root_fd``, or None if it doesn't exist."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    stack = [os.dup(root_fd)]  # the directories from the root to the current one
    links = 0
    try:
        while parts:
            name = parts.pop(0)
            if name == "..":
                if len(stack) > 1:
                    os.close(stack.pop())
                continue
            if not stat.S_ISDIR(os.fstat(stack[-1]).st_mode):
                return None  # a non-directory in a parent position
            try:
                fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=stack[-1])
            except (FileNotFoundError, NotADirectoryError):
                return None
            if stat.S_ISLNK(os.fstat(fd).st_mode):
                try:
                    target = os.readlink("", dir_fd=fd)
                finally:
                    os.close(fd)
                links += 1
                if links > _MAX_SYMLINKS:
                    raise FailedPrecondition(f"too many levels of symbolic links in {path}")
                if target.startswith("/"):
                    while len(stack) > 1:
                        os.close(stack.pop())
                parts[:0] = [p for p in target.split("/") if p not in ("", ".")]
                continue
            stack.append(fd)
        return os.dup(stack[-1])
    finally:
        for fd in stack:
            os.close(fd)


# -- the spec -------------------------------------------------------------------------------


def build_spec(
    *,
    container_id: str,
    config: m.ContainerConfig,
    sandbox: SandboxInfo,
    image: ImageInfo,
    rootfs: Path,
    annotations: Mapping[str, str] | None = None,
    target_pid_ns: str | None = None,
    seccomp_profile: Mapping[str, Any] | None = None,
    host: HostFacts | None = None,
) -> dict[str, Any]:
    """The OCI runtime spec of the container ``container_id`` (see the module docstring).

    ``target_pid_ns`` is the pid namespace path of the target container, needed for the TARGET
    pid mode. ``seccomp_profile`` is the ``linux.seccomp`` object to use (already resolved from
    the security context by the caller), None for unconfined. ``host`` defaults to
    :meth:`HostFacts.detect`.
    """
    host = host or HostFacts.detect()
    linux_config = config.linux or m.LinuxContainerConfig()
    sc = linux_config.security_context or m.LinuxContainerSecurityContext()
    privileged = sc.privileged
    if privileged and not sandbox.privileged:
        raise InvalidArgument("no privileged container allowed in a non-privileged sandbox")
    image_config = image.config or {}

    user, additional_gids = _user(rootfs, sc, image_config)
    process: dict[str, Any] = {
        "terminal": bool(config.tty),
        "user": {"uid": user[0], "gid": user[1], "additionalGids": additional_gids},
        "args": _argv(config, image_config),
        "env": _env(config, image_config, sandbox.hostname or host.hostname),
        "cwd": config.working_dir or image_config.get("WorkingDir") or "/",
        "capabilities": _capabilities(sc, host),
        "rlimits": [
            {"type": "RLIMIT_NOFILE", "hard": _nofile(host), "soft": _nofile(host)},
        ],
        "noNewPrivileges": bool(sc.no_new_privs),
    }
    resources = linux_config.resources
    if resources is not None:
        process["oomScoreAdj"] = min(
            max(resources.oom_score_adj, host.oom_score_adj), MAX_OOM_SCORE_ADJ
        )
    _check_apparmor(sc)

    namespaces = _namespaces(sc, sandbox, target_pid_ns, host, privileged)
    linux: dict[str, Any] = {
        "namespaces": namespaces,
        "cgroupsPath": _cgroups_path(sandbox.cgroup_parent, container_id),
        "resources": _resources(resources, host),
    }
    mounts, rootfs_propagation = _mounts(config, sc, sandbox, privileged)
    if rootfs_propagation:
        linux["rootfsPropagation"] = rootfs_propagation

    devices, device_rules = _devices(config.devices, privileged, host)
    linux["devices"] = devices
    linux["resources"]["devices"] = device_rules

    if not privileged:
        linux["maskedPaths"] = list(sc.masked_paths or DEFAULT_MASKED_PATHS)
        linux["readonlyPaths"] = list(sc.readonly_paths or DEFAULT_READONLY_PATHS)
        if seccomp_profile is not None:
            linux["seccomp"] = dict(seccomp_profile)
    sysctls = _sysctls(sandbox)
    if sysctls:
        linux["sysctl"] = sysctls

    spec: dict[str, Any] = {
        "ociVersion": OCI_VERSION,
        "process": process,
        "root": {"path": str(rootfs), "readonly": bool(sc.readonly_rootfs)},
        "mounts": mounts,
        "linux": linux,
        "annotations": {**dict(config.annotations), **dict(annotations or {})},
    }
    if {"type": "uts"} in namespaces:  # its own UTS namespace (never in a real pod)
        spec["hostname"] = sandbox.hostname or host.hostname
    return spec


# -- process --------------------------------------------------------------------------------


def _strings(value: Any) -> list[str]:
    return [str(v) for v in value] if value else []


def _argv(config: m.ContainerConfig, image_config: Mapping[str, Any]) -> list[str]:
    command = list(config.command)
    args = list(config.args)
    if not command:
        if not args:
            args = _strings(image_config.get("Cmd"))
        entrypoint = _strings(image_config.get("Entrypoint"))
        command = [] if entrypoint == [""] else entrypoint
    argv = command + args
    if not argv:
        raise InvalidArgument("no command specified")
    return argv


def _env(config: m.ContainerConfig, image_config: Mapping[str, Any], hostname: str) -> list[str]:
    env: dict[str, str] = {}  # key → "key=value"; dicts keep the first insertion's position

    def apply(entry: str) -> None:
        key, sep, _ = entry.partition("=")
        if not sep:
            env.pop(key, None)  # "KEY" alone unsets (containerd)
        elif key:
            env[key] = entry

    apply(DEFAULT_PATH)
    if config.tty:
        apply("TERM=xterm")
    apply(f"HOSTNAME={hostname}")
    for entry in _strings(image_config.get("Env")):
        apply(entry)
    for kv in config.envs:
        if kv.key:
            env[kv.key] = f"{kv.key}={kv.value}"
    return list(env.values())


def _user(
    rootfs: Path, sc: m.LinuxContainerSecurityContext, image_config: Mapping[str, Any]
) -> tuple[tuple[int, int], list[int]]:
    if sc.run_as_username:
        user = sc.run_as_username
    elif sc.run_as_user is not None:
        user = str(sc.run_as_user.value)
    else:
        user = ""
    if sc.run_as_group is not None:
        if not user:
            raise InvalidArgument("run_as_group is set without run_as_user or run_as_username")
        user = f"{user}:{sc.run_as_group.value}"
    if not user:
        user = str(image_config.get("User") or "")
    uid, gid, groups = resolve_user(rootfs, user)
    extra: set[int] = set(sc.supplemental_groups)
    if sc.supplemental_groups_policy == m.SupplementalGroupsPolicy.Merge:
        extra.update(groups)
    for value in extra:
        if not 0 <= value <= MAX_ID:
            raise InvalidArgument(f"supplemental group {value} out of range")
    extra.discard(gid)
    return (uid, gid), [gid, *sorted(extra)]


def _cap_name(name: str) -> str:
    upper = name.strip().upper()
    return upper if upper.startswith("CAP_") else "CAP_" + upper


def _capabilities(sc: m.LinuxContainerSecurityContext, host: HostFacts) -> dict[str, list[str]]:
    available = list(host.capabilities)
    known = {"CAP_" + c for c in CAPABILITIES}
    ambient: list[str] = []
    if sc.privileged:
        caps = available
    else:
        caps = [c for c in DEFAULT_CAPABILITIES if c in available]
        requested = sc.capabilities or m.Capability()
        adds = [_cap_name(c) for c in requested.add_capabilities]
        drops = [_cap_name(c) for c in requested.drop_capabilities]
        ambient = [_cap_name(c) for c in requested.add_ambient_capabilities]
        if "CAP_ALL" in adds:
            caps = list(available)
        if "CAP_ALL" in drops:
            caps = []
        for cap in [c for c in adds if c != "CAP_ALL"] + ambient:
            if cap not in known:
                raise InvalidArgument(f"unknown capability {cap}")
            if cap not in available:
                raise FailedPrecondition(
                    f"capability {cap} is not available to the runtime on this node"
                )
            if cap not in caps:
                caps.append(cap)
        removed = {c for c in drops if c != "CAP_ALL"}
        caps = [c for c in caps if c not in removed]
        ambient = [c for c in dict.fromkeys(ambient) if c not in removed]
    out = {"bounding": list(caps), "effective": list(caps), "permitted": list(caps)}
    if ambient:
        out["inheritable"] = list(ambient)
        out["ambient"] = list(ambient)
    return out


def _nofile(host: HostFacts) -> int:
    return min(host.nofile_hard, MAX_NOFILE)


def _check_apparmor(sc: m.LinuxContainerSecurityContext) -> None:
    localhost = False
    if sc.apparmor is not None:
        localhost = sc.apparmor.profile_type == m.ProfileType.Localhost
    elif sc.apparmor_profile:
        localhost = sc.apparmor_profile.startswith("localhost/")
    if localhost and not sc.privileged:
        raise InvalidArgument("apparmor is not supported by this runtime (localhost profile)")


# -- namespaces and cgroups -----------------------------------------------------------------


def _namespaces(
    sc: m.LinuxContainerSecurityContext,
    sandbox: SandboxInfo,
    target_pid_ns: str | None,
    host: HostFacts,
    privileged: bool,
) -> list[dict[str, str]]:
    options = sc.namespace_options or m.NamespaceOption()
    userns = options.userns_options
    if userns is not None and userns.mode != m.NamespaceMode.NODE:
        raise InvalidArgument("user namespaces are not supported")

    def from_sandbox(kind: str) -> dict[str, str] | None:
        if kind in sandbox.host_namespaces:
            return None
        path = sandbox.namespaces.get(kind)
        return {"type": kind, "path": path} if path else {"type": kind}

    namespaces: list[dict[str, str]] = []
    for kind in ("network", "ipc", "uts"):
        ns = from_sandbox(kind)
        if ns is not None:
            namespaces.append(ns)

    pid_mode = options.pid
    if pid_mode == m.NamespaceMode.CONTAINER:
        namespaces.append({"type": "pid"})
    elif pid_mode == m.NamespaceMode.NODE:
        if "pid" not in sandbox.host_namespaces:
            raise InvalidArgument("host PID namespace requested in a sandbox that does not use it")
    elif pid_mode == m.NamespaceMode.TARGET:
        if not target_pid_ns:
            raise InvalidArgument(
                f"pid namespace TARGET {options.target_id!r}: the target's namespace is unknown"
            )
        namespaces.append({"type": "pid", "path": target_pid_ns})
    else:  # POD
        ns = from_sandbox("pid")
        if ns is not None:
            namespaces.append(ns)

    namespaces.append({"type": "mount"})
    if host.cgroup_v2 and not privileged:
        namespaces.append({"type": "cgroup"})
    return namespaces


def _cgroups_path(parent: str, container_id: str) -> str:
    parent = parent.rstrip("/")
    if parent.endswith(".slice") or ":" in parent or ".slice/" in parent:
        raise InvalidArgument(
            f"cgroup parent {parent!r}: systemd cgroup driver not supported; use cgroupfs"
        )
    if not parent:
        parent = DEFAULT_CGROUP_PARENT
    elif not parent.startswith("/"):
        parent = "/" + parent
    return posixpath.normpath(f"{parent}/{container_id}")


def _resources(resources: m.LinuxContainerResources | None, host: HostFacts) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if resources is None:
        return out
    cpu: dict[str, Any] = {}
    if resources.cpu_shares:
        cpu["shares"] = resources.cpu_shares
    if resources.cpu_quota:
        cpu["quota"] = resources.cpu_quota
    if resources.cpu_period:
        cpu["period"] = resources.cpu_period
    if resources.cpuset_cpus:
        cpu["cpus"] = resources.cpuset_cpus
    if resources.cpuset_mems:
        cpu["mems"] = resources.cpuset_mems
    if cpu:
        out["cpu"] = cpu
    memory: dict[str, Any] = {}
    if resources.memory_limit_in_bytes:
        memory["limit"] = resources.memory_limit_in_bytes
        if host.swap_controller and not resources.memory_swap_limit_in_bytes:
            memory["swap"] = resources.memory_limit_in_bytes  # no swapping by default
    if resources.memory_swap_limit_in_bytes and host.swap_controller:
        memory["swap"] = resources.memory_swap_limit_in_bytes
    if memory:
        out["memory"] = memory
    if resources.hugepage_limits:
        if host.hugetlb_controller:
            out["hugepageLimits"] = [
                {"pageSize": h.page_size, "limit": h.limit} for h in resources.hugepage_limits
            ]
        else:
            log.debug("no hugetlb cgroup controller: hugepage limits skipped")
    if resources.unified:
        if host.cgroup_v2:
            out["unified"] = dict(resources.unified)
        else:
            log.debug("cgroup v1 host: unified resources skipped")
    return out


def _sysctls(sandbox: SandboxInfo) -> dict[str, str]:
    out: dict[str, str] = {}
    for raw, value in sandbox.sysctls.items():
        name = _dotted(raw)
        if name.startswith("net."):
            if "network" in sandbox.host_namespaces:
                raise InvalidArgument(f"sysctl {raw!r} is not allowed with the host network")
        elif _is_ipc_sysctl(name):
            if "ipc" in sandbox.host_namespaces:
                raise InvalidArgument(f"sysctl {raw!r} is not allowed with the host IPC namespace")
        else:
            raise InvalidArgument(f"sysctl {raw!r} is not namespaced and cannot be set for a pod")
        out[name] = value
    return out


def _dotted(name: str) -> str:
    """kubelet accepts "net/ipv4/ip_forward" for "net.ipv4.ip_forward" ('.' and '/' swap)."""
    if "/" in name and (name.find("/") < name.find(".") or "." not in name):
        return name.translate(str.maketrans("/.", "./"))
    return name


def _is_ipc_sysctl(name: str) -> bool:
    return name.startswith(("kernel.shm", "kernel.msg", "fs.mqueue.")) or name == "kernel.sem"


# -- mounts ---------------------------------------------------------------------------------


def _default_mounts(privileged: bool, shm: dict[str, Any]) -> list[dict[str, Any]]:
    mode = "rw" if privileged else "ro"
    return [
        {
            "destination": "/proc",
            "type": "proc",
            "source": "proc",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        },
        shm,
        {
            "destination": "/dev/mqueue",
            "type": "mqueue",
            "source": "mqueue",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/sys",
            "type": "sysfs",
            "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", mode],
        },
        {
            "destination": "/sys/fs/cgroup",
            "type": "cgroup",
            "source": "cgroup",
            "options": ["nosuid", "noexec", "nodev", "relatime", mode],
        },
    ]


def _bind(source: str, destination: str, *options: str) -> dict[str, Any]:
    return {
        "destination": destination,
        "type": "bind",
        "source": source,
        "options": ["rbind", *options],
    }


def _shm_mount(sandbox: SandboxInfo) -> dict[str, Any]:
    if "ipc" in sandbox.host_namespaces:
        return _bind("/dev/shm", "/dev/shm", "rprivate", "rw")
    shared = sandbox.etc_files.get("/dev/shm")
    if shared:
        return _bind(shared, "/dev/shm", "rprivate", "rw")
    return {
        "destination": "/dev/shm",
        "type": "tmpfs",
        "source": "shm",
        "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
    }


def _mounts(
    config: m.ContainerConfig,
    sc: m.LinuxContainerSecurityContext,
    sandbox: SandboxInfo,
    privileged: bool,
) -> tuple[list[dict[str, Any]], str]:
    user_mounts: list[dict[str, Any]] = []
    propagation = ""
    for mount in config.mounts:
        spec_mount, mode = _user_mount(mount)
        user_mounts.append(spec_mount)
        if mode == "rshared":
            propagation = "rshared"
        elif mode == "rslave" and propagation != "rshared":
            propagation = "rslave"
    overridden = {mnt["destination"] for mnt in user_mounts}

    etc_mode = "ro" if sc.readonly_rootfs else "rw"
    etc_mounts = [
        _bind(source, posixpath.normpath(dest), "rprivate", etc_mode)
        for dest, source in sandbox.etc_files.items()
        if posixpath.normpath(dest) != "/dev/shm"
    ]
    candidates = _default_mounts(privileged, _shm_mount(sandbox)) + etc_mounts
    kept = [
        mnt
        for mnt in candidates
        if mnt["destination"] not in overridden
        and not ("/dev" in overridden and mnt["destination"].startswith("/dev/"))
    ]
    mounts = kept + user_mounts
    mounts.sort(key=lambda mnt: _depth(mnt["destination"]))  # stable: parents first
    return mounts, propagation


def _depth(path: str) -> int:
    return posixpath.normpath(path).count("/")


def _user_mount(mount: m.Mount) -> tuple[dict[str, Any], str]:
    destination = mount.container_path
    if not destination.startswith("/"):
        raise InvalidArgument(f"mount destination {destination!r} is not an absolute path")
    if mount.uidMappings or mount.gidMappings:
        raise InvalidArgument(
            f"mount {destination!r}: idmapped mounts need user namespaces, not supported"
        )
    if not mount.host_path:
        if mount.image is not None:
            raise InvalidArgument(f"mount {destination!r}: image mounts are not supported")
        raise InvalidArgument(f"mount {destination!r} has no host path")
    if not os.path.exists(mount.host_path):
        raise InvalidArgument(
            f"host path {mount.host_path!r} of mount {destination!r} does not exist"
        )
    source = os.path.realpath(mount.host_path)  # api.proto: mount the symlink's target
    mode = _PROPAGATION.get(mount.propagation)
    if mode is None:
        raise InvalidArgument(f"mount {destination!r}: unknown propagation {mount.propagation!r}")
    if mount.recursive_read_only:
        if not mount.readonly:
            raise InvalidArgument(
                f"mount {destination!r}: recursive read-only conflicts with a read-write mount"
            )
        if mode != "rprivate":
            raise InvalidArgument(
                f"mount {destination!r}: recursive read-only needs private propagation"
            )
        access = "rro"
    else:
        access = "ro" if mount.readonly else "rw"
    return _bind(source, posixpath.normpath(destination), mode, access), mode


# -- devices --------------------------------------------------------------------------------


def _devices(
    devices: Sequence[m.Device], privileged: bool, host: HostFacts
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    nodes: dict[str, dict[str, Any]] = {}
    rules: list[dict[str, Any]] = [{"allow": False, "access": "rwm"}]
    for device in devices:
        permissions = device.permissions or "rwm"
        if set(permissions) - set("rwm"):
            raise InvalidArgument(
                f"device {device.host_path!r}: invalid permissions {device.permissions!r}"
            )
        container_path = device.container_path or device.host_path
        for node in _config_device(device.host_path, container_path):
            nodes.setdefault(node["path"], node)
            rules.append(
                {
                    "allow": True,
                    "type": node["type"],
                    "major": node["major"],
                    "minor": node["minor"],
                    "access": permissions,
                }
            )
    if privileged:
        for node in _walk_devices(host.dev_root, "/dev"):
            nodes.setdefault(node["path"], node)
        rules = [{"allow": True, "access": "rwm"}]
    return list(nodes.values()), rules


def _config_device(host_path: str, container_path: str) -> list[dict[str, Any]]:
    if not host_path or not os.path.exists(host_path):
        raise InvalidArgument(f"device {host_path!r} does not exist on the host")
    real = os.path.realpath(host_path)
    if os.path.isdir(real):
        return list(_walk_devices(real, container_path))
    node = _device_node(real, container_path)
    if node is None:
        raise InvalidArgument(f"{host_path!r} is not a device node")
    return [node]


def _device_node(host_path: str, container_path: str) -> dict[str, Any] | None:
    try:
        st = os.lstat(host_path)
    except OSError:
        return None
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    else:
        return None
    return {
        "path": container_path,
        "type": kind,
        "major": os.major(st.st_rdev),
        "minor": os.minor(st.st_rdev),
        "fileMode": stat.S_IMODE(st.st_mode),
        "uid": st.st_uid,
        "gid": st.st_gid,
    }


_SKIPPED_DEV_DIRS = frozenset({"pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"})


def _walk_devices(root: str, container_root: str) -> Iterator[dict[str, Any]]:
    """Device nodes below ``root`` as runc's HostDevices finds them (symlinks not followed)."""
    entries: Iterable[os.DirEntry[str]]
    try:
        with os.scandir(root) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        container_path = posixpath.join(container_root, entry.name)
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
        except OSError:
            continue
        if is_dir:
            if entry.name not in _SKIPPED_DEV_DIRS:
                yield from _walk_devices(entry.path, container_path)
        elif entry.name != "console":
            node = _device_node(entry.path, container_path)
            if node is not None:
                yield node


def linux_resources(resources: m.LinuxContainerResources, host: HostFacts) -> dict[str, Any]:
    """The OCI ``linux.resources`` object of ``resources`` (for ``runc update``)."""
    return _resources(resources, host)
