"""Unpacking one image layer into an overlayfs-ready snapshot directory.

A layer blob (a tar, plain or gzip/zstd-compressed; detected by its magic bytes) is applied to
an empty directory the way containerd's overlayfs snapshotter applies it: OCI whiteouts
become overlayfs whiteouts, so the directory can be used as an overlayfs lower layer as is:

- ``dir/.wh.name`` becomes a character device 0:0 at ``dir/name``;
- ``dir/.wh..wh..opq`` sets ``trusted.overlay.opaque=y`` on ``dir``;
- other ``.wh..wh.*`` entries (AUFS metadata) are ignored, with everything below them.

A whiteout only hides lower layers: a whiteout for an entry that this same layer has already
created leaves it in place (a directory is made opaque, it replaced the lower one).

Ownership (numeric uid/gid, never names), modes (setuid/setgid/sticky included), mtimes,
xattrs (PAX ``SCHILY.xattr.*``), symlinks (targets verbatim), hard links, device nodes and
FIFOs are kept. An entry over an existing path of another type replaces it; a directory over
a directory only updates its attributes (OCI image-spec, "Changeset over existing files").

Safety: nothing is ever written outside ``dest``. Member names are normalised lexically and
refused when absolute or escaping the root; every path is resolved component by component
from a directory fd of ``dest`` with ``O_DIRECTORY|O_NOFOLLOW``, and entries are created with
the ``dir_fd`` variants of the syscalls, so a symlink (or a non-directory) in a parent
position makes the member fail instead of being followed; hard-link targets are resolved the
same way and must be in the layer.

Speed: the blob is read, decompressed and hashed (the diff id) in a helper thread (zlib,
zstd and sha256 release the GIL) while this thread parses the tar stream (``tarfile`` in
stream mode) and writes files; the directory fds of the current path are kept open, so a
member costs one ``openat`` of its own plus the metadata calls, not one per path component.
"""

from __future__ import annotations

import errno
import hashlib
import os
import queue
import re
import shutil
import stat
import struct
import tarfile
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, Self

import attrs
import zstandard

__all__ = ["LayerError", "UnpackResult", "unpack_layer"]

WHITEOUT_PREFIX = ".wh."
WHITEOUT_META_PREFIX = ".wh..wh."
WHITEOUT_OPAQUE = ".wh..wh..opq"
OVERLAY_OPAQUE_XATTR = "trusted.overlay.opaque"

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_XATTR_PAX_PREFIX = "SCHILY.xattr."
_READ_SIZE = 1 << 16  # compressed bytes per read(): zlib is fastest fed 64 KiB at a time
_ZSTD_SLICE = 2048  # compressed bytes per zstd call: bounds the output of one call (~64 MiB)
_QUEUE_DEPTH = 8  # decompressed chunks buffered between the threads
_TAR_BUFSIZE = 16 * 1024  # tarfile's stream buffer; small keeps its per-header copying cheap
_TAR_HEADER = struct.Struct("100s8s8s8s12s12s8sc100s6s2s32s32s8s8s155s")  # ustar, 500 bytes
_ZERO_BLOCK = bytes(tarfile.BLOCKSIZE)
_USTAR_MAGIC = b"ustar\x00"
_PAX_TIME = re.compile(r"(-?)([0-9]+)(?:\.([0-9]*))?")

_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_NEWFILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_IGNORED_SELINUX_ERRNOS = frozenset({errno.EOPNOTSUPP, errno.ENOTSUP, errno.EPERM})

Components = tuple[str, ...]
_Read = Callable[[int], bytes]


class LayerError(ValueError):
    """The layer blob is invalid or unsafe: corrupt or truncated, or a member is refused."""


@attrs.frozen
class UnpackResult:
    diff_id: str
    """``sha256:<hex>`` of the decompressed tar stream (compare with the config's diff_ids)."""
    size: int
    """Bytes of regular-file content written (hard links and whiteouts add nothing)."""
    inodes: int
    """Filesystem entries created: files, directories, links, devices, FIFOs, whiteouts."""


