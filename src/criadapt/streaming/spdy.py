"""SPDY/3.1 framing and connections: the transport under Kubernetes exec, attach and port-forward.

There is no maintained SPDY library for Python, so this is our own implementation of the parts
of SPDY/3.1 (draft 3.1 as published by the Chromium project) that ``kubelet``, ``crictl`` and
client-go use through ``github.com/moby/spdystream``.

Layers:

* :class:`Headers`, :func:`encode_header_block`, :func:`decode_header_block`: the SPDY/3
  name/value block (32-bit count and lengths, lowercase names, several values joined by NUL).
* :class:`HeaderCompressor` / :class:`HeaderDecompressor`: one zlib stream per direction per
  connection, primed with :data:`DICTIONARY`, ``Z_SYNC_FLUSH`` after every block.
* The frame classes, :class:`FrameEncoder` and :class:`FrameDecoder`: every SPDY/3 frame type.
* :class:`SpdyConnection` / :class:`SpdyStream`: a session over a connected, blocking socket
  with one reader thread per connection. Any thread may write; writers block on flow control
  and on the socket.
* :func:`server_upgrade_response`, :func:`client_upgrade_request`,
  :func:`read_http_response_head`: the HTTP/1.1 ``Upgrade: SPDY/3.1`` handshake.

Flow control, and why it is not always enforced
-----------------------------------------------
SPDY/3.1 gives every stream and the session a 64 KiB send window that the receiver re-opens
with WINDOW_UPDATE. ``moby/spdystream`` (the peer we actually meet) negotiates "SPDY/3.1" but
implements no flow control at all: it never sends WINDOW_UPDATE or SETTINGS and ignores the
ones it receives. A sender that strictly waited for WINDOW_UPDATE would stall every exec
after 64 KiB of output. So with ``flow_control="auto"`` (the default) a connection:

* always tracks the windows and always advertises its own (a SETTINGS frame with
  INITIAL_WINDOW_SIZE first thing, then WINDOW_UPDATEs as the application reads);
* enforces the peer's windows as soon as the peer shows it implements flow control (it sent
  SETTINGS with INITIAL_WINDOW_SIZE, or any WINDOW_UPDATE). Two ``SpdyConnection`` ends
  therefore always run full SPDY/3.1 flow control;
* when a window runs out before the peer showed either, sends a PING: frames are processed in
  order, so once the echo is back any SETTINGS the peer sent first has arrived. If still no
  sign of flow control, the peer is treated as a spdystream-like peer and windows are ignored
  from then on (TCP backpressure still applies).

On the receiving side, a peer that does flow control and overruns a window gets RST_STREAM
FLOW_CONTROL_ERROR (session overrun: GOAWAY). A peer that does not do flow control may run
ahead; once a stream has :data:`UNCONTROLLED_BUFFER_LIMIT` bytes unread, the reader thread
stops reading the socket until the application catches up (what spdystream does too), which
stalls the other streams of that connection meanwhile.

Threads
-------
Each connection runs one daemon reader thread. Incoming streams are handed to ``on_stream``
in that thread when a callback is given (it may reply, but must not block or wait for stream
data; a write there that would have to wait for a WINDOW_UPDATE raises :class:`SpdyError`),
otherwise they are queued for :meth:`SpdyConnection.accept`.

Streams of one connection share the session window: read them concurrently (as client-go
does with stdout and stderr). The default session window (4 MiB) is 16 stream windows, so a
few streams left unread cannot starve the others.

Closing
-------
:meth:`SpdyConnection.close` sends GOAWAY, shuts the socket for writing and lets the reader
thread drain the peer's input until the peer's EOF (at most :data:`LINGER_SECONDS`) before
closing the socket: closing a TCP socket with unread input sends a reset, which can destroy
data still on its way to the peer (the tail of stdout, the exit status).
"""

from __future__ import annotations

import collections
import contextlib
import enum
import logging
import queue
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Literal, TypeAlias

import attrs

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_WINDOW",
    "DICTIONARY",
    "DICTIONARY_ID",
    "FLAG_FIN",
    "FLAG_UNIDIRECTIONAL",
    "VERSION",
    "DataFrame",
    "Frame",
    "FrameDecoder",
    "FrameEncoder",
    "FrameType",
    "GoAwayFrame",
    "GoAwayStatus",
    "HeaderCompressor",
    "HeaderDecompressor",
    "Headers",
    "HeadersFrame",
    "PingFrame",
    "RstStatus",
    "RstStreamFrame",
    "Setting",
    "SettingsFrame",
    "SettingsId",
    "SpdyConnection",
    "SpdyConnectionClosed",
    "SpdyError",
    "SpdyProtocolError",
    "SpdyStream",
    "SpdyStreamReset",
    "SynReplyFrame",
    "SynStreamFrame",
    "UnknownControlFrame",
    "WindowUpdateFrame",
    "client_upgrade_request",
    "decode_header_block",
    "encode_header_block",
    "read_http_response_head",
    "server_upgrade_response",
]

# --------------------------------------------------------------------------- protocol constants

VERSION = 3
"""The version field of every control frame (SPDY/3.1 keeps 3 on the wire)."""

UPGRADE_PROTOCOL = "SPDY/3.1"
"""The ``Upgrade:`` token Kubernetes uses."""


class FrameType(enum.IntEnum):
    """Control frame types (NOOP=5 and CREDENTIAL=10 are treated as unknown)."""

    SYN_STREAM = 1
    SYN_REPLY = 2
    RST_STREAM = 3
    SETTINGS = 4
    PING = 6
    GOAWAY = 7
    HEADERS = 8
    WINDOW_UPDATE = 9


FLAG_FIN = 0x01
"""DATA, SYN_STREAM, SYN_REPLY, HEADERS: the sender will send nothing more on the stream."""
FLAG_UNIDIRECTIONAL = 0x02
"""SYN_STREAM: the recipient must not send on the stream."""
FLAG_SETTINGS_CLEAR_SETTINGS = 0x01
"""SETTINGS frame flag: forget persisted settings."""
SETTINGS_FLAG_PERSIST_VALUE = 0x01
SETTINGS_FLAG_PERSISTED = 0x02


class RstStatus(enum.IntEnum):
    """RST_STREAM status codes."""

    PROTOCOL_ERROR = 1
    INVALID_STREAM = 2
    REFUSED_STREAM = 3
    UNSUPPORTED_VERSION = 4
    CANCEL = 5
    INTERNAL_ERROR = 6
    FLOW_CONTROL_ERROR = 7
    STREAM_IN_USE = 8
    STREAM_ALREADY_CLOSED = 9
    INVALID_CREDENTIALS = 10
    FRAME_TOO_LARGE = 11


class GoAwayStatus(enum.IntEnum):
    """GOAWAY status codes."""

    OK = 0
    PROTOCOL_ERROR = 1
    INTERNAL_ERROR = 2


class SettingsId(enum.IntEnum):
    """SETTINGS ids (only INITIAL_WINDOW_SIZE changes anything here)."""

    UPLOAD_BANDWIDTH = 1
    DOWNLOAD_BANDWIDTH = 2
    ROUND_TRIP_TIME = 3
    MAX_CONCURRENT_STREAMS = 4
    CURRENT_CWND = 5
    DOWNLOAD_RETRANS_RATE = 6
    INITIAL_WINDOW_SIZE = 7
    CLIENT_CERTIFICATE_VECTOR_SIZE = 8


DEFAULT_WINDOW = 64 * 1024
"""Initial stream and session window of SPDY/3.1."""
MAX_WINDOW = 2**31 - 1
MAX_STREAM_ID = 2**31 - 1
MAX_FRAME_LENGTH = 2**24 - 1
"""The 24-bit length field's limit."""
MAX_DATA_CHUNK = 64 * 1024
"""Largest DATA payload this implementation sends in one frame."""
MAX_HEADER_BLOCK = 1024 * 1024
"""Largest decompressed header block accepted (against decompression bombs)."""
LINGER_SECONDS = 2.0
"""After closing, how long to drain the peer's input while waiting for its EOF."""
UNCONTROLLED_BUFFER_LIMIT = 1024 * 1024
"""Unread bytes per stream after which the reader thread stops reading from a peer that does
not do flow control."""

