"""SPDY/3.1: framing, header compression, and whole conversations over real sockets."""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from criadapt.streaming import spdy
from criadapt.streaming.spdy import (
    DICTIONARY,
    DICTIONARY_ID,
    FLAG_FIN,
    FLAG_UNIDIRECTIONAL,
    DataFrame,
    Frame,
    FrameDecoder,
    FrameEncoder,
    FrameHead,
    GoAwayFrame,
    GoAwayStatus,
    HeaderCompressor,
    HeaderDecompressor,
    Headers,
    HeadersFrame,
    PingFrame,
    RstStatus,
    RstStreamFrame,
    Setting,
    SettingsFrame,
    SettingsId,
    SpdyConnection,
    SpdyConnectionClosed,
    SpdyError,
    SpdyProtocolError,
    SpdyStream,
    SpdyStreamReset,
    SynReplyFrame,
    SynStreamFrame,
    UnknownControlFrame,
    WindowUpdateFrame,
    client_upgrade_request,
    decode_header_block,
    encode_header_block,
    read_http_response_head,
    server_upgrade_response,
)

KIB = 1024
MIB = 1024 * 1024


def wait_until(pred: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.005)
    return pred()


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    return server, client


@pytest.fixture
def make_pair() -> Iterator[Callable[..., tuple[SpdyConnection, SpdyConnection]]]:
    """Build (server, client) connections over a socketpair; closes them afterwards."""
    made: list[SpdyConnection] = []

    def make(
        transport: str = "socketpair",
        server_kw: dict[str, Any] | None = None,
        client_kw: dict[str, Any] | None = None,
    ) -> tuple[SpdyConnection, SpdyConnection]:
        a, b = socket.socketpair() if transport == "socketpair" else tcp_pair()
        server = SpdyConnection(a, server=True, **(server_kw or {}))
        client = SpdyConnection(b, server=False, **(client_kw or {}))
        made.extend((server, client))
        return server, client

    yield make
    for conn in made:
        conn.close()


def open_pair(
    server: SpdyConnection, client: SpdyConnection, headers: dict[str, str] | None = None
) -> tuple[SpdyStream, SpdyStream]:
    """Client opens a stream, server accepts and replies: (client side, server side)."""
    cs = client.open_stream(headers or {"streamType": "data"})
    ss = server.accept(5)
    assert ss is not None
    ss.reply()
    cs.wait_reply(5)
    return cs, ss


