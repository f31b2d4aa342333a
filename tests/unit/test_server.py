"""The gRPC shim against a small in-test backend: dispatch, versions, errors, socket handling."""

from __future__ import annotations

import os
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from criadapt import errors, hookimpl
from criadapt import models as m
from criadapt.client import Client
from criadapt.plugin import check_backend, get_plugin_manager
from criadapt.server.errors import STATUS, error_of, status_of
from criadapt.server.serve import SocketInUse, create_server
from criadapt.validators import ValidationError


class Backend:
    """Implements a handful of hooks, each exercising one path of the dispatcher."""

    def __init__(self) -> None:
        self.seen: list[Any] = []
        self.events_closed = threading.Event()

    @hookimpl
    def criadapt_version(self, version: str) -> m.VersionResponse:
        return m.VersionResponse(runtime_name="test", runtime_version="1")

    @hookimpl
    def criadapt_pod_sandbox_status(self, pod_sandbox_id: str, verbose: bool) -> Any:
        if pod_sandbox_id == "wrong-type":
            return m.VersionResponse()
        if pod_sandbox_id == "boom":
            raise RuntimeError("secret detail /etc/shadow")
        raise errors.NotFound(f"sandbox {pod_sandbox_id} not found")

    @hookimpl
    def criadapt_stop_pod_sandbox(self, pod_sandbox_id: str, call: Any) -> m.StopPodSandboxResponse:
        self.seen.append(call)
        return m.StopPodSandboxResponse()

    @hookimpl
    def criadapt_get_container_events(self, call: Any) -> Iterator[m.ContainerEventResponse]:
        try:
            for i in range(3):
                yield m.ContainerEventResponse(container_id=f"c{i}", created_at=i)
            call.done.wait(10)
        finally:
            self.events_closed.set()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Backend, Path, Any]]:
    pm = get_plugin_manager()
    backend = Backend()
    pm.register(backend, name="test-backend")
    server, path, dispatcher = create_server(f"unix://{tmp_path}/cri.sock", pm)
    dispatcher.ready.set()
    try:
        yield backend, path, dispatcher
    finally:
        server.stop(0).wait()


def test_version_reports_the_api_version_spoken(served: Any) -> None:
    _, path, _ = served
    with Client(f"unix://{path}") as v1, Client(f"unix://{path}", api_version="v1alpha2") as a2:
        assert v1.api_version == "v1"
        one, alpha = v1.version(version="v1"), a2.version(version="v1alpha2")
    assert (one.runtime_api_version, alpha.runtime_api_version) == ("v1", "v1alpha2")
    assert one.version == alpha.version == "0.1.0"
    assert one.runtime_name == "test"


def test_errors_map_to_codes_and_internal_hides_details(served: Any) -> None:
    _, path, _ = served
    with Client(f"unix://{path}") as cri:
        with pytest.raises(errors.NotFound, match="sandbox nope not found"):
            cri.pod_sandbox_status(pod_sandbox_id="nope")
        with pytest.raises(errors.Internal) as internal:
            cri.pod_sandbox_status(pod_sandbox_id="boom")
        assert "shadow" not in str(internal.value)
        assert "RuntimeError" in str(internal.value)
        with pytest.raises(errors.Internal, match="VersionResponse"):
            cri.pod_sandbox_status(pod_sandbox_id="wrong-type")
        with pytest.raises(ValidationError, match="pod_sandbox_id must not be empty"):
            cri.pod_sandbox_status(pod_sandbox_id="")  # the client's model refuses it already
        with pytest.raises(errors.Unimplemented, match="ListContainers"):
            cri.list_containers()


def test_call_context_reaches_the_hook(served: Any) -> None:
    backend, path, _ = served
    with Client(f"unix://{path}", api_version="v1alpha2") as cri:
        cri.stop_pod_sandbox(pod_sandbox_id="x")
    (call,) = backend.seen
    assert (call.rpc, call.api_version) == ("StopPodSandbox", "v1alpha2")
    assert call.time_remaining is not None and call.time_remaining > 0
    assert call.done.wait(5)


def test_garbage_bytes_are_invalid_argument_and_server_survives(served: Any) -> None:
    _, path, _ = served
    with grpc.insecure_channel(f"unix://{path}") as channel:
        for method in (
            "/runtime.v1.RuntimeService/RunPodSandbox",
            "/runtime.v1alpha2.ImageService/PullImage",
        ):
            with pytest.raises(grpc.RpcError) as exc:
                channel.unary_unary(method)(b"\xff\xff\xff", timeout=5)
            assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as exc:  # valid bytes, invalid request
            channel.unary_unary("/runtime.v1.RuntimeService/PodSandboxStatus")(b"", timeout=5)
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "PodSandboxStatusRequest.pod_sandbox_id must not be empty" in exc.value.details()
    with Client(f"unix://{path}") as cri:
        assert cri.version().runtime_name == "test"


def test_unavailable_until_ready(served: Any) -> None:
    _, path, dispatcher = served
    dispatcher.ready.clear()
    with Client(f"unix://{path}", api_version="v1") as cri, pytest.raises(errors.Unavailable):
        cri.version()


def test_server_streaming_and_cancel(served: Any) -> None:
    backend, path, _ = served
    with Client(f"unix://{path}") as cri:
        stream = cri.get_container_events()
        got = [next(stream).container_id for _ in range(3)]
        stream.close()
    assert got == ["c0", "c1", "c2"]
    assert backend.events_closed.wait(5)


def test_v1_only_rpc_is_unimplemented_over_v1alpha2(served: Any) -> None:
    _, path, _ = served
    with grpc.insecure_channel(f"unix://{path}") as channel:
        with pytest.raises(grpc.RpcError) as exc:
            list(channel.unary_stream("/runtime.v1alpha2.RuntimeService/GetContainerEvents")(b""))
        assert exc.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_socket_mode_stale_and_live(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # a socket file nobody answers on
    pm = get_plugin_manager()
    server, got, _ = create_server(f"unix://{path}", pm)
    try:
        assert got == path
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
        with pytest.raises(SocketInUse, match="already serving"):
            create_server(f"unix://{path}", get_plugin_manager())
        assert path.exists()
    finally:
        server.stop(0).wait()


def test_regular_file_is_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    path.write_text("keep me")
    with pytest.raises(SocketInUse, match="not a socket"):
        create_server(f"unix://{path}", get_plugin_manager())
    assert path.read_text() == "keep me"


def test_every_error_class_has_its_status() -> None:
    for code, cls in errors.ERRORS.items():
        assert status_of(cls("x")) == grpc.StatusCode[code] == STATUS[code]
        assert type(error_of(grpc.StatusCode[code], "x")) is cls
    assert error_of(grpc.StatusCode.DATA_LOSS, "x").code == "DATA_LOSS"


def test_check_backend_reports_missing_and_refuses_two_answers() -> None:
    pm = get_plugin_manager()
    pm.register(Backend(), name="one")
    missing = check_backend(pm)
    assert "Version" not in missing and "ListContainers" in missing
    pm.register(Backend(), name="two")
    with pytest.raises(RuntimeError, match="more than one plugin: "):
        check_backend(pm)
