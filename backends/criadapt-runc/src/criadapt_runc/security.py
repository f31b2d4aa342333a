"""Seccomp and AppArmor for CRI containers: what goes to ``linux.seccomp`` and
``process.apparmorProfile`` of the OCI spec.

Seccomp (:class:`SeccompProfiles`)
    The profile asked for is read from the security context (container or sandbox):

    - the v1 field ``seccomp`` (:class:`~criadapt.models.SecurityProfile`) when set: it wins
      over the deprecated string;
    - else the deprecated ``seccomp_profile_path``: ``""`` (unset), ``runtime/default`` or
      ``docker/default`` (RuntimeDefault), ``unconfined``, ``localhost/<absolute path>``;
      anything else is InvalidArgument (containerd's ``invalid profile``);
    - unset means ``unset_means``: RuntimeDefault (CRI-O's ``seccomp_use_default_when_empty``,
      Kubernetes' SeccompDefault) or Unconfined (containerd's historic default).

    Privileged containers and Unconfined get no profile (``None``). RuntimeDefault is the
    default profile file (Podman's ``/usr/share/containers/seccomp.json`` from Debian's
    golang-github-containers-common) converted to the OCI form, or :data:`BUILTIN_PROFILE`
    when that file is missing. Localhost is the JSON file at an absolute path, in either form
    (see :func:`profile_format`); a missing, unreadable, non-JSON or invalid one, or a relative
    path, is InvalidArgument. A default profile file that exists but is invalid is
    FailedPrecondition (a node problem: no silent fallback to a weaker profile). On a kernel
    without seccomp, an explicitly requested profile is FailedPrecondition; an unset one means
    no profile.

    Conversion of the containers/Docker format (containers/common ``pkg/seccomp`` and moby's
    ``profiles/seccomp`` do the same):

    - ``architectures`` = the ``archMap`` entry of this machine's architecture and its
      sub-architectures (x86_64: SCMP_ARCH_X86_64, SCMP_ARCH_X86, SCMP_ARCH_X32); none when the
      map has no entry for it (libseccomp then uses the native one); a legacy
      ``architectures`` list is kept as is (both at once is an error);
    - a rule is dropped when ``excludes.arches`` names this architecture (libseccomp's name:
      amd64, arm64, x86, ...), when one of ``excludes.caps`` is in the container's capabilities
      (bounding set), when the kernel is at least ``excludes.minKernel``; when
      ``includes.arches`` doesn't name it, when one of ``includes.caps`` is missing (all are
      needed), when the kernel is older than ``includes.minKernel`` (major.minor of
      ``os.uname().release``);
    - ``errnoRet`` (or the newer ``errno`` name, e.g. ``"EPERM"``) is kept for SCMP_ACT_ERRNO
      and SCMP_ACT_TRACE only; ``defaultErrnoRet``/``defaultErrno`` likewise; comments go.

    Converted profiles are cached (bounded LRU) by (path, mtime, size, inode, capabilities):
    the default profile is ~16 KB of JSON naming ~440 syscalls. Every call returns a fresh
    copy, which the caller may change.

AppArmor (:func:`check_apparmor`)
    This host's kernel has no AppArmor. Then RuntimeDefault, unset and Unconfined apply
    nothing, and an explicitly requested profile (Localhost, or the deprecated
    ``localhost/<name>``) is FailedPrecondition naming it: the pod asked for a confinement
    the node can't give. With AppArmor enabled, Localhost gives the profile name for
    ``process.apparmorProfile`` (even for a privileged container, as containerd does);
    RuntimeDefault gives ``default_profile`` (a profile already loaded on the node) unless
    the container is privileged; we load no profile ourselves.
"""

from __future__ import annotations

import errno as errno_codes
import json
import logging
import os
import re
import stat
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from criadapt import models as m
from criadapt.errors import FailedPrecondition, InvalidArgument

log = logging.getLogger("criadapt.runc.security")

