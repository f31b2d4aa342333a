"""Generic gRPC handlers built from the RPC table: decode → validate → hook → encode.

There are no hand-written servicer methods. For every RPC of :mod:`criadapt.rpcs` and every
API version that has it, one handler is registered under its method path
(``/runtime.v1.RuntimeService/RunPodSandbox``, ``/runtime.v1alpha2.RuntimeService/...``).
Handlers take and return raw bytes, so that a message that does not parse is answered
``INVALID_ARGUMENT`` by us and not by a deserializer.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import attrs
import grpc
import pluggy

from criadapt.call import CallContext
from criadapt.errors import CriError, Internal, Unavailable, Unimplemented
from criadapt.models import VersionResponse
from criadapt.plugin import answering_impls
from criadapt.rpcs import RPCS, Rpc
from criadapt.server.errors import status_of
from criadapt.wire import decode, encode
from criadapt.wire.pb import VERSIONS, method_path

log = logging.getLogger("criadapt.server")

#: the version string kubelet expects in VersionResponse.version
KUBELET_API_VERSION = "0.1.0"


class Dispatcher:
    """Answers CRI calls with the hooks of one plugin manager."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        #: set once ``criadapt_configure`` has returned; until then calls get UNAVAILABLE
        self.ready = threading.Event()
        self._impl_cache: dict[str, bool] = {}

    # -- building -----------------------------------------------------------------------------
    def handlers(self) -> list[grpc.GenericRpcHandler]:
        """One generic handler per (API version, service)."""
        table: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
        for rpc in RPCS:
            for version in rpc.versions:
                service = method_path(version, rpc.service, rpc.name).rsplit("/", 1)[0][1:]
                table.setdefault(service, {})[rpc.name] = self._method_handler(rpc, version)
        return [grpc.method_handlers_generic_handler(s, methods) for s, methods in table.items()]

    def _method_handler(self, rpc: Rpc, version: str) -> grpc.RpcMethodHandler:
        if rpc.server_streaming:
            return grpc.unary_stream_rpc_method_handler(self._streaming_behaviour(rpc, version))
        return grpc.unary_unary_rpc_method_handler(self._unary_behaviour(rpc, version))

    # -- calling ------------------------------------------------------------------------------
    def call(self, rpc: Rpc, request: Any, call: CallContext) -> Any:
        """Run the hook of ``rpc`` with a validated request model; return the response model."""
        if not self.ready.is_set():
            raise Unavailable("criadapt is starting: the backend is not configured yet")
        if not answering_impls(self.pm, rpc.hook):
            raise Unimplemented(f"{rpc.name} is not implemented by the loaded backend")
        kwargs = {a.name: getattr(request, a.name) for a in attrs.fields(type(request))}
        result = getattr(self.pm.hook, rpc.hook)(**kwargs, call=call)
        if rpc.server_streaming:
            return result
        if not isinstance(result, rpc.response):
            raise Internal(
                f"the backend answered {rpc.name} with {type(result).__name__}, "
                f"not {rpc.response.__name__}"
            )
        if isinstance(result, VersionResponse):
            result = attrs.evolve(
                result,
                version=result.version or KUBELET_API_VERSION,
                runtime_api_version=call.api_version,
            )
        return result

    def _context(self, rpc: Rpc, version: str, context: grpc.ServicerContext) -> CallContext:
        call = CallContext(
            rpc=rpc.name,
            api_version=version,
            peer=context.peer(),
            time_remaining=context.time_remaining(),
        )
        context.add_callback(call.done.set)
        return call

    def _unary_behaviour(self, rpc: Rpc, version: str) -> Callable[[bytes, Any], bytes]:
        def behaviour(request: bytes, context: grpc.ServicerContext) -> bytes:
            started = time.monotonic()
            call = self._context(rpc, version, context)
            with self._errors(rpc, version, context):
                response = encode(self.call(rpc, decode(rpc.request, request), call))
                log.debug(
                    "%s %s ok in %.1f ms", version, rpc.name, (time.monotonic() - started) * 1e3
                )
                return response
            raise AssertionError("unreachable")  # _errors aborts

        return behaviour

    def _streaming_behaviour(
        self, rpc: Rpc, version: str
    ) -> Callable[[bytes, Any], Iterator[bytes]]:
        def behaviour(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
            call = self._context(rpc, version, context)
            with self._errors(rpc, version, context):
                stream = iter(self.call(rpc, decode(rpc.request, request), call))
                try:
                    for item in stream:
                        if not isinstance(item, rpc.response):
                            raise Internal(f"the backend streamed {type(item).__name__}")
                        yield encode(item)
                finally:
                    call.done.set()
                    close = getattr(stream, "close", None)
                    if close is not None:
                        close()

        return behaviour

    @contextlib.contextmanager
    def _errors(self, rpc: Rpc, version: str, context: grpc.ServicerContext) -> Iterator[None]:
        """Map every exception of a call to a status, once."""
        try:
            yield
        except CriError as exc:
            log.info("%s %s: %s: %s", version, rpc.name, exc.code, exc)
            _abort(context, status_of(exc), str(exc))
        except GeneratorExit:
            raise
        except Exception as exc:
            log.exception("%s %s failed unexpectedly", version, rpc.name)
            _abort(
                context,
                grpc.StatusCode.INTERNAL,
                f"internal error in {rpc.name} ({type(exc).__name__}); see the criadapt log",
            )


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, details: str) -> NoReturn:
    context.abort(code, details)
    raise AssertionError("grpc's abort returned")  # pragma: no cover


__all__ = ["KUBELET_API_VERSION", "VERSIONS", "Dispatcher"]
