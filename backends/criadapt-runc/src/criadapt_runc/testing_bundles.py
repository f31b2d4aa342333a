"""Test helpers: minimal OCI bundles on a busybox-static rootfs (for tests only).

:func:`make_rootfs` copies ``/bin/busybox`` into a directory with a few applet symlinks;
:func:`make_bundle` writes a ``config.json`` modelled on ``runc spec`` that works on the
development machines (cgroupfs driver, no ``oomScoreAdj``, rlimits within the hard limits
this process inherited: root lacks ``CAP_SYS_RESOURCE`` there).
"""

from __future__ import annotations

import json
import resource
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

BUSYBOX = Path("/bin/busybox")
#: a static init (Debian's catatonit): forwards signals to its child and reaps orphans
CATATONIT = Path("/usr/bin/catatonit")

#: applets linked into every test rootfs
APPLETS: tuple[str, ...] = (
    "sh",
    "echo",
    "sleep",
    "cat",
    "true",
    "false",
    "ps",
    "ls",
    "id",
    "kill",
    "head",
    "yes",
    "dd",
    "wc",
    "touch",
    "tail",
    "tr",
    "stty",
    "test",
    "[",
)

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def make_rootfs(rootfs: Path, *, applets: Iterable[str] = APPLETS) -> Path:
    """Create a busybox-static rootfs at ``rootfs`` (parents created); returns ``rootfs``.

    ``/bin/catatonit`` is there too when the host has it (a container init for tests that
    signal containers: PID 1 of a PID namespace ignores signals it has no handler for).
    """
    if not BUSYBOX.is_file():
        raise FileNotFoundError(f"{BUSYBOX} is missing (Debian package busybox-static)")
    bin_dir = rootfs / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, bin_dir / "busybox")
    for applet in applets:
        link = bin_dir / applet
        if not link.is_symlink() and not link.exists():
            link.symlink_to("busybox")
    if CATATONIT.is_file():
        shutil.copy2(CATATONIT, bin_dir / "catatonit")
    for name in ("proc", "sys", "dev", "tmp", "etc", "root"):
        (rootfs / name).mkdir(exist_ok=True)
    (rootfs / "tmp").chmod(0o1777)
    return rootfs


def _rlimits() -> list[dict[str, Any]]:
    """RLIMIT_NOFILE as ``runc spec`` sets it, clamped to the inherited hard limit."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    value = 1024 if hard == resource.RLIM_INFINITY else min(1024, hard)
    return [{"type": "RLIMIT_NOFILE", "hard": value, "soft": value}]


_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]


def bundle_config(
    args: Sequence[str],
    *,
    rootfs: str = "rootfs",
    terminal: bool = False,
    env: Mapping[str, str] | None = None,
    cgroups_path: str | None = None,
    hostname: str = "criadapt-test",
) -> dict[str, Any]:
    """The ``config.json`` document of :func:`make_bundle`."""
    environment = {"PATH": DEFAULT_PATH}
    if terminal:
        environment["TERM"] = "xterm"
    environment.update(env or {})
    linux: dict[str, Any] = {
        "resources": {"devices": [{"allow": False, "access": "rwm"}]},
        "namespaces": [
            {"type": "pid"},
            {"type": "network"},
            {"type": "ipc"},
            {"type": "uts"},
            {"type": "mount"},
        ],
        "maskedPaths": [
            "/proc/acpi",
            "/proc/asound",
            "/proc/kcore",
            "/proc/keys",
            "/proc/latency_stats",
            "/proc/timer_list",
            "/proc/timer_stats",
            "/proc/sched_debug",
            "/sys/firmware",
            "/proc/scsi",
        ],
        "readonlyPaths": [
            "/proc/bus",
            "/proc/fs",
            "/proc/irq",
            "/proc/sys",
            "/proc/sysrq-trigger",
        ],
    }
    if cgroups_path is not None:
        linux["cgroupsPath"] = cgroups_path
    return {
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": terminal,
            "user": {"uid": 0, "gid": 0},
            "args": list(args),
            "env": [f"{key}={value}" for key, value in environment.items()],
            "cwd": "/",
            "capabilities": {kind: list(_CAPS) for kind in ("bounding", "effective", "permitted")},
            "rlimits": _rlimits(),
            "noNewPrivileges": True,
        },
        "root": {"path": rootfs, "readonly": False},
        "hostname": hostname,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
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
                "options": [
                    "nosuid",
                    "noexec",
                    "newinstance",
                    "ptmxmode=0666",
                    "mode=0620",
                    "gid=5",
                ],
            },
            {
                "destination": "/dev/shm",
                "type": "tmpfs",
                "source": "shm",
                "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
            },
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
                "options": ["nosuid", "noexec", "nodev", "ro"],
            },
            {
                "destination": "/sys/fs/cgroup",
                "type": "cgroup",
                "source": "cgroup",
                "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
            },
        ],
        "linux": linux,
    }


def make_bundle(
    bundle: Path,
    rootfs: Path | None,
    args: Sequence[str],
    *,
    terminal: bool = False,
    env: Mapping[str, str] | None = None,
    cgroups_path: str | None = None,
    make_root: bool = True,
) -> Path:
    """Write ``bundle/config.json`` for ``args``; returns ``bundle``.

    ``rootfs`` is the root filesystem directory (``None``: ``bundle/rootfs``); it is created
    with :func:`make_rootfs` when ``make_root`` and missing. ``cgroups_path`` is a cgroupfs
    path such as ``/criadapt-test/<token>/<id>`` (``None``: runc's default, which is not
    test-unique).
    """
    bundle.mkdir(parents=True, exist_ok=True)
    root = rootfs if rootfs is not None else bundle / "rootfs"
    if make_root and not (root / "bin" / "busybox").exists():
        make_rootfs(root)
    try:
        root_ref = str(root.relative_to(bundle))
    except ValueError:
        root_ref = str(root.absolute())
    config = bundle_config(
        args, rootfs=root_ref, terminal=terminal, env=env, cgroups_path=cgroups_path
    )
    (bundle / "config.json").write_text(json.dumps(config, indent=1))
    return bundle
