"""Lifecycle hooks: how a backend is set up, described and torn down."""

from __future__ import annotations

from typing import TYPE_CHECKING

from criadapt._markers import hookspec

if TYPE_CHECKING:
    import pluggy

    from criadapt.config import Config
    from criadapt.models import BackendInfo


@hookspec
def criadapt_configure(config: Config, pluginmanager: pluggy.PluginManager) -> None:
    """Called once before the server starts answering, with the parsed configuration.

    The backend builds its state here (open stores, recover containers, check binaries) and
    may register further plugin objects with ``pluginmanager``. Until every implementation
    has returned, the server answers ``UNAVAILABLE``. Raising aborts ``serve``.
    """


@hookspec
def criadapt_unconfigure(config: Config) -> None:
    """Called once on shutdown, after the gRPC server stopped; release resources here.

    Containers keep running: a restart of criadapt must find them again.
    """


@hookspec(firstresult=True)
def criadapt_backend_info() -> BackendInfo:
    """Describe the loaded backend: name, version, capabilities (first result wins)."""
