"""A typed CRI client: talks to any CRI endpoint (criadapt, containerd, CRI-O) with the models.

>>> from criadapt.client import Client
>>> with Client("unix:///run/criadapt/criadapt.sock") as cri:        # doctest: +SKIP
...     print(cri.version().runtime_name)
...     sandbox_id = cri.run_pod_sandbox(config=config).pod_sandbox_id

Every RPC is a method named after it in snake case (``run_pod_sandbox``), taking the request's
fields as keyword arguments and returning the response model. Errors are raised as
:mod:`criadapt.errors` classes (``NotFound``, ...). The API version is negotiated on first use:
v1, or v1alpha2 when the server answers v1 ``Version`` with ``UNIMPLEMENTED``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import grpc

from criadapt._client_methods import ClientMethods
from criadapt.errors import CriError, Unimplemented
from criadapt.models import VersionRequest
from criadapt.rpcs import BY_NAME
from criadapt.server.errors import error_of
from criadapt.wire import decode, encode
from criadapt.wire.pb import method_path

MAX_MESSAGE_BYTES = 16 * 1024 * 1024


class Client(ClientMethods):
    """A CRI client over one gRPC channel."""

    def __init__(
        self,
        endpoint: str = "unix:///run/criadapt/criadapt.sock",
        *,
        api_version: str | None = None,
        timeout: float | None = 60.0,
    ) -> None:
        """``endpoint`` is a gRPC target (``unix:///path``); ``api_version`` forces "v1" or
        "v1alpha2" instead of negotiating; ``timeout`` is the default per-call deadline."""
        if api_version not in (None, "v1", "v1alpha2"):
            raise ValueError(f"unknown CRI API version {api_version!r}")
        self.endpoint = endpoint
        self.timeout = timeout
        self._api_version = api_version
        self._lock = threading.Lock()
        self._channel = grpc.insecure_channel(
            endpoint,
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ],
        )

    # -- context management -------------------------------------------------------------------
    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- version negotiation ------------------------------------------------------------------
    @property
    def api_version(self) -> str:
        """The CRI API version this client speaks (negotiated on first use)."""
        with self._lock:
            if self._api_version is None:
                self._api_version = self._negotiate()
            return self._api_version

    def _negotiate(self) -> str:
        request = encode(VersionRequest(version="v1"))
        for version in ("v1", "v1alpha2"):
            try:
                self._unary(version, "RuntimeService", "Version")(request, timeout=self.timeout)
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                    continue
                raise _translate(exc) from None
            return version
        raise CriError(f"{self.endpoint} serves neither CRI v1 nor v1alpha2")

    # -- calls ------------------------------------------------------------------------------
    def _unary(self, version: str, service: str, rpc: str) -> Any:
        return self._channel.unary_unary(method_path(version, service, rpc))

    def _call(self, rpc: str, request: Any) -> Any:
        spec = BY_NAME[rpc]
        version = self.api_version
        if version not in spec.versions:
            raise Unimplemented(f"{rpc} does not exist in CRI {version}")
        method = self._unary(version, spec.service, rpc)
        try:
            reply = method(encode(request), timeout=self.timeout)
        except grpc.RpcError as exc:
            raise _translate(exc) from None
        return decode(spec.response, reply)

    def _stream(self, rpc: str, request: Any) -> Iterator[Any]:
        spec = BY_NAME[rpc]
        version = self.api_version
        if version not in spec.versions:
            raise Unimplemented(f"{rpc} does not exist in CRI {version}")
        method = self._channel.unary_stream(method_path(version, spec.service, rpc))
        replies = method(encode(request))
        try:
            for reply in replies:
                yield decode(spec.response, reply)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.CANCELLED:
                return
            raise _translate(exc) from None
        finally:
            replies.cancel()


def _translate(exc: grpc.RpcError) -> CriError:
    return error_of(exc.code(), exc.details() or "")


__all__ = ["Client"]