DEFAULT_PROFILE_PATH = Path("/usr/share/containers/seccomp.json")

RUNTIME_DEFAULT = "RuntimeDefault"
UNCONFINED = "Unconfined"
LOCALHOST = "Localhost"

#: a Localhost profile larger than this is refused (the default profile is ~16 KB)
MAX_PROFILE_SIZE = 4 * 1024 * 1024
#: converted profiles kept (LRU)
CACHE_SIZE = 64

_PROFILE_TYPES = {
    m.ProfileType.RuntimeDefault: RUNTIME_DEFAULT,
    m.ProfileType.Unconfined: UNCONFINED,
    m.ProfileType.Localhost: LOCALHOST,
}
_LOCALHOST_PREFIX = "localhost/"

ACT_ERRNO = "SCMP_ACT_ERRNO"
ACT_TRACE = "SCMP_ACT_TRACE"
ACT_ALLOW = "SCMP_ACT_ALLOW"
_ACTIONS = frozenset(
    {
        "SCMP_ACT_KILL",
        "SCMP_ACT_KILL_PROCESS",
        "SCMP_ACT_KILL_THREAD",
        "SCMP_ACT_TRAP",
        ACT_ERRNO,
        ACT_TRACE,
        ACT_ALLOW,
        "SCMP_ACT_LOG",
        "SCMP_ACT_NOTIFY",
    }
)
_ERRNO_ACTIONS = frozenset({ACT_ERRNO, ACT_TRACE})
_OPERATORS = frozenset(
    {
        "SCMP_CMP_NE",
        "SCMP_CMP_LT",
        "SCMP_CMP_LE",
        "SCMP_CMP_EQ",
        "SCMP_CMP_GE",
        "SCMP_CMP_GT",
        "SCMP_CMP_MASKED_EQ",
    }
)
#: the runtime-spec's architectures
_ARCHES = frozenset(
    "SCMP_ARCH_" + name
    for name in (
        "X86",
        "X86_64",
        "X32",
        "ARM",
        "AARCH64",
        "MIPS",
        "MIPS64",
        "MIPS64N32",
        "MIPSEL",
        "MIPSEL64",
        "MIPSEL64N32",
        "PPC",
        "PPC64",
        "PPC64LE",
        "S390",
        "S390X",
        "PARISC",
        "PARISC64",
        "RISCV64",
        "LOONGARCH64",
    )
)
_FLAGS = frozenset(
    {
        "SECCOMP_FILTER_FLAG_TSYNC",
        "SECCOMP_FILTER_FLAG_LOG",
        "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
        "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
    }
)
_MAX_U64 = 2**64 - 1

#: ``os.uname().machine`` → (libseccomp's name of the native arch, its SCMP_ARCH_* constant).
#: The names are those the profiles' ``includes.arches``/``excludes.arches`` use.
MACHINES: Mapping[str, tuple[str, str]] = {
    "x86_64": ("amd64", "SCMP_ARCH_X86_64"),
    "amd64": ("amd64", "SCMP_ARCH_X86_64"),
    "i386": ("x86", "SCMP_ARCH_X86"),
    "i486": ("x86", "SCMP_ARCH_X86"),
    "i586": ("x86", "SCMP_ARCH_X86"),
    "i686": ("x86", "SCMP_ARCH_X86"),
    "aarch64": ("arm64", "SCMP_ARCH_AARCH64"),
    "arm64": ("arm64", "SCMP_ARCH_AARCH64"),
    "armv6l": ("arm", "SCMP_ARCH_ARM"),
    "armv7l": ("arm", "SCMP_ARCH_ARM"),
    "armv8l": ("arm", "SCMP_ARCH_ARM"),
    "ppc64le": ("ppc64le", "SCMP_ARCH_PPC64LE"),
    "ppc64": ("ppc64", "SCMP_ARCH_PPC64"),
    "s390x": ("s390x", "SCMP_ARCH_S390X"),
    "riscv64": ("riscv64", "SCMP_ARCH_RISCV64"),
    "mips64": ("mips64", "SCMP_ARCH_MIPS64"),
}

