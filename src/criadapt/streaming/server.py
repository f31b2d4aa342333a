"""The streaming server behind ``Exec``, ``Attach`` and ``PortForward``.

The CRI calls only return a URL (:meth:`StreamingServer.register`); the client (kubelet's
proxy, ``crictl``, critest) then connects to it over plain HTTP/1.1 and upgrades the connection
to SPDY/3.1 or to a WebSocket. The server then calls the backend's streaming hooks
(:mod:`criadapt.hookspecs.streaming`) with the client's streams, so that backends never see
the framing. This is our own implementation of the wire behaviour of Kubernetes' CRI
streaming library (``k8s.io/kubelet/pkg/cri/streaming``, now ``k8s.io/cri-streaming``) and
of the client side of ``client-go/tools/remotecommand`` and ``tools/portforward``.

API
---
:class:`StreamingServer` ``(pm, *, address, port, token_ttl, max_tokens, ...)``; ``start()``,
``stop()``, ``base_url``, ``register(kind, request) -> url``. :func:`current` /
:func:`set_current` hold the server of the running ``criadapt serve`` so backends' ``Exec``,
``Attach`` and ``PortForward`` hooks can hand out URLs::

    server = criadapt.streaming.server.current()
    if server is None:
        raise Unimplemented("no streaming server")
    return m.ExecResponse(url=server.register("exec", m.ExecRequest(...)))

Tokens
    8 URL-safe base64 characters, single use, valid for ``token_ttl`` seconds (60). At most
    ``max_tokens`` (1000) are outstanding; one more raises :class:`ResourceExhausted`
    ("maximum number of in-flight requests exceeded"), as upstream. An unknown, used, expired
    token, or one used on another route (an exec token on ``/attach/``), gets
    ``404 page not found``. The token is consumed before the upgrade is checked.

Routes
    ``GET|POST /exec/<token>``, ``/attach/<token>``, ``/portforward/<token>``; other paths 404,
    other methods 405. Every answer other than an upgrade closes the connection.

SPDY/3.1 (``Connection: Upgrade``, ``Upgrade: SPDY/3.1``)
    The ``X-Stream-Protocol-Version`` values offered by the client are matched in the
    client's order against ``v4.channel.k8s.io``, ``v3.channel.k8s.io``, ``v2.channel.k8s.io``
    and ``channel.k8s.io`` (exec, attach) or ``portforward.k8s.io`` (port-forward). None
    offered: 400; no match: 403 with one ``X-Accepted-Stream-Protocol-Versions`` line per
    protocol; no upgrade headers: 400.

    Exec/attach: the server replies to every stream and waits (30 s) for the error stream and
    the requested stdin/stdout/stderr streams, plus ``resize`` for a TTY on v3/v4, identified
    by their ``streamType`` header. Resize is a sequence of JSON objects ``{"Width":W,
    "Height":H}`` (field names matched case-insensitively, as Go does). At the end the status
    goes to the error stream: on v4 the JSON of a ``metav1.Status`` as Go marshals it
    (``{"metadata":{},"status":"Success"}``; a non-zero exit code is ``Failure`` /
    ``NonZeroExitCode`` with the cause ``{"reason":"ExitCode","message":"<rc>"}`` and the
    message containerd produces; a hook error is ``InternalError`` with code 500); v1-v3 get
    the message as plain text and nothing on success. Then every stream is half-closed and
    the connection closed (GOAWAY). On v1 the server half-closes stdin at once, as upstream;
    upstream's v1 reset of the error stream (which loses v1 errors) is not reproduced. Attach
    reports Success whatever the hook returns (upstream's attach has no exit code); an
    exception from a hook becomes ``InternalError`` (the message of a
    :class:`~criadapt.errors.CriError`, else "internal error" and a logged traceback).

    Port-forward: the client opens a pair of streams per forwarded connection, with headers
    ``streamType`` (``data``/``error``), ``port`` (1-65535) and ``requestID`` (or, for old
    clients, derived from the stream id as upstream). A stream with a bad header is reset.
    For each complete pair the port-forward hook runs in its own thread; its error goes to the
    error stream as ``error forwarding port P to pod SANDBOX, uid : ERROR``. A pair not
    completed within 30 s gets ``(conn=..., request=ID) timed out waiting for streams``.

WebSocket (RFC 6455, ``Upgrade: websocket``; framing implemented here)
    Exec/attach subprotocols: ``v5.channel.k8s.io`` (what ``crictl -r websocket`` and
    kubectl offer; upstream CRI servers lack it), ``v4.channel.k8s.io``,
    ``v4.base64.channel.k8s.io``, ``channel.k8s.io``, ``base64.channel.k8s.io`` and none at
    all (binary, pre-v4 status). Every message is a channel byte (0 stdin, 1 stdout, 2 stderr,
    3 error/status, 4 resize) and the payload; the ``base64`` variants use text messages with
    an ASCII digit and base64. Right after the handshake an empty message goes to stdout (else
    stderr, else the error channel) to signal readiness, as upstream. v5 adds the client's
    half-close ``[255, channel]``: ``[255, 0]`` is EOF on stdin (``[255, 4]`` ends the
    resizes). Without v5 stdin ends only
    when the connection does. The status goes to channel 3 (JSON on v4/v5, text before), then
    the server closes with code 1000.

    Port-forward subprotocols: ``v4.channel.k8s.io``, ``v4.base64.channel.k8s.io``, none, and
    ``SPDY/3.1+portforward.k8s.io`` (what client-go's port-forward over WebSocket, i.e.
    kubectl >= 1.31 and critest ``-websocket-portforward``, use: SPDY carried in binary
    messages, handled exactly as the SPDY port-forward above). With the channel protocols the
    ports are the ``?port=`` query parameters (repeated or comma separated), else those of
    the CRI request; port *i* gets data channel ``2i`` and error channel ``2i+1``, and the
    first message on each is the port as uint16 little endian. ``portforward.k8s.io`` alone
    is not a WebSocket subprotocol upstream and is refused (403) here too.

    Pings are answered with pongs; fragmented messages are reassembled; unmasked client
    frames, reserved bits and bad opcodes close with 1002, oversized messages with 1009.

Checked against kubectl v1.32 (client-go): exec, ``exec -it`` with resizes, attach and
port-forward, each over SPDY and over WebSocket (``tests/e2e/test_streaming_protocols.py``).

Not implemented: TLS, the 4 h idle timeout, HTTP keep-alive, 429 ``Retry-After`` on the HTTP
side (the limit is enforced at ``register``), WebSocket extensions (compression).

Threads: one accept thread; per connection one handler thread (which runs the hook) plus the
SPDY or WebSocket reader thread; a resize reader for SPDY TTY sessions; one thread per
forwarded connection. All end when the client goes away or :meth:`StreamingServer.stop`.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import functools
import hashlib
import io
import json
import logging
import queue
import secrets
import socket
import struct
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO, Final, Literal, TypeAlias, cast

import attrs
import pluggy

from criadapt import models as m
from criadapt.errors import CriError, InvalidArgument, ResourceExhausted, Unavailable, Unimplemented
from criadapt.plugin import answering_impls
from criadapt.streaming import TerminalSize
from criadapt.streaming.spdy import (
    RstStatus,
    SpdyConnection,
    SpdyError,
    SpdyStream,
    server_upgrade_response,
)

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

log = logging.getLogger("criadapt.streaming")

__all__ = [
    "MAX_TOKENS",
    "PORT_FORWARD_PROTOCOL",
    "SPDY_PORT_FORWARD_PROTOCOLS",
    "SPDY_REMOTECOMMAND_PROTOCOLS",
    "SPDY_TUNNEL_PROTOCOL",
    "STREAM_PROTOCOL_V1",
    "STREAM_PROTOCOL_V2",
    "STREAM_PROTOCOL_V3",
    "STREAM_PROTOCOL_V4",
    "STREAM_PROTOCOL_V5",
    "TOKEN_TTL",
    "WEBSOCKET_PORT_FORWARD_PROTOCOLS",
    "WEBSOCKET_REMOTECOMMAND_PROTOCOLS",
    "StreamKind",
    "StreamingServer",
    "current",
    "exit_code_status",
    "internal_error_status",
    "set_current",
    "success_status",
    "websocket_accept",
]

# ------------------------------------------------------------------------------ constants

StreamKind: TypeAlias = Literal["exec", "attach", "portforward"]
KINDS: Final = ("exec", "attach", "portforward")

STREAM_PROTOCOL_V1: Final = "channel.k8s.io"
STREAM_PROTOCOL_V2: Final = "v2.channel.k8s.io"
STREAM_PROTOCOL_V3: Final = "v3.channel.k8s.io"
STREAM_PROTOCOL_V4: Final = "v4.channel.k8s.io"
STREAM_PROTOCOL_V5: Final = "v5.channel.k8s.io"
BASE64_PROTOCOL_V1: Final = "base64.channel.k8s.io"
BASE64_PROTOCOL_V4: Final = "v4.base64.channel.k8s.io"
PORT_FORWARD_PROTOCOL: Final = "portforward.k8s.io"
SPDY_TUNNEL_PROTOCOL: Final = "SPDY/3.1+portforward.k8s.io"

#: what the upstream server supports over SPDY (kubectl offers v5 first and gets v4)
SPDY_REMOTECOMMAND_PROTOCOLS: Final = (
    STREAM_PROTOCOL_V4,
    STREAM_PROTOCOL_V3,
    STREAM_PROTOCOL_V2,
    STREAM_PROTOCOL_V1,
)
SPDY_PORT_FORWARD_PROTOCOLS: Final = (PORT_FORWARD_PROTOCOL,)
#: WebSocket subprotocols ("" = the client offered none); the client's order decides
WEBSOCKET_REMOTECOMMAND_PROTOCOLS: Final = (
    STREAM_PROTOCOL_V5,
    STREAM_PROTOCOL_V4,
    BASE64_PROTOCOL_V4,
    STREAM_PROTOCOL_V1,
    BASE64_PROTOCOL_V1,
    "",
)
WEBSOCKET_PORT_FORWARD_PROTOCOLS: Final = (
    SPDY_TUNNEL_PROTOCOL,
    STREAM_PROTOCOL_V4,
    BASE64_PROTOCOL_V4,
    "",
)
_V4_STATUS: Final = frozenset({STREAM_PROTOCOL_V4, BASE64_PROTOCOL_V4, STREAM_PROTOCOL_V5})
_BASE64_PROTOCOLS: Final = frozenset({BASE64_PROTOCOL_V1, BASE64_PROTOCOL_V4})

TOKEN_TTL: Final = 60.0
MAX_TOKENS: Final = 1000
TOKEN_LENGTH: Final = 8
STREAM_CREATION_TIMEOUT: Final = 30.0
#: how long a closing connection waits for the peer's side of the close
LINGER_SECONDS: Final = 2.0
#: how long stop() and a finished session wait for hooks to notice the client is gone
JOIN_SECONDS: Final = 5.0

MAX_REQUEST_HEAD: Final = 64 * 1024
MAX_WEBSOCKET_MESSAGE: Final = 64 * 1024 * 1024
#: largest payload in one outgoing WebSocket message (websockets' default limit is 1 MiB)
WEBSOCKET_CHUNK: Final = 256 * 1024
#: bytes buffered per input channel before the WebSocket reader waits (backpressure)
PIPE_LIMIT: Final = 1024 * 1024
READ_CHUNK: Final = 256 * 1024

# remote command channels (WebSocket) and the v5 close signal
STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
CLOSE_SIGNAL: Final = 255

WEBSOCKET_GUID: Final = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


# --------------------------------------------------------------------------- current server


class _Registry:
    server: StreamingServer | None = None
    lock = threading.Lock()


def current() -> StreamingServer | None:
    """The streaming server of the running ``criadapt serve`` (None when there is none)."""
    return _Registry.server


def url_for(kind: StreamKind, request: object) -> str:
    """The URL a backend's Exec/Attach/PortForward hook answers with: the request registered
    with the running streaming server; ``Unimplemented`` when none runs."""
    server = current()
    if server is None:
        raise Unimplemented("no streaming server is running (criadapt serve starts one)")
    return server.register(kind, request)


def set_current(server: StreamingServer | None) -> StreamingServer | None:
    """Make ``server`` the one :func:`current` returns; returns the previous one."""
    with _Registry.lock:
        previous, _Registry.server = _Registry.server, server
    return previous


# ------------------------------------------------------------------------------ status


def _go_json(value: object) -> bytes:
    """JSON as Go's encoding/json writes it: compact, UTF-8, HTML characters escaped."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    for char, escape in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escape)
    return text.encode("utf-8", "replace")


