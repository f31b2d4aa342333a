"""Fixtures of the runc backend's tests: a real criadapt server with the runc backend."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from criadapt.client import Client
from criadapt.testing.images import busybox_image
from criadapt.testing.registry import Registry
from criadapt_runc.testing import RuncServer

pytest_plugins = ["criadapt.testing.registry"]


@pytest.fixture
def runc_server(tmp_path: Path) -> Iterator[Callable[..., RuncServer]]:
    """Factory: ``runc_server(extra_config="")`` → a started :class:`RuncServer`."""
    servers: list[RuncServer] = []

    def start(extra_config: str = "", base: Path | None = None) -> RuncServer:
        folder = base or tmp_path / f"s{len(servers)}"
        folder.mkdir(exist_ok=True)
        server = RuncServer(folder, extra_config)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def cri(runc_server: Callable[..., RuncServer]) -> Client:
    client = runc_server().client
    assert client is not None
    return client


@pytest.fixture(scope="session")
def busybox_ref(registry: Registry) -> str:
    return registry.push(busybox_image(), "pods/busybox", "latest")