def unpack_layer(blob: Path, dest: Path, *, chunk_size: int = 1 << 20) -> UnpackResult:
    """Apply the layer ``blob`` to ``dest`` (created 0755; must not exist or be empty).

    Raises :class:`LayerError` for a corrupt, truncated or unsafe layer and ``OSError`` for
    filesystem failures; on error ``dest`` is left as it is, for the caller to delete.
    """
    if chunk_size < 4096:
        raise ValueError(f"chunk_size must be at least 4096, not {chunk_size}")
    root_fd = _open_dest(dest)
    try:
        applier = _Applier(root_fd, chunk_size)
        try:
            with open(blob, "rb", buffering=0) as raw:
                source = _Source(_decompressed_chunks(raw, chunk_size))
                try:
                    if source.has_data():
                        _apply_tar(source, applier)
                    diff_id = source.finish()
                finally:
                    source.stop()
            applier.set_directory_times()
        finally:
            applier.close()
        return UnpackResult(diff_id=diff_id, size=applier.size, inodes=applier.inodes)
    finally:
        os.close(root_fd)


def _open_dest(dest: Path) -> int:
    created = True
    try:
        os.mkdir(dest, 0o755)
    except FileExistsError:
        created = False
    fd = os.open(dest, _O_DIR)  # refuses a symlink or a non-directory
    try:
        if not created:
            with os.scandir(fd) as entries:
                if next(entries, None) is not None:
                    raise FileExistsError(
                        errno.ENOTEMPTY, "layer unpack destination is not empty", str(dest)
                    )
        os.fchmod(fd, 0o755)
    except BaseException:
        os.close(fd)
        raise
    return fd


# -- the decompressed stream -------------------------------------------------------------


def _decompressed_chunks(raw: BinaryIO, chunk_size: int) -> Iterator[bytes]:
    head = raw.read(4)
    raw.seek(0)
    if head.startswith(_GZIP_MAGIC):
        return _gunzip(raw, chunk_size)
    if head == _ZSTD_MAGIC:
        return _unzstd(raw, chunk_size)
    return _plain(raw, chunk_size)


def _plain(raw: BinaryIO, chunk_size: int) -> Iterator[bytes]:
    while data := raw.read(chunk_size):
        yield data


def _gunzip(raw: BinaryIO, chunk_size: int) -> Iterator[bytes]:
    """Decompress a gzip stream of one or more members (no trailing garbage, like Go's)."""
    decomp = zlib.decompressobj(wbits=31)
    data = b""
    try:
        while True:
            if not data:
                data = raw.read(_READ_SIZE)
                if not data:
                    break
            if decomp.eof:  # another member follows
                if len(data) < 2:
                    data += raw.read(_READ_SIZE)
                if not data.startswith(_GZIP_MAGIC):
                    raise LayerError("trailing garbage after the gzip stream of the layer")
                decomp = zlib.decompressobj(wbits=31)
            out = decomp.decompress(data, chunk_size)
            data = decomp.unused_data if decomp.eof else decomp.unconsumed_tail
            if out:
                yield out
        if not decomp.eof:
            if out := decomp.flush():  # output held back by the max_length limit
                yield out
            if not decomp.eof:
                raise LayerError("truncated gzip stream: the layer blob is incomplete")
    except zlib.error as exc:
        raise LayerError(f"corrupt gzip stream: {exc}") from exc


def _unzstd(raw: BinaryIO, chunk_size: int) -> Iterator[bytes]:
    """Decompress a zstd stream of one or more frames, detecting truncation."""
    dctx = zstandard.ZstdDecompressor()
    decomp = dctx.decompressobj()
    pending: list[bytes] = []
    pending_size = 0
    data = b""
    pos = 0
    try:
        while True:
            if pos >= len(data):
                data = raw.read(_READ_SIZE)
                pos = 0
                if not data:
                    break
            if decomp.eof:  # another frame follows
                decomp = dctx.decompressobj()
            piece = data[pos : pos + _ZSTD_SLICE]
            pos += len(piece)
            out = decomp.decompress(piece)
            if decomp.eof and decomp.unused_data:
                data = decomp.unused_data + data[pos:]
                pos = 0
            if out:
                pending.append(out)
                pending_size += len(out)
                if pending_size >= chunk_size:
                    yield b"".join(pending)
                    pending.clear()
                    pending_size = 0
    except zstandard.ZstdError as exc:
        raise LayerError(f"corrupt zstd stream: {exc}") from exc
    if pending:
        yield b"".join(pending)
    if not decomp.eof:
        raise LayerError("truncated zstd stream: the layer blob is incomplete")