def success_status() -> dict[str, Any]:
    """``metav1.Status`` of a command that succeeded."""
    return {"metadata": {}, "status": "Success"}


def exit_code_status(cmd: Sequence[str], code: int) -> dict[str, Any]:
    """``metav1.Status`` of a command that exited with ``code`` != 0 (containerd's message)."""
    error = f"error executing command [{' '.join(cmd)}], exit code {code}"
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"command terminated with non-zero exit code: {error}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


def internal_error_status(error: str) -> dict[str, Any]:
    """``apierrors.NewInternalError(error).Status()``."""
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"Internal error occurred: {error}",
        "reason": "InternalError",
        "details": {"causes": [{"message": error}]},
        "code": 500,
    }


def encode_status(status: dict[str, Any], *, v4: bool) -> bytes:
    """The error-stream bytes: JSON on v4 and later, else the message of a failure only."""
    if v4:
        return _go_json(status)
    if status.get("status") == "Success":
        return b""
    return str(status.get("message", "")).encode("utf-8", "replace")


# ------------------------------------------------------------------------------ tokens


class _RequestCache:
    """Single-use tokens for cached requests, oldest first (``request_cache.go``)."""

    def __init__(self, ttl: float, limit: int, clock: Callable[[], float] = time.monotonic):
        self._ttl = ttl
        self._limit = limit
        self._clock = clock
        self._entries: collections.OrderedDict[str, tuple[str, object, float]] = (
            collections.OrderedDict()
        )
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            self._gc(self._clock())
            return len(self._entries)

    def insert(self, kind: str, request: object) -> str:
        with self._lock:
            now = self._clock()
            self._gc(now)
            if len(self._entries) >= self._limit:
                raise ResourceExhausted("maximum number of in-flight requests exceeded")
            for _ in range(10):
                token = secrets.token_urlsafe(6)[:TOKEN_LENGTH]
                if token not in self._entries:
                    break
            else:  # pragma: no cover - 2**48 tokens
                raise ResourceExhausted("failed to generate unique token")
            self._entries[token] = (kind, request, now + self._ttl)
            return token

    def consume(self, token: str) -> tuple[str, object] | None:
        with self._lock:
            entry = self._entries.pop(token, None)
            if entry is None:
                return None
            kind, request, expires = entry
            if self._clock() > expires:
                return None
            return kind, request

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def _gc(self, now: float) -> None:
        while self._entries:
            token, (_, _, expires) = next(iter(self._entries.items()))
            if now <= expires:
                return
            del self._entries[token]


# ------------------------------------------------------------------------------ HTTP


