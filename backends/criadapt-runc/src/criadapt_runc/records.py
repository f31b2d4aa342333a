"""Persistent records of sandboxes and containers: one JSON file each, written atomically.

A record is written with ``phase="creating"`` *before* the first resource of an object exists,
and rewritten with ``phase="created"`` once everything is in place; a ``creating`` record found
at start-up belongs to a call that died half way, and the recovery rolls it back. CRI configs
are kept as their protobuf bytes (base64), so records survive additions to the API.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

import attrs
import cattrs

from criadapt import models as m
from criadapt.wire import decode, encode

log = logging.getLogger("criadapt.runc.records")

CREATING = "creating"
CREATED = "created"


@attrs.define(kw_only=True)
class SandboxRecord:
    id: str
    #: name reservation key: name, namespace, uid, attempt
    name_key: str
    config_pb: str  # base64 of the PodSandboxConfig bytes
    runtime_handler: str = ""
    created_at: int = 0
    phase: str = CREATING
    #: SANDBOX_READY / SANDBOX_NOTREADY
    state: int = int(m.PodSandboxState.SANDBOX_NOTREADY)
    host_network: bool = False
    host_ipc: bool = False
    host_pid: bool = False
    #: OCI namespace type → pinned namespace file ("network", "ipc", "uts")
    namespaces: dict[str, str] = attrs.Factory(dict)
    #: container id of the infra process holding a shared PID namespace, if any
    infra_id: str = ""
    #: IPs CNI gave the pod, IPv4 first
    ips: list[str] = attrs.Factory(list)
    #: whether a CNI ADD succeeded and no DEL has yet
    network_attached: bool = False
    cgroup_parent: str = ""
    #: host folder of the pod's hostname, hosts, resolv.conf files
    files_dir: str = ""

    @property
    def config(self) -> m.PodSandboxConfig:
        return _pod_config(self.config_pb)

    @staticmethod
    def pack(config: m.PodSandboxConfig) -> str:
        return base64.b64encode(encode(config)).decode()


@attrs.define(kw_only=True)
class ContainerRecord:
    id: str
    sandbox_id: str
    name_key: str
    config_pb: str  # base64 of the ContainerConfig bytes
    #: the image as the client named it, and the image id it resolved to
    image_ref: str = ""
    image_id: str = ""
    #: repo digest of the image, for ContainerStatus.image_ref
    image_digest_ref: str = ""
    created_at: int = 0
    started_at: int = 0
    finished_at: int = 0
    exit_code: int = 0
    reason: str = ""
    message: str = ""
    phase: str = CREATING
    #: CONTAINER_CREATED / RUNNING / EXITED / UNKNOWN
    state: int = int(m.ContainerState.CONTAINER_CREATED)
    log_path: str = ""
    bundle: str = ""
    runtime: str = "runc"
    #: base64 LinuxContainerResources set by UpdateContainerResources, if any
    resources_pb: str = ""
    #: the container was stopped on purpose (StopContainer/StopPodSandbox), not by itself
    stopped_by_us: bool = False

    @property
    def config(self) -> m.ContainerConfig:
        return _container_config(self.config_pb)

    @property
    def resources(self) -> m.LinuxContainerResources | None:
        if not self.resources_pb:
            return None
        return decode(m.LinuxContainerResources, base64.b64decode(self.resources_pb))

    @staticmethod
    def pack(model: Any) -> str:
        return base64.b64encode(encode(model)).decode()


# Configs never change after creation, and models are immutable: decode each once. List calls
# read every record's config, so this keeps them at dictionary-lookup cost.
@functools.lru_cache(maxsize=8192)
def _pod_config(packed: str) -> m.PodSandboxConfig:
    return decode(m.PodSandboxConfig, base64.b64decode(packed))


@functools.lru_cache(maxsize=8192)
def _container_config(packed: str) -> m.ContainerConfig:
    return decode(m.ContainerConfig, base64.b64decode(packed))


R = TypeVar("R", SandboxRecord, ContainerRecord)
_converter = cattrs.Converter(forbid_extra_keys=False)


class RecordDir(Generic[R]):
    """A folder of JSON records of one kind."""

    def __init__(self, folder: Path, kind: type[R]) -> None:
        self.folder = folder
        self.kind: type[R] = kind
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)

    def path(self, object_id: str) -> Path:
        return self.folder / f"{object_id}.json"

    def save(self, record: R) -> None:
        target = self.path(record.id)
        temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        data = json.dumps(_converter.unstructure(record), sort_keys=True).encode()
        with open(temp, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, target)

    def delete(self, object_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(object_id).unlink()

    def load_all(self) -> Iterator[R]:
        for path in sorted(self.folder.glob("*.json")):
            try:
                yield _converter.structure(json.loads(path.read_bytes()), self.kind)
            except (ValueError, cattrs.BaseValidationError) as exc:
                log.error("ignoring unreadable record %s: %s", path, exc)
        for stale in self.folder.glob(".*.tmp"):
            stale.unlink(missing_ok=True)