class _Source:
    """The decompressed layer as a ``read()``-able stream for ``tarfile``.

    A helper thread runs the chunk iterator (read, decompress) and hashes every chunk
    (the diff id) ahead of the consumer; a bounded queue keeps memory use flat.
    """

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._hash = hashlib.sha256()
        self._queue: queue.Queue[bytes | BaseException | None] = queue.Queue(_QUEUE_DEPTH)
        self._stop = threading.Event()
        self._buf = b""
        self._pos = 0
        self._eof = False
        self._thread = threading.Thread(target=self._produce, name="layer-decompress", daemon=True)
        self._thread.start()

    def _produce(self) -> None:
        try:
            for chunk in self._chunks:
                self._hash.update(chunk)
                if not self._put(chunk):
                    return
        except BaseException as exc:  # handed over to the consumer
            self._put(exc)
            return
        self._put(None)

    def _put(self, item: bytes | BaseException | None) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
            except queue.Full:
                continue
            return True
        return False

    def _fill(self) -> bool:
        """Make the buffer non-empty; False at the end of the stream."""
        if self._pos < len(self._buf):
            return True
        if self._eof:
            return False
        item = self._queue.get()
        if item is None:
            self._eof = True
            return False
        if isinstance(item, BaseException):
            self._eof = True
            raise item
        self._buf = item
        self._pos = 0
        return True

    def has_data(self) -> bool:
        return self._fill()

    def read(self, size: int = -1) -> bytes:
        if not self._fill():
            return b""
        buf, pos = self._buf, self._pos
        end = len(buf) if size < 0 else pos + size
        if pos == 0 and end >= len(buf):
            self._pos = len(buf)
            return buf
        data = buf[pos:end]
        self._pos = pos + len(data)
        return data

    def finish(self) -> str:
        """Consume the rest of the stream (trailing padding too); return the diff id."""
        while self._fill():
            self._pos = len(self._buf)
        self._thread.join()
        return "sha256:" + self._hash.hexdigest()

    def stop(self) -> None:
        """End the helper thread (at once if the stream was not consumed to the end)."""
        self._stop.set()
        self._thread.join()


# -- the tar stream ------------------------------------------------------------------------


# A zero block, or no data at all, where a header is expected (private in tarfile).
_CLEAN_END: tuple[type[Exception], ...] = (
    tarfile.EOFHeaderError,  # type: ignore[attr-defined]
    tarfile.EmptyHeaderError,  # type: ignore[attr-defined]
)


class _LayerTarInfo(tarfile.TarInfo):
    """``tarfile``'s member, parsed faster and strictly.

    ``frombuf`` handles the common header (octal numbers, valid unsigned checksum) in a few
    C calls, several times faster than ``tarfile``'s, and defers anything else (base-256
    numbers, signed checksums, old GNU sparse files, errors) to it. ``fromtarfile`` refuses
    corrupt headers, which ``tarfile`` silently takes for the end of the archive: a clean
    end is a zero block (the end-of-archive marker) or, as Go's ``archive/tar`` accepts it,
    the end of the stream at a header boundary (the decompressors detect truncation).
    """

    @classmethod
    def fromtarfile(cls, tar: tarfile.TarFile) -> Self:
        fileobj = tar.fileobj
        assert fileobj is not None
        nested = fileobj.tell() != tar.offset  # the header after a PAX or GNU long header
        try:
            return super().fromtarfile(tar)
        except _CLEAN_END as exc:
            if nested:
                raise LayerError(f"truncated tar stream after offset {tar.offset}") from exc
            raise
        except tarfile.HeaderError as exc:
            raise LayerError(f"corrupt tar header at offset {tar.offset}: {exc}") from exc

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Self:
        if len(buf) != tarfile.BLOCKSIZE or buf == _ZERO_BLOCK:
            return super().frombuf(buf, encoding, errors)
        (name, mode, uid, gid, size, mtime, chksum, kind, linkname, magic, _, uname, gname,
         devmajor, devminor, prefix) = _TAR_HEADER.unpack_from(buf)  # fmt: skip
        if kind == tarfile.GNUTYPE_SPARSE:
            return super().frombuf(buf, encoding, errors)
        # Sum of the header bytes: adler32's low half is 1 + the sum mod 65521, which is
        # exact for 256 bytes; the checksum field itself counts as 8 spaces.
        unsigned_sum = (
            (zlib.adler32(buf[:256]) & 0xFFFF)
            + (zlib.adler32(buf[256:]) & 0xFFFF)
            - 2
            - sum(buf[148:156])
            + 8 * 32
        )
        try:
            if int(chksum.partition(b"\0")[0] or b"0", 8) != unsigned_sum:
                return super().frombuf(buf, encoding, errors)
            obj = cls()
            obj.mode = int(mode.partition(b"\0")[0] or b"0", 8)
            obj.uid = int(uid.partition(b"\0")[0] or b"0", 8)
            obj.gid = int(gid.partition(b"\0")[0] or b"0", 8)
            obj.size = int(size.partition(b"\0")[0] or b"0", 8)
            obj.mtime = int(mtime.partition(b"\0")[0] or b"0", 8)
            obj.devmajor = int(devmajor.partition(b"\0")[0] or b"0", 8)
            obj.devminor = int(devminor.partition(b"\0")[0] or b"0", 8)
        except ValueError:  # base-256 or garbage: tarfile decides
            return super().frombuf(buf, encoding, errors)
        obj.chksum = unsigned_sum
        path = name.partition(b"\0")[0].decode(encoding, errors)
        if kind == tarfile.AREGTYPE and path.endswith("/"):
            kind = tarfile.DIRTYPE  # old V7 directory
        obj.type = kind
        if kind == tarfile.DIRTYPE:
            path = path.rstrip("/")
        if magic == _USTAR_MAGIC and prefix[0]:  # POSIX name prefix (not GNU: atime there)
            if buf[508:512] == b"tar\0":  # star: a shorter prefix, then atime and ctime
                prefix = prefix[:131]
            path = prefix.partition(b"\0")[0].decode(encoding, errors) + "/" + path
        obj.name = path
        obj.linkname = linkname.partition(b"\0")[0].decode(encoding, errors)
        obj.uname = uname.partition(b"\0")[0].decode(encoding, errors)
        obj.gname = gname.partition(b"\0")[0].decode(encoding, errors)
        return obj


