"""criadapt's hook specifications, grouped by area.

- :mod:`.lifecycle`: configure/unconfigure/backend_info;
- :mod:`._rpc` (generated): one ``firstresult`` hook per CRI RPC, ``criadapt_<rpc_in_snake_case>``;
- :mod:`.streaming`: the process side of Exec/Attach/PortForward for the streaming server;
- :mod:`.admin`: the store operations behind ``criadapt images import|list``.
"""

from criadapt.hookspecs import _rpc, admin, lifecycle, streaming

SPEC_MODULES = (lifecycle, _rpc, streaming, admin)

__all__ = ["SPEC_MODULES"]
