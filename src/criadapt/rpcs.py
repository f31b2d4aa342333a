"""The RPC table (generated from the proto into :mod:`criadapt._rpc_table`) and look-ups."""

from __future__ import annotations

from criadapt._rpc_table import RPCS, Rpc

BY_NAME: dict[str, Rpc] = {rpc.name: rpc for rpc in RPCS}
BY_HOOK: dict[str, Rpc] = {rpc.hook: rpc for rpc in RPCS}

__all__ = ["BY_HOOK", "BY_NAME", "RPCS", "Rpc"]
