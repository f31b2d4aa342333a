"""The plugin manager: hook specs, exactly one backend by name, optional extension plugins."""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Iterable

import pluggy

from criadapt._markers import PROJECT
from criadapt.hookspecs import SPEC_MODULES
from criadapt.rpcs import RPCS

BACKEND_GROUP = "criadapt.backends"
PLUGIN_GROUP = "criadapt.plugins"
DISABLE_ENV = "CRIADAPT_DISABLE_PLUGINS"


class BackendNotFound(LookupError):
    """No installed backend has the requested name."""

    def __init__(self, name: str, installed: Iterable[str]) -> None:
        names = ", ".join(sorted(installed)) or "none"
        super().__init__(
            f"backend {name!r} not found; is criadapt-{name} installed? (installed: {names})"
        )
        self.name = name


def installed_backends() -> dict[str, str]:
    """Entry-point name → ``module:attr`` of every installed backend, without importing any."""
    return {ep.name: ep.value for ep in importlib.metadata.entry_points(group=BACKEND_GROUP)}


def get_plugin_manager(
    backend: str | None = None, *, load_entrypoints: bool = True
) -> pluggy.PluginManager:
    """A fresh plugin manager with criadapt's hook specs.

    With ``backend``, loads that one backend from the ``criadapt.backends`` entry points
    (raising :class:`BackendNotFound` if it is not installed) and the wrapper-only extensions of
    ``criadapt.plugins`` not blocked by ``$CRIADAPT_DISABLE_PLUGINS`` (comma separated names).
    """
    pm = pluggy.PluginManager(PROJECT)
    for module in SPEC_MODULES:
        pm.add_hookspecs(module)
    if backend is not None and load_entrypoints:
        if pm.load_setuptools_entrypoints(BACKEND_GROUP, name=backend) == 0:
            raise BackendNotFound(backend, installed_backends())
        for blocked in filter(None, os.environ.get(DISABLE_ENV, "").split(",")):
            pm.set_blocked(blocked.strip())
        pm.load_setuptools_entrypoints(PLUGIN_GROUP)
    pm.check_pending()
    return pm


def answering_impls(pm: pluggy.PluginManager, hook_name: str) -> list[pluggy.HookImpl]:
    """The implementations of ``hook_name`` that answer it (wrappers excluded)."""
    caller = getattr(pm.hook, hook_name)
    return [
        impl
        for impl in caller.get_hookimpls()
        if not (impl.hookwrapper or getattr(impl, "wrapper", False))
    ]


def check_backend(pm: pluggy.PluginManager) -> list[str]:
    """Check that each RPC hook has at most one answering implementation.

    Returns the names of the RPCs nobody implements (they answer ``UNIMPLEMENTED``); raises
    ``RuntimeError`` if two plugins answer the same RPC (registration order would pick one).
    """
    missing = []
    for rpc in RPCS:
        impls = answering_impls(pm, rpc.hook)
        if len(impls) > 1:
            owners = ", ".join(impl.plugin_name for impl in impls)
            raise RuntimeError(f"{rpc.name} is answered by more than one plugin: {owners}")
        if not impls:
            missing.append(rpc.name)
    return missing