def _open_tar(source: _Source) -> tarfile.TarFile:
    try:
        tar: tarfile.TarFile = tarfile.open(  # noqa: SIM115 - returned to a with
            fileobj=source,  # type: ignore[call-overload]  # stream mode only calls read()
            mode="r|",
            bufsize=_TAR_BUFSIZE,
            tarinfo=_LayerTarInfo,
            encoding="utf-8",
            errors="surrogateescape",
        )
    except tarfile.TarError as exc:
        raise LayerError(f"not a tar stream: {exc}") from exc
    return tar


def _apply_tar(source: _Source, applier: _Applier) -> None:
    with _open_tar(source) as tar:
        while True:
            try:
                member = tar.next()
            except tarfile.TarError as exc:
                raise LayerError(f"corrupt tar stream: {exc}") from exc
            if member is None:
                return
            tar.members.clear()  # type: ignore[attr-defined]  # stream mode keeps them all
            try:
                applier.apply(member, tar)
            except OSError as exc:
                exc.add_note(f"while unpacking layer member {member.name!r}")
                raise


def _split(name: str, member: str, what: str = "name") -> Components:
    """Normalise a member (or hard-link target) name to path components under the root."""
    parts = name.split("/")
    if "" not in parts and "." not in parts and ".." not in parts and "\0" not in name:
        return tuple(parts)
    if name.startswith("/"):
        raise LayerError(f"layer member {member!r}: absolute {what} {name!r} is not allowed")
    if "\0" in name:
        raise LayerError(f"layer member {member!r}: NUL byte in {what}")
    out: list[str] = []
    for part in parts:
        if part == "..":
            if not out:
                raise LayerError(f"layer member {member!r}: {what} {name!r} escapes the root")
            out.pop()
        elif part and part != ".":
            out.append(part)
    return tuple(out)


def _xattrs(member: tarfile.TarInfo) -> list[tuple[str, bytes]]:
    headers = member.pax_headers
    if not headers:
        return []
    return [
        (key[len(_XATTR_PAX_PREFIX) :], value.encode("utf-8", "surrogateescape"))
        for key, value in headers.items()
        if key.startswith(_XATTR_PAX_PREFIX)
    ]


def _pax_ns(value: str) -> int:
    """Exact nanoseconds of a PAX time value (``[-]seconds[.fraction]``)."""
    match = _PAX_TIME.fullmatch(value)
    if match is None:
        raise LayerError(f"invalid PAX time {value!r}")
    sign, seconds, fraction = match.groups(default="")
    ns = int(seconds) * 1_000_000_000 + int((fraction + "000000000")[:9])
    return -ns if sign else ns


