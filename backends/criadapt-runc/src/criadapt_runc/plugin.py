"""Entry point of the ``runc`` backend (``criadapt.backends: runc = criadapt_runc.plugin``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pluggy

import criadapt_runc
from criadapt import hookimpl
from criadapt import models as m
from criadapt.config import Config
from criadapt_runc.backend import RuncBackend, store_root
from criadapt_runc.images.archive import import_archive
from criadapt_runc.images.service import ImageService
from criadapt_runc.images.store import ImageStore

log = logging.getLogger("criadapt.runc")
PLUGIN_NAME = "runc-backend"


@hookimpl
def criadapt_configure(config: Config, pluginmanager: pluggy.PluginManager) -> None:
    backend = RuncBackend(config)
    pluginmanager.register(backend, name=PLUGIN_NAME)
    log.info("runc backend: store at %s", backend.store.root)


@hookimpl
def criadapt_unconfigure(config: Config) -> None:
    RuncBackend.close_all(config)


@hookimpl
def criadapt_backend_info() -> m.BackendInfo:
    return m.BackendInfo(
        name="runc",
        version=criadapt_runc.__version__,
        runtime_name="criadapt-runc",
        runtime_version=criadapt_runc.__version__.replace(".dev", "-dev"),
        capabilities=frozenset(
            {
                "image_fs_info",
                "exec_sync",
                "exec_sync_timeout",
                "process_exit",
                "runtime_config",
                "container_events",
                "reopen_container_log",
                "update_container_resources",
                "stats",
                "pod_sandbox_stats",
                "streaming",
            }
        ),
    )


def _images(config: Config) -> ImageService:
    store = ImageStore(store_root(config))
    return ImageService(store, puller=None)  # offline: imports and listings, no pulls


@hookimpl
def criadapt_import_images(config: Config, archive: Path) -> Sequence[m.Image]:
    service = _images(config)
    try:
        return [service.to_cri(image) for image in import_archive(service.store, archive)]
    finally:
        service.store.close()


@hookimpl
def criadapt_local_images(config: Config) -> Sequence[m.Image]:
    service = _images(config)
    try:
        return [service.to_cri(image) for image in service.store.images()]
    finally:
        service.store.close()
