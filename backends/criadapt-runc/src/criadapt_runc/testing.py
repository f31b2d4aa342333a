"""Test helpers of the runc backend: a real criadapt server with the runc backend in-process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from criadapt.client import Client
from criadapt.config import Config, loads_config
from criadapt.plugin import get_plugin_manager
from criadapt.server.serve import create_server


def make_config(root: Path, sock: Path, extra: str = "") -> Config:
    text = f"""
backend = "runc"
listen = "unix://{sock}"
root = "{root / "root"}"
state = "{root / "state"}"
{extra}
"""
    return loads_config(text)


class RuncServer:
    """A criadapt server with the runc backend on a temporary root; restartable."""

    def __init__(self, base: Path, extra_config: str = "") -> None:
        self.base = base
        self.sock = base / "cri.sock"
        self.config = make_config(base, self.sock, extra_config)
        self._server: Any = None
        self.pm: Any = None
        self.client: Client | None = None

    @property
    def root(self) -> Path:
        return Path(self.config.root) / "runc"

    def start(self) -> Client:
        Path(self.config.root).mkdir(parents=True, exist_ok=True)
        self.pm = get_plugin_manager("runc")
        server, _, dispatcher = create_server(self.config.listen, self.pm)
        self._server = server
        self.pm.hook.criadapt_configure(config=self.config, pluginmanager=self.pm)
        dispatcher.ready.set()
        self.client = Client(self.config.listen, timeout=120)
        return self.client

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        if self._server is not None:
            self._server.stop(0).wait()
            self.pm.hook.criadapt_unconfigure(config=self.config)
            self._server = None
