"""Test helpers of the runc backend: a real criadapt server with the runc backend in-process."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from criadapt import models as m
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


NODE = m.NamespaceMode.NODE
LOG_LINE = re.compile(r"^(\S+) (stdout|stderr) ([PF]) (.*)$")


def pod_config(
    base: Path, name: str, *, host_network: bool = True, **kw: object
) -> m.PodSandboxConfig:
    ns = m.NamespaceOption(
        network=NODE if host_network else m.NamespaceMode.POD,
        pid=m.NamespaceMode.CONTAINER,
        ipc=m.NamespaceMode.POD,
    )
    return m.PodSandboxConfig(
        metadata=m.PodSandboxMetadata(name=name, uid=f"uid-{name}", namespace="test"),
        hostname=name,
        log_directory=str(base / "logs" / name),
        linux=m.LinuxPodSandboxConfig(
            security_context=m.LinuxSandboxSecurityContext(namespace_options=ns)
        ),
        **kw,  # type: ignore[arg-type]
    )


def ctr_config(name: str, image: str, command: list[str], **kw: object) -> m.ContainerConfig:
    return m.ContainerConfig(
        metadata=m.ContainerMetadata(name=name),
        image=m.ImageSpec(image=image),
        command=command,
        log_path=f"{name}/0.log",
        **kw,  # type: ignore[arg-type]
    )


def run(cri: Client, pod: str, pconf: m.PodSandboxConfig, cconf: m.ContainerConfig) -> str:
    cid = cri.create_container(pod_sandbox_id=pod, config=cconf, sandbox_config=pconf)
    cri.start_container(container_id=cid.container_id)
    return cid.container_id


def wait_exited(cri: Client, cid: str, timeout: float = 20) -> m.ContainerStatus:
    deadline = time.monotonic() + timeout
    while True:
        status = cri.container_status(container_id=cid).status
        assert status is not None
        if status.state == m.ContainerState.CONTAINER_EXITED or time.monotonic() > deadline:
            return status
        time.sleep(0.1)


def log_lines(path: str) -> list[tuple[str, str, str]]:
    lines = []
    for line in Path(path).read_text().splitlines():
        match = LOG_LINE.match(line)
        assert match, f"not a CRI log line: {line!r}"
        lines.append((match[2], match[3], match[4]))
    return lines


def write_cni_conflist(
    folder: Path, *, name: str, bridge: str, subnet: str, ipam_dir: Path, portmap: bool = False
) -> str:
    """Write a bridge + host-local (+ portmap) conflist into ``folder``; return the ``[cni]``
    config table pointing at it (plugins from Debian's /usr/lib/cni)."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    plugins: list[dict[str, object]] = [
        {
            "type": "bridge",
            "bridge": bridge,
            "isGateway": True,
            "ipMasq": False,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": subnet}]],
                "dataDir": str(ipam_dir),
            },
        }
    ]
    if portmap:
        plugins.append({"type": "portmap", "capabilities": {"portMappings": True}})
    conflist = {"cniVersion": "1.0.0", "name": name, "plugins": plugins}
    (folder / "10-test.conflist").write_text(json.dumps(conflist))
    return f'[cni]\nconf_dir = "{folder}"\nbin_dirs = ["/usr/lib/cni"]\n'