_ID_MASK = 0x7FFFFFFF
_LENGTH_MASK = 0xFFFFFF
_CONTROL_BIT = 0x80000000

_HEAD = struct.Struct(">II")
_CONTROL_HEAD = struct.Struct(">HHI")
_U32 = struct.Struct(">I")
_TWO_U32 = struct.Struct(">II")
_SYN_STREAM_FIXED = struct.Struct(">IIBB")


# ----------------------------------------------------------------------------- the dictionary


def _build_dictionary() -> bytes:
    # The SPDY/3 header compression dictionary (draft 3, section 2.6.10.1), rebuilt from its
    # structure: 65 length-prefixed words, then raw strings. The result is checked byte-exactly
    # by its length (1423) and its Adler-32 (DICTIONARY_ID), which every peer compares with the
    # dictionary id in the zlib header of our first header block.
    words = [
        "options",
        "head",
        "post",
        "put",
        "delete",
        "trace",
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-base",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "retry-after",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "warning",
        "www-authenticate",
        "method",
        "get",
        "status",
        "200 OK",
        "version",
        "HTTP/1.1",
        "url",
        "public",
        "set-cookie",
        "keep-alive",
        "origin",
    ]
    tail = (
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417"
        "502504505"
        "203 Non-Authoritative Information"
        "204 No Content"
        "301 Moved Permanently"
        "400 Bad Request"
        "401 Unauthorized"
        "403 Forbidden"
        "404 Not Found"
        "500 Internal Server Error"
        "501 Not Implemented"
        "503 Service Unavailable"
        "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00"
        " Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
        "chunked,text/html,image/png,image/jpg,image/gif,application/xml,"
        "application/xhtml+xml,text/plain,text/javascript,public"
        "private"
        "max-age="
        "gzip,deflate,sdch"
        "charset=utf-8"
        "charset=iso-8859-1,utf-,*,enq=0."
    )
    prefixed = b"".join(_U32.pack(len(w)) + w.encode("ascii") for w in words)
    return prefixed + tail.encode("ascii")


DICTIONARY: bytes = _build_dictionary()
"""The SPDY/3 zlib dictionary, 1423 bytes."""
DICTIONARY_ID = 0xE3C6A7C2
"""Adler-32 of :data:`DICTIONARY`: the DICTID in the zlib header of every SPDY/3 header stream."""


# --------------------------------------------------------------------------------- errors


class SpdyError(Exception):
    """Any SPDY failure: protocol violation, reset stream, closed connection."""


