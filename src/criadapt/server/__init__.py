"""The gRPC shim: one servicer generated from the RPC table, serving CRI v1 and v1alpha2."""

from criadapt.server.serve import create_server, serve
from criadapt.server.servicer import Dispatcher

__all__ = ["Dispatcher", "create_server", "serve"]
