"""The runc backend object: the hooks of every RPC it answers, composed from services."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import ClassVar

from criadapt import hookimpl
from criadapt import models as m
from criadapt.config import Config
from criadapt_runc.config import RuncConfig, runc_config
from criadapt_runc.images.pull import Puller
from criadapt_runc.images.registry import RegistryClient
from criadapt_runc.images.service import ImageService
from criadapt_runc.images.store import ImageStore
from criadapt_runc.runtime import RuntimeService, become_subreaper
from criadapt_runc.stats import StatsService
from criadapt_runc.streams import StreamService

log = logging.getLogger("criadapt.runc")

#: what ``Version`` reports as the kubelet API version
KUBELET_API_VERSION = "0.1.0"


def store_root(config: Config) -> Path:
    """Where the runc backend keeps its persistent state: ``<root>/runc``."""
    return Path(config.root) / "runc"


def registry_client(config: Config, options: RuncConfig) -> RegistryClient:
    return RegistryClient(
        mirrors={host: mirror.endpoints for host, mirror in config.registry.mirrors.items()},
        insecure=config.registry.insecure,
        stall_timeout=options.pull_stall_timeout,
    )


class RuncBackend(ImageService, StatsService, StreamService, RuntimeService):
    """The ``runc`` backend; registered as a plugin object by ``criadapt_configure``."""

    _live: ClassVar[list[RuncBackend]] = []
    _live_lock = threading.Lock()

    def __init__(self, config: Config) -> None:
        self.config = config
        self.options = runc_config(config)
        store = ImageStore(store_root(config))
        removed = store.gc()
        if any(removed.values()):
            log.info("image store clean-up at start: %s", removed)
        puller = Puller(
            store, registry_client(config, self.options), parallelism=self.options.pull_parallelism
        )
        ImageService.__init__(self, store, puller, self.options.pinned_images)
        self.init_runtime(config, self.options, store)
        self.init_stats()
        with self._live_lock:
            self._live.append(self)

    @classmethod
    def close_all(cls, config: Config) -> None:
        with cls._live_lock:
            for backend in [b for b in cls._live if b.config is config]:
                backend.store.close()
                backend.pins.close()
                backend.reaper.stop()
                backend.events.close()
                backend.close_stats()
                cls._live.remove(backend)
            if not cls._live:
                become_subreaper(False)  # an embedding process gets its old behaviour back

    @hookimpl
    def criadapt_version(self, version: str) -> m.VersionResponse:
        from criadapt_runc import __version__

        return m.VersionResponse(
            version=KUBELET_API_VERSION,
            runtime_name="criadapt-runc",
            runtime_version=__version__.replace(".dev", "-dev"),
        )