class SpdyProtocolError(SpdyError):
    """The peer sent something malformed; ``status`` is the GOAWAY status to answer with."""

    def __init__(self, message: str, status: int = GoAwayStatus.PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.status = status


class SpdyStreamReset(SpdyError):
    """The stream was reset (by us or by the peer) with RST_STREAM ``status``."""

    def __init__(self, stream_id: int, status: int, *, by_peer: bool) -> None:
        who = "peer" if by_peer else "us"
        super().__init__(f"stream {stream_id} reset by {who} (status {_status_name(status)})")
        self.stream_id = stream_id
        self.status = status
        self.by_peer = by_peer


class SpdyConnectionClosed(SpdyError):
    """The connection is closed (locally, by GOAWAY, or because the peer went away)."""


def _status_name(status: int) -> str:
    try:
        return RstStatus(status).name
    except ValueError:
        return str(status)


# ------------------------------------------------------------------------------ headers

HeaderValues: TypeAlias = "str | Sequence[str]"
HeadersInput: TypeAlias = "Headers | Mapping[str, str | Sequence[str]] | None"


def _normalize_headers(value: HeadersInput) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    if value is None:
        return out
    items = value.items()
    for name, values in items:
        key = name.lower()
        bucket = out.setdefault(key, [])
        if isinstance(values, str):
            bucket.append(values)
        else:
            bucket.extend(values)
    return out


@attrs.define
class Headers:
    """SPDY header names (always lowercase) to their values, in insertion order.

    Accepts any mapping of name to a string or a sequence of strings; names are lowercased
    and merged. Lookups are case-insensitive.
    """

    _data: dict[str, list[str]] = attrs.field(factory=dict, converter=_normalize_headers)

    def get(self, name: str, default: str = "") -> str:
        """The first value of ``name``, or ``default``."""
        values = self._data.get(name.lower())
        return values[0] if values else default

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name`` (a copy; empty if absent)."""
        return list(self._data.get(name.lower(), ()))

    def add(self, name: str, value: str) -> None:
        self._data.setdefault(name.lower(), []).append(value)

    def set(self, name: str, value: str | Sequence[str]) -> None:
        self._data[name.lower()] = [value] if isinstance(value, str) else list(value)

    def items(self) -> list[tuple[str, list[str]]]:
        return [(k, list(v)) for k, v in self._data.items()]

    def keys(self) -> list[str]:
        return list(self._data)

    def to_dict(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in self._data.items()}

    def __getitem__(self, name: str) -> list[str]:
        return list(self._data[name.lower()])

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._data))

    def __len__(self) -> int:
        return len(self._data)


def _encode_text(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _decode_text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def encode_header_block(headers: Headers) -> bytes:
    """The uncompressed SPDY/3 name/value block of ``headers``.

    Raises :class:`ValueError` for an empty name or a NUL inside a name or value (NUL is the
    separator of multiple values).
    """
    parts = [_U32.pack(len(headers))]
    for name, values in headers.items():
        raw_name = _encode_text(name)
        if not raw_name or b"\x00" in raw_name:
            raise ValueError(f"invalid SPDY header name {name!r}")
        raw_values = [_encode_text(v) for v in values]
        if any(b"\x00" in v for v in raw_values):
            raise ValueError(f"NUL in a value of header {name!r}")
        raw_value = b"\x00".join(raw_values)
        parts += (_U32.pack(len(raw_name)), raw_name, _U32.pack(len(raw_value)), raw_value)
    return b"".join(parts)


def decode_header_block(block: bytes) -> Headers:
    """Parse an uncompressed name/value block; :class:`SpdyProtocolError` if malformed."""
    size = len(block)
    if size < 4:
        raise SpdyProtocolError("header block shorter than its count")
    (count,) = _U32.unpack_from(block, 0)
    if count > (size - 4) // 8:
        raise SpdyProtocolError(f"header block claims {count} pairs in {size} bytes")
    headers = Headers()
    pos = 4
    for _ in range(count):
        parts: list[bytes] = []
        for _what in ("name", "value"):
            if pos + 4 > size:
                raise SpdyProtocolError("header block truncated")
            (length,) = _U32.unpack_from(block, pos)
            pos += 4
            if pos + length > size:
                raise SpdyProtocolError("header block truncated")
            parts.append(block[pos : pos + length])
            pos += length
        raw_name, raw_value = parts
        if not raw_name:
            raise SpdyProtocolError("empty header name")
        name = _decode_text(raw_name)
        for value in raw_value.split(b"\x00"):
            headers.add(name, _decode_text(value))
    if pos != size:
        raise SpdyProtocolError(f"{size - pos} stray bytes after the header block")
    return headers


class HeaderCompressor:
    """The sending half of header compression: one per connection, used under its write lock."""

    def __init__(self, level: int = zlib.Z_DEFAULT_COMPRESSION) -> None:
        self._z = zlib.compressobj(level, zlib.DEFLATED, zlib.MAX_WBITS, zdict=DICTIONARY)

    def compress(self, headers: Headers) -> bytes:
        raw = encode_header_block(headers)
        return self._z.compress(raw) + self._z.flush(zlib.Z_SYNC_FLUSH)


class HeaderDecompressor:
    """The receiving half: one per connection, fed every header block in arrival order."""

    def __init__(self, max_size: int = MAX_HEADER_BLOCK) -> None:
        # zlib asks for the dictionary (Z_NEED_DICT) on the first block; decompressobj then
        # supplies zdict, and rejects a peer that primed its compressor with another one.
        self._z = zlib.decompressobj(zdict=DICTIONARY)
        self._max = max_size

    def decompress(self, data: bytes) -> Headers:
        if not data:
            return Headers()
        try:
            raw = self._z.decompress(data, self._max + 1)
        except zlib.error as exc:
            raise SpdyProtocolError(f"header block does not decompress: {exc}") from exc
        if len(raw) > self._max or self._z.unconsumed_tail:
            raise SpdyProtocolError(f"header block larger than {self._max} bytes")
        return decode_header_block(raw)


# ------------------------------------------------------------------------------- frames


def _headers_field(value: HeadersInput) -> Headers:
    return value if isinstance(value, Headers) else Headers(value)


@attrs.frozen
class SynStreamFrame:
    stream_id: int
    headers: Headers = attrs.field(factory=Headers, converter=_headers_field)
    associated_to: int = 0
    priority: int = 0
    slot: int = 0
    flags: int = 0


@attrs.frozen
class SynReplyFrame:
    stream_id: int
    headers: Headers = attrs.field(factory=Headers, converter=_headers_field)
    flags: int = 0


@attrs.frozen
class RstStreamFrame:
    stream_id: int
    status: int


@attrs.frozen
class Setting:
    id: int
    value: int
    flags: int = 0


@attrs.frozen
class SettingsFrame:
    settings: tuple[Setting, ...] = ()
    flags: int = 0


@attrs.frozen
class PingFrame:
    id: int


@attrs.frozen
class GoAwayFrame:
    last_good_stream_id: int
    status: int = GoAwayStatus.OK


@attrs.frozen
class HeadersFrame:
    stream_id: int
    headers: Headers = attrs.field(factory=Headers, converter=_headers_field)
    flags: int = 0


@attrs.frozen
class WindowUpdateFrame:
    stream_id: int
    delta: int


@attrs.frozen
class DataFrame:
    stream_id: int
    data: bytes
    flags: int = 0


@attrs.frozen
class UnknownControlFrame:
    """A control frame of a type we do not implement (ignored by connections, per the spec)."""

    type: int
    flags: int
    payload: bytes
    version: int = VERSION


Frame: TypeAlias = (
    SynStreamFrame
    | SynReplyFrame
    | RstStreamFrame
    | SettingsFrame
    | PingFrame
    | GoAwayFrame
    | HeadersFrame
    | WindowUpdateFrame
    | DataFrame
    | UnknownControlFrame
)


def _check_id(value: int, what: str, *, zero_ok: bool = False) -> int:
    if not (0 if zero_ok else 1) <= value <= _ID_MASK:
        raise ValueError(f"{what} {value} out of range")
    return value


def _control(frame_type: int, flags: int, body: bytes, version: int = VERSION) -> bytes:
    if len(body) > MAX_FRAME_LENGTH:
        raise ValueError(f"control frame body of {len(body)} bytes is too long")
    return _CONTROL_HEAD.pack(0x8000 | version, frame_type, (flags << 24) | len(body)) + body


def data_frame_head(stream_id: int, flags: int, length: int) -> bytes:
    """The 8-byte head of a DATA frame."""
    return _HEAD.pack(stream_id & _ID_MASK, (flags << 24) | length)


class FrameEncoder:
    """Serialises frames; holds the connection's outgoing header compressor."""

    def __init__(self, compression_level: int = zlib.Z_DEFAULT_COMPRESSION) -> None:
        self._compressor = HeaderCompressor(compression_level)

    def encode(self, frame: Frame) -> bytes:
        if isinstance(frame, DataFrame):
            _check_id(frame.stream_id, "stream id")
            if len(frame.data) > MAX_FRAME_LENGTH:
                raise ValueError("DATA payload too long")
            return data_frame_head(frame.stream_id, frame.flags, len(frame.data)) + frame.data
        if isinstance(frame, SynStreamFrame):
            body = _SYN_STREAM_FIXED.pack(
                _check_id(frame.stream_id, "stream id"),
                _check_id(frame.associated_to, "associated stream id", zero_ok=True),
                (frame.priority & 0x7) << 5,
                frame.slot & 0xFF,
            )
            block = self._compressor.compress(frame.headers)
            return _control(FrameType.SYN_STREAM, frame.flags, body + block)
        if isinstance(frame, SynReplyFrame | HeadersFrame):
            frame_type = (
                FrameType.SYN_REPLY if isinstance(frame, SynReplyFrame) else FrameType.HEADERS
            )
            body = _U32.pack(_check_id(frame.stream_id, "stream id"))
            return _control(
                frame_type, frame.flags, body + self._compressor.compress(frame.headers)
            )
        if isinstance(frame, RstStreamFrame):
            body = _TWO_U32.pack(_check_id(frame.stream_id, "stream id"), frame.status)
            return _control(FrameType.RST_STREAM, 0, body)
        if isinstance(frame, SettingsFrame):
            entries = [_U32.pack(len(frame.settings))]
            for s in frame.settings:
                entries.append(_TWO_U32.pack(((s.flags & 0xFF) << 24) | (s.id & 0xFFFFFF), s.value))
            return _control(FrameType.SETTINGS, frame.flags, b"".join(entries))
        if isinstance(frame, PingFrame):
            return _control(FrameType.PING, 0, _U32.pack(frame.id & 0xFFFFFFFF))
        if isinstance(frame, GoAwayFrame):
            last = _check_id(frame.last_good_stream_id, "stream id", zero_ok=True)
            return _control(FrameType.GOAWAY, 0, _TWO_U32.pack(last, frame.status))
        if isinstance(frame, WindowUpdateFrame):
            _check_id(frame.stream_id, "stream id", zero_ok=True)
            if not 1 <= frame.delta <= MAX_WINDOW:
                raise ValueError(f"window delta {frame.delta} out of range")
            return _control(FrameType.WINDOW_UPDATE, 0, _TWO_U32.pack(frame.stream_id, frame.delta))
        return _control(frame.type, frame.flags, frame.payload, frame.version)


@attrs.frozen
class FrameHead:
    """The first 8 bytes of a frame, decoded."""

    control: bool
    stream_id: int  # DATA frames only
    version: int  # control frames only
    type: int  # control frames only
    flags: int
    length: int

    @classmethod
    def parse(cls, head: bytes) -> FrameHead:
        first, second = _HEAD.unpack(head)
        flags, length = second >> 24, second & _LENGTH_MASK
        if first & _CONTROL_BIT:
            return cls(True, 0, (first >> 16) & 0x7FFF, first & 0xFFFF, flags, length)
        return cls(False, first & _ID_MASK, 0, 0, flags, length)


class FrameDecoder:
    """Parses frames; holds the connection's incoming header decompressor.

    Every header-bearing frame must go through the same decoder in arrival order, including
    frames for streams that are ignored, or the zlib stream desynchronises.
    """

    def __init__(self, *, max_header_block: int = MAX_HEADER_BLOCK) -> None:
        self._headers = HeaderDecompressor(max_header_block)
        self._buffer = bytearray()

    def decode(self, head: FrameHead, payload: bytes) -> Frame:
        """Decode one frame whose head and complete payload were read."""
        if not head.control:
            if head.stream_id == 0:
                raise SpdyProtocolError("DATA frame on stream 0")
            return DataFrame(head.stream_id, payload, head.flags)
        if head.version != VERSION:
            raise SpdyProtocolError(f"unsupported SPDY version {head.version}")
        return self._decode_control(head.type, head.flags, payload)

    def feed(self, data: bytes) -> list[Frame]:
        """Buffer ``data`` and return every frame completed by it."""
        self._buffer += data
        frames = []
        while len(self._buffer) >= 8:
            head = FrameHead.parse(bytes(self._buffer[:8]))
            if len(self._buffer) < 8 + head.length:
                break
            payload = bytes(self._buffer[8 : 8 + head.length])
            del self._buffer[: 8 + head.length]
            frames.append(self.decode(head, payload))
        return frames

    def _decode_control(self, frame_type: int, flags: int, p: bytes) -> Frame:
        size = len(p)
        if frame_type == FrameType.SYN_STREAM:
            if size < 10:
                raise SpdyProtocolError("SYN_STREAM too short")
            sid, assoc, pri, slot = _SYN_STREAM_FIXED.unpack_from(p, 0)
            headers = self._headers.decompress(p[10:])
            sid &= _ID_MASK
            if sid == 0:
                raise SpdyProtocolError("SYN_STREAM for stream 0")
            return SynStreamFrame(sid, headers, assoc & _ID_MASK, pri >> 5, slot, flags)
        if frame_type in (FrameType.SYN_REPLY, FrameType.HEADERS):
            if size < 4:
                raise SpdyProtocolError(f"{FrameType(frame_type).name} too short")
            sid = _U32.unpack_from(p, 0)[0] & _ID_MASK
            headers = self._headers.decompress(p[4:])
            if sid == 0:
                raise SpdyProtocolError(f"{FrameType(frame_type).name} for stream 0")
            if frame_type == FrameType.SYN_REPLY:
                return SynReplyFrame(sid, headers, flags)
            return HeadersFrame(sid, headers, flags)
        if frame_type == FrameType.RST_STREAM:
            if size != 8:
                raise SpdyProtocolError("RST_STREAM length is not 8")
            sid, status = _TWO_U32.unpack(p)
            sid &= _ID_MASK
            if sid == 0 or status == 0:
                raise SpdyProtocolError("RST_STREAM with stream 0 or status 0")
            return RstStreamFrame(sid, status)
        if frame_type == FrameType.SETTINGS:
            if size < 4:
                raise SpdyProtocolError("SETTINGS too short")
            (count,) = _U32.unpack_from(p, 0)
            if size != 4 + 8 * count:
                raise SpdyProtocolError("SETTINGS length does not match its count")
            settings = []
            for i in range(count):
                flag_id, value = _TWO_U32.unpack_from(p, 4 + 8 * i)
                settings.append(Setting(flag_id & 0xFFFFFF, value, flag_id >> 24))
            return SettingsFrame(tuple(settings), flags)
        if frame_type == FrameType.PING:
            if size != 4:
                raise SpdyProtocolError("PING length is not 4")
            return PingFrame(_U32.unpack(p)[0])
        if frame_type == FrameType.GOAWAY:
            if size != 8:
                raise SpdyProtocolError("GOAWAY length is not 8")
            last, status = _TWO_U32.unpack(p)
            return GoAwayFrame(last & _ID_MASK, status)
        if frame_type == FrameType.WINDOW_UPDATE:
            if size != 8:
                raise SpdyProtocolError("WINDOW_UPDATE length is not 8")
            sid, delta = _TWO_U32.unpack(p)
            delta &= _ID_MASK
            if delta == 0:
                raise SpdyProtocolError("WINDOW_UPDATE with delta 0")
            return WindowUpdateFrame(sid & _ID_MASK, delta)
        return UnknownControlFrame(frame_type, flags, p)


# ------------------------------------------------------------------------------ streams

Buffer: TypeAlias = bytes | bytearray | memoryview


class SpdyStream:
    """One SPDY stream. Reading and writing may happen in different threads.

    ``headers`` are the SYN_STREAM headers (ours for a stream we opened, the peer's for an
    incoming one); ``reply_headers`` the SYN_REPLY headers once replied.
    """

    def __init__(
        self,
        conn: SpdyConnection,
        stream_id: int,
        headers: Headers,
        *,
        local: bool,
        send_window: int,
        recv_window: int,
        priority: int = 0,
        associated_to: int = 0,
    ) -> None:
        self._conn = conn
        self.id = stream_id
        self.headers = headers
        self.local = local
        self.priority = priority
        self.associated_to = associated_to
        self.reply_headers: Headers | None = None
        self.late_headers = Headers()
        """Headers that arrived later in HEADERS frames."""

        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._write_lock = threading.Lock()
        self._chunks: collections.deque[bytes] = collections.deque()
        self._offset = 0  # already consumed bytes of _chunks[0]
        self._buffered = 0
        self._replied = False
        self._remote_closed = False
        self._local_closed = False
        self._reset_status: int | None = None
        self._reset_by_peer = False
        # flow control; the send window is guarded by the connection's _flow condition
        self._send_window = send_window
        self._recv_window = recv_window  # what the peer may still send
        self._recv_unacked = 0  # consumed, not yet returned with WINDOW_UPDATE

    def __repr__(self) -> str:
        state = []
        if self._local_closed:
            state.append("local-closed")
        if self._remote_closed:
            state.append("remote-closed")
        if self._reset_status is not None:
            state.append(f"reset={_status_name(self._reset_status)}")
        return f"<SpdyStream {self.id} {' '.join(state) or 'open'}>"

    # ---- state

    @property
    def remote_closed(self) -> bool:
        """The peer half-closed (FIN received): after the buffered data, reads give b""."""
        return self._remote_closed

    @property
    def local_closed(self) -> bool:
        """We half-closed (FIN sent); writes raise."""
        return self._local_closed

    @property
    def is_reset(self) -> bool:
        return self._reset_status is not None

    @property
    def reset_status(self) -> int | None:
        return self._reset_status

    @property
    def reset_by_peer(self) -> bool:
        return self._reset_by_peer

    @property
    def buffered(self) -> int:
        """Bytes received and not read yet."""
        return self._buffered

    @property
    def replied(self) -> bool:
        """SYN_REPLY sent (incoming stream) or received (our stream)."""
        return self._replied

    @property
    def closed(self) -> bool:
        """Both directions finished, the stream was reset, or the connection is closed."""
        return (
            (self._local_closed and self._remote_closed)
            or self._reset_status is not None
            or self._conn.closed.is_set()
        )

    # ---- reading

    def read(self, size: int = -1) -> bytes:
        """Block until data is available; return up to ``size`` bytes (all buffered if < 0).

        Returns b"" at end of stream: the peer sent FIN or reset the stream (after the data
        that arrived before), we reset it, or the connection closed.
        """
        if size == 0:
            return b""
        with self._cond:
            while not self._chunks:
                if self._remote_closed or self._reset_status is not None or self._conn_gone():
                    return b""
                self._cond.wait()
            data = self._take(size)
            n = len(data)
            self._buffered -= n
            stream_update = 0
            session_credit = n if self._reset_status is None else 0  # else credited at reset
            if not self._remote_closed and self._reset_status is None:
                self._recv_unacked += n
                if self._recv_unacked >= self._conn._window_update_threshold:
                    stream_update, self._recv_unacked = self._recv_unacked, 0
                    self._recv_window += stream_update
            self._cond.notify_all()  # a reader thread may wait for buffer space
        self._conn._consumed(self.id, session_credit, stream_update)
        return data

    def readall(self) -> bytes:
        """Read until end of stream."""
        parts = []
        while chunk := self.read():
            parts.append(chunk)
        return b"".join(parts)

    def _take(self, size: int) -> bytes:
        # with self._cond held and self._chunks not empty
        chunks = self._chunks
        if size < 0:
            size = self._buffered
        first = chunks[0]
        start = self._offset
        avail = len(first) - start
        if size < avail:
            self._offset = start + size
            return first[start : start + size]
        chunks.popleft()
        self._offset = 0
        piece = first if start == 0 else first[start:]
        if size == avail or not chunks:
            return piece
        parts = [piece]
        got = avail
        while chunks and got < size:
            nxt = chunks[0]
            need = size - got
            if len(nxt) <= need:
                parts.append(chunks.popleft())
                got += len(nxt)
            else:
                parts.append(nxt[:need])
                self._offset = need
                got = size
        return b"".join(parts)

    def _conn_gone(self) -> bool:
        return self._conn.closed.is_set()

    # ---- writing

    def write(self, data: Buffer) -> int:
        """Send all of ``data`` (in DATA frames of at most 64 KiB), blocking on flow control.

        Raises :class:`SpdyStreamReset`, :class:`SpdyConnectionClosed`, or :class:`SpdyError`
        after :meth:`close`.
        """
        view = memoryview(data)
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
        total = len(view)
        with self._write_lock:
            self._check_writable()
            offset = 0
            while offset < total:
                n = self._conn._acquire_send_window(self, total - offset)
                self._conn._send_data(self.id, 0, view[offset : offset + n])
                offset += n
        return total

    def close(self) -> None:
        """Half-close: send FIN (an empty DATA frame); the peer may keep sending. Idempotent."""
        with self._write_lock:
            if self._local_closed or self._reset_status is not None or self._conn_gone():
                return
            with self._cond:
                self._local_closed = True
                self._cond.notify_all()
            try:
                self._conn._send_data(self.id, FLAG_FIN, b"")
            finally:
                self._conn._maybe_forget(self)

    def reset(self, status: int = RstStatus.CANCEL) -> None:
        """Abort the stream both ways with RST_STREAM; unread data is discarded. Idempotent."""
        if not self._mark_reset(status, by_peer=False):
            return
        self._conn._send_rst_quietly(self.id, status)

    def send_headers(self, headers: HeadersInput, *, fin: bool = False) -> None:
        """Send a HEADERS frame (extra headers after SYN_STREAM/SYN_REPLY)."""
        with self._write_lock:
            self._check_writable()
            if fin:
                with self._cond:
                    self._local_closed = True
                    self._cond.notify_all()
            self._conn._send_frame(HeadersFrame(self.id, headers, FLAG_FIN if fin else 0))
        if fin:
            self._conn._maybe_forget(self)

    def reply(self, headers: HeadersInput = None, *, fin: bool = False) -> None:
        """Same as ``conn.reply(stream, headers, fin=fin)``."""
        self._conn.reply(self, headers, fin=fin)

    def wait_reply(self, timeout: float | None = None) -> Headers:
        """For a stream we opened: wait for the peer's SYN_REPLY and return its headers."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._replied:
                if self._reset_status is not None:
                    raise SpdyStreamReset(self.id, self._reset_status, by_peer=self._reset_by_peer)
                if self._conn_gone():
                    raise SpdyConnectionClosed("connection closed before SYN_REPLY")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise SpdyError(f"no SYN_REPLY for stream {self.id} within {timeout}s")
                self._cond.wait(remaining)
            return self.reply_headers if self.reply_headers is not None else Headers()

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Wait until :attr:`closed`; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self.closed, timeout)

    def _check_writable(self) -> None:
        if self._reset_status is not None:
            raise SpdyStreamReset(self.id, self._reset_status, by_peer=self._reset_by_peer)
        if self._conn_gone():
            raise SpdyConnectionClosed(f"connection closed; cannot write to stream {self.id}")
        if self._local_closed:
            raise SpdyError(f"stream {self.id} is closed for writing")

    # ---- events from the connection (reader thread unless noted)

    def _mark_reset(self, status: int, *, by_peer: bool) -> bool:
        with self._cond:
            if self._reset_status is not None:
                return False
            self._reset_status = status
            self._reset_by_peer = by_peer
            # Whatever is buffered no longer counts against the session window: after our
            # reset it is discarded; after the peer's it stays readable, but whether the
            # application ever reads it must not matter to the other streams.
            credit = self._buffered
            if not by_peer:
                self._chunks.clear()
                self._offset = 0
                self._buffered = 0
            self._cond.notify_all()
        self._conn._stream_gone(self, credit)
        return True

    def _on_data(self, data: bytes, fin: bool) -> None:
        conn = self._conn
        with self._cond:
            dropped = self._reset_status is not None and not self._reset_by_peer
            if dropped:
                pass
            elif data:
                self._chunks.append(data)
                self._buffered += len(data)
                self._recv_window -= len(data)
            if fin and not dropped:
                self._remote_closed = True
            self._cond.notify_all()
            # Backpressure against peers without flow control: stop reading the socket.
            while (
                self._buffered > UNCONTROLLED_BUFFER_LIMIT
                and conn._peer_flow_control is not True
                and self._reset_status is None
                and not conn.closed.is_set()
            ):
                self._cond.wait()
        if dropped:
            conn._consumed(0, len(data), 0)  # give the session window back
        elif fin:
            conn._maybe_forget(self)

    def _on_reply(self, headers: Headers, fin: bool) -> None:
        with self._cond:
            self._replied = True
            self.reply_headers = headers
            if fin:
                self._remote_closed = True
            self._cond.notify_all()
        if fin:
            self._conn._maybe_forget(self)

    def _on_headers(self, headers: Headers, fin: bool) -> None:
        with self._cond:
            for name, values in headers.items():
                for value in values:
                    self.late_headers.add(name, value)
            if fin:
                self._remote_closed = True
            self._cond.notify_all()
        if fin:
            self._conn._maybe_forget(self)

    def _wake(self) -> None:
        """Connection closed: wake every waiter (any thread)."""
        with self._cond:
            self._cond.notify_all()


# --------------------------------------------------------------------------- connection

FlowControlMode: TypeAlias = Literal["auto", "on", "off"]


class _PendingPing:
    __slots__ = ("answered", "event")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.answered = False


class SpdyConnection:
    """A SPDY/3.1 session over a connected socket, for either role.

    ``server=True`` opens even-numbered streams and pings (clients use odd ones). Incoming
    streams go to ``on_stream`` in the reader thread when given, else to :meth:`accept`.
    ``ping_interval`` starts a keep-alive thread sending PING every so many seconds.

    ``flow_control``: ``"auto"`` (see the module docs), ``"on"`` (always enforce the peer's
    windows, pure SPDY/3.1) or ``"off"`` (never wait for WINDOW_UPDATE). ``initial_window`` is
    the per-stream receive window we advertise with SETTINGS; ``session_window`` the session
    receive window we open with a WINDOW_UPDATE on stream 0. ``initial_data`` holds bytes
    already read from the socket that belong to the SPDY session (after an HTTP upgrade).

    The connection owns the socket and closes it.
    """

    def __init__(
        self,
        sock: socket.socket,
        *,
        server: bool,
        on_stream: Callable[[SpdyStream], None] | None = None,
        ping_interval: float | None = None,
        flow_control: FlowControlMode = "auto",
        initial_window: int = 256 * 1024,
        session_window: int = 4 * 1024 * 1024,
        initial_data: bytes = b"",
        name: str | None = None,
    ) -> None:
        if not 1 <= initial_window <= MAX_WINDOW:
            raise ValueError("initial_window must be between 1 and 2**31-1")
        if not DEFAULT_WINDOW <= session_window <= MAX_WINDOW:
            raise ValueError("session_window must be between 64 KiB (SPDY/3.1) and 2**31-1")
        self._sock = sock
        sock.settimeout(None)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server = server
        self.name = name or ("spdy-server" if server else "spdy-client")
        self._on_stream = on_stream
        self.incoming: queue.Queue[SpdyStream | None] = queue.Queue()
        """Incoming streams, when no ``on_stream`` callback was given (None: closed)."""
        self.closed = threading.Event()
        """Set once the connection is closed, for whatever reason."""
        self.goaway_received = threading.Event()
        self.close_reason: str | None = None
        self.last_ping_rtt: float | None = None

        self._write_lock = threading.Lock()
        self._encoder = FrameEncoder()
        self._decoder = FrameDecoder()
        self._streams: dict[int, SpdyStream] = {}
        self._streams_lock = threading.Lock()
        self._next_stream_id = 2 if server else 1
        self._last_peer_stream_id = 0
        self._goaway_sent = False
        self._peer_last_good: int | None = None
        self._shutdown_lock = threading.Lock()
        self._shutting_down = False
        self._linger_timer: threading.Timer | None = None
        self._sendmsg_ok = hasattr(sock, "sendmsg")
        self._pending_input = bytearray(initial_data)

        self._ping_lock = threading.Lock()
        self._next_ping_id = 2 if server else 1
        self._pings: dict[int, _PendingPing] = {}

        # flow control (send side guarded by _flow)
        self._flow = threading.Condition()
        self._flow_mode = flow_control
        self._peer_flow_control: bool | None = {"auto": None, "on": True, "off": False}[
            flow_control
        ]
        self._probe_lock = threading.Lock()
        self._peer_initial_window = DEFAULT_WINDOW
        self._send_window = DEFAULT_WINDOW
        # receive side (guarded by _recv_lock)
        self._recv_lock = threading.Lock()
        self._initial_recv_window = initial_window
        self._window_update_threshold = max(1, initial_window // 2)
        self._session_recv_window = session_window
        self._session_update_threshold = max(1, session_window // 2)
        self._session_recv_avail = DEFAULT_WINDOW
        self._session_unacked = 0

        try:
            self._send_frame(
                SettingsFrame((Setting(SettingsId.INITIAL_WINDOW_SIZE, initial_window),))
            )
            if session_window > DEFAULT_WINDOW:
                self._session_recv_avail = session_window
                self._send_frame(WindowUpdateFrame(0, session_window - DEFAULT_WINDOW))
        except SpdyError:
            pass  # the reader thread notices the dead socket and closes
        self._reader = threading.Thread(target=self._read_loop, name=f"{self.name}-reader")
        self._reader.daemon = True
        self._reader.start()
        self._pinger: threading.Thread | None = None
        if ping_interval:
            self._pinger = threading.Thread(
                target=self._ping_loop, args=(ping_interval,), name=f"{self.name}-pinger"
            )
            self._pinger.daemon = True
            self._pinger.start()

    def __repr__(self) -> str:
        state = "closed" if self.closed.is_set() else f"{len(self._streams)} streams"
        return f"<SpdyConnection {self.name} {state}>"

    def __enter__(self) -> SpdyConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def peer_flow_control(self) -> bool | None:
        """Whether the peer's windows are enforced (None: not known yet)."""
        return self._peer_flow_control

    @property
    def active_streams(self) -> int:
        with self._streams_lock:
            return len(self._streams)

    # ---- public API

    def open_stream(
        self,
        headers: HeadersInput,
        *,
        fin: bool = False,
        unidirectional: bool = False,
        priority: int = 0,
    ) -> SpdyStream:
        """Send SYN_STREAM and return the stream without waiting for SYN_REPLY.

        Kubernetes clients wait for the reply before writing (spdystream drops DATA for a
        stream it has not replied to yet); use :meth:`SpdyStream.wait_reply` for that.
        """
        hdrs = _headers_field(headers)
        flags = (FLAG_FIN if fin else 0) | (FLAG_UNIDIRECTIONAL if unidirectional else 0)
        with self._write_lock:
            if self.closed.is_set():
                raise SpdyConnectionClosed("connection closed")
            if self.goaway_received.is_set():
                raise SpdyConnectionClosed("peer sent GOAWAY; no new streams")
            sid = self._next_stream_id
            if sid > MAX_STREAM_ID:
                raise SpdyError("stream ids exhausted")
            frame = SynStreamFrame(sid, hdrs, priority=priority, flags=flags)
            wire = self._encoder.encode(frame)  # ValueError for bad headers: nothing changed
            self._next_stream_id += 2
            with self._flow:
                send_window = self._peer_initial_window
            stream = SpdyStream(
                self,
                sid,
                hdrs,
                local=True,
                send_window=send_window,
                recv_window=self._initial_recv_window,
                priority=priority,
            )
            stream._local_closed = fin
            stream._remote_closed = unidirectional
            with self._streams_lock:
                self._streams[sid] = stream
            self._write_locked(wire)
        return stream

    def reply(self, stream: SpdyStream, headers: HeadersInput = None, *, fin: bool = False) -> None:
        """Accept an incoming stream with SYN_REPLY (Kubernetes replies with no headers)."""
        if stream.local:
            raise ValueError("only streams opened by the peer are replied to")
        hdrs = _headers_field(headers)
        encode_header_block(hdrs)  # ValueError for bad headers before anything changes
        with stream._cond:
            if stream._replied:
                raise SpdyError(f"stream {stream.id} already replied")
            if stream._reset_status is not None:
                raise SpdyStreamReset(
                    stream.id, stream._reset_status, by_peer=stream._reset_by_peer
                )
            stream._replied = True
            if fin:
                stream._local_closed = True
        self._send_frame(SynReplyFrame(stream.id, hdrs, FLAG_FIN if fin else 0))
        if fin:
            self._maybe_forget(stream)

    def accept(self, timeout: float | None = None) -> SpdyStream | None:
        """The next incoming stream; None on timeout or once the connection is closed."""
        try:
            stream = self.incoming.get(timeout=timeout)
        except queue.Empty:
            return None
        if stream is None:
            self.incoming.put(None)  # keep waking other acceptors
        return stream

    def ping(self, timeout: float | None = 10.0) -> float:
        """Send PING and wait for the echo; return the round trip in seconds."""
        with self._ping_lock:
            pid = self._next_ping_id
            self._next_ping_id = pid + 2 if pid + 2 <= 0xFFFFFFFF else (2 if self.server else 1)
            pending = self._pings[pid] = _PendingPing()
        try:
            start = time.monotonic()
            self._send_frame(PingFrame(pid))
            pending.event.wait(timeout)
            if pending.answered:
                rtt = time.monotonic() - start
                self.last_ping_rtt = rtt
                return rtt
            if self.closed.is_set():
                raise SpdyConnectionClosed("connection closed during PING")
            raise SpdyError(f"no PING reply within {timeout}s")
        finally:
            with self._ping_lock:
                self._pings.pop(pid, None)

    def goaway(self, status: int = GoAwayStatus.OK) -> None:
        """Graceful close: send GOAWAY, refuse new streams, close once no stream is left."""
        self._send_goaway(status)
        self._close_if_done()

    def close(self, reason: str = "closed locally") -> None:
        """Close now. Blocked readers get b"" (after data already buffered), blocked writers
        :class:`SpdyConnectionClosed`, :meth:`accept` None. Idempotent; does not block.

        Sends GOAWAY (best effort) and shuts the socket for writing; the reader thread then
        drains the peer's input until its EOF (at most :data:`LINGER_SECONDS`) and closes the
        socket (see :meth:`_shutdown`)."""
        if not self.closed.is_set():
            self._send_goaway(GoAwayStatus.OK, nonblocking=True)
        self._shutdown(reason, linger=LINGER_SECONDS)

    def wait_closed(self, timeout: float | None = None) -> bool:
        return self.closed.wait(timeout)

    # ---- sending

    def _write_locked(self, data: bytes) -> None:
        try:
            self._sock.sendall(data)
        except OSError as exc:
            self._shutdown(f"send failed: {exc}")
            raise SpdyConnectionClosed(f"connection lost: {exc}") from exc

    def _send_frame(self, frame: Frame) -> None:
        with self._write_lock:
            if self.closed.is_set():
                raise SpdyConnectionClosed("connection closed")
            self._write_locked(self._encoder.encode(frame))

    def _send_data(self, stream_id: int, flags: int, data: Buffer) -> None:
        head = data_frame_head(stream_id, flags, len(data))
        with self._write_lock:
            if self.closed.is_set():
                raise SpdyConnectionClosed("connection closed")
            try:
                if not data:
                    self._sock.sendall(head)
                elif self._sendmsg_ok:
                    self._sendv(head, data)
                else:
                    self._sock.sendall(head + bytes(data))
            except OSError as exc:
                self._shutdown(f"send failed: {exc}")
                raise SpdyConnectionClosed(f"connection lost: {exc}") from exc

    def _sendv(self, head: bytes, data: Buffer) -> None:
        try:
            sent = self._sock.sendmsg([head, data])
        except NotImplementedError:  # e.g. TLS sockets
            self._sendmsg_ok = False
            self._sock.sendall(head + bytes(data))
            return
        if sent < len(head):
            self._sock.sendall(head[sent:])
            sent = len(head)
        sent -= len(head)
        if sent < len(data):
            self._sock.sendall(memoryview(data)[sent:])

    def _send_rst_quietly(self, stream_id: int, status: int) -> None:
        with contextlib.suppress(SpdyError):
            self._send_frame(RstStreamFrame(stream_id, status))

    def _send_goaway(self, status: int, *, nonblocking: bool = False) -> None:
        """Send GOAWAY once. ``nonblocking``: give up after 1 s waiting for the write lock and
        never block on the socket (used while closing, when the peer may not be reading)."""
        if self._goaway_sent:
            return
        if not self._write_lock.acquire(timeout=1.0 if nonblocking else -1):
            return
        try:
            if self._goaway_sent or self.closed.is_set():
                return
            self._goaway_sent = True
            data = self._encoder.encode(GoAwayFrame(self._last_peer_stream_id, status))
            try:
                if nonblocking:
                    self._sock.send(data, socket.MSG_DONTWAIT)
                else:
                    self._sock.sendall(data)
            except OSError:
                pass
        finally:
            self._write_lock.release()

    # ---- flow control

    def _acquire_send_window(self, stream: SpdyStream, wanted: int) -> int:
        """Reserve up to ``wanted`` bytes of send window for ``stream``; block until > 0."""
        while True:
            with self._flow:
                while True:
                    stream._check_writable()
                    mode = self._peer_flow_control
                    avail = min(stream._send_window, self._send_window)
                    if mode is False or avail > 0:
                        n = min(wanted, MAX_DATA_CHUNK)
                        if mode is not False:
                            n = min(n, avail)
                        stream._send_window -= n
                        self._send_window -= n
                        return n
                    if threading.current_thread() is self._reader:
                        raise SpdyError("writing from the reader thread would deadlock")
                    if mode is None:
                        break  # probe the peer outside the lock
                    self._flow.wait()
            self._probe_flow_control()

    def _probe_flow_control(self) -> None:
        with self._probe_lock:
            if self._peer_flow_control is not None:
                return
            try:
                self.ping(timeout=10.0)
            except SpdyError:
                if self.closed.is_set():
                    return
            with self._flow:
                if self._peer_flow_control is None:
                    log.debug("%s: peer does no flow control; windows not enforced", self.name)
                    self._peer_flow_control = False
                self._flow.notify_all()

    def _peer_does_flow_control(self) -> None:
        # with self._flow held
        if self._peer_flow_control is None:
            self._peer_flow_control = True

    def _consumed(self, stream_id: int, n: int, stream_update: int) -> None:
        """The application consumed ``n`` bytes: send WINDOW_UPDATEs that are due."""
        session_update = 0
        with self._recv_lock:
            self._session_unacked += n
            if self._session_unacked >= self._session_update_threshold:
                session_update, self._session_unacked = self._session_unacked, 0
                self._session_recv_avail += session_update
        if self.closed.is_set():
            return
        try:
            if stream_update:
                self._send_frame(WindowUpdateFrame(stream_id, stream_update))
            if session_update:
                self._send_frame(WindowUpdateFrame(0, session_update))
        except SpdyError:
            pass

    # ---- stream bookkeeping

    def _stream_gone(self, stream: SpdyStream, credit: int) -> None:
        """A stream was reset: forget it, wake its writers, return its unread bytes to the
        session window."""
        with self._streams_lock:
            self._streams.pop(stream.id, None)
        with self._flow:
            self._flow.notify_all()
        if credit:
            self._consumed(0, credit, 0)
        self._close_if_done()

    def _maybe_forget(self, stream: SpdyStream) -> None:
        if stream._local_closed and stream._remote_closed:
            with self._streams_lock:
                self._streams.pop(stream.id, None)
            self._close_if_done()

    def _close_if_done(self) -> None:
        if (self._goaway_sent or self.goaway_received.is_set()) and not self.closed.is_set():
            with self._streams_lock:
                if self._streams:
                    return
            self._shutdown("GOAWAY and no streams left", linger=LINGER_SECONDS)

    def _is_closed_id(self, stream_id: int) -> bool:
        """Was ``stream_id`` ever opened (so frames for it are merely late)?"""
        if (stream_id & 1) == (0 if self.server else 1):  # ours
            return stream_id < self._next_stream_id
        return stream_id <= self._last_peer_stream_id

    # ---- reading

    def _recv_exact(self, n: int) -> bytes | None:
        """Exactly ``n`` bytes, or None at end of input."""
        if n == 0:
            return b""
        parts: list[bytes] = []
        if self._pending_input:
            take = bytes(self._pending_input[:n])
            del self._pending_input[:n]
            if len(take) == n:
                return take
            parts.append(take)
            n -= len(take)
        chunk = self._sock.recv(n)
        if not chunk:
            return None
        if len(chunk) == n and not parts:
            return chunk
        buf = bytearray(n)
        buf[: len(chunk)] = chunk
        got = len(chunk)
        view = memoryview(buf)
        while got < n:
            r = self._sock.recv_into(view[got:], n - got)
            if r == 0:
                return None
            got += r
        if parts:
            return parts[0] + bytes(buf)
        return bytes(buf)

    def _read_loop(self) -> None:
        reason = "peer closed the connection"
        try:
            while True:
                raw_head = self._recv_exact(8)
                if raw_head is None:
                    break
                head = FrameHead.parse(raw_head)
                payload = self._recv_exact(head.length)
                if payload is None:
                    reason = "peer closed the connection inside a frame"
                    break
                if self.closed.is_set():
                    continue  # lingering after close: drain until the peer's EOF
                try:
                    frame = self._decoder.decode(head, payload)
                    self._dispatch(frame)
                except SpdyProtocolError as exc:
                    log.warning("%s: protocol error from peer: %s", self.name, exc)
                    self._send_goaway(exc.status, nonblocking=True)
                    self._shutdown(f"protocol error: {exc}", linger=LINGER_SECONDS)
        except OSError as exc:
            reason = f"connection lost: {exc}"
        except Exception as exc:
            log.exception("%s: reader thread failed", self.name)
            self._send_goaway(GoAwayStatus.INTERNAL_ERROR, nonblocking=True)
            reason = f"internal error: {exc!r}"
        finally:
            self._shutdown(reason)
            if self._linger_timer is not None:
                self._linger_timer.cancel()
            with self._write_lock:
                self._sock.close()

    def _dispatch(self, frame: Frame) -> None:
        if isinstance(frame, DataFrame):
            self._handle_data(frame)
        elif isinstance(frame, SynStreamFrame):
            self._handle_syn_stream(frame)
        elif isinstance(frame, SynReplyFrame):
            self._handle_syn_reply(frame)
        elif isinstance(frame, RstStreamFrame):
            stream = self._get_stream(frame.stream_id)
            if stream is not None:
                stream._mark_reset(frame.status, by_peer=True)
        elif isinstance(frame, SettingsFrame):
            self._handle_settings(frame)
        elif isinstance(frame, PingFrame):
            self._handle_ping(frame)
        elif isinstance(frame, GoAwayFrame):
            self._handle_goaway(frame)
        elif isinstance(frame, HeadersFrame):
            stream = self._get_stream(frame.stream_id)
            if stream is not None:
                stream._on_headers(frame.headers, bool(frame.flags & FLAG_FIN))
            elif not self._is_closed_id(frame.stream_id):
                self._send_rst_quietly(frame.stream_id, RstStatus.INVALID_STREAM)
        elif isinstance(frame, WindowUpdateFrame):
            self._handle_window_update(frame)
        else:
            log.debug("%s: ignoring control frame type %d", self.name, frame.type)

    def _get_stream(self, stream_id: int) -> SpdyStream | None:
        with self._streams_lock:
            return self._streams.get(stream_id)

    def _handle_data(self, frame: DataFrame) -> None:
        n = len(frame.data)
        with self._recv_lock:
            self._session_recv_avail -= n
            overrun = self._session_recv_avail < 0
        if overrun and self._peer_flow_control is True:
            raise SpdyProtocolError("peer overran the session flow-control window")
        stream = self._get_stream(frame.stream_id)
        if stream is None:
            self._consumed(0, n, 0)
            if not self._is_closed_id(frame.stream_id):
                self._send_rst_quietly(frame.stream_id, RstStatus.INVALID_STREAM)
            return
        if stream._remote_closed:
            self._consumed(0, n, 0)
            stream.reset(RstStatus.STREAM_ALREADY_CLOSED)
            return
        if self._peer_flow_control is True and n > stream._recv_window:
            self._consumed(0, n, 0)
            stream.reset(RstStatus.FLOW_CONTROL_ERROR)
            return
        stream._on_data(frame.data, bool(frame.flags & FLAG_FIN))

    def _handle_syn_stream(self, frame: SynStreamFrame) -> None:
        sid = frame.stream_id
        if (sid & 1) != (1 if self.server else 0):
            raise SpdyProtocolError(f"peer opened stream {sid} with our parity")
        if sid <= self._last_peer_stream_id:
            raise SpdyProtocolError(f"stream id {sid} does not increase")
        self._last_peer_stream_id = sid
        if self._goaway_sent or self.closed.is_set():
            return  # after GOAWAY new streams are ignored
        with self._flow:
            send_window = self._peer_initial_window
        stream = SpdyStream(
            self,
            sid,
            frame.headers,
            local=False,
            send_window=send_window,
            recv_window=self._initial_recv_window,
            priority=frame.priority,
            associated_to=frame.associated_to,
        )
        stream._remote_closed = bool(frame.flags & FLAG_FIN)
        stream._local_closed = bool(frame.flags & FLAG_UNIDIRECTIONAL)
        with self._streams_lock:
            self._streams[sid] = stream
        if self._on_stream is None:
            self.incoming.put(stream)
            return
        try:
            self._on_stream(stream)
        except Exception:
            log.exception("%s: on_stream callback failed for stream %d", self.name, sid)
            stream.reset(RstStatus.INTERNAL_ERROR)

    def _handle_syn_reply(self, frame: SynReplyFrame) -> None:
        stream = self._get_stream(frame.stream_id)
        if stream is None:
            if not self._is_closed_id(frame.stream_id):
                self._send_rst_quietly(frame.stream_id, RstStatus.INVALID_STREAM)
            return
        if not stream.local:
            stream.reset(RstStatus.PROTOCOL_ERROR)
        elif stream._replied:
            stream.reset(RstStatus.STREAM_IN_USE)
        else:
            stream._on_reply(frame.headers, bool(frame.flags & FLAG_FIN))

    def _handle_settings(self, frame: SettingsFrame) -> None:
        for setting in frame.settings:
            if setting.id != SettingsId.INITIAL_WINDOW_SIZE:
                continue
            if setting.value > MAX_WINDOW:
                raise SpdyProtocolError("INITIAL_WINDOW_SIZE above 2**31-1")
            with self._flow:
                delta = setting.value - self._peer_initial_window
                self._peer_initial_window = setting.value
                self._peer_does_flow_control()
                with self._streams_lock:
                    streams = list(self._streams.values())
                for stream in streams:
                    stream._send_window += delta
                self._flow.notify_all()

    def _handle_window_update(self, frame: WindowUpdateFrame) -> None:
        with self._flow:
            self._peer_does_flow_control()
            if frame.stream_id == 0:
                self._send_window += frame.delta
                if self._send_window > MAX_WINDOW:
                    raise SpdyProtocolError("session send window above 2**31-1")
                self._flow.notify_all()
                return
            stream = self._get_stream(frame.stream_id)
            if stream is None:
                return  # late update for a finished stream
            stream._send_window += frame.delta
            overflow = stream._send_window > MAX_WINDOW
            self._flow.notify_all()
        if overflow:
            stream.reset(RstStatus.FLOW_CONTROL_ERROR)

    def _handle_ping(self, frame: PingFrame) -> None:
        ours = (frame.id & 1) == (0 if self.server else 1)
        if not ours:
            self._echo_ping(frame)
            return
        with self._ping_lock:
            pending = self._pings.get(frame.id)
        if pending is not None:
            pending.answered = True
            pending.event.set()

    def _echo_ping(self, frame: PingFrame) -> None:
        with contextlib.suppress(SpdyError):
            self._send_frame(frame)

    def _handle_goaway(self, frame: GoAwayFrame) -> None:
        self._peer_last_good = frame.last_good_stream_id
        self.goaway_received.set()
        with self._streams_lock:
            refused = [
                s for s in self._streams.values() if s.local and s.id > frame.last_good_stream_id
            ]
        for stream in refused:  # the peer never saw these
            stream._mark_reset(RstStatus.REFUSED_STREAM, by_peer=True)
        self._close_if_done()

    def _ping_loop(self, interval: float) -> None:
        while not self.closed.wait(interval):
            try:
                self.ping(timeout=interval)
            except SpdyError as exc:
                log.debug("%s: keep-alive PING failed: %s", self.name, exc)

    # ---- shutdown

    def _shutdown(self, reason: str, *, linger: float = 0.0) -> None:
        """Mark the connection closed and wake every waiter.

        With ``linger`` the socket is only shut for writing: the peer reads everything we
        sent and then EOF, while the reader thread drains (and ignores) what still comes, so
        that closing the socket with unread input does not turn into a TCP reset that could
        destroy data the peer has not read yet. After ``linger`` seconds without the peer's
        EOF the reading side is shut too. Without ``linger`` both directions shut at once.
        """
        with self._shutdown_lock:
            if self._shutting_down:
                return
            self._shutting_down = True
            self.close_reason = reason
        log.debug("%s: closing: %s", self.name, reason)
        self.closed.set()
        if linger > 0:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_WR)
            timer = threading.Timer(linger, self._stop_lingering)
            timer.daemon = True
            self._linger_timer = timer
            timer.start()
        else:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
        with self._streams_lock:
            streams = list(self._streams.values())
        for stream in streams:
            stream._wake()
        with self._flow:
            self._flow.notify_all()
        with self._ping_lock:
            pings = list(self._pings.values())
        for pending in pings:
            pending.event.set()
        self.incoming.put(None)

    def _stop_lingering(self) -> None:
        with contextlib.suppress(OSError):  # the reader may have closed the socket already
            self._sock.shutdown(socket.SHUT_RD)