_EPERM = errno_codes.EPERM


def _deny(names: Sequence[str], **filters: Any) -> dict[str, Any]:
    rule: dict[str, Any] = {"names": list(names), "action": ACT_ERRNO, "errnoRet": _EPERM}
    rule.update(filters)
    return rule


_CLONE_NEWUSER = 0x10000000

#: The RuntimeDefault profile when :data:`DEFAULT_PROFILE_PATH` is missing, in the
#: containers/Docker format (converted like the file). Everything is allowed except, with
#: EPERM: kexec and the kernel keyring always; module loading without CAP_SYS_MODULE; reboot
#: without CAP_SYS_BOOT; mounts, swap, quotas, pivot_root and the new mount API without
#: CAP_SYS_ADMIN; bpf without CAP_SYS_ADMIN or CAP_BPF; perf_event_open without CAP_SYS_ADMIN
#: or CAP_PERFMON; ptrace and userfaultfd without CAP_SYS_PTRACE; open_by_handle_at without
#: CAP_DAC_READ_SEARCH; acct without CAP_SYS_PACCT; clone/unshare creating a user namespace
#: without CAP_SYS_ADMIN (the other namespaces need that capability anyway). clone3, whose
#: flags a filter can't see, is ENOSYS without CAP_SYS_ADMIN so that libc falls back to
#: clone. Much weaker than the real default (which allows ~430 named syscalls and nothing
#: else), but safe: it only removes kernel attack surface a container has no use for.
BUILTIN_PROFILE: Mapping[str, Any] = {
    "defaultAction": ACT_ALLOW,
    "archMap": [
        {
            "architecture": "SCMP_ARCH_X86_64",
            "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        },
        {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
        {"architecture": "SCMP_ARCH_S390X", "subArchitectures": ["SCMP_ARCH_S390"]},
        {"architecture": "SCMP_ARCH_PPC64LE", "subArchitectures": []},
        {"architecture": "SCMP_ARCH_RISCV64", "subArchitectures": []},
    ],
    "syscalls": [
        _deny(["kexec_load", "kexec_file_load", "add_key", "keyctl", "request_key"]),
        _deny(
            ["init_module", "finit_module", "delete_module"],
            excludes={"caps": ["CAP_SYS_MODULE"]},
        ),
        _deny(["reboot"], excludes={"caps": ["CAP_SYS_BOOT"]}),
        _deny(
            [
                "mount",
                "umount",
                "umount2",
                "pivot_root",
                "swapon",
                "swapoff",
                "quotactl",
                "fsopen",
                "fsconfig",
                "fsmount",
                "fspick",
                "move_mount",
                "open_tree",
                "mount_setattr",
            ],
            excludes={"caps": ["CAP_SYS_ADMIN"]},
        ),
        _deny(["bpf"], excludes={"caps": ["CAP_SYS_ADMIN", "CAP_BPF"]}),
        _deny(["perf_event_open"], excludes={"caps": ["CAP_SYS_ADMIN", "CAP_PERFMON"]}),
        _deny(["ptrace", "userfaultfd"], excludes={"caps": ["CAP_SYS_PTRACE"]}),
        _deny(["open_by_handle_at"], excludes={"caps": ["CAP_DAC_READ_SEARCH"]}),
        _deny(["acct"], excludes={"caps": ["CAP_SYS_PACCT"]}),
        _deny(
            ["unshare"],
            args=[
                {
                    "index": 0,
                    "value": _CLONE_NEWUSER,
                    "valueTwo": _CLONE_NEWUSER,
                    "op": "SCMP_CMP_MASKED_EQ",
                }
            ],
            excludes={"caps": ["CAP_SYS_ADMIN"]},
        ),
        _deny(  # clone's flags are its 2nd argument on s390
            ["clone"],
            args=[
                {
                    "index": 0,
                    "value": _CLONE_NEWUSER,
                    "valueTwo": _CLONE_NEWUSER,
                    "op": "SCMP_CMP_MASKED_EQ",
                }
            ],
            excludes={"caps": ["CAP_SYS_ADMIN"], "arches": ["s390", "s390x"]},
        ),
        {
            "names": ["clone3"],
            "action": ACT_ERRNO,
            "errnoRet": errno_codes.ENOSYS,
            "excludes": {"caps": ["CAP_SYS_ADMIN"]},
        },
    ],
}


class ProfileError(ValueError):
    """A seccomp profile document that can't be used (the message says why)."""


# -- what is asked --------------------------------------------------------------------------

SecurityContext = m.LinuxContainerSecurityContext | m.LinuxSandboxSecurityContext


def seccomp_request(context: SecurityContext | None, unset_means: str) -> tuple[str, str, bool]:
    """``(kind, localhost path, explicit)`` of the seccomp profile ``context`` asks for.

    ``kind`` is RuntimeDefault, Unconfined or Localhost; ``explicit`` is False when nothing
    was set and ``kind`` is ``unset_means``.
    """
    if context is not None and context.seccomp is not None:
        profile = context.seccomp
        kind = _PROFILE_TYPES.get(profile.profile_type)
        if kind is None:
            raise InvalidArgument(f"unknown seccomp profile type {profile.profile_type!r}")
        path = profile.localhost_ref
        if kind == LOCALHOST:
            return kind, _trim_localhost(path), True
        if path:
            raise InvalidArgument("seccomp localhost_ref is only allowed for a Localhost profile")
        return kind, "", True
    value = context.seccomp_profile_path if context is not None else ""
    if not value:
        return unset_means, "", False
    if value in ("runtime/default", "docker/default"):
        return RUNTIME_DEFAULT, "", True
    if value == "unconfined":
        return UNCONFINED, "", True
    if value.startswith(_LOCALHOST_PREFIX):
        return LOCALHOST, value[len(_LOCALHOST_PREFIX) :], True
    raise InvalidArgument(f"invalid seccomp profile {value!r}")


def _trim_localhost(ref: str) -> str:
    # containerd trims the prefix "just in case" from the v1 field too
    return ref[len(_LOCALHOST_PREFIX) :] if ref.startswith(_LOCALHOST_PREFIX) else ref


def seccomp_supported() -> bool:
    """Whether this kernel has seccomp filters (``Seccomp:`` in /proc/self/status)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            return any(line.startswith("Seccomp:") for line in f)
    except OSError:
        return False


def _cap(name: str) -> str:
    upper = str(name).strip().upper()
    return upper if upper.startswith("CAP_") else "CAP_" + upper


def kernel_version(release: str) -> tuple[int, int] | None:
    """(major, minor) of a kernel release ("6.1.0-18-amd64" → (6, 1)), None if unparsable."""
    match = re.match(r"\s*(\d+)\.(\d+)", release)
    return (int(match[1]), int(match[2])) if match else None


# -- profiles -------------------------------------------------------------------------------


class SeccompProfiles:
    """Resolves the ``linux.seccomp`` object of a container (see the module docstring).

    ``machine``, ``kernel_release`` and ``supported`` default to this host's
    (``os.uname()``, :func:`seccomp_supported`); tests pass others.
    """

    def __init__(
        self,
        *,
        default_profile: Path | None = DEFAULT_PROFILE_PATH,
        unset_means: str = RUNTIME_DEFAULT,
        machine: str | None = None,
        kernel_release: str | None = None,
        supported: bool | None = None,
        cache_size: int = CACHE_SIZE,
    ) -> None:
        if unset_means not in (RUNTIME_DEFAULT, UNCONFINED):
            raise ValueError(f"unset_means must be {RUNTIME_DEFAULT} or {UNCONFINED}")
        uname = os.uname()
        self.default_profile = default_profile
        self.unset_means = unset_means
        self.machine = machine or uname.machine
        self.native_arch, self.seccomp_arch = MACHINES.get(self.machine, ("", ""))
        self.kernel = kernel_version(kernel_release or uname.release)
        self.supported = seccomp_supported() if supported is None else supported
        self.cache_size = cache_size
        self.hits = 0
        self.misses = 0
        self._cache: OrderedDict[tuple[Any, ...], dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._warned_missing = False

    def resolve(
        self,
        context: SecurityContext | None,
        *,
        capabilities: Sequence[str],
        privileged: bool,
    ) -> dict[str, Any] | None:
        """The OCI ``linux.seccomp`` object for the container, or None for unconfined.

        ``capabilities`` are the container's (its bounding set): they select the rules of
        the profile that depend on them.
        """
        kind, path, explicit = seccomp_request(context, self.unset_means)
        if privileged or kind == UNCONFINED:
            return None
        if not self.supported:
            if explicit:
                raise FailedPrecondition(
                    f"seccomp profile {path or kind} requested but this kernel has no seccomp"
                )
            log.debug("no seccomp in this kernel: unset profile means unconfined")
            return None
        caps = tuple(sorted({_cap(c) for c in capabilities}))
        if kind == RUNTIME_DEFAULT:
            return self.runtime_default(caps)
        return self.localhost(path, caps)

    def runtime_default(self, capabilities: Iterable[str]) -> dict[str, Any]:
        """The default profile for ``capabilities``, converted for this machine."""
        caps = tuple(sorted({_cap(c) for c in capabilities}))
        path = self.default_profile
        if path is not None:
            try:
                return self._load(str(path), caps)
            except FileNotFoundError:
                if not self._warned_missing:
                    self._warned_missing = True
                    log.warning("default seccomp profile %s is missing: built-in one used", path)
            except (OSError, ProfileError) as exc:
                raise FailedPrecondition(
                    f"the default seccomp profile {path} can't be used: {exc}"
                ) from exc
        key = ("<builtin>", caps)
        cached = self._cached(key)
        if cached is not None:
            return cached
        return self._store(key, self.convert(BUILTIN_PROFILE, caps))

    def localhost(self, path: str, capabilities: Iterable[str]) -> dict[str, Any]:
        """The profile of the JSON file ``path`` (absolute), converted when needed."""
        caps = tuple(sorted({_cap(c) for c in capabilities}))
        if not path or not os.path.isabs(path) or "\0" in path:
            raise InvalidArgument(
                f"seccomp profile {path!r}: a Localhost profile must be an absolute path"
            )
        try:
            return self._load(path, caps)
        except (OSError, ProfileError) as exc:
            raise InvalidArgument(f"seccomp profile {path}: {exc}") from exc

    def convert(self, document: Mapping[str, Any], capabilities: Iterable[str]) -> dict[str, Any]:
        """``document`` (either form) as an OCI ``linux.seccomp`` object for this machine."""
        return convert_profile(
            document,
            capabilities=capabilities,
            native_arch=self.native_arch,
            seccomp_arch=self.seccomp_arch,
            kernel=self.kernel,
        )

    def _load(self, path: str, caps: tuple[str, ...]) -> dict[str, Any]:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ProfileError("not a regular file")
            key = (path, st.st_mtime_ns, st.st_size, st.st_dev, st.st_ino, caps)
            cached = self._cached(key)
            if cached is not None:
                return cached
            if st.st_size > MAX_PROFILE_SIZE:
                raise ProfileError(f"larger than {MAX_PROFILE_SIZE} bytes")
            with os.fdopen(os.dup(fd), "rb") as f:
                data = f.read(MAX_PROFILE_SIZE + 1)
        finally:
            os.close(fd)
        if len(data) > MAX_PROFILE_SIZE:
            raise ProfileError(f"larger than {MAX_PROFILE_SIZE} bytes")
        try:
            document = json.loads(data)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            raise ProfileError(f"not valid JSON: {exc}") from exc
        if not isinstance(document, dict):
            raise ProfileError("not a JSON object")
        return self._store(key, self.convert(document, caps))

    def _cached(self, key: tuple[Any, ...]) -> dict[str, Any] | None:
        with self._lock:
            profile = self._cache.get(key)
            if profile is None:
                self.misses += 1
                return None
            self._cache.move_to_end(key)
            self.hits += 1
        return _copy(profile)

    def _store(self, key: tuple[Any, ...], profile: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self._cache[key] = profile
            self._cache.move_to_end(key)
            while len(self._cache) > max(self.cache_size, 0):
                self._cache.popitem(last=False)
        return _copy(profile)

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()


def _copy(profile: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a converted profile that shares nothing mutable (faster than deepcopy)."""
    out = dict(profile)
    for key in ("architectures", "flags"):
        if key in out:
            out[key] = list(out[key])
    out["syscalls"] = [
        {**rule, "names": list(rule["names"]), "args": [dict(a) for a in rule["args"]]}
        for rule in profile["syscalls"]
    ]
    return out


# -- conversion -----------------------------------------------------------------------------

_CONTAINERS_TOP_KEYS = frozenset({"archMap", "defaultErrno"})
_CONTAINERS_RULE_KEYS = frozenset({"name", "includes", "excludes", "comment", "errno"})


def profile_format(document: Mapping[str, Any]) -> str:
    """``"containers"`` for the containers/Docker format, ``"oci"`` for ``linux.seccomp``.

    The containers format is recognised by its own keys: ``archMap`` or ``defaultErrno`` at
    the top, ``name``, ``includes``, ``excludes``, ``comment`` or ``errno`` in a rule.
    Everything else the two forms share (defaultAction, architectures, syscalls with names,
    action, args, errnoRet), so a profile without those keys means the same in both.
    """
    if _CONTAINERS_TOP_KEYS & document.keys():
        return "containers"
    syscalls = document.get("syscalls")
    if isinstance(syscalls, list):
        for rule in syscalls:
            if isinstance(rule, dict) and _CONTAINERS_RULE_KEYS & rule.keys():
                return "containers"
    return "oci"


def convert_profile(
    document: Mapping[str, Any],
    *,
    capabilities: Iterable[str],
    native_arch: str,
    seccomp_arch: str,
    kernel: tuple[int, int] | None,
) -> dict[str, Any]:
    """``document`` as an OCI ``linux.seccomp`` object (see the module docstring).

    ``native_arch`` is libseccomp's name of this machine's architecture ("amd64"),
    ``seccomp_arch`` its SCMP_ARCH_* constant; ``kernel`` is (major, minor) or None
    (unknown: no ``includes.minKernel`` rule applies). Raises :class:`ProfileError`.
    """
    caps = frozenset(_cap(c) for c in capabilities)
    containers = profile_format(document) == "containers"

    action = document.get("defaultAction")
    if not action:
        raise ProfileError("no defaultAction")
    out: dict[str, Any] = {"defaultAction": _action(action, "defaultAction")}
    default_errno = _errno_ret(document, "defaultErrnoRet", "defaultErrno", "the default action")
    if default_errno is not None and action in _ERRNO_ACTIONS:
        out["defaultErrnoRet"] = default_errno

    architectures = document.get("architectures")
    arch_map = document.get("archMap")
    if architectures and arch_map:
        raise ProfileError("both architectures and archMap are given: use one")
    if architectures:
        out["architectures"] = [_arch(a) for a in _list(architectures, "architectures")]
    elif arch_map:
        for entry in _list(arch_map, "archMap"):
            if not isinstance(entry, dict):
                raise ProfileError("archMap entries must be objects")
            main = _arch(entry.get("architecture"))
            subs = [_arch(a) for a in _list(entry.get("subArchitectures"), "subArchitectures")]
            if main == seccomp_arch:
                out["architectures"] = [main, *subs]
                break

    flags = document.get("flags")
    if flags:
        out["flags"] = [_flag(f) for f in _list(flags, "flags")]
    if not containers:
        for key in ("listenerPath", "listenerMetadata"):
            value = document.get(key)
            if value:
                if not isinstance(value, str):
                    raise ProfileError(f"{key} must be a string")
                out[key] = value

    rules: list[dict[str, Any]] = []
    for number, rule in enumerate(_list(document.get("syscalls"), "syscalls")):
        if not isinstance(rule, dict):
            raise ProfileError(f"syscalls[{number}] is not an object")
        where = f"syscalls[{number}]"
        if containers and not _applies(rule, where, caps, native_arch, seccomp_arch, kernel):
            continue
        converted = _rule(rule, where)
        if converted is not None:
            rules.append(converted)
    out["syscalls"] = rules
    return out


def _applies(
    rule: Mapping[str, Any],
    where: str,
    caps: frozenset[str],
    native_arch: str,
    seccomp_arch: str,
    kernel: tuple[int, int] | None,
) -> bool:
    includes = _filter(rule.get("includes"), f"{where}.includes")
    excludes = _filter(rule.get("excludes"), f"{where}.excludes")
    current = kernel or (0, 0)
    arch_names = {native_arch, seccomp_arch} - {""}

    if arch_names & set(excludes["arches"]):
        return False
    if any(c in caps for c in excludes["caps"]):
        return False
    if excludes["minKernel"] is not None and current >= excludes["minKernel"]:
        return False
    if includes["arches"] and not arch_names & set(includes["arches"]):
        return False
    if not all(c in caps for c in includes["caps"]):
        return False
    return includes["minKernel"] is None or current >= includes["minKernel"]


def _filter(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ProfileError(f"{where} must be an object")
    caps = [_cap(_string(c, f"{where}.caps")) for c in _list(value.get("caps"), f"{where}.caps")]
    arches = [_string(a, f"{where}.arches") for a in _list(value.get("arches"), f"{where}.arches")]
    min_kernel: tuple[int, int] | None = None
    raw = value.get("minKernel")
    if raw:
        min_kernel = kernel_version(_string(raw, f"{where}.minKernel"))
        if min_kernel is None:
            raise ProfileError(f"{where}.minKernel {raw!r} is not a kernel version")
    return {"caps": caps, "arches": arches, "minKernel": min_kernel}


def _rule(rule: Mapping[str, Any], where: str) -> dict[str, Any] | None:
    name = rule.get("name")
    names = rule.get("names")
    if name and names:
        raise ProfileError(f"{where}: both name and names are given: use one")
    listed = [_string(name, f"{where}.name")] if name else _list(names, f"{where}.names")
    if not listed:
        return None  # nothing to match: containers/common skips it too
    action = _action(rule.get("action"), f"{where}.action")
    out: dict[str, Any] = {
        "names": [_string(n, f"{where}.names") for n in listed],
        "action": action,
    }
    errno_ret = _errno_ret(rule, "errnoRet", "errno", where)
    if errno_ret is not None and action in _ERRNO_ACTIONS:
        out["errnoRet"] = errno_ret
    out["args"] = [_arg(a, f"{where}.args") for a in _list(rule.get("args"), f"{where}.args")]
    return out


def _arg(arg: Any, where: str) -> dict[str, Any]:
    if not isinstance(arg, dict):
        raise ProfileError(f"{where}: an argument must be an object")
    index = _uint(arg.get("index", 0), f"{where}.index", 5)
    value = _uint(arg.get("value", 0), f"{where}.value", _MAX_U64)
    value_two = _uint(arg.get("valueTwo", 0), f"{where}.valueTwo", _MAX_U64)
    op = arg.get("op")
    if op not in _OPERATORS:
        raise ProfileError(f"{where}: unknown operator {op!r}")
    return {"index": index, "value": value, "valueTwo": value_two, "op": op}


def _errno_ret(
    container: Mapping[str, Any], number_key: str, name_key: str, where: str
) -> int | None:
    number = container.get(number_key)
    if number is not None:
        number = _uint(number, f"{where}: {number_key}", 4095)
    name = container.get(name_key)
    if name:
        value = getattr(errno_codes, _string(name, f"{where}: {name_key}").upper(), None)
        if not isinstance(value, int):
            raise ProfileError(f"{where}: unknown errno {name!r}")
        if number is not None and number != value:
            raise ProfileError(f"{where}: {number_key} {number} contradicts {name_key} {name}")
        number = value
    return number


def _action(value: Any, where: str) -> str:
    if value not in _ACTIONS:
        raise ProfileError(f"{where}: unknown action {value!r}")
    return str(value)


def _arch(value: Any) -> str:
    if value not in _ARCHES:
        raise ProfileError(f"unknown architecture {value!r}")
    return str(value)


def _flag(value: Any) -> str:
    if value not in _FLAGS:
        raise ProfileError(f"unknown flag {value!r}")
    return str(value)


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ProfileError(f"{where} must be a list")
    return value


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ProfileError(f"{where}: expected a non-empty string, got {value!r}")
    return value


def _uint(value: Any, where: str, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise ProfileError(f"{where}: expected an integer in [0, {maximum}], got {value!r}")
    return value


# -- AppArmor -------------------------------------------------------------------------------


def apparmor_enabled() -> bool:
    """Whether this kernel enforces AppArmor (runc's test: securityfs entry + module param)."""
    if not os.path.isdir("/sys/kernel/security/apparmor"):
        return False
    try:
        with open("/sys/module/apparmor/parameters/enabled", encoding="ascii") as f:
            return f.read(1) == "Y"
    except OSError:
        return False


def apparmor_request(context: SecurityContext | None) -> tuple[str, str]:
    """``(kind, profile name)`` of the AppArmor profile asked for; kind "" when unset.

    The v1 field ``apparmor`` wins over the deprecated ``apparmor_profile`` string
    (``runtime/default``, ``unconfined``, ``localhost/<name>``; containers only).
    """
    if context is None:
        return "", ""
    profile = context.apparmor
    if profile is not None:
        kind = _PROFILE_TYPES.get(profile.profile_type)
        if kind is None:
            raise InvalidArgument(f"unknown AppArmor profile type {profile.profile_type!r}")
        if kind == LOCALHOST:
            name = _trim_localhost(profile.localhost_ref)
            if not name:
                raise InvalidArgument("AppArmor Localhost profile without a name")
            return kind, name
        return kind, ""
    value = getattr(context, "apparmor_profile", "")
    if not value:
        return "", ""
    if value == "runtime/default":
        return RUNTIME_DEFAULT, ""
    if value == "unconfined":
        return UNCONFINED, ""
    if value.startswith(_LOCALHOST_PREFIX) and len(value) > len(_LOCALHOST_PREFIX):
        return LOCALHOST, value[len(_LOCALHOST_PREFIX) :]
    raise InvalidArgument(f"invalid AppArmor profile {value!r}")


def check_apparmor(
    context: SecurityContext | None,
    *,
    enabled: bool | None = None,
    default_profile: str | None = None,
) -> str | None:
    """The profile name for ``process.apparmorProfile``, or None for none.

    ``enabled`` defaults to :func:`apparmor_enabled`; ``default_profile`` is the name of a
    profile loaded on the node to use for RuntimeDefault (and unset), None to apply nothing.
    Raises FailedPrecondition when a Localhost profile is requested and AppArmor is off.
    """
    kind, name = apparmor_request(context)
    if enabled is None:
        enabled = apparmor_enabled()
    if kind == LOCALHOST:
        if not enabled:
            raise FailedPrecondition(
                f"AppArmor is not enabled on this host; profile {name!r} requested"
            )
        return name
    privileged = bool(context is not None and context.privileged)
    if kind in ("", RUNTIME_DEFAULT) and enabled and not privileged:
        return default_profile
    return None
