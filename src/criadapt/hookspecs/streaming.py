"""The process side of Exec, Attach and PortForward.

The ``Exec``/``Attach``/``PortForward`` RPC hooks validate the request and return the URL of
the streaming server; when the client connects there, the streaming server calls one of these
hooks with the client's streams. The streams are :class:`criadapt.streaming.StreamIO`
(file-like ``stdin`` to read from, ``stdout``/``stderr`` to write to, an iterator of terminal
sizes) so backends never see SPDY or WebSocket framing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from criadapt._markers import hookspec

if TYPE_CHECKING:
    from criadapt.streaming import PortStream, StreamIO


@hookspec(firstresult=True)
def criadapt_stream_exec(
    container_id: str, cmd: Sequence[str], tty: bool, streams: StreamIO
) -> int:
    """Run ``cmd`` in the container wired to ``streams``; return its exit code.

    Must return once the process exits; if the client goes away (``streams.closed``), kill
    the process and return.
    """


@hookspec(firstresult=True)
def criadapt_stream_attach(container_id: str, tty: bool, streams: StreamIO) -> int:
    """Attach ``streams`` to the container's main process until it exits or the client leaves.

    Returns the container's exit code, or -1 if the client detached first.
    """


@hookspec(firstresult=True)
def criadapt_stream_port_forward(pod_sandbox_id: str, port: int, stream: PortStream) -> None:
    """Relay bytes between ``stream`` and TCP ``port`` on localhost inside the sandbox's
    network namespace, until either side closes."""
