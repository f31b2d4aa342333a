"""criadapt's pytest plugin: serve a backend in-process and run the CRI contract suite on it.

Load it explicitly; it is on purpose no ``pytest11`` entry point, which would load it into
every pytest run of every project that has criadapt installed::

    pytest -p criadapt.testing.plugin --criadapt-backend=NAME --pyargs criadapt.testing.contract

A backend's own tests may also list it in their top-level ``conftest.py``
(``pytest_plugins = ["criadapt.testing.plugin"]``) to use the fixtures below.

Options
    ``--criadapt-backend NAME``
        entry point of the ``criadapt.backends`` group to test (default ``fake``);
    ``--criadapt-config FILE``
        TOML configuration for the backend (``[backends.NAME]`` settings, ``cni``, ...);
        without it the built-in defaults are used, never ``/etc/criadapt/criadapt.toml``.
        Whatever the file says, ``backend``, ``listen``, ``root`` and ``state`` point at a
        temporary directory of the session, so tests do not touch the host's folders;
    ``--criadapt-image REF``
        an image the backend can pull, run ``sleep 3600`` and ``sh``/``echo`` in (default
        ``busybox:latest``; the ``fake`` backend accepts any name).

Marker
    ``@pytest.mark.requires("capability", ...)`` skips the test unless every named capability
    is in the ``capabilities`` of the backend's ``criadapt_backend_info()``. The names the
    contract suite uses (:data:`CAPABILITIES`; the ``fake`` backend reports all but the last
    two):

    - ``exec_sync``: ``ExecSync`` runs the command in the running container and reports its
      stdout, stderr and exit code (``echo``, ``sh -c``, ``printenv``);
    - ``exec_sync_timeout``: ``ExecSync`` with ``timeout`` fails with ``DEADLINE_EXCEEDED``
      once the command overruns it, as kubelet's exec probes expect;
    - ``stats``: ``ContainerStats`` and ``ListContainerStats``;
    - ``pod_sandbox_stats``: ``PodSandboxStats`` and ``ListPodSandboxStats``;
    - ``update_container_resources``: ``UpdateContainerResources`` applies Linux resources and
      ``ContainerStatus.resources`` reports them;
    - ``update_pod_sandbox_resources``: ``UpdatePodSandboxResources`` succeeds;
    - ``reopen_container_log``: ``ReopenContainerLog`` of a running container succeeds;
    - ``runtime_config``: ``RuntimeConfig`` reports the cgroup driver (CRI v1 only);
    - ``container_events``: ``GetContainerEvents`` streams container lifecycle events;
    - ``checkpoint``: ``CheckpointContainer`` of a running container succeeds;
    - ``pod_sandbox_metrics``: ``ListMetricDescriptors`` and ``ListPodSandboxMetrics``;
    - ``image_fs_info``: ``ImageFsInfo`` describes the image filesystem;
    - ``streaming``: ``Exec``, ``Attach`` and ``PortForward`` return streaming-server URLs;
    - ``process_exit``: containers really run their command: one that exits by itself
      becomes ``CONTAINER_EXITED`` with its exit code, without ``StopContainer``.

    Without its capability, the RPC of an optional feature may answer ``UNIMPLEMENTED`` (the
    suite accepts that and success, never another error); with it, the RPC must work.

Fixtures
    ``cri_server`` (session)
        :class:`CriServer`: the backend's plugin manager, configured, served on a temporary
        unix socket; stopped and unconfigured at the end of the session;
    ``cri_endpoint`` (session)
        its ``unix://...`` address;
    ``cri`` / ``cri_alpha`` (session)
        :class:`~criadapt.client.Client` on it speaking CRI ``v1`` (negotiated) /
        ``v1alpha2`` (forced);
    ``backend_info`` (session)
        the backend's :class:`~criadapt.models.BackendInfo`;
    ``test_image`` (session)
        :class:`PulledImage`, the ``--criadapt-image`` pulled once through ``cri``;
    ``sandbox_factory`` / ``container_factory``
        :class:`SandboxFactory` / :class:`ContainerFactory`: create pod sandboxes and
        containers with unique metadata and force-remove whatever they created (or were
        told to :meth:`~SandboxFactory.track`) when the test ends, as docker-py's
        ``BaseIntegrationTest`` does.

The config builders :func:`pod_sandbox_config` and :func:`container_config` come from
:mod:`criadapt.testing.contract.helpers` and are re-exported here.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import grpc
import pluggy
import pytest

from criadapt import models as m
from criadapt.client import Client
from criadapt.config import Config, ConfigError, load_config, loads_config
from criadapt.errors import CriError, NotFound
from criadapt.plugin import check_backend, get_plugin_manager, installed_backends
from criadapt.server.serve import create_server
from criadapt.server.servicer import Dispatcher
from criadapt.streaming import server as streaming
from criadapt.testing.contract.helpers import (
    container_config,
    pod_sandbox_config,
    unique_name,
)

__all__ = [
    "CAPABILITIES",
    "Container",
    "ContainerFactory",
    "CriServer",
    "PulledImage",
    "Sandbox",
    "SandboxFactory",
    "container_config",
    "pod_sandbox_config",
]

#: the capability names the contract suite asks for with ``@pytest.mark.requires``
CAPABILITIES = frozenset(
    {
        "exec_sync",
        "exec_sync_timeout",
        "stats",
        "pod_sandbox_stats",
        "update_container_resources",
        "update_pod_sandbox_resources",
        "reopen_container_log",
        "runtime_config",
        "container_events",
        "checkpoint",
        "pod_sandbox_metrics",
        "image_fs_info",
        "streaming",
        "process_exit",
    }
)

#: unix socket paths are limited to 108 bytes (``sun_path``)
_MAX_SOCKET_PATH = 100


# -- options and marker -----------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("criadapt", "criadapt CRI contract suite")
    group.addoption(
        "--criadapt-backend",
        default="fake",
        metavar="NAME",
        help="criadapt backend (entry point of 'criadapt.backends') to test; default: fake",
    )
    group.addoption(
        "--criadapt-config",
        default=None,
        metavar="FILE",
        help="TOML configuration for the backend (root, state and listen are always "
        "temporary); default: the built-in defaults",
    )
    group.addoption(
        "--criadapt-image",
        default="busybox:latest",
        metavar="REF",
        help="image the backend can pull and run sleep/sh/echo in; default: busybox:latest",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "requires(capability, ...): skip unless the criadapt backend reports every capability",
    )
    backend = config.getoption("criadapt_backend")
    if backend not in installed_backends():
        names = ", ".join(sorted(installed_backends())) or "none"
        raise pytest.UsageError(
            f"--criadapt-backend: backend {backend!r} not found; is criadapt-{backend} "
            f"installed? (installed: {names})"
        )
    path = config.getoption("criadapt_config")
    if path is not None:
        try:
            load_config(path)
        except ConfigError as exc:
            raise pytest.UsageError(f"--criadapt-config: {exc}") from None


def pytest_report_header(config: pytest.Config) -> str:
    return (
        f"criadapt backend: {config.getoption('criadapt_backend')}, "
        f"image: {config.getoption('criadapt_image')}, "
        f"config: {config.getoption('criadapt_config') or '(defaults)'}"
    )


@pytest.fixture(autouse=True)
def _criadapt_requires(request: pytest.FixtureRequest) -> None:
    """Skip tests marked ``requires(...)`` whose capability the backend does not report."""
    marks = list(request.node.iter_markers("requires"))
    if not marks:
        return
    info: m.BackendInfo = request.getfixturevalue("backend_info")
    for mark in marks:
        if not mark.args or not all(isinstance(name, str) for name in mark.args):
            raise pytest.UsageError(
                f"{request.node.nodeid}: requires() takes capability names, got {mark.args!r}"
            )
        missing = [name for name in mark.args if name not in info.capabilities]
        if missing:
            pytest.skip(f"backend {info.name!r} lacks capability {', '.join(missing)}")


# -- the server -------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class CriServer:
    """A backend served in-process for the test session."""

    #: the backend's plugin manager (configured)
    pm: pluggy.PluginManager
    #: the configuration it was configured with
    config: Config
    server: grpc.Server
    dispatcher: Dispatcher
    #: the unix socket it listens on
    socket_path: Path
    #: what the backend said about itself
    info: m.BackendInfo
    #: the RPCs no plugin answers (they answer ``UNIMPLEMENTED``)
    unimplemented: tuple[str, ...] = ()

    @property
    def endpoint(self) -> str:
        return f"unix://{self.socket_path}"


def _session_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bool]:
    """A temporary directory for the socket, root and state; True if we must delete it."""
    base = tmp_path_factory.mktemp("criadapt")
    if len(str(base / "cri.sock")) <= _MAX_SOCKET_PATH:
        return base, False
    return Path(tempfile.mkdtemp(prefix="criadapt-")), True


def _load_config(path: str | None, overrides: dict[str, Any]) -> Config:
    if path is None:
        return loads_config("", source="defaults", overrides=overrides)
    return load_config(path, overrides=overrides)


@pytest.fixture(scope="session")
def cri_server(
    pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CriServer]:
    """The ``--criadapt-backend`` configured and served on a temporary unix socket."""
    backend = pytestconfig.getoption("criadapt_backend")
    base, remove_base = _session_dir(tmp_path_factory)
    config = _load_config(
        pytestconfig.getoption("criadapt_config"),
        {
            "backend": backend,
            "listen": f"unix://{base}/cri.sock",
            "root": base / "root",
            "state": base / "state",
        },
    )
    pm = get_plugin_manager(backend)
    for folder in (config.root, config.state):  # as serve() does
        Path(folder).mkdir(mode=0o711, parents=True, exist_ok=True)
    server, socket_path, dispatcher = create_server(config.listen, pm)
    configured = False
    streaming_server: streaming.StreamingServer | None = None
    previous_streaming: streaming.StreamingServer | None = None
    try:
        pm.hook.criadapt_configure(config=config, pluginmanager=pm)
        configured = True
        unimplemented = check_backend(pm)  # after configure, where backends register objects
        # as serve() does: a streaming server on loopback, so Exec/Attach/PortForward get URLs
        streaming_server = streaming.StreamingServer(pm, address="127.0.0.1", port=0).start()
        previous_streaming = streaming.set_current(streaming_server)
        dispatcher.ready.set()
        info = pm.hook.criadapt_backend_info() or m.BackendInfo(name=backend, version="")
        yield CriServer(
            pm=pm,
            config=config,
            server=server,
            dispatcher=dispatcher,
            socket_path=socket_path,
            info=info,
            unimplemented=tuple(unimplemented),
        )
    finally:
        dispatcher.ready.clear()
        server.stop(0).wait()
        if streaming_server is not None:
            streaming.set_current(previous_streaming)
            streaming_server.stop()
        if configured:
            pm.hook.criadapt_unconfigure(config=config)
        with contextlib.suppress(FileNotFoundError):
            socket_path.unlink()
        if remove_base:
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def cri_endpoint(cri_server: CriServer) -> str:
    """The ``unix://...`` address of the served backend."""
    return cri_server.endpoint