@attrs.frozen
class HttpRequest:
    """The head of an HTTP/1.1 request (header names lowercase)."""

    method: str
    target: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, list[str]]

    def header(self, name: str) -> str:
        """Every value of ``name`` joined by ", " ("" if absent)."""
        return ", ".join(self.headers.get(name.lower(), ()))

    def tokens(self, name: str) -> list[str]:
        """The comma-separated values of every ``name`` line, stripped, empty ones dropped."""
        return [
            token
            for value in self.headers.get(name.lower(), ())
            for token in (part.strip() for part in value.split(","))
            if token
        ]


class _HttpError(Exception):
    def __init__(self, code: int, body: str = "") -> None:
        super().__init__(body)
        self.code = code
        self.body = body


_REASONS: Final = {
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
}


def _parse_request(head: bytes) -> HttpRequest:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[0]:
        raise _HttpError(400, "malformed request line")
    method, target, _ = parts
    headers: dict[str, list[str]] = {}
    last: list[str] | None = None
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and last:  # obsolete line folding
            last[-1] += " " + line.strip()
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise _HttpError(400, f"malformed header line {line!r}")
        last = headers.setdefault(name.lower(), [])
        last.append(value.strip())
    split = urllib.parse.urlsplit(target)
    return HttpRequest(
        method=method,
        target=target,
        path=split.path,
        query=urllib.parse.parse_qs(split.query, keep_blank_values=True),
        headers=headers,
    )


def _read_request(sock: socket.socket, timeout: float) -> tuple[HttpRequest, bytes]:
    """Read and parse a request head; return it and the bytes read after it."""
    sock.settimeout(timeout)
    buf = bytearray()
    start = 0
    while True:
        end = buf.find(b"\r\n\r\n", start)
        if end >= 0:
            break
        if len(buf) > MAX_REQUEST_HEAD:
            raise _HttpError(431, "request head too large")
        start = max(0, len(buf) - 3)
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed before the request head")
        buf += chunk
    sock.settimeout(None)
    return _parse_request(bytes(buf[:end])), bytes(buf[end + 4 :])