# ------------------------------------------------------------------------- HTTP upgrade


def server_upgrade_response(protocol_version: str) -> bytes:
    """The ``101 Switching Protocols`` answer to a Kubernetes SPDY upgrade request."""
    return (
        "HTTP/1.1 101 Switching Protocols\r\n"
        "Connection: Upgrade\r\n"
        f"Upgrade: {UPGRADE_PROTOCOL}\r\n"
        f"X-Stream-Protocol-Version: {protocol_version}\r\n"
        "\r\n"
    ).encode("latin-1")


def client_upgrade_request(
    path: str,
    host: str,
    protocols: Sequence[str],
    *,
    method: str = "POST",
    extra_headers: Mapping[str, str] | None = None,
) -> bytes:
    """An upgrade request like client-go's: one ``X-Stream-Protocol-Version`` line per
    protocol, most preferred first (client-go uses POST for exec, attach and port-forward)."""
    lines = [
        f"{method} {path} HTTP/1.1",
        f"Host: {host}",
        "Connection: Upgrade",
        f"Upgrade: {UPGRADE_PROTOCOL}",
    ]
    lines += [f"X-Stream-Protocol-Version: {p}" for p in protocols]
    lines += [f"{k}: {v}" for k, v in (extra_headers or {}).items()]
    if method.upper() in ("POST", "PUT"):
        lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def read_http_response_head(
    sock: socket.socket, *, max_size: int = 64 * 1024
) -> tuple[int, dict[str, str]]:
    """Read an HTTP/1.x response head, and not one byte more (SPDY frames may follow).

    Returns the status code and the headers (lowercase names; repeated ones joined by ", ").
    """
    buf = bytearray()
    while True:
        peek = sock.recv(4096, socket.MSG_PEEK)
        if not peek:
            raise SpdyError("connection closed before the HTTP response head")
        keep = min(3, len(buf))
        window = bytes(buf[len(buf) - keep :]) + peek
        end = window.find(b"\r\n\r\n")
        take = len(peek) if end < 0 else end + 4 - keep
        while take:
            chunk = sock.recv(take)
            if not chunk:
                raise SpdyError("connection closed before the HTTP response head")
            buf += chunk
            take -= len(chunk)
        if end >= 0:
            break
        if len(buf) > max_size:
            raise SpdyError("HTTP response head too large")
    text = bytes(buf[:-4]).decode("latin-1")
    status_line, *header_lines = text.split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise SpdyError(f"malformed HTTP status line {status_line!r}")
    headers: dict[str, str] = {}
    for line in header_lines:
        name, sep, value = line.partition(":")
        if not sep:
            raise SpdyError(f"malformed HTTP header line {line!r}")
        key = name.strip().lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return int(parts[1]), headers
