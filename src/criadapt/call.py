"""What a hook may learn about the call that reached it."""

from __future__ import annotations

import threading

import attrs


@attrs.frozen(kw_only=True)
class CallContext:
    """Passed to every RPC hook as ``call`` (hooks that do not need it leave it out)."""

    #: RPC name as in the proto, e.g. ``RunPodSandbox``
    rpc: str
    #: the API version the caller spoke: ``"v1"`` or ``"v1alpha2"``
    api_version: str = "v1"
    #: gRPC peer string, e.g. ``unix:`` (empty outside a server)
    peer: str = ""
    #: seconds left before the caller's deadline, or None when it set none
    time_remaining: float | None = None
    #: set when the call has ended (finished, cancelled by the client, or past its deadline);
    #: long-running and streaming hooks wait on it instead of blocking forever
    done: threading.Event = attrs.field(factory=threading.Event, eq=False, repr=False)
