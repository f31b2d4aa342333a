"""The ``[backends.runc]`` configuration table."""

from __future__ import annotations

import attrs

from criadapt.config import Config, backend_section


def _non_negative(_instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must not be negative")


@attrs.frozen(kw_only=True)
class RuncConfig:
    """Keys of ``[backends.runc]`` (all optional)."""

    #: a transfer that delivers no bytes for this many seconds is cancelled (slow but moving
    #: transfers never are)
    pull_stall_timeout: float = attrs.field(default=60.0, validator=_non_negative)
    #: how many layers are fetched and unpacked at once during a pull
    pull_parallelism: int = 3
    #: images reported as pinned (never garbage-collected by kubelet), by reference
    pinned_images: tuple[str, ...] = ()
    #: OCI runtimes by handler name (``RunPodSandboxRequest.runtime_handler``) → binary
    #: (a handler whose binary is missing is not offered; crun runs through a wrapper that
    #: makes crun 1.8 work on hybrid cgroup hosts)
    runtimes: dict[str, str] = attrs.Factory(
        lambda: {"runc": "/usr/sbin/runc", "crun": "/usr/bin/crun"}
    )
    #: the handler used when a pod asks for none ("")
    default_runtime: str = "runc"
    #: the conmon binary that monitors every container
    conmon: str = "/usr/bin/conmon"
    #: static init that holds the PID namespace of pods sharing one (run as ``catatonit -P``)
    infra_binary: str = "/usr/bin/catatonit"
    #: an image (e.g. a pause image) to run as every pod's infra container; "" = none, pods
    #: get an infra process only when they share a PID namespace (then catatonit)
    sandbox_image: str = ""
    #: seccomp profile applied for RuntimeDefault (Podman's, from containers-common); when the
    #: file is missing a small built-in profile is used
    seccomp_default_profile: str = "/usr/share/containers/seccomp.json"
    #: what an unset seccomp field means: "RuntimeDefault" (as CRI-O) or "Unconfined"
    seccomp_unset: str = "RuntimeDefault"


def runc_config(config: Config | None) -> RuncConfig:
    """The runc table of ``config`` (defaults when absent)."""
    if config is None:
        return RuncConfig()
    return backend_section(config, "runc", RuncConfig)
