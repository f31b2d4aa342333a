"""Streaming (exec, attach, port-forward): the interfaces between the streaming server and
backends, and the transports (:mod:`criadapt.streaming.spdy`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO, Protocol

import attrs


@attrs.frozen
class TerminalSize:
    width: int
    height: int


class StreamIO(Protocol):
    """A client's exec/attach streams; any of them may be None when not requested."""

    stdin: BinaryIO | None
    stdout: BinaryIO | None
    stderr: BinaryIO | None

    def resizes(self) -> Iterator[TerminalSize]:
        """Terminal sizes sent by the client, as they arrive (TTY sessions only)."""
        ...

    @property
    def closed(self) -> bool:
        """True once the client disconnected."""
        ...


class PortStream(Protocol):
    """One port-forward connection: a bidirectional byte stream."""

    def read(self, size: int = -1) -> bytes: ...

    def write(self, data: bytes) -> int: ...

    def close(self) -> None: ...
