"""Building the gRPC server (``create_server``) apart from running it (``serve``)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import grpc
import pluggy

from criadapt.plugin import check_backend
from criadapt.server.servicer import Dispatcher
from criadapt.streaming import server as streaming

if TYPE_CHECKING:
    from criadapt.config import Config

log = logging.getLogger("criadapt.server")

#: kubelet's limit for one CRI message, both ways
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
#: worker threads: every call blocks a thread (backends call runc, dockerd, podman)
MAX_WORKERS = 64
SOCKET_MODE = 0o660


class SocketInUse(OSError):
    """Another server answers on the socket we were asked to listen on."""


def socket_path(listen: str) -> Path:
    """``unix:///run/x.sock`` → ``/run/x.sock``; only unix sockets are served."""
    prefix = "unix://"
    if not listen.startswith(prefix) or not listen[len(prefix) :].startswith("/"):
        raise ValueError(f"listen must be unix:///absolute/path, got {listen!r}")
    return Path(listen[len(prefix) :])


def _prepare_socket(path: Path) -> None:
    """Make the parent folder; remove a stale socket, refuse a live one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise SocketInUse(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except OSError:
        log.info("removing stale socket %s", path)
        path.unlink(missing_ok=True)
    else:
        raise SocketInUse(f"something is already serving on {path}")
    finally:
        probe.close()


def create_server(
    listen: str, pm: pluggy.PluginManager, *, max_workers: int = MAX_WORKERS
) -> tuple[grpc.Server, Path, Dispatcher]:
    """A started gRPC server for ``pm`` on the unix socket of ``listen`` (mode 0660).

    The dispatcher it returns answers UNAVAILABLE until ``dispatcher.ready`` is set.
    """
    path = socket_path(listen)
    _prepare_socket(path)
    dispatcher = Dispatcher(pm)
    server = grpc.server(
        ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="cri"),
        handlers=dispatcher.handlers(),
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ],
    )
    old_umask = os.umask(0o117)
    try:
        if server.add_insecure_port(f"unix://{path}") == 0:
            raise OSError(f"cannot listen on {path}")
        server.start()
    finally:
        os.umask(old_umask)
    os.chmod(path, SOCKET_MODE)
    return server, path, dispatcher


def serve(config: Config, pm: pluggy.PluginManager, *, stop: threading.Event | None = None) -> int:
    """Serve until SIGTERM/SIGINT (or ``stop`` is set); return the process exit code."""
    stop = stop or threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        # before the socket exists, so that an early SIGTERM still stops cleanly
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, on_signal)
    for folder in (config.root, config.state):
        Path(folder).mkdir(mode=0o711, parents=True, exist_ok=True)
    try:
        server, path, dispatcher = create_server(config.listen, pm)
    except BaseException:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        raise
    log.info("criadapt listening on unix://%s (CRI v1 and v1alpha2)", path)
    configured = False
    streaming_server: streaming.StreamingServer | None = None
    try:
        pm.hook.criadapt_configure(config=config, pluginmanager=pm)
        configured = True
        missing = check_backend(pm)  # after configure: backends register their objects there
        if missing:
            log.info(
                "RPCs the backend does not implement (answer UNIMPLEMENTED): %s",
                ", ".join(missing),
            )
        streaming_server = streaming.StreamingServer(
            pm, address=config.streaming.address, port=config.streaming.port
        ).start()
        streaming.set_current(streaming_server)
        dispatcher.ready.set()
        info = pm.hook.criadapt_backend_info()
        if info is not None:
            log.info("backend %s %s ready", info.name, info.version)
        stop.wait()
    finally:
        dispatcher.ready.clear()
        server.stop(config.grace_period).wait()
        if streaming_server is not None:
            if streaming.current() is streaming_server:
                streaming.set_current(None)
            streaming_server.stop()
        if configured:
            pm.hook.criadapt_unconfigure(config=config)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        log.info("criadapt stopped")
    return 0