def _http_response(
    code: int, body: str = "", headers: Sequence[tuple[str, str]] = (), *, text: bool = True
) -> bytes:
    raw = body.encode("utf-8", "replace")
    lines = [f"HTTP/1.1 {code} {_REASONS.get(code, 'Error')}", *(f"{k}: {v}" for k, v in headers)]
    if text:
        lines += ["Content-Type: text/plain; charset=utf-8", "X-Content-Type-Options: nosniff"]
    lines += [f"Content-Length: {len(raw)}", "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + raw


def _send_and_close(sock: socket.socket, response: bytes) -> None:
    """Send a final answer, then drain briefly so that closing does not reset it away."""
    try:
        sock.sendall(response)
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(1.0)
        drained = 0
        while drained < MAX_REQUEST_HEAD and (chunk := sock.recv(65536)):
            drained += len(chunk)
    except OSError:
        pass


def _is_websocket(request: HttpRequest) -> bool:
    """``wsstream.IsWebSocketRequest``: ``Upgrade: websocket`` and a ``Connection: upgrade``."""
    if request.header("upgrade").strip().lower() != "websocket":
        return False
    return "upgrade" in (token.lower() for token in request.tokens("connection"))


def websocket_accept(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` value for a ``Sec-WebSocket-Key`` (RFC 6455 4.2.2)."""
    digest = hashlib.sha1((key + WEBSOCKET_GUID).encode("latin-1")).digest()
    return base64.b64encode(digest).decode("ascii")


def _go_list(values: Sequence[str]) -> str:
    return "[" + " ".join(values) + "]"


# ------------------------------------------------------------------------------ WebSocket


class WebSocketClosed(BrokenPipeError):
    """The WebSocket is closing or gone: nothing more can be sent."""


class WebSocketProtocolError(Exception):
    """Raised by a message handler to close the connection with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _frame_head(opcode: int, length: int) -> bytes:
    first = 0x80 | opcode
    if length < 126:
        return bytes((first, length))
    if length < 65536:
        return struct.pack(">BBH", first, 126, length)
    return struct.pack(">BBQ", first, 127, length)


def _unmask(data: bytes, key: bytes) -> bytes:
    n = len(data)
    if not n:
        return data
    mask = int.from_bytes((key * (n // 4 + 1))[:n], "little")
    return (int.from_bytes(data, "little") ^ mask).to_bytes(n, "little")


def _sendv(sock: socket.socket, parts: Sequence[ReadableBuffer]) -> None:
    views = [memoryview(part).cast("B") for part in parts]
    views = [view for view in views if len(view)]
    while views:
        sent = sock.sendmsg(views)
        while views and sent >= len(views[0]):
            sent -= len(views[0])
            views.pop(0)
        if views and sent:
            views[0] = views[0][sent:]


class WebSocket:
    """The server end of an RFC 6455 connection over a socket (after the 101 answer).

    A reader thread parses the client's frames: data messages (reassembled) go to
    ``on_message(opcode, payload)``, which may block (that stops reading the socket: TCP
    backpressure) and may raise :class:`WebSocketProtocolError` to close the connection;
    pings are answered; a close frame is echoed. ``on_close()`` runs in that thread once the
    client is gone. Any thread may :meth:`send`. :meth:`close` sends our close frame, waits for
    the client's (at most ``timeout``) and shuts the socket down; the caller closes the socket.
    """

    def __init__(
        self,
        sock: socket.socket,
        *,
        on_message: Callable[[int, bytes], None],
        on_close: Callable[[], None] | None = None,
        initial_data: bytes = b"",
        max_message: int = MAX_WEBSOCKET_MESSAGE,
        name: str = "websocket",
    ) -> None:
        self._sock = sock
        sock.settimeout(None)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._on_message = on_message
        self._on_close = on_close
        self._buf = bytearray(initial_data)
        self._max_message = max_message
        self._write_lock = threading.Lock()
        self._close_sent = False
        self.name = name
        self.close_code: int | None = None
        """The code of the client's close frame (1005: none given)."""
        self.closed = threading.Event()
        """Set once the client closed or the connection broke: nothing more is received."""
        self._done = threading.Event()
        self._reader = threading.Thread(target=self._read_loop, name=f"{name}-reader", daemon=True)
        self._reader.start()

    # ---- sending

    def send(self, opcode: int, *parts: ReadableBuffer) -> None:
        """Send one unfragmented message made of ``parts``; raises :class:`WebSocketClosed`."""
        length = sum(memoryview(part).nbytes for part in parts)
        with self._write_lock:
            if self._close_sent:
                raise WebSocketClosed("the WebSocket is closed")
            self._write([_frame_head(opcode, length), *parts])

    def _write(self, parts: Sequence[ReadableBuffer]) -> None:
        try:
            _sendv(self._sock, parts)
        except OSError as exc:
            raise WebSocketClosed(f"WebSocket connection lost: {exc}") from exc

    def send_close(self, code: int | None = 1000, reason: str = "") -> bool:
        """Send our close frame (once); False if it was sent already."""
        payload = b"" if code is None else struct.pack(">H", code) + reason.encode()[:123]
        with self._write_lock:
            if self._close_sent:
                return False
            self._close_sent = True
            with contextlib.suppress(WebSocketClosed):
                self._write([_frame_head(OP_CLOSE, len(payload)), payload])
        return True

    def close(self, code: int = 1000, reason: str = "", timeout: float = LINGER_SECONDS) -> None:
        """Close handshake, then shut the socket down (idempotent; the caller closes it)."""
        self.send_close(code, reason)
        if not self._done.wait(timeout):
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._done.wait(1.0)

    # ---- receiving

    def _recv_exact(self, n: int) -> bytes | None:
        buf = self._buf
        while len(buf) < n:
            missing = n - len(buf)
            if missing >= 65536:
                out = bytearray(n)
                got = len(buf)
                out[:got] = buf
                buf.clear()
                view = memoryview(out)
                while got < n:
                    r = self._sock.recv_into(view[got:])
                    if not r:
                        return None
                    got += r
                return bytes(out)
            chunk = self._sock.recv(65536)
            if not chunk:
                return None
            buf += chunk
        out_bytes = bytes(buf[:n])
        del buf[:n]
        return out_bytes

    def _read_loop(self) -> None:
        message_op: int | None = None
        fragments: list[bytes] = []
        size = 0
        try:
            while True:
                head = self._recv_exact(2)
                if head is None:
                    break
                first, second = head[0], head[1]
                fin, opcode, length = bool(first & 0x80), first & 0x0F, second & 0x7F
                if first & 0x70:
                    raise WebSocketProtocolError(1002, "reserved bits set")
                if not second & 0x80:
                    raise WebSocketProtocolError(1002, "client frames must be masked")
                if length >= 126:
                    ext = self._recv_exact(2 if length == 126 else 8)
                    if ext is None:
                        break
                    length = int.from_bytes(ext, "big")
                if opcode >= 0x8 and (not fin or length > 125):
                    raise WebSocketProtocolError(1002, "invalid control frame")
                if opcode < 0x8 and size + length > self._max_message:
                    raise WebSocketProtocolError(1009, "message too big")
                key = self._recv_exact(4)
                raw = self._recv_exact(length) if key is not None else None
                if key is None or raw is None:
                    break
                payload = _unmask(raw, key)
                if opcode == OP_CLOSE:
                    self._peer_closed(payload)
                    break
                if opcode == OP_PING:
                    with self._write_lock:
                        if not self._close_sent:
                            with contextlib.suppress(WebSocketClosed):
                                self._write([_frame_head(OP_PONG, len(payload)), payload])
                    continue
                if opcode == OP_PONG:
                    continue
                if opcode in (OP_TEXT, OP_BINARY):
                    if message_op is not None:
                        raise WebSocketProtocolError(1002, "expected a continuation frame")
                    message_op = opcode
                elif opcode == OP_CONTINUATION:
                    if message_op is None:
                        raise WebSocketProtocolError(1002, "unexpected continuation frame")
                else:
                    raise WebSocketProtocolError(1002, f"unknown opcode {opcode}")
                fragments.append(payload)
                size += length
                if not fin:
                    continue
                data = fragments[0] if len(fragments) == 1 else b"".join(fragments)
                op, message_op, fragments, size = message_op, None, [], 0
                if op == OP_TEXT:
                    try:
                        data.decode("utf-8")
                    except UnicodeDecodeError:
                        raise WebSocketProtocolError(
                            1007, "invalid UTF-8 in a text message"
                        ) from None
                if not self._close_sent:
                    self._on_message(op, data)
        except WebSocketProtocolError as exc:
            log.debug("%s: closing: %s", self.name, exc.reason)
            self.send_close(exc.code, exc.reason)
        except OSError:
            pass
        except Exception:
            log.exception("%s: reader failed", self.name)
            self.send_close(1011, "internal error")
        finally:
            self.closed.set()
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._done.set()
            if self._on_close is not None:
                try:
                    self._on_close()
                except Exception:
                    log.exception("%s: close handler failed", self.name)

    def _peer_closed(self, payload: bytes) -> None:
        if len(payload) == 1:
            self.close_code = 1002
            self.send_close(1002, "invalid close frame")
            return
        self.close_code = struct.unpack(">H", payload[:2])[0] if payload else 1005
        self.send_close(self.close_code if payload else None)


# ------------------------------------------------------------------------------ streams


class _Pipe:
    """A bounded byte queue from one writer thread to one reader (``io.Pipe`` with a buffer)."""

    def __init__(self, limit: int = PIPE_LIMIT) -> None:
        self._cond = threading.Condition()
        self._chunks: collections.deque[bytes] = collections.deque()
        self._offset = 0
        self._size = 0
        self._limit = limit
        self._eof = False

    def feed(self, data: bytes) -> None:
        """Append ``data``, waiting while the buffer is full; dropped after EOF."""
        if not data:
            return
        with self._cond:
            while self._size >= self._limit and not self._eof:
                self._cond.wait()
            if self._eof:
                return
            self._chunks.append(data)
            self._size += len(data)
            self._cond.notify_all()

    def finish(self) -> None:
        """End of input: readers get what is buffered, then b""."""
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def abort(self) -> None:
        """End of input now: drop what is buffered and wake everyone."""
        with self._cond:
            self._eof = True
            self._chunks.clear()
            self._offset = self._size = 0
            self._cond.notify_all()

    def read(self, size: int = -1) -> bytes:
        """Wait for data; return up to ``size`` bytes (everything buffered if < 0); b"" at EOF."""
        if size == 0:
            return b""
        with self._cond:
            while not self._chunks and not self._eof:
                self._cond.wait()
            if not self._chunks:
                return b""
            chunks = self._chunks
            if size < 0 or size >= self._size:
                first = chunks.popleft()
                parts = [first[self._offset :] if self._offset else first, *chunks]
                chunks.clear()
                self._offset = self._size = 0
            else:
                parts = []
                need = size
                while need:
                    chunk = chunks[0]
                    avail = len(chunk) - self._offset
                    if avail <= need:
                        parts.append(chunk[self._offset :] if self._offset else chunk)
                        chunks.popleft()
                        self._offset = 0
                        need -= avail
                    else:
                        parts.append(chunk[self._offset : self._offset + need])
                        self._offset += need
                        need = 0
                self._size -= size
            self._cond.notify_all()
        return parts[0] if len(parts) == 1 else b"".join(parts)


class _ReadFile(io.RawIOBase):
    """A client's input stream as a binary file: ``read(n)`` returns what arrived (up to n)."""

    def __init__(self, read: Callable[[int], bytes], name: str) -> None:
        super().__init__()
        self._read_chunk = read
        self._name = name

    def __repr__(self) -> str:
        return f"<criadapt stream {self._name}>"

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1, /) -> bytes:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        if size is None or size < 0:
            return self.readall()
        return self._read_chunk(size) if size else b""

    def readall(self) -> bytes:
        parts = []
        while chunk := self.read(READ_CHUNK):
            parts.append(chunk)
        return b"".join(parts)

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)


class _WriteFile(io.RawIOBase):
    """A client's output stream as a binary file; writes fail with BrokenPipeError once the
    client is gone. ``close()`` ends the stream (SPDY: half-close)."""

    def __init__(
        self, write: Callable[[ReadableBuffer], None], close: Callable[[], None], name: str
    ) -> None:
        super().__init__()
        self._write = write
        self._close = close
        self._name = name

    def __repr__(self) -> str:
        return f"<criadapt stream {self._name}>"

    def writable(self) -> bool:
        return True

    def write(self, data: ReadableBuffer, /) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        n = memoryview(data).nbytes
        if n:
            self._write(data)
        return n

    def close(self) -> None:
        if not self.closed:
            try:
                self._close()
            except Exception:  # also from __del__: never raise
                log.debug("closing %s failed", self._name, exc_info=True)
        super().close()


class _Resizes:
    """Terminal sizes decoded from a stream of JSON objects, as Go's json.Decoder reads them
    into ``remotecommand.TerminalSize`` (case-insensitive ``Width``/``Height``, uint16)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[TerminalSize | None] = queue.SimpleQueue()
        self._text = ""
        self._broken = False
        self._finished = False
        self._lock = threading.Lock()

    def feed(self, data: bytes) -> None:
        with self._lock:
            if self._broken or self._finished:
                return
            self._text += data.decode("utf-8", "replace")
            decoder = json.JSONDecoder()
            pos = 0
            while True:
                while pos < len(self._text) and self._text[pos] in " \t\r\n":
                    pos += 1
                if pos >= len(self._text):
                    break
                try:
                    value, pos = decoder.raw_decode(self._text, pos)
                except json.JSONDecodeError:
                    if "}" in self._text[pos:] or len(self._text) - pos > 4096:
                        self._broken = True  # Go's decoder stops at the first error
                    break
                size = self._size(value)
                if size is None:
                    self._broken = True
                    break
                self._queue.put(size)
            self._text = self._text[pos:] if not self._broken else ""

    @staticmethod
    def _size(value: object) -> TerminalSize | None:
        if not isinstance(value, dict):
            return None
        fields = {"width": 0, "height": 0}
        for key, item in value.items():
            name = key.lower()
            if name not in fields or item is None:
                continue
            if type(item) is not int or not 0 <= item <= 0xFFFF:
                return None
            fields[name] = item
        return TerminalSize(width=fields["width"], height=fields["height"])

    def finish(self) -> None:
        with self._lock:
            if not self._finished:
                self._finished = True
                self._queue.put(None)

    def __iter__(self) -> Iterator[TerminalSize]:
        while True:
            size = self._queue.get()
            if size is None:
                self._queue.put(None)  # later iterations end too
                return
            yield size


class _Streams:
    """The :class:`criadapt.streaming.StreamIO` handed to the exec and attach hooks."""

    def __init__(
        self,
        *,
        stdin: _ReadFile | None,
        stdout: _WriteFile | None,
        stderr: _WriteFile | None,
        resizes: _Resizes | None,
        closed: Callable[[], bool],
    ) -> None:
        self.stdin: BinaryIO | None = cast(BinaryIO, stdin) if stdin is not None else None
        self.stdout: BinaryIO | None = cast(BinaryIO, stdout) if stdout is not None else None
        self.stderr: BinaryIO | None = cast(BinaryIO, stderr) if stderr is not None else None
        self._resizes = resizes
        self._closed = closed

    def resizes(self) -> Iterator[TerminalSize]:
        return iter(self._resizes) if self._resizes is not None else iter(())

    @property
    def closed(self) -> bool:
        return self._closed()


class _SpdyPortStream:
    """:class:`criadapt.streaming.PortStream` over a SPDY data stream."""

    def __init__(self, stream: SpdyStream) -> None:
        self._stream = stream

    def read(self, size: int = -1) -> bytes:
        return self._stream.read(size)

    def write(self, data: bytes) -> int:
        try:
            return self._stream.write(data)
        except SpdyError as exc:
            raise BrokenPipeError(str(exc)) from exc

    def close(self) -> None:
        with contextlib.suppress(SpdyError):
            self._stream.close()


class _ChannelPortStream:
    """:class:`criadapt.streaming.PortStream` over a WebSocket data channel."""

    def __init__(self, pipe: _Pipe, write: Callable[[ReadableBuffer], None]) -> None:
        self._pipe = pipe
        self._write = write

    def read(self, size: int = -1) -> bytes:
        return self._pipe.read(size)

    def write(self, data: bytes) -> int:
        self._write(data)
        return len(data)

    def close(self) -> None:
        self._pipe.abort()


class _Channels:
    """Writes to the channels of a ``channel.k8s.io``-style WebSocket."""

    def __init__(self, ws: WebSocket, *, binary: bool) -> None:
        self._ws = ws
        self._binary = binary

    def write(self, channel: int, data: ReadableBuffer) -> None:
        view = memoryview(data).cast("B")
        offset = 0
        while True:
            chunk = view[offset : offset + WEBSOCKET_CHUNK]
            if self._binary:
                self._ws.send(OP_BINARY, bytes((channel,)), chunk)
            else:
                text = bytes((0x30 + channel,)) + base64.b64encode(chunk)
                self._ws.send(OP_TEXT, text)
            offset += len(chunk)
            if offset >= len(view):
                return


def _decode_channel(data: bytes, *, binary: bool) -> tuple[int, bytes] | None:
    """(channel, payload) of an incoming channel message; None to ignore it."""
    if not data:
        return None
    if binary:
        return data[0], data[1:]
    try:
        return data[0] - 0x30, base64.b64decode(data[1:], validate=True)
    except ValueError:
        log.debug("ignoring a channel message that is not base64")
        return None


def _spdy_write(stream: SpdyStream) -> Callable[[ReadableBuffer], None]:
    def write(data: ReadableBuffer) -> None:
        try:
            stream.write(memoryview(data))
        except SpdyError as exc:
            raise BrokenPipeError(str(exc)) from exc

    return write


def _spdy_close(stream: SpdyStream) -> Callable[[], None]:
    def close() -> None:
        with contextlib.suppress(SpdyError):
            stream.close()

    return close


def _read_resizes(stream: SpdyStream, resizes: _Resizes) -> None:
    try:
        while chunk := stream.read():
            resizes.feed(chunk)
    finally:
        resizes.finish()


# ------------------------------------------------------------------------------ the server


@attrs.define
class _PortForwardPair:
    request_id: str
    deadline: float
    data: SpdyStream | None = None
    error: SpdyStream | None = None


def _request_id(stream: SpdyStream) -> str:
    request_id = stream.headers.get("requestid")
    if request_id:
        return request_id
    # old clients: consecutive stream ids for (error, data), as upstream guesses
    if stream.headers.get("streamtype") == "error":
        return str(stream.id)
    return str(stream.id - 2)


def _port_forward_header_error(stream: SpdyStream) -> str | None:
    port = stream.headers.get("port")
    if not port:
        return '"port" header is required'
    if not port.isdigit() or int(port) > 0xFFFF:
        return f"unable to parse {port!r} as a port"
    if int(port) < 1:
        return f"port {port!r} must be > 0"
    stream_type = stream.headers.get("streamtype")
    if not stream_type:
        return '"streamType" header is required'
    if stream_type not in ("data", "error"):
        return f"invalid stream type {stream_type!r}"
    return None


def _query_ports(values: list[str]) -> list[int]:
    """``NewV4Options``: the ``port`` query parameters, comma separated or repeated."""
    ports = []
    for value in values:
        if not value:
            raise _HttpError(400, 'query parameter "port" cannot be empty')
        for item in value.split(","):
            if not item.isdigit() or int(item) > 0xFFFF:
                raise _HttpError(400, f"unable to parse {value!r} as a port")
            if int(item) < 1:
                raise _HttpError(400, f"port {value!r} must be > 0")
            ports.append(int(item))
    return ports


class StreamingServer:
    """The HTTP server behind the URLs of ``Exec``, ``Attach`` and ``PortForward``.

    ``pm`` is the plugin manager whose streaming hooks run the sessions. Listens on
    ``address``:``port`` (0: any free port) once :meth:`start` ed; :attr:`base_url` is then
    ``http://ADDRESS:PORT``. Usable as a context manager (start/stop).
    """

    def __init__(
        self,
        pm: pluggy.PluginManager,
        *,
        address: str = "127.0.0.1",
        port: int = 0,
        token_ttl: float = TOKEN_TTL,
        max_tokens: int = MAX_TOKENS,
        stream_creation_timeout: float = STREAM_CREATION_TIMEOUT,
    ) -> None:
        self._pm = pm
        self.address = address
        self.port = port
        self._cache = _RequestCache(token_ttl, max_tokens)
        self._stream_creation_timeout = stream_creation_timeout
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._base_url: str | None = None
        self._lock = threading.Lock()
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._stopping = threading.Event()

    def __repr__(self) -> str:
        return f"<StreamingServer {self._base_url or 'not started'}>"

    def __enter__(self) -> StreamingServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- lifecycle

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the listening socket."""
        if self._base_url is None:
            raise RuntimeError("the streaming server is not started")
        return self._base_url

    @property
    def outstanding(self) -> int:
        """Tokens handed out and neither used nor expired."""
        return len(self._cache)

    def start(self) -> StreamingServer:
        """Listen and serve in background threads; returns self."""
        if self._listener is not None:
            raise RuntimeError("the streaming server is already started")
        family, type_, proto, _, sockaddr = socket.getaddrinfo(
            self.address, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        listener = socket.socket(family, type_, proto)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(sockaddr)
            listener.listen(128)
            listener.settimeout(1.0)  # accept() wakes up to notice stop()
        except BaseException:
            listener.close()
            raise
        host, port = listener.getsockname()[:2]
        self._base_url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
        self._listener = listener
        self._stopping.clear()
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name="criadapt-streaming-accept", daemon=True
        )
        self._accept_thread.start()
        log.info("streaming server listening on %s", self._base_url)
        return self

    def stop(self, timeout: float = JOIN_SECONDS) -> None:
        """Stop listening, disconnect every client and wait (at most ``timeout``) for the
        sessions to end; outstanding tokens are dropped. Idempotent."""
        self._stopping.set()
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        if self._accept_thread is not None:
            self._accept_thread.join(timeout)
            self._accept_thread = None
        with self._lock:
            live = list(self._connections.items())
        for sock, _ in live:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for _, thread in live:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._cache.clear()

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        while not self._stopping.is_set():
            try:
                sock, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                if self._stopping.is_set():
                    break
                log.warning("streaming server: accept failed: %s", exc)
                time.sleep(0.1)
                continue
            sock.settimeout(None)
            thread = threading.Thread(
                target=self._handle, args=(sock,), name="criadapt-streaming-conn", daemon=True
            )
            with self._lock:
                if self._stopping.is_set():
                    sock.close()
                    break
                self._connections[sock] = thread
            thread.start()

    # ---- tokens

    def register(self, kind: StreamKind, request: object) -> str:
        """Cache ``request`` (an :class:`~criadapt.models.ExecRequest`,
        :class:`~criadapt.models.AttachRequest` or :class:`~criadapt.models.PortForwardRequest`
        matching ``kind``) under a new token and return its URL.

        Raises :class:`InvalidArgument` for a request upstream rejects, :class:`ResourceExhausted`
        when ``max_tokens`` are outstanding, :class:`Unavailable` before :meth:`start`.
        """
        expected = {
            "exec": m.ExecRequest,
            "attach": m.AttachRequest,
            "portforward": m.PortForwardRequest,
        }.get(kind)
        if expected is None:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
        if not isinstance(request, expected):
            raise TypeError(f"a {kind} request must be a {expected.__name__}")
        if isinstance(request, m.PortForwardRequest):
            if not request.pod_sandbox_id:
                raise InvalidArgument("missing required pod_sandbox_id")
        else:
            assert isinstance(request, m.ExecRequest | m.AttachRequest)
            if not request.container_id:
                raise InvalidArgument("missing required container_id")
            if request.tty and request.stderr:
                raise InvalidArgument("tty and stderr cannot both be true")
            if not (request.stdin or request.stdout or request.stderr):
                conjunction = "or" if kind == "exec" else "and"
                raise InvalidArgument(f"one of stdin, stdout, {conjunction} stderr must be set")
        if self._base_url is None or self._stopping.is_set():
            raise Unavailable("the streaming server is not running")
        token = self._cache.insert(kind, request)
        return f"{self._base_url}/{kind}/{token}"

    # ---- connections

    def _handle(self, sock: socket.socket) -> None:
        handed_over = False
        try:
            handed_over = self._serve(sock)
        except Exception:
            log.exception("streaming connection failed")
        finally:
            with self._lock:
                self._connections.pop(sock, None)
            if not handed_over:
                sock.close()

    def _serve(self, sock: socket.socket) -> bool:
        """Serve one connection; True if a SPDY connection took the socket over."""
        try:
            request, leftover = _read_request(sock, self._stream_creation_timeout)
        except _HttpError as exc:
            _send_and_close(sock, _http_response(exc.code, exc.body + "\n"))
            return False
        except (OSError, EOFError):
            return False
        parts = request.path.split("/")
        if len(parts) != 3 or parts[0] or parts[1] not in KINDS or not parts[2]:
            _send_and_close(sock, _http_response(404, "404 page not found\n"))
            return False
        if request.method not in ("GET", "POST"):
            _send_and_close(sock, _http_response(405, "405: Method Not Allowed"))
            return False
        kind = cast(StreamKind, parts[1])
        found = self._cache.consume(parts[2])
        if found is None or found[0] != kind:
            log.debug("streaming: unknown, used or expired token for %s", request.path)
            _send_and_close(sock, _http_response(404, "404 page not found\n"))
            return False
        model = found[1]
        try:
            if _is_websocket(request):
                self._serve_websocket(sock, leftover, request, kind, model)
                return False
            return self._serve_spdy(sock, leftover, request, kind, model)
        except _HttpError as exc:
            _send_and_close(sock, _http_response(exc.code, exc.body))
            return False

    # ---- SPDY

    def _serve_spdy(
        self, sock: socket.socket, leftover: bytes, request: HttpRequest, kind: str, model: object
    ) -> bool:
        if kind == "portforward":
            supported: tuple[str, ...] = SPDY_PORT_FORWARD_PROTOCOLS
        else:
            supported = SPDY_REMOTECOMMAND_PROTOCOLS
        offered = request.tokens("x-stream-protocol-version")
        if not offered:
            raise _HttpError(400, "unable to upgrade: X-Stream-Protocol-Version is required\n")
        protocol = next((p for p in offered if p in supported), None)
        if protocol is None:
            body = (
                "unable to upgrade: unable to negotiate protocol: client supports "
                f"{_go_list(offered)}, server accepts {_go_list(supported)}\n"
            )
            headers = [("X-Accepted-Stream-Protocol-Versions", p) for p in supported]
            _send_and_close(sock, _http_response(403, body, headers))
            return False
        if "upgrade" not in request.header("connection").lower() or (
            "spdy/3.1" not in request.header("upgrade").lower()
        ):
            raise _HttpError(400, "unable to upgrade: missing upgrade headers in request\n")
        try:
            sock.sendall(server_upgrade_response(protocol))
        except OSError:
            return False
        conn = SpdyConnection(sock, server=True, initial_data=leftover, name=f"streaming-{kind}")
        try:
            if isinstance(model, m.PortForwardRequest):
                self._spdy_port_forward(conn, model)
            else:
                assert isinstance(model, m.ExecRequest | m.AttachRequest)
                self._spdy_remotecommand(conn, kind, model, protocol)
        finally:
            conn.close()
        return True

    def _spdy_remotecommand(
        self,
        conn: SpdyConnection,
        kind: str,
        model: m.ExecRequest | m.AttachRequest,
        protocol: str,
    ) -> None:
        resize_supported = protocol in (STREAM_PROTOCOL_V3, STREAM_PROTOCOL_V4)
        known = {"error", "stdin", "stdout", "stderr"} | ({"resize"} if resize_supported else set())
        expected = 1 + model.stdin + model.stdout + model.stderr
        expected += bool(model.tty and resize_supported)
        streams: dict[str, SpdyStream] = {}
        received = 0
        deadline = time.monotonic() + self._stream_creation_timeout
        while received < expected:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.warning("streaming %s: timed out waiting for client to create streams", kind)
                return
            stream = conn.accept(timeout=remaining)
            if stream is None:
                if conn.closed.is_set():
                    return
                continue
            stream_type = stream.headers.get("streamtype")
            try:
                stream.reply()
            except SpdyError:
                continue
            if stream_type in known:
                streams[stream_type] = stream
                received += 1
            else:
                log.debug("streaming %s: unexpected stream type %r", kind, stream_type)
        if protocol == STREAM_PROTOCOL_V1 and "stdin" in streams:
            with contextlib.suppress(SpdyError):
                streams["stdin"].close()

        resizes: _Resizes | None = None
        resize_thread: threading.Thread | None = None
        if model.tty and "resize" in streams:
            resizes = _Resizes()
            resize_thread = threading.Thread(
                target=_read_resizes,
                args=(streams["resize"], resizes),
                name="criadapt-streaming-resize",
                daemon=True,
            )
            resize_thread.start()

        def writer(name: str) -> _WriteFile | None:
            stream = streams.get(name)
            if stream is None or not getattr(model, name):
                return None
            return _WriteFile(_spdy_write(stream), _spdy_close(stream), name)

        stdin_stream = streams.get("stdin") if model.stdin else None
        io_ = _Streams(
            stdin=_ReadFile(stdin_stream.read, "stdin") if stdin_stream is not None else None,
            stdout=writer("stdout"),
            stderr=writer("stderr"),
            resizes=resizes,
            closed=conn.closed.is_set,
        )
        status = self._run_remotecommand(kind, model, io_)
        error_stream = streams.get("error")
        if error_stream is not None:
            payload = encode_status(status, v4=protocol == STREAM_PROTOCOL_V4)
            with contextlib.suppress(SpdyError):
                if payload:
                    error_stream.write(payload)
        for stream in streams.values():
            with contextlib.suppress(SpdyError):
                stream.close()
        conn.close()
        if resize_thread is not None:
            resize_thread.join(JOIN_SECONDS)
        if resizes is not None:
            resizes.finish()

    def _spdy_port_forward(self, conn: SpdyConnection, model: m.PortForwardRequest) -> None:
        pairs: dict[str, _PortForwardPair] = {}
        workers: list[threading.Thread] = []
        while not conn.closed.is_set():
            now = time.monotonic()
            for pair in [p for p in pairs.values() if p.deadline <= now]:
                del pairs[pair.request_id]
                message = (
                    f"(conn={conn.name}, request={pair.request_id}) timed out waiting for streams"
                )
                log.warning("port-forward: %s", message)
                self._pair_failed(pair, message)
            timeout = min((p.deadline - now for p in pairs.values()), default=1.0)
            stream = conn.accept(timeout=max(0.01, min(timeout, 1.0)))
            if stream is None:
                continue
            problem = _port_forward_header_error(stream)
            if problem is not None:
                log.warning("port-forward: stream rejected: %s", problem)
                stream.reset(RstStatus.CANCEL)
                continue
            try:
                stream.reply()
            except SpdyError:
                continue
            request_id = _request_id(stream)
            if request_id not in pairs:
                deadline = time.monotonic() + self._stream_creation_timeout
                pairs[request_id] = _PortForwardPair(request_id, deadline)
            pair = pairs[request_id]
            kind = stream.headers.get("streamtype")
            if getattr(pair, kind) is not None:
                message = (
                    f"error processing stream for request {request_id}: "
                    f"{kind} stream already assigned"
                )
                log.warning("port-forward: %s", message)
                if pair.error is not None:
                    with contextlib.suppress(SpdyError):
                        pair.error.write(message.encode())
                stream.reset(RstStatus.CANCEL)
                continue
            setattr(pair, kind, stream)
            if pair.data is not None and pair.error is not None:
                del pairs[request_id]
                worker = threading.Thread(
                    target=self._spdy_forward,
                    args=(model.pod_sandbox_id, pair.data, pair.error),
                    name="criadapt-streaming-portforward",
                    daemon=True,
                )
                workers = [w for w in workers if w.is_alive()]
                workers.append(worker)
                worker.start()
        for pair in pairs.values():
            self._pair_failed(pair, None)
        deadline = time.monotonic() + JOIN_SECONDS
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))

    @staticmethod
    def _pair_failed(pair: _PortForwardPair, message: str | None) -> None:
        if pair.error is not None:
            with contextlib.suppress(SpdyError):
                if message:
                    pair.error.write(message.encode())
                pair.error.close()
        if pair.data is not None:
            pair.data.reset(RstStatus.CANCEL)

    def _spdy_forward(self, sandbox_id: str, data: SpdyStream, error: SpdyStream) -> None:
        port = int(data.headers.get("port"))
        stream = _SpdyPortStream(data)
        try:
            message = self._run_port_forward(sandbox_id, port, stream)
            if message:
                with contextlib.suppress(SpdyError):
                    error.write(message.encode())
        finally:
            stream.close()
            with contextlib.suppress(SpdyError):
                error.close()

    # ---- hooks

    def _run_remotecommand(
        self, kind: str, model: m.ExecRequest | m.AttachRequest, streams: _Streams
    ) -> dict[str, Any]:
        """Run the exec or attach hook; the status for the error stream."""
        hook_name = "criadapt_stream_exec" if kind == "exec" else "criadapt_stream_attach"
        prefix = (
            "error executing command in container"
            if kind == "exec"
            else "error attaching to container"
        )
        if not answering_impls(self._pm, hook_name):
            return internal_error_status(f"{prefix}: the backend does not implement {kind}")
        try:
            if isinstance(model, m.ExecRequest):
                rc = self._pm.hook.criadapt_stream_exec(
                    container_id=model.container_id, cmd=model.cmd, tty=model.tty, streams=streams
                )
            else:
                rc = self._pm.hook.criadapt_stream_attach(
                    container_id=model.container_id, tty=model.tty, streams=streams
                )
        except CriError as exc:
            detail = str(exc)
        except OSError as exc:
            if not streams.closed:
                log.exception("streaming %s in container %s failed", kind, model.container_id)
            detail = f"stream error: {exc}"  # usually: the client went away
        except Exception:
            log.exception("streaming %s in container %s failed", kind, model.container_id)
            detail = "internal error"
        else:
            if not isinstance(model, m.ExecRequest) or rc == 0:
                return success_status()
            if isinstance(rc, int):
                return exit_code_status(model.cmd, rc)
            detail = f"the backend returned no exit code ({rc!r})"
        return internal_error_status(f"{prefix}: {detail}")

    def _run_port_forward(self, sandbox_id: str, port: int, stream: object) -> str | None:
        """Run the port-forward hook; the error message for the error stream, if any."""
        if not answering_impls(self._pm, "criadapt_stream_port_forward"):
            detail = "the backend does not implement port forwarding"
        else:
            try:
                self._pm.hook.criadapt_stream_port_forward(
                    pod_sandbox_id=sandbox_id, port=port, stream=stream
                )
            except CriError as exc:
                detail = str(exc)
            except BrokenPipeError:
                return None  # the client went away
            except Exception:
                log.exception("port-forward to %s port %d failed", sandbox_id, port)
                detail = "internal error"
            else:
                return None
        return f"error forwarding port {port} to pod {sandbox_id}, uid : {detail}"

    # ---- WebSocket

    def _serve_websocket(
        self,
        sock: socket.socket,
        leftover: bytes,
        request: HttpRequest,
        kind: str,
        model: object,
    ) -> None:
        if request.method != "GET":
            raise _HttpError(405, "websocket: the handshake must use GET")
        key = request.header("sec-websocket-key").strip()
        if not key:
            raise _HttpError(400, "websocket: missing Sec-WebSocket-Key")
        if request.header("sec-websocket-version").strip() != "13":
            _send_and_close(
                sock,
                _http_response(
                    400, "websocket: unsupported version", [("Sec-WebSocket-Version", "13")]
                ),
            )
            return
        supported = (
            WEBSOCKET_PORT_FORWARD_PROTOCOLS
            if kind == "portforward"
            else WEBSOCKET_REMOTECOMMAND_PROTOCOLS
        )
        offered = request.tokens("sec-websocket-protocol") or [""]
        protocol = next((p for p in offered if p in supported), None)
        if protocol is None:
            _send_and_close(sock, _http_response(403, text=False))
            return
        ports: list[int] = []
        if isinstance(model, m.PortForwardRequest) and protocol != SPDY_TUNNEL_PROTOCOL:
            ports = _query_ports(request.query["port"]) if "port" in request.query else []
            ports = ports or list(model.port)
            if not ports:
                raise _HttpError(400, 'query parameter "port" is required')
        lines = [
            "HTTP/1.1 101 Switching Protocols",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Accept: {websocket_accept(key)}",
        ]
        if protocol:
            lines.append(f"Sec-WebSocket-Protocol: {protocol}")
        try:
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        except OSError:
            return
        if isinstance(model, m.PortForwardRequest):
            if protocol == SPDY_TUNNEL_PROTOCOL:
                self._ws_tunnel(sock, leftover, model)
            else:
                self._ws_port_forward(sock, leftover, model, protocol, ports)
        else:
            assert isinstance(model, m.ExecRequest | m.AttachRequest)
            self._ws_remotecommand(sock, leftover, kind, model, protocol)

    def _ws_remotecommand(
        self,
        sock: socket.socket,
        leftover: bytes,
        kind: str,
        model: m.ExecRequest | m.AttachRequest,
        protocol: str,
    ) -> None:
        binary = protocol not in _BASE64_PROTOCOLS
        v5 = protocol == STREAM_PROTOCOL_V5
        stdin = _Pipe() if model.stdin else None
        resizes = _Resizes()

        def on_message(opcode: int, data: bytes) -> None:
            if v5 and data[:1] == bytes((CLOSE_SIGNAL,)):
                if len(data) == 2 and data[1] == STDIN and stdin is not None:
                    stdin.finish()
                elif len(data) == 2 and data[1] == RESIZE:
                    resizes.finish()
                return
            decoded = _decode_channel(data, binary=binary)
            if decoded is None:
                return
            channel, payload = decoded
            if channel == STDIN and stdin is not None:
                stdin.feed(payload)
            elif channel == RESIZE:
                resizes.feed(payload)

        def on_close() -> None:
            if stdin is not None:
                stdin.finish()
            resizes.finish()

        ws = WebSocket(
            sock,
            on_message=on_message,
            on_close=on_close,
            initial_data=leftover,
            name=f"streaming-{kind}-ws",
        )
        channels = _Channels(ws, binary=binary)
        first = STDOUT if model.stdout else STDERR if model.stderr else ERROR
        with contextlib.suppress(BrokenPipeError):
            channels.write(first, b"")  # the client knows the streams are ready

        def writer(channel: int, name: str) -> _WriteFile | None:
            if not getattr(model, name):
                return None
            return _WriteFile(functools.partial(channels.write, channel), lambda: None, name)

        streams = _Streams(
            stdin=_ReadFile(stdin.read, "stdin") if stdin is not None else None,
            stdout=writer(STDOUT, "stdout"),
            stderr=writer(STDERR, "stderr"),
            resizes=resizes if model.tty else None,
            closed=ws.closed.is_set,
        )
        try:
            status = self._run_remotecommand(kind, model, streams)
            payload = encode_status(status, v4=protocol in _V4_STATUS)
            if payload:
                with contextlib.suppress(BrokenPipeError):
                    channels.write(ERROR, payload)
        finally:
            if stdin is not None:
                stdin.abort()
            ws.close(1000)
            resizes.finish()

    def _ws_port_forward(
        self,
        sock: socket.socket,
        leftover: bytes,
        model: m.PortForwardRequest,
        protocol: str,
        ports: list[int],
    ) -> None:
        pipes = [_Pipe() for _ in ports]
        binary = protocol not in _BASE64_PROTOCOLS

        def on_message(opcode: int, data: bytes) -> None:
            decoded = _decode_channel(data, binary=binary)
            if decoded is not None and decoded[0] % 2 == 0 and decoded[0] // 2 < len(pipes):
                pipes[decoded[0] // 2].feed(decoded[1])

        def on_close() -> None:
            for pipe in pipes:
                pipe.finish()

        ws = WebSocket(
            sock,
            on_message=on_message,
            on_close=on_close,
            initial_data=leftover,
            name="streaming-portforward-ws",
        )
        channels = _Channels(ws, binary=binary)
        workers = []
        try:
            for index, port in enumerate(ports):
                prefix = struct.pack("<H", port)
                channels.write(2 * index, prefix)
                channels.write(2 * index + 1, prefix)
            for index, port in enumerate(ports):
                stream = _ChannelPortStream(
                    pipes[index], functools.partial(channels.write, 2 * index)
                )
                worker = threading.Thread(
                    target=self._channel_forward,
                    args=(model.pod_sandbox_id, port, stream, channels, 2 * index + 1),
                    name="criadapt-streaming-portforward",
                    daemon=True,
                )
                workers.append(worker)
                worker.start()
            for worker in workers:
                while worker.is_alive() and not ws.closed.is_set():
                    worker.join(0.5)
            deadline = time.monotonic() + JOIN_SECONDS
            for worker in workers:
                worker.join(max(0.0, deadline - time.monotonic()))
        except BrokenPipeError:
            pass
        finally:
            for pipe in pipes:
                pipe.abort()
            ws.close(1000)

    def _channel_forward(
        self,
        sandbox_id: str,
        port: int,
        stream: _ChannelPortStream,
        channels: _Channels,
        error: int,
    ) -> None:
        try:
            message = self._run_port_forward(sandbox_id, port, stream)
            if message:
                with contextlib.suppress(BrokenPipeError):
                    channels.write(error, message.encode())
        finally:
            stream.close()

    def _ws_tunnel(self, sock: socket.socket, leftover: bytes, model: m.PortForwardRequest) -> None:
        """Port-forward SPDY carried in binary WebSocket messages (client-go's tunnel)."""
        inner, outer = socket.socketpair()

        def on_message(opcode: int, data: bytes) -> None:
            if opcode != OP_BINARY:
                raise WebSocketProtocolError(1003, "the SPDY tunnel carries binary messages only")
            with contextlib.suppress(OSError):
                outer.sendall(data)

        def on_close() -> None:
            with contextlib.suppress(OSError):
                outer.shutdown(socket.SHUT_WR)

        ws = WebSocket(
            sock,
            on_message=on_message,
            on_close=on_close,
            initial_data=leftover,
            name="streaming-portforward-tunnel",
        )

        def pump() -> None:
            try:
                while chunk := outer.recv(WEBSOCKET_CHUNK):
                    ws.send(OP_BINARY, chunk)
            except OSError:
                pass
            finally:
                ws.send_close(1000)

        pumper = threading.Thread(target=pump, name="criadapt-streaming-tunnel", daemon=True)
        pumper.start()
        conn = SpdyConnection(inner, server=True, name="streaming-portforward-tunnel")
        try:
            self._spdy_port_forward(conn, model)
        finally:
            conn.close()
            pumper.join(JOIN_SECONDS)
            ws.close(1000)
            conn.wait_closed(LINGER_SECONDS + 1.0)
            with contextlib.suppress(OSError):
                outer.shutdown(socket.SHUT_RDWR)
            pumper.join(1.0)
            outer.close()
