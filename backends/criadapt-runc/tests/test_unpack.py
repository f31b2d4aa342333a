"""Tests of layer unpacking into overlayfs-ready snapshots (real files; most need root)."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import stat
import subprocess
import tarfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import zstandard

from criadapt_runc.images.unpack import (
    OVERLAY_OPAQUE_XATTR,
    LayerError,
    UnpackResult,
    unpack_layer,
)

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="unpacking needs root (chown, mknod, trusted.* xattrs, mount)"
)

MTIME = 1_600_000_000
Member = tuple[tarfile.TarInfo, bytes | None]


# -- building layers ---------------------------------------------------------------------


def _info(
    name: str,
    kind: bytes,
    *,
    mode: int = 0o644,
    uid: int = 0,
    gid: int = 0,
    mtime: int = MTIME,
    linkname: str = "",
    xattrs: dict[str, bytes] | None = None,
    pax: dict[str, str] | None = None,
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.uid = uid
    info.gid = gid
    info.mtime = mtime
    info.linkname = linkname
    headers = dict(pax or {})
    for key, value in (xattrs or {}).items():
        headers["SCHILY.xattr." + key] = value.decode("utf-8", "surrogateescape")
    info.pax_headers = headers
    return info


def reg(name: str, data: bytes = b"", **kw: Any) -> Member:
    info = _info(name, tarfile.REGTYPE, **kw)
    info.size = len(data)
    return info, data


def dir_(name: str, *, mode: int = 0o755, **kw: Any) -> Member:
    return _info(name, tarfile.DIRTYPE, mode=mode, **kw), None


def sym(name: str, target: str, **kw: Any) -> Member:
    return _info(name, tarfile.SYMTYPE, linkname=target, mode=0o777, **kw), None


def hard(name: str, target: str, **kw: Any) -> Member:
    return _info(name, tarfile.LNKTYPE, linkname=target, **kw), None


def dev(name: str, kind: bytes, major: int, minor: int, **kw: Any) -> Member:
    info = _info(name, kind, **kw)
    info.devmajor = major
    info.devminor = minor
    return info, None


def fifo(name: str, **kw: Any) -> Member:
    return _info(name, tarfile.FIFOTYPE, **kw), None


def build_tar(members: Sequence[Member], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt, encoding="utf-8") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def compress(data: bytes, compression: str) -> bytes:
    if compression == "gzip":
        return gzip.compress(data, compresslevel=1, mtime=0)
    if compression == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    assert compression == "plain"
    return data


def write_layer(path: Path, tar_bytes: bytes, compression: str = "gzip") -> Path:
    path.write_bytes(compress(tar_bytes, compression))
    return path


def unpack(
    tmp_path: Path,
    members: Sequence[Member],
    *,
    compression: str = "gzip",
    fmt: int = tarfile.PAX_FORMAT,
    name: str = "rootfs",
    **kw: int,
) -> tuple[Path, UnpackResult]:
    blob = write_layer(tmp_path / f"{name}.layer", build_tar(members, fmt), compression)
    dest = tmp_path / name
    return dest, unpack_layer(blob, dest, **kw)


def diff_id(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def is_whiteout(path: Path) -> bool:
    st = path.lstat()
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


# -- file types, attributes ------------------------------------------------------------


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_entry_types_and_attributes(tmp_path: Path, fmt: int) -> None:
    long_dir = "usr/share/" + "d" * 60 + "/" + "e" * 60  # > 100 chars: prefix / long name
    members = [
        dir_("usr/", mode=0o755),
        dir_("usr/share/"),
        dir_("usr/share/" + "d" * 60),
        dir_(long_dir, mode=0o750, uid=1234, gid=5678, mtime=MTIME - 7),
        reg(long_dir + "/file.txt", b"hello\n", mode=0o640, uid=1234, gid=5678, mtime=MTIME - 1),
        reg("usr/bin-tool", b"\x7fELF" + bytes(3000), mode=0o755),
        reg("empty", b""),
        sym("usr/rel-link", "share/x", uid=1234, gid=5678, mtime=MTIME - 2),
        sym("abs-link", "/etc/passwd"),
        sym("dangling", "../../nowhere/at/all"),
        hard("usr/bin-hard", "usr/bin-tool"),
        dev("dev/null", tarfile.CHRTYPE, 1, 3, mode=0o666, mtime=MTIME - 3),
        dev("dev/loop0", tarfile.BLKTYPE, 7, 0, mode=0o660, gid=6),
        fifo("run/fifo", mode=0o620, uid=1234),
    ]
    dest, result = unpack(tmp_path, members, fmt=fmt)

    d = dest / long_dir
    st = d.lstat()
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o750
    assert (st.st_uid, st.st_gid, st.st_mtime_ns) == (1234, 5678, (MTIME - 7) * 10**9)

    f = d / "file.txt"
    st = f.lstat()
    assert f.read_bytes() == b"hello\n" and stat.S_IMODE(st.st_mode) == 0o640
    assert (st.st_uid, st.st_gid, st.st_mtime_ns) == (1234, 5678, (MTIME - 1) * 10**9)
    assert (dest / "empty").read_bytes() == b""
    assert stat.S_IMODE((dest / "usr/bin-tool").stat().st_mode) == 0o755

    link = dest / "usr/rel-link"
    st = link.lstat()
    assert stat.S_ISLNK(st.st_mode) and os.readlink(link) == "share/x"
    assert (st.st_uid, st.st_gid, st.st_mtime_ns) == (1234, 5678, (MTIME - 2) * 10**9)
    assert os.readlink(dest / "abs-link") == "/etc/passwd"  # verbatim, not rewritten
    assert os.readlink(dest / "dangling") == "../../nowhere/at/all"

    tool, tool_link = (dest / "usr/bin-tool").lstat(), (dest / "usr/bin-hard").lstat()
    assert tool.st_ino == tool_link.st_ino and tool.st_nlink == 2

    st = (dest / "dev/null").lstat()
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
    assert stat.S_IMODE(st.st_mode) == 0o666 and st.st_mtime_ns == (MTIME - 3) * 10**9
    st = (dest / "dev/loop0").lstat()
    assert stat.S_ISBLK(st.st_mode) and st.st_rdev == os.makedev(7, 0) and st.st_gid == 6
    st = (dest / "run/fifo").lstat()
    assert stat.S_ISFIFO(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o620 and st.st_uid == 1234

    # Implicit parents (dev/, run/) are created 0755 root-owned.
    st = (dest / "dev").lstat()
    assert stat.S_IMODE(st.st_mode) == 0o755 and (st.st_uid, st.st_gid) == (0, 0)
    assert stat.S_IMODE(dest.lstat().st_mode) == 0o755

    assert result.size == 6 + 3004
    # 4 dirs + 3 files + 3 symlinks + 1 hard link + 3 nodes + 2 implicit dirs (dev, run)
    assert result.inodes == 16


def test_special_mode_bits_survive_chown(tmp_path: Path) -> None:
    dest, _ = unpack(
        tmp_path,
        [
            reg("bin/su", b"#!", mode=0o4755, uid=1234, gid=1234),
            reg("bin/wall", b"#!", mode=0o2755, uid=0, gid=5),
            dir_("tmp", mode=0o1777),
            dir_("shared", mode=0o2775, uid=1234, gid=1234),
            reg("shared/file", b"x", mode=0o644, uid=1, gid=2),
        ],
    )
    st = (dest / "bin/su").lstat()
    assert stat.S_IMODE(st.st_mode) == 0o4755 and (st.st_uid, st.st_gid) == (1234, 1234)
    assert stat.S_IMODE((dest / "bin/wall").lstat().st_mode) == 0o2755
    assert stat.S_IMODE((dest / "tmp").lstat().st_mode) == 0o1777
    st = (dest / "shared").lstat()
    assert stat.S_IMODE(st.st_mode) == 0o2775 and st.st_gid == 1234
    st = (dest / "shared/file").lstat()  # not the setgid directory's group
    assert (st.st_uid, st.st_gid) == (1, 2)


def test_directory_mtimes_are_set_after_their_contents(tmp_path: Path) -> None:
    dest, _ = unpack(
        tmp_path,
        [
            dir_("./", mode=0o750, uid=1234, mtime=MTIME - 100),
            dir_("a", mtime=MTIME - 10),
            dir_("a/b", mtime=MTIME - 20),
            reg("a/b/f", b"1"),
            reg("a/g", b"2"),
            reg("a/.wh.gone", b""),  # creating the whiteout touches a/ too
            dir_("c", mtime=MTIME - 30),
            dir_("c", mtime=MTIME - 40, mode=0o700),  # the second entry wins
        ],
    )
    assert (dest / "a").lstat().st_mtime_ns == (MTIME - 10) * 10**9
    assert (dest / "a/b").lstat().st_mtime_ns == (MTIME - 20) * 10**9
    st = (dest / "c").lstat()
    assert st.st_mtime_ns == (MTIME - 40) * 10**9 and stat.S_IMODE(st.st_mode) == 0o700
    st = dest.lstat()  # the root entry applies to the snapshot directory itself
    assert st.st_mtime_ns == (MTIME - 100) * 10**9
    assert stat.S_IMODE(st.st_mode) == 0o750 and st.st_uid == 1234


def test_pax_sub_second_times_are_exact(tmp_path: Path) -> None:
    dest, _ = unpack(
        tmp_path,
        [
            reg("f", b"x", pax={"mtime": "1600000000.123456789", "atime": "1500000000.5"}),
            dir_("d", pax={"mtime": "1600000001.000000001"}),
        ],
    )
    st = (dest / "f").lstat()
    assert st.st_mtime_ns == 1_600_000_000_123_456_789
    assert st.st_atime_ns == 1_500_000_000_500_000_000
    assert (dest / "d").lstat().st_mtime_ns == 1_600_000_001_000_000_001


def test_large_ids_and_base256_numbers(tmp_path: Path) -> None:
    members = [reg("f", b"x", uid=3_000_000, gid=4_000_000), dir_("d", uid=2**21)]
    for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):  # base-256 fields / PAX records
        dest, _ = unpack(tmp_path, members, fmt=fmt, name=f"fmt{fmt}")
        st = (dest / "f").lstat()
        assert (st.st_uid, st.st_gid) == (3_000_000, 4_000_000)
        assert (dest / "d").lstat().st_uid == 2**21


def test_xattrs(tmp_path: Path) -> None:
    binary = b"\xff\x00\x01binary"
    dest, _ = unpack(
        tmp_path,
        [
            dir_("d", xattrs={"user.dir": b"on a dir", "trusted.t": b"1"}),
            reg("d/f", b"data", xattrs={"user.comment": b"hello", "trusted.bin": binary}),
            sym("d/l", "f", xattrs={"trusted.link": b"on the link"}),
            reg(
                "capped",
                b"\x7fELF",
                mode=0o755,
                uid=1234,
                xattrs={"security.capability": _cap_net_bind()},
            ),
        ],
    )
    assert os.getxattr(dest / "d", "user.dir") == b"on a dir"
    assert os.getxattr(dest / "d", "trusted.t") == b"1"
    assert os.getxattr(dest / "d/f", "user.comment") == b"hello"
    assert os.getxattr(dest / "d/f", "trusted.bin") == binary
    assert os.getxattr(dest / "d/l", "trusted.link", follow_symlinks=False) == b"on the link"
    with pytest.raises(OSError):
        os.getxattr(dest / "d/f", "trusted.link")  # not set through the symlink
    # Set after chown (which drops file capabilities).
    assert os.getxattr(dest / "capped", "security.capability") == _cap_net_bind()


def _cap_net_bind() -> bytes:
    # VFS_CAP_REVISION_2, effective; permitted = CAP_NET_BIND_SERVICE (10).
    return (0x02000001).to_bytes(4, "little") + (1 << 10).to_bytes(4, "little") + bytes(12)


def test_hard_links(tmp_path: Path) -> None:
    dest, result = unpack(
        tmp_path,
        [
            reg("a", b"data"),
            hard("b", "a"),
            hard("./sub/c", "./a"),  # other directory, "./" spellings
            sym("s", "a"),
            hard("s2", "s"),  # a hard link to the symlink itself
            reg("d", b"old"),
            hard("d", "a"),  # replaces d
            hard("a", "a"),  # a link to itself: nothing happens
        ],
    )
    ino = (dest / "a").lstat().st_ino
    for name in ("b", "sub/c", "d"):
        assert (dest / name).lstat().st_ino == ino
    assert (dest / "a").lstat().st_nlink == 4
    assert (dest / "a").read_bytes() == b"data"
    assert (dest / "s2").is_symlink() and (dest / "s2").lstat().st_ino == (
        dest / "s"
    ).lstat().st_ino
    assert result.size == 4 + 3


def test_replacing_entries(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "target").write_bytes(b"precious")
    outside_mode = outside.stat().st_mode
    dest, _ = unpack(
        tmp_path,
        [
            sym("f", str(outside / "target")),
            reg("f", b"file over symlink"),  # the symlink goes, nothing written through it
            reg("g", b"first"),
            hard("g2", "g"),
            reg("g", b"second"),  # a new inode: the hard link keeps the old content
            dir_("x"),
            reg("x/inner", b"1"),
            reg("x", b"file over directory"),
            reg("y", b"file"),
            dir_("y", mode=0o700),  # directory over file
            reg("y/inner", b"2"),
            sym("z", str(outside)),
            dir_("z", mode=0o700),  # directory over a symlink to a directory
            reg("n", b"file"),
            fifo("n"),
            dev("n", tarfile.CHRTYPE, 1, 5),
        ],
    )
    assert (dest / "f").read_bytes() == b"file over symlink" and not (dest / "f").is_symlink()
    assert (outside / "target").read_bytes() == b"precious"
    assert (dest / "g").read_bytes() == b"second" and (dest / "g2").read_bytes() == b"first"
    assert (dest / "x").read_bytes() == b"file over directory"
    assert (dest / "y/inner").read_bytes() == b"2"
    assert stat.S_IMODE((dest / "y").lstat().st_mode) == 0o700
    st = (dest / "z").lstat()
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700
    assert outside.stat().st_mode == outside_mode
    assert stat.S_ISCHR((dest / "n").lstat().st_mode)
    assert (dest / "n").lstat().st_rdev == os.makedev(1, 5)


def test_big_files_small_chunks(tmp_path: Path) -> None:
    big = os.urandom(300_001)
    zeros = bytes(1 << 20)  # compresses ~1000x: exercises bounded decompression
    for compression in ("gzip", "zstd", "plain"):
        dest, result = unpack(
            tmp_path,
            [reg("big", big), reg("zeros", zeros), reg("small", b"s")],
            compression=compression,
            name=compression,
            chunk_size=4096,
        )
        assert (dest / "big").read_bytes() == big
        assert (dest / "zeros").read_bytes() == zeros
        assert (dest / "small").read_bytes() == b"s"
        assert result.size == len(big) + len(zeros) + 1


def test_gnu_sparse_file(tmp_path: Path) -> None:
    if shutil.which("tar") is None:
        pytest.skip("GNU tar is needed to write a sparse archive")
    src = tmp_path / "src"
    src.mkdir()
    with (src / "sparse").open("wb") as f:
        f.truncate(1 << 20)
        f.seek(512 * 1024)
        f.write(b"middle")
    blob = tmp_path / "sparse.tar"
    subprocess.run(
        ["tar", "--sparse", "--format=gnu", "-C", str(src), "-cf", str(blob), "sparse"],
        check=True,
    )
    dest = tmp_path / "rootfs"
    result = unpack_layer(blob, dest)
    data = (dest / "sparse").read_bytes()
    assert len(data) == 1 << 20 and data[512 * 1024 : 512 * 1024 + 6] == b"middle"
    assert data.count(0) == (1 << 20) - 6
    assert result.diff_id == diff_id(blob.read_bytes())


# -- whiteouts -------------------------------------------------------------------------


def test_whiteouts_become_overlayfs_whiteouts(tmp_path: Path) -> None:
    dest, result = unpack(
        tmp_path,
        [
            dir_("etc"),
            reg("etc/.wh.passwd", b"", uid=1234),
            dir_("opaque"),
            reg("opaque/.wh..wh..opq", b""),
            reg("opaque/new", b"n"),
            reg("implicit/.wh..wh..opq", b""),  # the directory is created
            reg(".wh.top", b""),
            reg(".wh..wh.plnk/123.456", b"aufs"),  # AUFS metadata: ignored
            dir_(".wh..wh.orph"),
            reg("same/f", b"kept"),
            reg("same/.wh.f", b""),  # only hides lower layers: f stays
            dir_("same/d"),
            reg("same/.wh.d", b""),  # a directory of this layer becomes opaque instead
            reg("same/.wh.e", b""),
            dir_("same/e"),  # recreated after its whiteout: opaque
            reg("same/.wh.g", b""),
            reg("same/g", b"recreated file"),
        ],
    )
    passwd = dest / "etc/passwd"
    assert is_whiteout(passwd) and passwd.lstat().st_uid == 1234
    assert not (dest / "etc/.wh.passwd").exists()
    assert os.getxattr(dest / "opaque", OVERLAY_OPAQUE_XATTR) == b"y"
    assert sorted(os.listdir(dest / "opaque")) == ["new"]
    assert os.getxattr(dest / "implicit", OVERLAY_OPAQUE_XATTR) == b"y"
    assert is_whiteout(dest / "top")
    assert not any(name.startswith(".wh.") for name in os.listdir(dest))
    assert (dest / "same/f").read_bytes() == b"kept"
    assert os.getxattr(dest / "same/d", OVERLAY_OPAQUE_XATTR) == b"y"
    assert os.getxattr(dest / "same/e", OVERLAY_OPAQUE_XATTR) == b"y"
    assert (dest / "same/g").read_bytes() == b"recreated file"
    with pytest.raises(OSError):
        os.getxattr(dest / "etc", OVERLAY_OPAQUE_XATTR)
    assert result.size == len(b"nkeptrecreated file")


def test_overlayfs_mount_of_two_layers(tmp_path: Path) -> None:
    if "overlay" not in Path("/proc/filesystems").read_text():
        pytest.skip("no overlayfs in this kernel")
    lower, _ = unpack(
        tmp_path,
        [
            dir_("etc"),
            reg("etc/x", b"x"),
            reg("etc/keep", b"k"),
            dir_("d"),
            reg("d/a", b"a"),
            reg("d/b", b"b"),
        ],
        name="lower",
    )
    upper, _ = unpack(
        tmp_path,
        [
            dir_("etc"),
            reg("etc/.wh.x", b""),
            dir_("d"),
            reg("d/.wh..wh..opq", b""),
            reg("d/c", b"c"),
        ],
        name="upper",
    )
    mnt, rw, work = tmp_path / "mnt", tmp_path / "rw", tmp_path / "work"
    for path in (mnt, rw, work):
        path.mkdir()
    options = f"lowerdir={upper}:{lower},upperdir={rw},workdir={work}"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, str(mnt)], check=True)
    try:
        assert not (mnt / "etc/x").exists()
        assert (mnt / "etc/keep").read_bytes() == b"k"
        assert sorted(os.listdir(mnt / "etc")) == ["keep"]
        assert sorted(os.listdir(mnt / "d")) == ["c"]
        assert (mnt / "d/c").read_bytes() == b"c"
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


# -- compression, diff id ----------------------------------------------------------------


@pytest.mark.parametrize("compression", ["gzip", "zstd", "plain"])
def test_compression_detection_and_diff_id(tmp_path: Path, compression: str) -> None:
    tar_bytes = build_tar([dir_("d"), reg("d/f", b"content" * 1000), sym("l", "d/f")])
    blob = write_layer(tmp_path / "layer", tar_bytes, compression)
    result = unpack_layer(blob, tmp_path / "rootfs")
    assert result == UnpackResult(diff_id=diff_id(tar_bytes), size=7000, inodes=3)
    assert (tmp_path / "rootfs/d/f").read_bytes() == b"content" * 1000


def test_multi_member_gzip_and_multi_frame_zstd(tmp_path: Path) -> None:
    tar_bytes = build_tar([reg(f"f{i}", os.urandom(5000)) for i in range(20)])
    cut = len(tar_bytes) // 3
    parts = (tar_bytes[:cut], tar_bytes[cut : 2 * cut], tar_bytes[2 * cut :])
    cctx = zstandard.ZstdCompressor()
    blobs = {
        "gz": b"".join(gzip.compress(p, mtime=0) for p in parts),
        "zst": b"".join(cctx.compress(p) for p in parts),
    }
    for name, data in blobs.items():
        blob = tmp_path / name
        blob.write_bytes(data)
        result = unpack_layer(blob, tmp_path / f"rootfs-{name}")
        assert result.diff_id == diff_id(tar_bytes)
        assert result.inodes == 20 and result.size == 20 * 5000


def test_empty_blob_is_an_empty_layer(tmp_path: Path) -> None:
    blob = tmp_path / "empty"
    blob.write_bytes(b"")
    result = unpack_layer(blob, tmp_path / "rootfs")
    assert result == UnpackResult(diff_id=diff_id(b""), size=0, inodes=0)
    assert os.listdir(tmp_path / "rootfs") == []


def test_empty_tar(tmp_path: Path) -> None:
    tar_bytes = build_tar([])
    blob = write_layer(tmp_path / "layer", tar_bytes)
    result = unpack_layer(blob, tmp_path / "rootfs")
    assert result == UnpackResult(diff_id=diff_id(tar_bytes), size=0, inodes=0)


# -- corrupt layers ----------------------------------------------------------------------


def _sample_tar() -> bytes:
    return build_tar([reg("a", os.urandom(20_000)), reg("b", os.urandom(20_000))])


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_truncated_compressed_stream(tmp_path: Path, compression: str) -> None:
    blob = tmp_path / "layer"
    blob.write_bytes(compress(_sample_tar(), compression)[:-20])
    with pytest.raises(LayerError, match="truncated"):
        unpack_layer(blob, tmp_path / "rootfs")


def test_truncated_tar(tmp_path: Path) -> None:
    tar_bytes = _sample_tar()
    blob = write_layer(tmp_path / "layer", tar_bytes[:30_000], "plain")
    with pytest.raises(LayerError, match="truncated"):
        unpack_layer(blob, tmp_path / "rootfs")


def test_corrupt_header_is_not_taken_for_the_end(tmp_path: Path) -> None:
    tar_bytes = bytearray(_sample_tar())
    second = 512 + 20_480  # header of "b"
    assert tar_bytes[second : second + 1] == b"b"
    tar_bytes[second + 10] ^= 0xFF
    blob = write_layer(tmp_path / "layer", bytes(tar_bytes), "gzip")
    with pytest.raises(LayerError, match="corrupt tar header"):
        unpack_layer(blob, tmp_path / "rootfs")


def test_corrupt_gzip_and_trailing_garbage(tmp_path: Path) -> None:
    good = compress(_sample_tar(), "gzip")
    blob = tmp_path / "garbage"
    blob.write_bytes(good + b"garbage!")
    with pytest.raises(LayerError, match="trailing garbage"):
        unpack_layer(blob, tmp_path / "rootfs1")
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF
    blob.write_bytes(bytes(bad))
    with pytest.raises(LayerError):
        unpack_layer(blob, tmp_path / "rootfs2")


def test_not_a_tar(tmp_path: Path) -> None:
    blob = tmp_path / "layer"
    blob.write_bytes(b"this is not a tar archive at all" * 100)
    with pytest.raises(LayerError):
        unpack_layer(blob, tmp_path / "rootfs")


# -- safety ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["/etc/evil", "../evil", "a/../../evil", "./../evil", "a/b/../../../evil"]
)
def test_names_outside_the_root_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(LayerError, match="evil"):
        unpack(tmp_path, [reg("a/b/ok", b"1"), reg(name, b"x")])
    assert not (tmp_path / "evil").exists() and not Path("/etc/evil").exists()


def test_lexical_dotdot_inside_the_root_is_fine(tmp_path: Path) -> None:
    dest, _ = unpack(tmp_path, [reg("a/b/../c", b"1"), reg("./d/./e", b"2")])
    assert (dest / "a/c").read_bytes() == b"1" and (dest / "d/e").read_bytes() == b"2"


@pytest.mark.parametrize("target", ["ABS", "../outside", "../../outside"])
def test_symlink_parent_is_never_followed(tmp_path: Path, target: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    link_target = str(outside) if target == "ABS" else target
    for member in (reg("a/evil", b"x"), dir_("a/evil"), reg("a/.wh.evil"),
                   reg("a/.wh..wh..opq"), sym("a/evil", "x"), reg("a/sub/evil", b"x")):  # fmt: skip
        shutil.rmtree(tmp_path / "rootfs", ignore_errors=True)
        with pytest.raises(LayerError, match="symlink"):
            unpack(tmp_path, [dir_("d"), sym("a", link_target), member])
        assert os.listdir(outside) == []
        with pytest.raises(OSError):
            os.getxattr(outside, OVERLAY_OPAQUE_XATTR)


def test_symlink_to_a_directory_inside_is_not_followed_either(tmp_path: Path) -> None:
    with pytest.raises(LayerError, match="symlink"):
        unpack(tmp_path, [dir_("usr/lib"), sym("lib", "usr/lib"), reg("lib/libc.so", b"x")])
    assert not (tmp_path / "rootfs/usr/lib/libc.so").exists()


def test_non_directory_parent_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LayerError, match="not a directory"):
        unpack(tmp_path, [reg("f", b"file"), reg("f/g", b"x")])


@pytest.mark.parametrize("linkname", ["../outside/secret", "/etc/passwd", "l/secret", "a/../../x"])
def test_hard_links_outside_are_refused(tmp_path: Path, linkname: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    with pytest.raises(LayerError):
        unpack(tmp_path, [sym("l", str(outside)), hard("h", linkname)])
    assert (outside / "secret").stat().st_nlink == 1
    assert not (tmp_path / "rootfs/h").exists()


def test_hard_link_to_a_missing_target(tmp_path: Path) -> None:
    with pytest.raises(LayerError, match="not in the layer"):
        unpack(tmp_path, [hard("h", "nothing/here")])
    with pytest.raises(LayerError, match="not in the layer"):
        unpack(tmp_path, [dir_("d"), hard("h", "d/none")], name="rootfs2")


def test_invalid_whiteouts(tmp_path: Path) -> None:
    with pytest.raises(LayerError, match="invalid whiteout"):
        unpack(tmp_path, [reg("a/.wh..", b"")])
    with pytest.raises(LayerError, match="whiteout used as a directory"):
        unpack(tmp_path, [reg(".wh.a/b", b"")], name="rootfs2")


def test_destination_must_be_new_or_empty(tmp_path: Path) -> None:
    blob = write_layer(tmp_path / "layer", build_tar([reg("f", b"1")]))
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "existing").write_bytes(b"")
    with pytest.raises(FileExistsError):
        unpack_layer(blob, dest)
    assert os.listdir(dest) == ["existing"]

    empty = tmp_path / "empty"
    empty.mkdir(mode=0o700)
    unpack_layer(blob, empty)
    assert (empty / "f").read_bytes() == b"1"
    assert stat.S_IMODE(empty.stat().st_mode) == 0o755

    target = tmp_path / "target"
    target.mkdir()
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(OSError):
        unpack_layer(blob, tmp_path / "link")
    assert os.listdir(target) == []


def test_chunk_size_must_be_sane(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        unpack_layer(tmp_path / "x", tmp_path / "y", chunk_size=10)


def test_unsupported_and_odd_members(tmp_path: Path) -> None:
    with pytest.raises(LayerError, match="unsupported tar entry type"):
        unpack(tmp_path, [(_info("weird", b"Z"), None)], name="r1")
    with pytest.raises(LayerError, match="cannot hard-link"):
        unpack(tmp_path, [dir_("d"), hard("h", "d")], name="r2")
    with pytest.raises(LayerError, match="invalid PAX time"):
        unpack(tmp_path, [reg("f", b"x", pax={"mtime": "soon"})], name="r3")
    with pytest.raises(LayerError, match="root is not a directory"):
        unpack(tmp_path, [reg("./", b"")], name="r4")


def test_no_thread_is_left_behind_on_errors(tmp_path: Path) -> None:
    before = threading.active_count()
    big = build_tar([reg(f"f{i}", os.urandom(100_000)) for i in range(50)] + [reg("/abs", b"")])
    blob = write_layer(tmp_path / "layer", big, "gzip")
    with pytest.raises(LayerError, match="absolute"):
        unpack_layer(blob, tmp_path / "rootfs", chunk_size=4096)
    assert threading.active_count() == before