@pytest.fixture(scope="session")
def backend_info(cri_server: CriServer) -> m.BackendInfo:
    """The backend's ``criadapt_backend_info()``."""
    return cri_server.info


@pytest.fixture(scope="session")
def cri(cri_endpoint: str) -> Iterator[Client]:
    """A client of the served backend, speaking CRI v1 (negotiated)."""
    with Client(cri_endpoint) as client:
        assert client.api_version == "v1", f"negotiated {client.api_version}, expected v1"
        yield client


@pytest.fixture(scope="session")
def cri_alpha(cri_endpoint: str) -> Iterator[Client]:
    """A client of the served backend forced to speak CRI v1alpha2."""
    with Client(cri_endpoint, api_version="v1alpha2") as client:
        yield client


@attrs.frozen(kw_only=True)
class PulledImage:
    """The session's test image."""

    #: the reference as given with ``--criadapt-image``
    name: str
    #: ``PullImageResponse.image_ref`` (containers are created from it, as kubelet does)
    image_ref: str


@pytest.fixture(scope="session")
def test_image(pytestconfig: pytest.Config, cri: Client) -> PulledImage:
    """``--criadapt-image``, pulled once per session."""
    name = pytestconfig.getoption("criadapt_image")
    response = cri.pull_image(image=m.ImageSpec(image=name))
    assert response.image_ref, f"PullImage({name!r}) returned an empty image_ref"
    return PulledImage(name=name, image_ref=response.image_ref)