def _times(member: tarfile.TarInfo) -> tuple[int, int]:
    """(atime, mtime) in nanoseconds; the PAX values are exact, tarfile's floats are not."""
    headers = member.pax_headers
    if headers and "mtime" in headers:
        mtime = _pax_ns(headers["mtime"])
    else:
        mtime = int(member.mtime) * 1_000_000_000
    if headers and "atime" in headers:
        return _pax_ns(headers["atime"]), mtime
    return mtime, mtime


class _Applier:
    """Applies tar members below ``root_fd`` without ever following a symlink."""

    def __init__(self, root_fd: int, chunk_size: int) -> None:
        self.root_fd = root_fd
        self.chunk_size = chunk_size
        self.size = 0
        self.inodes = 0
        # The open directories of the current path: _names[i] is opened as _fds[i].
        self._names: list[str] = []
        self._fds: list[int] = []
        self._key: Components = ()
        self._top = root_fd
        # Directory times are set last, once nothing is created in them any more.
        self._dir_times: dict[Components, tuple[int, int]] = {}

    def close(self) -> None:
        self._truncate(0)

    # -- directory fds -----------------------------------------------------------------
    def _truncate(self, depth: int) -> None:
        fds = self._fds
        while len(fds) > depth:
            os.close(fds.pop())
            self._names.pop()
        self._key = tuple(self._names)
        self._top = fds[-1] if fds else self.root_fd

    def _enter(self, comps: Components, member: str, *, create: bool) -> int:
        """The fd of directory ``comps``; missing ones are created (0755) if ``create``."""
        if comps == self._key:
            return self._top
        names = self._names
        depth = 0
        limit = min(len(names), len(comps))
        while depth < limit and names[depth] == comps[depth]:
            depth += 1
        self._truncate(depth)
        fd = self._top
        try:
            for name in comps[depth:]:
                fd = self._open_dir(fd, name, member, create=create)
                names.append(name)
                self._fds.append(fd)
        finally:
            self._key = tuple(names)
            self._top = fd
        return fd

    def _push(self, name: str, fd: int) -> None:
        """Make ``fd`` (directory ``name`` in the current one) the current directory."""
        self._names.append(name)
        self._fds.append(fd)
        self._key = (*self._key, name)
        self._top = fd

    def _open_dir(self, parent: int, name: str, member: str, *, create: bool) -> int:
        try:
            return os.open(name, _O_DIR, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                raise
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise LayerError(
                    f"layer member {member!r}: path component {name!r} is a symlink or not "
                    "a directory (symlinks are never followed)"
                ) from exc
            raise
        os.mkdir(name, 0o755, dir_fd=parent)
        self.inodes += 1
        fd = os.open(name, _O_DIR, dir_fd=parent)
        os.fchmod(fd, 0o755)  # whatever the umask
        return fd

    def _forget(self, comps: Components) -> None:
        """Directory ``comps`` was removed: drop its open fds and recorded times."""
        if tuple(self._names[: len(comps)]) == comps:
            self._truncate(len(comps) - 1)
        n = len(comps)
        for key in [k for k in self._dir_times if k[:n] == comps]:
            del self._dir_times[key]

    def _remove(self, parent: int, name: str, comps: Components) -> None:
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(name, dir_fd=parent)  # fd-based, never follows symlinks
            self._forget(comps)
        else:
            os.unlink(name, dir_fd=parent)

    # -- members -----------------------------------------------------------------------
    def apply(self, member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        name = member.name
        comps = _split(name, name)
        if WHITEOUT_PREFIX in name and self._whiteout(comps, member):
            return
        if not comps:
            self._root(member)
            return
        parent = self._enter(comps[:-1], name, create=True)
        base = comps[-1]
        if member.isreg():
            self._file(parent, base, comps, member, tar)
        elif member.isdir():
            self._dir(parent, base, comps, member)
        elif member.issym():
            self._symlink(parent, base, comps, member)
        elif member.islnk():
            self._hardlink(parent, base, comps, member)
        elif member.ischr() or member.isblk() or member.isfifo():
            self._node(parent, base, comps, member)
        else:
            raise LayerError(f"layer member {name!r}: unsupported tar entry type {member.type!r}")

    def _whiteout(self, comps: Components, member: tarfile.TarInfo) -> bool:
        """Handle whiteout-related members; False if ``member`` is an ordinary one."""
        for comp in comps[:-1]:
            if comp.startswith(WHITEOUT_META_PREFIX):
                return True  # inside AUFS metadata (.wh..wh.plnk/...): ignored
            if comp.startswith(WHITEOUT_PREFIX):
                raise LayerError(f"layer member {member.name!r}: whiteout used as a directory")
        base = comps[-1] if comps else ""
        if not base.startswith(WHITEOUT_PREFIX):
            return False
        if base == WHITEOUT_OPAQUE:
            parent = self._enter(comps[:-1], member.name, create=True)
            os.setxattr(parent, OVERLAY_OPAQUE_XATTR, b"y")
            return True
        if base.startswith(WHITEOUT_META_PREFIX):
            return True  # other AUFS metadata
        target = base[len(WHITEOUT_PREFIX) :]
        if target in ("", ".", ".."):
            raise LayerError(f"layer member {member.name!r}: invalid whiteout")
        parent = self._enter(comps[:-1], member.name, create=True)
        try:
            os.mknod(target, stat.S_IFCHR, os.makedev(0, 0), dir_fd=parent)
        except FileExistsError:
            # Created by this very layer: a whiteout only hides lower layers. A directory
            # becomes opaque (it replaced the lower one); anything else hides it anyway.
            st = os.stat(target, dir_fd=parent, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                fd = os.open(target, _O_DIR, dir_fd=parent)
                try:
                    os.setxattr(fd, OVERLAY_OPAQUE_XATTR, b"y")
                finally:
                    os.close(fd)
            return True
        self.inodes += 1
        os.chown(target, member.uid, member.gid, dir_fd=parent, follow_symlinks=False)
        return True

    def _root(self, member: tarfile.TarInfo) -> None:
        if not member.isdir():
            raise LayerError(f"layer member {member.name!r}: the root is not a directory")
        self._dir_attrs(self.root_fd, member)
        self._dir_times[()] = _times(member)

    def _file(
        self,
        parent: int,
        base: str,
        comps: Components,
        member: tarfile.TarInfo,
        tar: tarfile.TarFile,
    ) -> None:
        try:
            fd = os.open(base, _O_NEWFILE, 0o600, dir_fd=parent)
        except FileExistsError:  # replace it (never write through an existing hard link)
            self._remove(parent, base, comps)
            fd = os.open(base, _O_NEWFILE, 0o600, dir_fd=parent)
        self.inodes += 1
        try:
            if member.size:
                if member.sparse is not None:
                    data = tar.extractfile(member)
                    assert data is not None
                    self._copy(fd, data.read, member, 0)
                else:  # straight from the stream, with the padding: no seek to the next header
                    assert tar.fileobj is not None
                    self._copy(fd, tar.fileobj.read, member, -member.size % tarfile.BLOCKSIZE)
                self.size += member.size
            os.fchown(fd, member.uid, member.gid)
            os.fchmod(fd, member.mode & 0o7777)  # after fchown, which clears setuid/setgid
            for key, value in _xattrs(member):  # after writing and fchown, which drop caps
                self._setxattr(fd, key, value)
            os.utime(fd, ns=_times(member))
        finally:
            os.close(fd)

    def _copy(self, fd: int, read: _Read, member: tarfile.TarInfo, padding: int) -> None:
        """Write the member's data read from ``read``, then consume ``padding`` bytes."""
        remaining = member.size + padding
        unwritten = member.size
        chunk = self.chunk_size
        while remaining:
            data = read(chunk if remaining > chunk else remaining)
            if not data:
                raise LayerError(f"layer member {member.name!r}: truncated file data")
            remaining -= len(data)
            if not unwritten:
                continue
            view = memoryview(data)[:unwritten] if len(data) > unwritten else data
            written = os.write(fd, view)
            while written < len(view):
                written += os.write(fd, memoryview(view)[written:])
            unwritten -= len(view)

    def _dir(self, parent: int, base: str, comps: Components, member: tarfile.TarInfo) -> None:
        opaque = False
        try:
            os.mkdir(base, 0o700, dir_fd=parent)
            self.inodes += 1
        except FileExistsError:
            st = os.stat(base, dir_fd=parent, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):  # replace it; a whiteout: it was a lower dir
                opaque = stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
                os.unlink(base, dir_fd=parent)
                os.mkdir(base, 0o700, dir_fd=parent)
                self.inodes += 1
        fd = os.open(base, _O_DIR, dir_fd=parent)
        self._push(base, fd)
        self._dir_attrs(fd, member)
        if opaque:
            os.setxattr(fd, OVERLAY_OPAQUE_XATTR, b"y")
        self._dir_times[comps] = _times(member)

    def _dir_attrs(self, fd: int, member: tarfile.TarInfo) -> None:
        os.fchown(fd, member.uid, member.gid)
        os.fchmod(fd, member.mode & 0o7777)
        for key, value in _xattrs(member):
            self._setxattr(fd, key, value)

    def _symlink(self, parent: int, base: str, comps: Components, member: tarfile.TarInfo) -> None:
        try:
            os.symlink(member.linkname, base, dir_fd=parent)
        except FileExistsError:
            self._remove(parent, base, comps)
            os.symlink(member.linkname, base, dir_fd=parent)
        self.inodes += 1
        self._node_attrs(parent, base, member, chmod=False)

    def _node(self, parent: int, base: str, comps: Components, member: tarfile.TarInfo) -> None:
        if member.isfifo():
            kind, device = stat.S_IFIFO, 0
        else:
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
            device = os.makedev(member.devmajor, member.devminor)
        try:
            os.mknod(base, kind | 0o600, device, dir_fd=parent)
        except FileExistsError:
            self._remove(parent, base, comps)
            os.mknod(base, kind | 0o600, device, dir_fd=parent)
        self.inodes += 1
        self._node_attrs(parent, base, member, chmod=True)

    def _node_attrs(self, parent: int, base: str, member: tarfile.TarInfo, *, chmod: bool) -> None:
        """Attributes of a just-created entry that cannot be opened (symlink, device, FIFO)."""
        os.chown(base, member.uid, member.gid, dir_fd=parent, follow_symlinks=False)
        if chmod:
            os.chmod(base, member.mode & 0o7777, dir_fd=parent, follow_symlinks=False)
        if xattrs := _xattrs(member):
            # No dir_fd variant of lsetxattr: go through the parent's fd in /proc, whose
            # last component is not followed.
            path = f"/proc/self/fd/{parent}/{base}"
            for key, value in xattrs:
                self._setxattr(path, key, value)
        os.utime(base, ns=_times(member), dir_fd=parent, follow_symlinks=False)

    def _setxattr(self, target: int | str, key: str, value: bytes) -> None:
        try:
            if isinstance(target, int):
                os.setxattr(target, key, value)
            else:
                os.setxattr(target, key, value, follow_symlinks=False)
        except OSError as exc:
            if key == "security.selinux" and exc.errno in _IGNORED_SELINUX_ERRNOS:
                return
            raise

    def _hardlink(self, parent: int, base: str, comps: Components, member: tarfile.TarInfo) -> None:
        target = _split(member.linkname, member.name, "hard-link target")
        if not target:
            raise LayerError(f"layer member {member.name!r}: hard link to the root")
        if target == comps:
            return  # a link to itself: nothing to do
        missing = LayerError(
            f"layer member {member.name!r}: hard-link target {member.linkname!r} "
            "is not in the layer"
        )
        try:
            source_dir = self._open_path(target[:-1], member.name)
        except FileNotFoundError as exc:
            raise missing from exc
        try:
            try:
                self._link(source_dir, target[-1], parent, base)
            except FileExistsError:
                self._remove(parent, base, comps)
                self._link(source_dir, target[-1], parent, base)
        except FileNotFoundError as exc:
            raise missing from exc
        except PermissionError as exc:  # EPERM: a directory
            raise LayerError(
                f"layer member {member.name!r}: cannot hard-link to {member.linkname!r}"
            ) from exc
        finally:
            if source_dir != parent:
                os.close(source_dir)
        self.inodes += 1

    @staticmethod
    def _link(source_dir: int, source: str, parent: int, base: str) -> None:
        os.link(source, base, src_dir_fd=source_dir, dst_dir_fd=parent, follow_symlinks=False)

    def _open_path(self, comps: Components, member: str) -> int:
        """An fd (the current one or a new one, to close) of existing directory ``comps``."""
        if comps == self._key:
            return self._top
        fd = os.dup(self.root_fd)
        try:
            for name in comps:
                child = self._open_dir(fd, name, member, create=False)
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    def set_directory_times(self) -> None:
        for comps in sorted(self._dir_times):
            try:
                fd = self._enter(comps, "", create=False)
            except (OSError, LayerError):  # replaced by a non-directory
                continue
            os.utime(fd, ns=self._dir_times[comps])