def read_exactly(stream: SpdyStream, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = stream.read(n - len(out))
        assert chunk, f"EOF after {len(out)} of {n} bytes"
        out += chunk
    return bytes(out)


class RawPeer:
    """A hand-driven SPDY peer on a raw socket (it does exactly what the test tells it to).

    Like moby/spdystream it never sends SETTINGS or WINDOW_UPDATE unless told to; it echoes
    PINGs that are not its own when ``echo_pings``.
    """

    def __init__(self, sock: socket.socket, *, server: bool, echo_pings: bool = True) -> None:
        self.sock = sock
        self.server = server
        self.echo_pings = echo_pings
        self.encoder = FrameEncoder()
        self.decoder = FrameDecoder()
        self.frames: queue.Queue[Frame | None] = queue.Queue()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            while data := self.sock.recv(256 * KIB):
                for frame in self.decoder.feed(data):
                    if isinstance(frame, PingFrame) and self.echo_pings:
                        ours = (frame.id & 1) == (0 if self.server else 1)
                        if not ours:
                            self.send(frame)
                    self.frames.put(frame)
        except OSError:
            pass
        self.frames.put(None)

    def send(self, frame: Frame) -> None:
        with self._lock:
            self.sock.sendall(self.encoder.encode(frame))

    def send_raw(self, data: bytes) -> None:
        with self._lock:
            self.sock.sendall(data)

    def expect(self, kind: type[Any], timeout: float = 5.0) -> Any:
        """The next frame of type ``kind`` (others are skipped); None means EOF."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self.frames.get(timeout=max(0.0, deadline - time.monotonic()))
            if frame is None:
                if kind is type(None):
                    return None
                raise AssertionError(f"EOF while waiting for {kind.__name__}")
            if isinstance(frame, kind):
                return frame

    def kill(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


@pytest.fixture
def raw_pair() -> Iterator[Callable[..., tuple[SpdyConnection, RawPeer]]]:
    """(our connection, raw peer); ``ours_server`` picks our role."""
    made: list[tuple[SpdyConnection, RawPeer]] = []

    def make(
        *, ours_server: bool = False, transport: str = "socketpair", **kw: Any
    ) -> tuple[SpdyConnection, RawPeer]:
        a, b = socket.socketpair() if transport == "socketpair" else tcp_pair()
        echo = kw.pop("echo_pings", True)
        ours = SpdyConnection(a, server=ours_server, **kw)
        peer = RawPeer(b, server=not ours_server, echo_pings=echo)
        made.append((ours, peer))
        return ours, peer

    yield make
    for ours, peer in made:
        ours.close()
        with contextlib.suppress(OSError):
            peer.kill()


# ------------------------------------------------------------------------- dictionary


def test_dictionary_is_the_spdy3_dictionary() -> None:
    assert len(DICTIONARY) == 1423
    assert zlib.adler32(DICTIONARY) == DICTIONARY_ID == 0xE3C6A7C2
    assert DICTIONARY.startswith(b"\x00\x00\x00\x07options\x00\x00\x00\x04head")
    assert b"\x00\x00\x00\x06origin100101201" in DICTIONARY
    assert DICTIONARY.endswith(b"charset=iso-8859-1,utf-,*,enq=0.")


# A SYN_STREAM captured from Firefox (SPDY/3.1), from the test suite of facebook/proxygen
# (SPDYCodecTest "synStream"): the frame head, the fixed fields and the start of the
# compressed header block. Its zlib header names the dictionary by its Adler-32.
FIREFOX_SYN_STREAM_PREFIX = bytes.fromhex(
    "80030001 0100041a 00000001 00000000 0000"  # head, stream 1, assoc 0, priority, slot
    "38eae3c6 a7c2"  # zlib header: FDICT + the dictionary's Adler-32
    "0265 575022b4 c29e20d9 ad10a9d9 dd350494 f1aca045 871430ed eb25a615 65e6a5e8"
    "1527e9a5 018be924 6042d54b 061730ec 56c5c0a2 33175cbe 66949414 1483b516"
    "24828b3b 6e80"
)


def test_known_vector_from_a_real_spdy3_client_decompresses() -> None:
    head = FrameHead.parse(FIREFOX_SYN_STREAM_PREFIX[:8])
    assert (head.control, head.version, head.type, head.flags, head.length) == (
        True,
        3,
        1,
        FLAG_FIN,
        0x41A,
    )
    stream_id, assoc, priority, _slot = struct.unpack_from(">IIBB", FIREFOX_SYN_STREAM_PREFIX, 8)
    assert (stream_id, assoc, priority >> 5) == (1, 0, 0)
    block = FIREFOX_SYN_STREAM_PREFIX[18:]
    assert block[0] & 0x0F == 8 and block[1] & 0x20  # deflate, FDICT set
    assert struct.unpack_from(">I", block, 2)[0] == DICTIONARY_ID
    with pytest.raises(zlib.error):
        zlib.decompressobj().decompress(block)  # needs the dictionary
    out = zlib.decompressobj(zdict=DICTIONARY).decompress(block)
    assert out.startswith(
        b"\x00\x00\x00\x0d"
        b"\x00\x00\x00\x08:version\x00\x00\x00\x08HTTP/1.1"
        b"\x00\x00\x00\x07:method\x00\x00\x00\x03GET"
        b"\x00\x00\x00\x05:host\x00\x00\x00\x1awww.afrind.sb.facebook.com"
    )


# ---------------------------------------------------------------------------- headers


def test_headers_mapping() -> None:
    h = Headers({"StreamType": "stdin", "streamtype": ["x"], "Port": ["80", "8080"]})
    assert h.get("streamType") == "stdin"
    assert h.get_all("STREAMTYPE") == ["stdin", "x"]
    assert h["port"] == ["80", "8080"]
    assert "Port" in h and "nope" not in h and 5 not in h
    assert h.get("missing") == "" and h.get("missing", "d") == "d"
    assert sorted(h) == ["port", "streamtype"] and len(h) == 2
    assert h.to_dict() == {"streamtype": ["stdin", "x"], "port": ["80", "8080"]}
    assert Headers(h) == h and Headers() == Headers(None)
    h.add("Port", "9")
    h.set("NEW", "v")
    assert h.get_all("port")[-1] == "9" and h["new"] == ["v"]


def test_header_block_format_and_round_trip() -> None:
    h = Headers({"streamType": "stdout", "multi": ["a", "", "c"], "empty": []})
    raw = encode_header_block(h)
    assert raw == (
        b"\x00\x00\x00\x03"
        b"\x00\x00\x00\x0astreamtype\x00\x00\x00\x06stdout"
        b"\x00\x00\x00\x05multi\x00\x00\x00\x04a\x00\x00c"
        b"\x00\x00\x00\x05empty\x00\x00\x00\x00"
    )
    back = decode_header_block(raw)
    assert back.to_dict() == {"streamtype": ["stdout"], "multi": ["a", "", "c"], "empty": [""]}
    assert decode_header_block(encode_header_block(Headers())) == Headers()
    unicode = Headers({"x-name": "héllo wörld"})
    assert decode_header_block(encode_header_block(unicode)) == unicode


@pytest.mark.parametrize(
    "block",
    [
        b"",
        b"\x00\x00",
        b"\x00\x00\x00\x01",  # one pair announced, none there
        b"\x00\x00\x00\x01\x00\x00\x00\x05ab",  # truncated name
        b"\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00",  # empty name
        b"\x00\x00\x00\x01\x00\x00\x00\x01a\x00\x00\x00\x09b",  # truncated value
        b"\x00\x00\x00\x00junk",  # stray bytes
        b"\xff\xff\xff\xff" + b"\x00" * 64,  # absurd count
    ],
)
def test_malformed_header_blocks(block: bytes) -> None:
    with pytest.raises(SpdyProtocolError):
        decode_header_block(block)


def test_unencodable_headers() -> None:
    with pytest.raises(ValueError):
        encode_header_block(Headers({"": "x"}))
    with pytest.raises(ValueError):
        encode_header_block(Headers({"a": "b\x00c"}))


def test_header_compression_uses_the_dictionary_and_sync_flush() -> None:
    comp = HeaderCompressor()
    h1 = Headers({"streamtype": "stdin", ":method": "POST", "content-type": "text/plain"})
    h2 = Headers({"streamtype": "stdout", ":method": "POST", "content-type": "text/plain"})
    b1, b2 = comp.compress(h1), comp.compress(h2)
    # zlib header: deflate, FDICT, then the dictionary's Adler-32
    assert b1[0] & 0x0F == 8 and (b1[0] * 256 + b1[1]) % 31 == 0 and b1[1] & 0x20
    assert struct.unpack_from(">I", b1, 2)[0] == DICTIONARY_ID
    assert b1.endswith(b"\x00\x00\xff\xff") and b2.endswith(b"\x00\x00\xff\xff")
    assert len(b2) < len(b1)  # the second block refers back into the first
    # a fresh zlib decompressor with the dictionary (what every peer has) reads both
    plain = zlib.decompressobj(zdict=DICTIONARY)
    assert plain.decompress(b1) == encode_header_block(h1)
    assert plain.decompress(b2) == encode_header_block(h2)
    # and so does ours, block by block
    ours = HeaderDecompressor()
    assert ours.decompress(b1) == h1
    assert ours.decompress(b2) == h2
    # without the dictionary the first block cannot be read
    with pytest.raises(zlib.error, match="Error 2 "):  # Z_NEED_DICT
        zlib.decompressobj().decompress(b1)


def test_header_decompressor_rejects_wrong_dictionary_garbage_and_bombs() -> None:
    other = zlib.compressobj(zdict=b"not the spdy dictionary")
    block = other.compress(encode_header_block(Headers({"a": "b"}))) + other.flush(
        zlib.Z_SYNC_FLUSH
    )
    with pytest.raises(SpdyProtocolError):
        HeaderDecompressor().decompress(block)
    with pytest.raises(SpdyProtocolError):
        HeaderDecompressor().decompress(b"\x78\xbb garbage")
    big = HeaderCompressor().compress(Headers({"x": "y" * 5000}))
    with pytest.raises(SpdyProtocolError, match="larger"):
        HeaderDecompressor(max_size=1000).decompress(big)


# ----------------------------------------------------------------------------- frames

ALL_FRAMES: list[Frame] = [
    SynStreamFrame(
        1,
        {"streamtype": "stdin", "x-multi": ["a", "b"]},
        associated_to=0,
        priority=3,
        slot=2,
        flags=FLAG_FIN | FLAG_UNIDIRECTIONAL,
    ),
    SynStreamFrame(spdy.MAX_STREAM_ID, associated_to=7),
    SynReplyFrame(1, {"x-reply": "ok"}, flags=FLAG_FIN),
    SynReplyFrame(2),
    RstStreamFrame(5, RstStatus.CANCEL),
    RstStreamFrame(7, 999),
    SettingsFrame(
        (
            Setting(SettingsId.INITIAL_WINDOW_SIZE, 65536, spdy.SETTINGS_FLAG_PERSIST_VALUE),
            Setting(SettingsId.MAX_CONCURRENT_STREAMS, 100),
        ),
        flags=spdy.FLAG_SETTINGS_CLEAR_SETTINGS,
    ),
    SettingsFrame(),
    PingFrame(1),
    PingFrame(0xFFFFFFFF),
    GoAwayFrame(7, GoAwayStatus.PROTOCOL_ERROR),
    GoAwayFrame(0),
    HeadersFrame(3, {"x-late": "1"}, flags=FLAG_FIN),
    WindowUpdateFrame(0, 1),
    WindowUpdateFrame(3, spdy.MAX_WINDOW),
    DataFrame(1, b"hello", FLAG_FIN),
    DataFrame(2, b""),
    DataFrame(spdy.MAX_STREAM_ID, bytes(range(256)) * 300),
    UnknownControlFrame(10, 0, b"\x00\x01credential"),
]


@pytest.mark.parametrize("frame", ALL_FRAMES, ids=lambda f: type(f).__name__)
def test_frame_round_trip(frame: Frame) -> None:
    wire = FrameEncoder().encode(frame)
    head = FrameHead.parse(wire[:8])
    assert head.length == len(wire) - 8
    assert head.control is not isinstance(frame, DataFrame)
    assert FrameDecoder().feed(wire) == [frame]


def test_frame_sequence_round_trip_byte_by_byte() -> None:
    encoder, decoder = FrameEncoder(), FrameDecoder()
    wire = b"".join(encoder.encode(f) for f in ALL_FRAMES * 2)  # shared zlib context
    decoded: list[Frame] = []
    for i in range(len(wire)):
        decoded += decoder.feed(wire[i : i + 1])
    assert decoded == ALL_FRAMES * 2


def test_exact_wire_bytes() -> None:
    enc = FrameEncoder()
    hx = bytes.fromhex
    assert enc.encode(RstStreamFrame(5, RstStatus.CANCEL)) == hx(
        "8003000300000008 00000005 00000005"
    )
    assert enc.encode(DataFrame(1, b"hi", FLAG_FIN)) == hx("0000000101000002") + b"hi"
    assert enc.encode(PingFrame(11)) == hx("8003000600000004 0000000b")
    assert enc.encode(WindowUpdateFrame(0, 65536)) == hx("8003000900000008 00000000 00010000")
    assert enc.encode(GoAwayFrame(3)) == hx("8003000700000008 00000003 00000000")
    settings = SettingsFrame((Setting(SettingsId.INITIAL_WINDOW_SIZE, 65536, 1),))
    assert enc.encode(settings) == hx("800300040000000c 00000001 01000007 00010000")
    syn = enc.encode(SynStreamFrame(1, {"a": "b"}, priority=7, flags=FLAG_FIN))
    assert syn[:5] == hx("8003000101")
    assert syn[8:18] == hx("00000001 00000000 e000")
    assert struct.unpack_from(">I", syn, 20)[0] == DICTIONARY_ID


@pytest.mark.parametrize(
    "wire",
    [
        bytes.fromhex("8002000300000008 00000001 00000005"),  # SPDY/2
        bytes.fromhex("8003000300000004 00000001"),  # RST_STREAM too short
        bytes.fromhex("8003000300000008 00000000 00000005"),  # RST_STREAM on stream 0
        bytes.fromhex("8003000300000008 00000001 00000000"),  # RST_STREAM status 0
        bytes.fromhex("8003000600000008 00000001 00000001"),  # PING of 8 bytes
        bytes.fromhex("8003000700000004 00000001"),  # GOAWAY of 4 bytes
        bytes.fromhex("8003000900000008 00000001 00000000"),  # WINDOW_UPDATE delta 0
        bytes.fromhex("800300040000000c 00000002 00000007 00010000"),  # SETTINGS count
        bytes.fromhex("8003000100000004 00000001"),  # SYN_STREAM too short
        bytes.fromhex("800300020000000a 00000001 78bb0000ffff"),  # SYN_REPLY bad zlib
        bytes.fromhex("0000000000000001 00"),  # DATA on stream 0
    ],
)
def test_decoder_rejects_malformed_frames(wire: bytes) -> None:
    with pytest.raises(SpdyProtocolError):
        FrameDecoder().feed(wire)


# ------------------------------------------------------------------- HTTP upgrade helpers


def test_upgrade_messages() -> None:
    assert server_upgrade_response("v4.channel.k8s.io") == (
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
        b"X-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n"
    )
    req = client_upgrade_request("/exec/AbCdEfGh", "127.0.0.1:1234", ["v4.channel.k8s.io", "a"])
    lines = req.decode().split("\r\n")
    assert lines[0] == "POST /exec/AbCdEfGh HTTP/1.1"
    assert "Host: 127.0.0.1:1234" in lines and "Upgrade: SPDY/3.1" in lines
    assert "Connection: Upgrade" in lines and "Content-Length: 0" in lines
    assert [ln for ln in lines if ln.startswith("X-Stream-Protocol-Version")] == [
        "X-Stream-Protocol-Version: v4.channel.k8s.io",
        "X-Stream-Protocol-Version: a",
    ]
    assert req.endswith(b"\r\n\r\n")
    get = client_upgrade_request("/portforward/x", "h", ["portforward.k8s.io"], method="GET")
    assert get.startswith(b"GET ") and b"Content-Length" not in get


def test_read_http_response_head_reads_no_further() -> None:
    a, b = socket.socketpair()
    with a, b:
        a.sendall(server_upgrade_response("v4.channel.k8s.io") + b"\x80\x03SPDY")
        status, headers = read_http_response_head(b)
        assert status == 101
        assert headers == {
            "connection": "Upgrade",
            "upgrade": "SPDY/3.1",
            "x-stream-protocol-version": "v4.channel.k8s.io",
        }
        assert b.recv(100) == b"\x80\x03SPDY"

        def drip() -> None:
            for byte in b"HTTP/1.1 403 Forbidden\r\nA: 1\r\na: 2\r\n\r\nrest":
                a.send(bytes([byte]))
                time.sleep(0.001)

        t = threading.Thread(target=drip)
        t.start()
        assert read_http_response_head(b) == (403, {"a": "1, 2"})
        t.join()
        assert b.recv(4) == b"rest"
        a.sendall(b"garbage\r\n\r\n")
        with pytest.raises(SpdyError):
            read_http_response_head(b)
        a.close()
        with pytest.raises(SpdyError):
            read_http_response_head(b)


def test_full_upgrade_then_spdy() -> None:
    a, b = socket.socketpair()
    b.sendall(client_upgrade_request("/exec/tok", "localhost", ["v4.channel.k8s.io"]))
    request = b""
    while not request.endswith(b"\r\n\r\n"):
        request += a.recv(1)
    assert b"X-Stream-Protocol-Version: v4.channel.k8s.io" in request
    a.sendall(server_upgrade_response("v4.channel.k8s.io"))
    server = SpdyConnection(a, server=True, initial_window=16 * KIB)  # SETTINGS follow at once
    # a careless client reads the head and the first SPDY bytes in one go ...
    assert wait_until(lambda: len(b.recv(65536, socket.MSG_PEEK)) > 100)
    data = b.recv(65536)
    head, _, leftover = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101") and leftover[:2] == b"\x80\x03"
    # ... and hands the rest to the connection
    client = SpdyConnection(b, server=False, initial_data=leftover)
    try:
        assert wait_until(lambda: client.peer_flow_control is True)  # the SETTINGS arrived
        cs, ss = open_pair(server, client, {"streamType": "stdout"})
        assert ss.headers.get("streamtype") == "stdout"
        ss.write(b"hello")
        ss.close()
        assert cs.readall() == b"hello"
    finally:
        client.close()
        server.close()


# ---------------------------------------------------------------------- conversations


def test_exec_like_conversation(make_pair: Any) -> None:
    server, client = make_pair()
    kinds = ["error", "stdin", "stdout", "stderr", "resize"]
    cstreams = {k: client.open_stream({"streamType": k}) for k in kinds}
    assert [s.id for s in cstreams.values()] == [1, 3, 5, 7, 9]
    sstreams = {}
    for k in kinds:
        s = server.accept(5)
        assert s is not None and not s.local
        assert s.headers.get("streamtype") == k and s.headers["streamType"] == [k]
        sstreams[k] = s
        s.reply()
    for s in cstreams.values():
        assert s.wait_reply(5) == Headers()
        assert s.replied
    assert server.accept(0.05) is None  # nothing else is coming

    # stdin: client -> server, then half-close
    cstreams["stdin"].write(b"echo hi\n")
    cstreams["stdin"].write(bytearray(b"more"))
    cstreams["stdin"].write(memoryview(b"xx data yy")[3:7])
    cstreams["stdin"].close()
    assert sstreams["stdin"].readall() == b"echo hi\nmoredata"
    assert sstreams["stdin"].remote_closed
    with pytest.raises(SpdyError, match="closed for writing"):
        cstreams["stdin"].write(b"late")

    # resize events
    cstreams["resize"].write(b'{"Width":80,"Height":24}')
    assert sstreams["resize"].read() == b'{"Width":80,"Height":24}'

    # stdout / stderr: server -> client
    sstreams["stdout"].write(b"hi\n")
    sstreams["stderr"].write(b"oops\n")
    for k in ("stdout", "stderr"):
        sstreams[k].close()
    assert cstreams["stdout"].readall() == b"hi\n"
    assert cstreams["stderr"].readall() == b"oops\n"

    # the status goes on the error stream, then everything closes
    sstreams["error"].write(b'{"status":"Success"}')
    sstreams["error"].close()
    assert cstreams["error"].readall() == b'{"status":"Success"}'
    for k in ("error", "stdin", "resize", "stdout", "stderr"):
        cstreams[k].close()
    sstreams["stdin"].close()
    sstreams["resize"].close()
    for s in [*cstreams.values(), *sstreams.values()]:
        assert s.wait_closed(5), s
    assert wait_until(lambda: server.active_streams == 0 and client.active_streams == 0)


def test_half_close_is_per_direction(make_pair: Any) -> None:
    server, client = make_pair()
    cs, ss = open_pair(server, client)
    cs.write(b"question")
    cs.close()
    assert ss.readall() == b"question"
    assert ss.read() == b"" and ss.remote_closed and not ss.closed
    ss.write(b"answer")  # the other direction is still open
    ss.close()
    assert cs.readall() == b"answer"
    assert cs.wait_closed(5) and ss.wait_closed(5)
    cs.close()  # idempotent


def test_read_sizes(make_pair: Any) -> None:
    server, client = make_pair()
    cs, ss = open_pair(server, client)
    for piece in (b"abc", b"defgh", b"ij"):
        cs.write(piece)
    assert wait_until(lambda: ss.buffered == 10)
    assert ss.read(0) == b""
    assert ss.read(2) == b"ab"
    assert ss.read(4) == b"cdef"  # spans chunks
    assert ss.read(1) == b"g"
    assert ss.read() == b"hij"
    assert ss.buffered == 0


def test_fin_and_unidirectional_on_open(make_pair: Any) -> None:
    server, client = make_pair()
    cs = client.open_stream({"streamType": "error"}, fin=True)
    ss = server.accept(5)
    assert ss is not None and ss.remote_closed
    ss.reply()
    assert ss.read() == b""
    ss.write(b"only this way")
    ss.close()
    assert cs.readall() == b"only this way"

    cu = client.open_stream({"streamType": "push"}, unidirectional=True)
    su = server.accept(5)
    assert su is not None and su.local_closed
    with pytest.raises(SpdyError):
        su.write(b"not allowed")
    su.reply()
    assert cu.read() == b""  # nothing may come back
    cu.write(b"one way")
    cu.close()
    assert su.readall() == b"one way"


def test_reply_rules_and_late_headers(make_pair: Any) -> None:
    server, client = make_pair()
    with pytest.raises(ValueError):
        client.open_stream({"": "empty names cannot be sent"})
    cs = client.open_stream({"a": "1"})
    assert cs.id == 1  # the failed attempt used no id
    ss = server.accept(5)
    assert ss is not None
    with pytest.raises(ValueError):
        client.reply(cs)
    with pytest.raises(ValueError):
        ss.reply({"x": "nul\x00inside"})
    server.reply(ss, {"X-Reply": ["r1", "r2"]})
    with pytest.raises(SpdyError, match="already replied"):
        ss.reply()
    assert cs.wait_reply(5).get_all("x-reply") == ["r1", "r2"]
    cs.send_headers({"X-Late": "yes"})
    assert wait_until(lambda: ss.late_headers.get("x-late") == "yes")
    ss.send_headers({"x-trailer": "t"}, fin=True)
    assert cs.read() == b""
    assert cs.late_headers.get("x-trailer") == "t" and cs.remote_closed


def test_callback_mode(make_pair: Any) -> None:
    got: list[SpdyStream] = []

    def on_stream(stream: SpdyStream) -> None:
        got.append(stream)
        stream.reply({"accepted": "yes"})
        if stream.headers.get("streamtype") == "bad":
            raise RuntimeError("handler bug")

    server, client = make_pair(server_kw={"on_stream": on_stream})
    cs = client.open_stream({"streamType": "ok"})
    assert cs.wait_reply(5).get("accepted") == "yes"
    bad = client.open_stream({"streamType": "bad"})
    assert wait_until(lambda: bad.is_reset)
    assert bad.reset_status == RstStatus.INTERNAL_ERROR and bad.reset_by_peer
    assert [s.id for s in got] == [1, 3]
    assert server.accept(0.05) is None


# ----------------------------------------------------------------------------- resets


def test_reset_by_peer_unblocks_reader_and_fails_writer(make_pair: Any) -> None:
    server, client = make_pair()
    cs, ss = open_pair(server, client)
    results: queue.Queue[bytes] = queue.Queue()
    reader = threading.Thread(target=lambda: results.put(ss.read()))
    reader.start()
    time.sleep(0.05)
    cs.reset()
    reader.join(5)
    assert results.get(timeout=1) == b""
    assert wait_until(lambda: ss.is_reset)
    assert ss.reset_by_peer and ss.reset_status == RstStatus.CANCEL and ss.closed
    with pytest.raises(SpdyStreamReset) as info:
        ss.write(b"x")
    assert info.value.by_peer and info.value.status == RstStatus.CANCEL
    with pytest.raises(SpdyStreamReset) as info:
        cs.write(b"x")
    assert not info.value.by_peer
    assert cs.read() == b""
    cs.reset()  # idempotent


def test_data_before_peer_reset_stays_readable(make_pair: Any) -> None:
    server, client = make_pair()
    cs, ss = open_pair(server, client)
    cs.write(b"last words")
    cs.reset(RstStatus.INTERNAL_ERROR)
    assert wait_until(lambda: ss.is_reset)
    assert ss.readall() == b"last words"
    assert ss.reset_status == RstStatus.INTERNAL_ERROR


def test_reset_wakes_flow_blocked_writers_and_returns_the_session_window(make_pair: Any) -> None:
    small = {"initial_window": 64 * KIB, "session_window": spdy.DEFAULT_WINDOW}
    server, client = make_pair(server_kw=small)
    errors: queue.Queue[BaseException] = queue.Queue()

    def write_all(stream: SpdyStream) -> None:
        try:
            stream.write(os.urandom(MIB))
        except SpdyError as exc:
            errors.put(exc)

    # the peer resets while our writer waits for window (64 KiB buffered, then discarded)
    cs, ss = open_pair(server, client)
    t = threading.Thread(target=write_all, args=(cs,))
    t.start()
    assert wait_until(lambda: ss.buffered == 64 * KIB)
    time.sleep(0.05)
    assert t.is_alive()
    ss.reset()
    t.join(5)
    exc = errors.get(timeout=1)
    assert isinstance(exc, SpdyStreamReset) and exc.by_peer

    # we reset while our own writer waits (64 KiB stay buffered, never read, at the server)
    cs, ss = open_pair(server, client)
    t = threading.Thread(target=write_all, args=(cs,))
    t.start()
    assert wait_until(lambda: ss.buffered == 64 * KIB)
    cs.reset()
    t.join(5)
    exc = errors.get(timeout=1)
    assert isinstance(exc, SpdyStreamReset) and not exc.by_peer
    assert wait_until(lambda: ss.is_reset) and ss.buffered == 64 * KIB

    # both times the whole 64 KiB session window was credited back, or this would hang
    cs, ss = open_pair(server, client)
    payload = os.urandom(2 * MIB)
    received: list[bytes] = []

    def send() -> None:
        cs.write(payload)
        cs.close()

    threads = [
        threading.Thread(target=send),
        threading.Thread(target=lambda: received.append(ss.readall())),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
        assert not t.is_alive(), "session window leaked"
    assert received == [payload]


# ----------------------------------------------------------------------- flow control


def test_flow_control_blocks_writer_until_window_updates(make_pair: Any) -> None:
    # the receiver advertises 16 KiB per stream with SETTINGS_INITIAL_WINDOW_SIZE
    server, client = make_pair(server_kw={"initial_window": 16 * KIB})
    cs, ss = open_pair(server, client)
    assert client.peer_flow_control is True and server.peer_flow_control is True
    payload = os.urandom(MIB)
    done = threading.Event()

    def writer() -> None:
        cs.write(payload)
        cs.close()
        done.set()

    t = threading.Thread(target=writer)
    t.start()
    assert wait_until(lambda: ss.buffered == 16 * KIB)
    time.sleep(0.2)
    assert not done.is_set(), "the writer must wait for WINDOW_UPDATE"
    assert ss.buffered == 16 * KIB
    received = bytearray()
    max_buffered = 0
    while chunk := ss.read(4 * KIB):
        received += chunk
        max_buffered = max(max_buffered, ss.buffered)
        if len(received) % (64 * KIB) == 0:
            time.sleep(0.001)  # a slow reader
    t.join(5)
    assert done.is_set()
    assert bytes(received) == payload
    assert max_buffered <= 16 * KIB


def test_session_window_limits_all_streams(make_pair: Any) -> None:
    # big stream windows, but a 64 KiB session window: the session window must be honoured
    server, client = make_pair(
        server_kw={"initial_window": MIB, "session_window": spdy.DEFAULT_WINDOW}
    )
    pairs = [open_pair(server, client) for _ in range(3)]
    payloads = [os.urandom(256 * KIB) for _ in pairs]
    writers = [
        threading.Thread(target=cs.write, args=(data,))
        for (cs, _), data in zip(pairs, payloads, strict=True)
    ]
    for t in writers:
        t.start()
    assert wait_until(lambda: sum(ss.buffered for _, ss in pairs) == spdy.DEFAULT_WINDOW)
    time.sleep(0.2)
    assert sum(ss.buffered for _, ss in pairs) == spdy.DEFAULT_WINDOW
    # Read the streams concurrently: a reader that waited for one stream while the others
    # hold the whole session window would wait forever (as in HTTP/2).
    received: dict[int, bytes] = {}
    readers = [
        threading.Thread(
            target=lambda i=i, ss=ss: received.update({i: read_exactly(ss, 256 * KIB)})
        )
        for i, (_, ss) in enumerate(pairs)
    ]
    for t in readers:
        t.start()
    for t in readers + writers:
        t.join(10)
        assert not t.is_alive()
    assert [received[i] for i in range(3)] == payloads


def test_peer_without_flow_control_is_detected(raw_pair: Any) -> None:
    """Like moby/spdystream: no SETTINGS, no WINDOW_UPDATE, but PINGs are echoed."""
    ours, peer = raw_pair(ours_server=True)
    peer.send(SynStreamFrame(1, {"streamType": "stdout"}))
    ss = ours.accept(5)
    assert ss is not None
    ss.reply()
    reply = peer.expect(SynReplyFrame)
    assert reply.stream_id == 1 and reply.headers == Headers()
    payload = os.urandom(MIB)
    ss.write(payload)  # far beyond the 64 KiB default window
    ss.close()
    assert ours.peer_flow_control is False
    received = bytearray()
    while True:
        frame = peer.expect(DataFrame)
        assert frame.stream_id == 1 and len(frame.data) <= spdy.MAX_DATA_CHUNK
        received += frame.data
        if frame.flags & FLAG_FIN:
            break
    assert bytes(received) == payload


def test_peer_without_flow_control_gets_tcp_backpressure(raw_pair: Any) -> None:
    ours, peer = raw_pair(ours_server=True)
    peer.send(SynStreamFrame(1, {"streamType": "stdin"}))
    ss = ours.accept(5)
    assert ss is not None
    ss.reply()
    payload = os.urandom(3 * MIB)

    def flood() -> None:  # ignores our windows entirely
        for i in range(0, len(payload), 64 * KIB):
            peer.send(DataFrame(1, payload[i : i + 64 * KIB]))
        peer.send(DataFrame(1, b"", FLAG_FIN))

    t = threading.Thread(target=flood)
    t.start()
    assert wait_until(lambda: ss.buffered >= spdy.UNCONTROLLED_BUFFER_LIMIT)
    time.sleep(0.2)
    assert not ss.is_reset  # no FLOW_CONTROL_ERROR for a peer that never claimed flow control
    assert (
        spdy.UNCONTROLLED_BUFFER_LIMIT <= ss.buffered <= spdy.UNCONTROLLED_BUFFER_LIMIT + 64 * KIB
    )
    assert ss.readall() == payload
    t.join(5)


def test_flow_controlled_peer_overrunning_a_window_is_reset(raw_pair: Any) -> None:
    ours, peer = raw_pair(ours_server=True, initial_window=64 * KIB)
    peer.send(SettingsFrame((Setting(SettingsId.INITIAL_WINDOW_SIZE, 64 * KIB),)))
    peer.send(SynStreamFrame(1, {"streamType": "stdin"}))
    ss = ours.accept(5)
    assert ss is not None
    ss.reply()
    for _ in range(2):
        peer.send(DataFrame(1, b"x" * 40 * KIB))
    rst = peer.expect(RstStreamFrame)
    assert rst == RstStreamFrame(1, RstStatus.FLOW_CONTROL_ERROR)
    assert ss.is_reset and not ss.reset_by_peer


# ---------------------------------------------------------------- robustness / control


def test_ping_both_ways_and_keepalive(make_pair: Any) -> None:
    server, client = make_pair(client_kw={"ping_interval": 0.05})
    assert 0 < client.ping() < 5
    assert 0 < server.ping() < 5
    assert wait_until(lambda: client.last_ping_rtt is not None)


def test_ping_without_answer_times_out(raw_pair: Any) -> None:
    ours, peer = raw_pair(echo_pings=False)
    with pytest.raises(SpdyError, match="no PING reply"):
        ours.ping(timeout=0.1)
    ping = peer.expect(PingFrame)
    assert ping.id % 2 == 1  # a client's ping ids are odd
    peer.send(PingFrame(2))  # the peer's own ping is echoed
    echo = peer.expect(PingFrame)
    assert echo == PingFrame(2)


def test_goaway_idle_connection_closes_both_ends(make_pair: Any) -> None:
    server, client = make_pair()
    client.goaway()
    assert server.goaway_received.wait(5)
    assert server.wait_closed(5) and client.wait_closed(5)
    assert server.close_reason and "GOAWAY" in server.close_reason
    with pytest.raises(SpdyConnectionClosed):
        client.open_stream({"a": "b"})


def test_goaway_lets_open_streams_finish(make_pair: Any) -> None:
    server, client = make_pair()
    cs, ss = open_pair(server, client)
    server.goaway()
    assert client.goaway_received.wait(5)
    with pytest.raises(SpdyConnectionClosed, match="GOAWAY"):
        client.open_stream({"streamType": "late"})
    cs.write(b"still flowing")
    cs.close()
    assert ss.readall() == b"still flowing"
    assert not server.closed.is_set()
    ss.write(b"bye")
    ss.close()
    assert cs.readall() == b"bye"
    assert server.wait_closed(5) and client.wait_closed(5)


def test_goaway_refuses_streams_the_peer_did_not_see(raw_pair: Any) -> None:
    ours, peer = raw_pair()
    s1 = ours.open_stream({"n": "1"})
    s3 = ours.open_stream({"n": "3"})
    assert peer.expect(SynStreamFrame).stream_id == 1
    assert peer.expect(SynStreamFrame).stream_id == 3
    peer.send(SynReplyFrame(1))
    peer.send(GoAwayFrame(1))
    assert ours.goaway_received.wait(5)
    assert wait_until(lambda: s3.is_reset)
    assert s3.reset_status == RstStatus.REFUSED_STREAM
    assert s1.wait_reply(5) == Headers() and not s1.is_reset


def test_malformed_frame_gets_goaway_protocol_error(raw_pair: Any) -> None:
    ours, peer = raw_pair()
    peer.send_raw(bytes.fromhex("8003000300000004 00000001"))  # RST_STREAM, 4 bytes
    goaway = peer.expect(GoAwayFrame)
    assert goaway.status == GoAwayStatus.PROTOCOL_ERROR
    assert peer.expect(type(None)) is None  # then the connection is closed
    assert ours.wait_closed(5)
    assert ours.close_reason and "protocol error" in ours.close_reason


def test_undecodable_header_block_gets_goaway(raw_pair: Any) -> None:
    ours, peer = raw_pair(ours_server=True)
    peer.send_raw(bytes.fromhex("800300010000000e 00000001 00000000 0000 deadbeef"))
    assert peer.expect(GoAwayFrame).status == GoAwayStatus.PROTOCOL_ERROR
    assert ours.wait_closed(5)


def test_stream_id_rules(raw_pair: Any) -> None:
    ours, peer = raw_pair(ours_server=True)
    peer.send(SynStreamFrame(2, {"a": "b"}))  # a client must use odd ids
    assert peer.expect(GoAwayFrame).status == GoAwayStatus.PROTOCOL_ERROR
    assert ours.wait_closed(5)


def test_unknown_control_frames_are_ignored(raw_pair: Any) -> None:
    ours, peer = raw_pair()
    peer.send(UnknownControlFrame(10, 0, b"credential"))
    peer.send(UnknownControlFrame(0x7FFF, 0xFF, b""))
    peer.send(PingFrame(4))
    assert peer.expect(PingFrame) == PingFrame(4)
    assert not ours.closed.is_set()


def test_frames_for_unknown_streams(raw_pair: Any) -> None:
    ours, peer = raw_pair()  # ours is the client: odd ids are ours, even ones the peer's
    peer.send(DataFrame(2, b"never opened"))
    assert peer.expect(RstStreamFrame) == RstStreamFrame(2, RstStatus.INVALID_STREAM)
    peer.send(DataFrame(101, b"never opened either"))
    assert peer.expect(RstStreamFrame) == RstStreamFrame(101, RstStatus.INVALID_STREAM)
    # a stream that existed and is gone: late frames are dropped silently
    s = ours.open_stream({"a": "b"})
    peer.expect(SynStreamFrame)
    s.reset()
    assert peer.expect(RstStreamFrame) == RstStreamFrame(1, RstStatus.CANCEL)
    peer.send(DataFrame(1, b"late"))
    peer.send(WindowUpdateFrame(1, 100))
    peer.send(PingFrame(6))
    assert peer.expect(PingFrame) == PingFrame(6)
    assert peer.frames.empty()
    # data after FIN
    s3 = ours.open_stream({"a": "b"})
    peer.send(SynReplyFrame(3))
    peer.send(DataFrame(3, b"x", FLAG_FIN))
    peer.send(DataFrame(3, b"y"))
    assert peer.expect(RstStreamFrame) == RstStreamFrame(3, RstStatus.STREAM_ALREADY_CLOSED)
    assert s3.is_reset


def test_peer_death_unblocks_everyone(raw_pair: Any) -> None:
    ours, peer = raw_pair(echo_pings=False)
    # the peer claims a 1 KiB window, so our writer blocks on flow control
    peer.send(SettingsFrame((Setting(SettingsId.INITIAL_WINDOW_SIZE, 1024),)))
    reading = ours.open_stream({"streamType": "stdout"})
    writing = ours.open_stream({"streamType": "stdin"})
    peer.send(SynReplyFrame(1))
    peer.send(SynReplyFrame(3))
    writing.wait_reply(5)
    assert ours.peer_flow_control is True
    results: dict[str, Any] = {}

    def run(name: str, fn: Callable[[], Any]) -> threading.Thread:
        def target() -> None:
            try:
                results[name] = fn()
            except SpdyError as exc:
                results[name] = exc

        t = threading.Thread(target=target)
        t.start()
        return t

    threads = [
        run("read", reading.read),
        run("write", lambda: writing.write(b"x" * 100_000)),
        run("accept", ours.accept),
        run("ping", lambda: ours.ping(timeout=30)),
        run("wait_reply", ours.open_stream({"n": "5"}).wait_reply),
    ]
    time.sleep(0.2)
    assert all(t.is_alive() for t in threads)
    peer.kill()
    for t in threads:
        t.join(5)
        assert not t.is_alive()
    assert results["read"] == b""
    assert isinstance(results["write"], SpdyConnectionClosed)
    assert results["accept"] is None
    assert isinstance(results["ping"], SpdyConnectionClosed)
    assert isinstance(results["wait_reply"], SpdyConnectionClosed)
    assert ours.closed.is_set()
    with pytest.raises(SpdyConnectionClosed):
        writing.write(b"x")
    assert reading.read() == b"" and reading.closed
    with pytest.raises(SpdyConnectionClosed):
        ours.open_stream({"a": "b"})


def test_local_close_unblocks_everyone(make_pair: Any) -> None:
    server, client = make_pair(server_kw={"initial_window": 1024})
    cs, ss = open_pair(server, client)
    _, idle = open_pair(server, client)
    cs.write(b"z" * 1024)
    assert wait_until(lambda: ss.buffered == 1024)
    out: queue.Queue[object] = queue.Queue()

    def write() -> None:
        try:
            cs.write(b"y" * 100_000)
        except SpdyError as exc:
            out.put(exc)

    threads = [
        threading.Thread(target=lambda: out.put(idle.read())),
        threading.Thread(target=write),
        threading.Thread(target=lambda: out.put(server.accept())),
    ]
    for t in threads:
        t.start()
    time.sleep(0.2)
    assert all(t.is_alive() for t in threads)
    server.close()
    for t in threads:
        t.join(5)
        assert not t.is_alive()
    got = [out.get(timeout=1) for _ in range(3)]
    assert b"" in got and None in got
    assert any(isinstance(g, SpdyConnectionClosed) for g in got)
    assert ss.read() == b"z" * 1024  # what had arrived stays readable
    assert ss.read() == b""
    assert client.wait_closed(5)  # the GOAWAY / EOF reached the client
    assert client.goaway_received.is_set()


@pytest.mark.parametrize("transport", ["socketpair", "tcp"])
def test_close_lingers_so_the_peer_reads_everything(raw_pair: Any, transport: str) -> None:
    """After close() the peer still gets every byte, then GOAWAY and a clean EOF, and may
    keep talking while we linger (closing with unread input could otherwise reset TCP)."""
    ours, peer = raw_pair(ours_server=True, transport=transport)
    peer.send(SynStreamFrame(1, {"streamType": "stdout"}))
    ss = ours.accept(5)
    assert ss is not None
    ss.reply()
    peer.send(DataFrame(1, b"unread input " * 1000))  # still unread when we close
    payload = os.urandom(512 * KIB)
    ss.write(payload)
    ss.close()
    ours.close()
    assert ours.closed.is_set()
    received = bytearray()
    while True:
        frame = peer.expect(DataFrame)
        received += frame.data
        if frame.flags & FLAG_FIN:
            break
    assert bytes(received) == payload
    assert peer.expect(GoAwayFrame).status == GoAwayStatus.OK
    assert peer.expect(type(None)) is None  # then a clean EOF
    peer.send(PingFrame(1))  # the peer may still talk while we linger: drained, no error
    peer.sock.shutdown(socket.SHUT_WR)
    assert wait_until(lambda: not ours._reader.is_alive())


# ------------------------------------------------------------------------ concurrency


def test_concurrent_writers_on_several_streams(make_pair: Any) -> None:
    server, client = make_pair(client_kw={"initial_window": 32 * KIB, "session_window": 128 * KIB})
    pairs = [open_pair(server, client, {"streamType": f"s{i}"}) for i in range(6)]
    payloads = [os.urandom(2 * MIB + i * 1000) for i in range(6)]
    results: dict[int, bytes] = {}

    def send(ss: SpdyStream, data: bytes) -> None:
        view = memoryview(data)
        for i in range(0, len(data), 100_000):
            ss.write(view[i : i + 100_000])
        ss.close()

    def recv(i: int, cs: SpdyStream) -> None:
        results[i] = cs.readall()

    threads = [
        threading.Thread(target=send, args=(ss, payloads[i])) for i, (_, ss) in enumerate(pairs)
    ] + [threading.Thread(target=recv, args=(i, cs)) for i, (cs, _) in enumerate(pairs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
        assert not t.is_alive()
    for i in range(6):
        assert results[i] == payloads[i], f"stream {i} corrupted"


# ------------------------------------------------------------------------- throughput


@pytest.mark.parametrize("transport", ["socketpair", "tcp"])
def test_throughput_100mb(
    make_pair: Any, transport: str, capsys: pytest.CaptureFixture[str]
) -> None:
    total = 100 * MIB
    server, client = make_pair(transport)
    cs, ss = open_pair(server, client, {"streamType": "stdout"})
    blocks = [os.urandom(MIB) for _ in range(4)]
    expected = hashlib.sha256()
    for i in range(total // MIB):
        expected.update(blocks[i % 4])
    got = hashlib.sha256()
    count = 0

    def reader() -> None:
        nonlocal count
        while chunk := cs.read():
            got.update(chunk)
            count += len(chunk)

    t = threading.Thread(target=reader)
    start = time.perf_counter()
    t.start()
    for i in range(total // MIB):
        ss.write(blocks[i % 4])
    ss.close()
    t.join(60)
    elapsed = time.perf_counter() - start
    assert count == total
    assert got.hexdigest() == expected.hexdigest()
    with capsys.disabled():
        print(f"\nSPDY {transport}: 100 MiB in {elapsed:.2f}s = {total / elapsed / 1e6:.0f} MB/s")