# -- factories ------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Sandbox:
    """A pod sandbox created by :class:`SandboxFactory`."""

    id: str
    config: m.PodSandboxConfig

    @property
    def log_directory(self) -> Path:
        return Path(self.config.log_directory)


@attrs.frozen(kw_only=True)
class Container:
    """A container created by :class:`ContainerFactory`."""

    id: str
    config: m.ContainerConfig
    sandbox: Sandbox


class _Tracker:
    """Remembers ids a test created; removes them all at teardown, NotFound being fine."""

    kind = "object"

    def __init__(self, cri: Client) -> None:
        self.cri = cri
        self.ids: list[str] = []

    def track(self, object_id: str) -> None:
        """Remove ``object_id`` at teardown too (for objects created without the factory)."""
        if object_id not in self.ids:
            self.ids.append(object_id)

    def _remove(self, object_id: str) -> None:
        raise NotImplementedError

    def cleanup(self) -> None:
        """Force-remove everything tracked, newest first; report failures at the end."""
        failures = []
        for object_id in reversed(self.ids):
            try:
                self._remove(object_id)
            except NotFound:
                pass
            except CriError as exc:
                failures.append(f"{object_id}: {exc.code}: {exc}")
        self.ids.clear()
        if failures:
            pytest.fail(
                f"could not remove the {self.kind}s a test created:\n  " + "\n  ".join(failures),
                pytrace=False,
            )


