"""Pod namespaces pinned as bind-mounted files, so no infra process has to hold them.

As CRI-O's ``pinns`` does: ``unshare --net=FILE --ipc=FILE --uts=FILE`` creates the namespaces
and bind-mounts them onto files under ``<state>/runc/ns/<pod id>/`` (a private mount, so the
pins do not propagate), sets the hostname and the pod's sysctls from inside, and exits.
Containers join the namespaces by path; CNI configures the network namespace by path.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from criadapt.errors import FailedPrecondition, InvalidArgument

log = logging.getLogger("criadapt.runc.ns")

#: CRI namespace name → (unshare flag, OCI namespace type)
KINDS = {"network": "--net", "ipc": "--ipc", "uts": "--uts"}

_SYSCTL_NAME = re.compile(r"^[a-z0-9_][a-z0-9_.\-/]*$")
IPC_SYSCTLS = ("kernel.shm", "kernel.msg", "kernel.sem", "fs.mqueue.")


def sysctl_namespace(name: str) -> str:
    """Which pod namespace a sysctl belongs to ("network" or "ipc"); InvalidArgument if none."""
    if not _SYSCTL_NAME.match(name) or ".." in name:
        raise InvalidArgument(f"invalid sysctl name {name!r}")
    dotted = name.replace("/", ".")
    if dotted.startswith("net."):
        return "network"
    if dotted.startswith(IPC_SYSCTLS) or dotted == "kernel.sem":
        return "ipc"
    raise InvalidArgument(f"sysctl {name!r} is not namespaced; it cannot be set for a pod")


def is_mountpoint(path: Path) -> bool:
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as info:
            text = str(path)
            return any(line.split()[4] == text for line in info)
    except OSError:
        return False


class NamespacePins:
    """Creates and removes the pinned namespaces of pods under one folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True, mode=0o711)
        if not is_mountpoint(folder):
            subprocess.run(["mount", "--bind", str(folder), str(folder)], check=True)
        subprocess.run(["mount", "--make-private", str(folder)], check=True)

    def pod_dir(self, pod_id: str) -> Path:
        return self.folder / pod_id

    def create(
        self,
        pod_id: str,
        kinds: set[str],
        *,
        hostname: str = "",
        sysctls: Mapping[str, str] | None = None,
    ) -> dict[str, str]:
        """Pin new namespaces of ``kinds`` (subset of network, ipc, uts); return type → path."""
        sysctls = dict(sysctls or {})
        for name in sysctls:
            owner = sysctl_namespace(name)
            if owner not in kinds:
                raise InvalidArgument(
                    f"sysctl {name!r} needs the pod's own {owner} namespace, "
                    "but the pod uses the host's"
                )
        if not kinds:
            return {}
        folder = self.pod_dir(pod_id)
        folder.mkdir(mode=0o700, exist_ok=True)
        paths = {kind: str(folder / kind) for kind in sorted(kinds)}
        for path in paths.values():
            Path(path).touch(mode=0o600)
        script = 'if [ -n "$1" ]; then hostname "$1"; fi; shift\n'
        script += (
            'while [ "$#" -gt 1 ]; do printf %s "$2" > "/proc/sys/$1" || exit 1; shift 2; done'
        )
        args = [
            "unshare",
            *(f"{KINDS[kind]}={path}" for kind, path in paths.items()),
            "--",
            "/bin/sh",
            "-c",
            script,
            "sh",
            hostname if "uts" in kinds else "",
        ]
        for name, value in sysctls.items():
            # "a.b.c" or, when a component holds a dot (eth0.100), "a/b/eth0.100/c"
            args += [name if "/" in name else name.replace(".", "/"), value]
        result = subprocess.run(args, capture_output=True, text=True, check=False, timeout=30)
        if result.returncode != 0:
            self.remove(pod_id)
            problem = result.stderr.strip() or f"exit status {result.returncode}"
            raise FailedPrecondition(f"cannot create the pod's namespaces: {problem}")
        return paths

    def remove(self, pod_id: str) -> None:
        """Unmount and delete the pod's pins (idempotent)."""
        folder = self.pod_dir(pod_id)
        if not folder.exists():
            return
        for pin in folder.iterdir():
            if is_mountpoint(pin):
                result = subprocess.run(
                    ["umount", str(pin)], capture_output=True, text=True, check=False
                )
                if result.returncode != 0 and is_mountpoint(pin):
                    subprocess.run(["umount", "-l", str(pin)], check=False)
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(folder)

    def close(self) -> None:
        """Undo our private bind mount of the folder when no pod has pins left in it."""
        if not self.known_pods() and is_mountpoint(self.folder):
            subprocess.run(["umount", str(self.folder)], check=False, capture_output=True)

    def pinned(self, path: str) -> bool:
        return is_mountpoint(Path(path))

    def known_pods(self) -> list[str]:
        return [p.name for p in self.folder.iterdir() if p.is_dir()]