class SandboxFactory(_Tracker):
    """Runs pod sandboxes with unique metadata; stops and removes them at teardown."""

    kind = "sandbox"

    def __init__(self, cri: Client, log_root: Path) -> None:
        super().__init__(cri)
        self.log_root = log_root

    def config(self, **kwargs: Any) -> m.PodSandboxConfig:
        """:func:`pod_sandbox_config` with a fresh log directory (created, as kubelet does)."""
        uid = kwargs.pop("uid", None) or str(uuid.uuid4())
        if "log_directory" not in kwargs:
            log_directory = self.log_root / uid
            log_directory.mkdir(parents=True, exist_ok=True)
            kwargs["log_directory"] = str(log_directory)
        return pod_sandbox_config(uid=uid, **kwargs)

    def __call__(
        self,
        config: m.PodSandboxConfig | None = None,
        *,
        client: Client | None = None,
        runtime_handler: str = "",
        **kwargs: Any,
    ) -> Sandbox:
        """Run a sandbox from ``config`` (default: :meth:`config` with ``kwargs``)."""
        if config is None:
            config = self.config(**kwargs)
        elif kwargs:
            raise TypeError("pass either a config or keyword arguments for one, not both")
        response = (client or self.cri).run_pod_sandbox(
            config=config, runtime_handler=runtime_handler
        )
        assert response.pod_sandbox_id, "RunPodSandbox returned an empty pod_sandbox_id"
        self.track(response.pod_sandbox_id)
        return Sandbox(id=response.pod_sandbox_id, config=config)

    def _remove(self, object_id: str) -> None:
        self.cri.stop_pod_sandbox(pod_sandbox_id=object_id)
        self.cri.remove_pod_sandbox(pod_sandbox_id=object_id)


class ContainerFactory(_Tracker):
    """Creates (and optionally starts) containers; stops and removes them at teardown."""

    kind = "container"

    def __init__(self, cri: Client, sandboxes: SandboxFactory, image: PulledImage) -> None:
        super().__init__(cri)
        self.sandboxes = sandboxes
        self.image = image

    def config(self, sandbox: Sandbox | None = None, **kwargs: Any) -> m.ContainerConfig:
        """:func:`container_config` for the test image; with ``sandbox``, the container's log
        folder ``<log_directory>/<name>`` is created as kubelet does."""
        kwargs.setdefault("name", unique_name("ctr"))
        if "image" not in kwargs:
            kwargs["image"] = self.image.image_ref
            kwargs.setdefault("user_specified_image", self.image.name)
        config = container_config(**kwargs)
        if sandbox is not None and sandbox.config.log_directory:
            (sandbox.log_directory / kwargs["name"]).mkdir(parents=True, exist_ok=True)
        return config

    def __call__(
        self,
        sandbox: Sandbox | None = None,
        config: m.ContainerConfig | None = None,
        *,
        start: bool = False,
        client: Client | None = None,
        **kwargs: Any,
    ) -> Container:
        """Create a container in ``sandbox`` (default: a new one) from ``config`` (default:
        :meth:`config` with ``kwargs``); start it too with ``start=True``."""
        cri = client or self.cri
        if sandbox is None:
            sandbox = self.sandboxes(client=client)
        if config is None:
            config = self.config(sandbox, **kwargs)
        elif kwargs:
            raise TypeError("pass either a config or keyword arguments for one, not both")
        response = cri.create_container(
            pod_sandbox_id=sandbox.id, config=config, sandbox_config=sandbox.config
        )
        assert response.container_id, "CreateContainer returned an empty container_id"
        self.track(response.container_id)
        if start:
            cri.start_container(container_id=response.container_id)
        return Container(id=response.container_id, config=config, sandbox=sandbox)

    def _remove(self, object_id: str) -> None:
        self.cri.stop_container(container_id=object_id, timeout=0)
        self.cri.remove_container(container_id=object_id)


@pytest.fixture
def sandbox_factory(cri: Client, tmp_path: Path) -> Iterator[SandboxFactory]:
    """Runs sandboxes (``sandbox_factory()``); removes them when the test ends."""
    factory = SandboxFactory(cri, tmp_path / "pods")
    yield factory
    factory.cleanup()


@pytest.fixture
def container_factory(
    cri: Client, sandbox_factory: SandboxFactory, test_image: PulledImage
) -> Iterator[ContainerFactory]:
    """Creates containers (``container_factory(sandbox, start=True)``); removes them when the
    test ends, before the sandboxes."""
    factory = ContainerFactory(cri, sandbox_factory, test_image)
    yield factory
    factory.cleanup()
