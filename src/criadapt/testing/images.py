"""Build container images in memory for tests and benchmarks, without docker or a network.

Everything here is deterministic: the same call gives the same bytes, so the same digests
(layer tars have fixed mtimes, sorted entries and numeric owners; gzip streams have
``mtime=0``; JSON is compact with a fixed key order). Compressed digests are stable for one
zlib / zstd library version; ``diff_ids`` (digests of the uncompressed tars) always are.

Layers
    :func:`busybox_rootfs_layer` is a small runnable root filesystem (``/bin/busybox`` of the
    host, copied from ``/bin/busybox`` of Debian's ``busybox-static``, plus applet symlinks,
    ``/etc/passwd`` with ``root``, ``nobody`` and ``app`` (1000:1000), ``/tmp``, ...).
    :func:`tar_layer` builds any layer from ``{path: bytes | FileSpec}``, including
    directories, symlinks, hardlinks, whiteouts and opaque directories.

Images
    :func:`build_image` turns uncompressed layer tars and a config into an :class:`Image`
    (compressed blobs, config JSON, manifest JSON; OCI or Docker schema 2 media types).
    :func:`build_index` groups images into an :class:`ImageIndex` (OCI index or Docker
    manifest list). :func:`busybox_image` and :func:`big_image` are ready-made images.

Archives
    :func:`write_oci_layout` writes an OCI image layout tar (``skopeo ... oci-archive:``,
    ``ctr import``, ``podman load``), :func:`write_oci_dir` the same as a directory
    (``umoci``, ``skopeo ... oci:``), :func:`write_docker_archive` what ``docker save`` writes
    (``docker load``, ``podman load``, ``skopeo ... docker-archive:``).

To serve images from a real registry, see :mod:`criadapt.testing.registry`.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib
import io
import json
import platform
import random
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeAlias

import attrs

__all__ = [
    "BUSYBOX_APPLETS",
    "DEFAULT_PATH",
    "DOCKER_CONFIG",
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "FIXED_MTIME",
    "OCI_CONFIG",
    "OCI_INDEX",
    "OCI_MANIFEST",
    "Artifact",
    "FileSpec",
    "Image",
    "ImageIndex",
    "Layer",
    "big_image",
    "build_image",
    "build_index",
    "busybox_image",
    "busybox_rootfs_layer",
    "host_architecture",
    "other_architecture",
    "sha256_digest",
    "tar_layer",
    "write_docker_archive",
    "write_oci_dir",
    "write_oci_layout",
]

Compression: TypeAlias = Literal["gzip", "zstd", "none"]
Media: TypeAlias = Literal["oci", "docker"]
Named: TypeAlias = "Mapping[str, Artifact] | Iterable[tuple[str | None, Artifact]]"

#: mtime of every tar entry and ``created`` of every config (2000-01-01T00:00:00Z).
FIXED_MTIME = 946684800
_CREATED = "2000-01-01T00:00:00Z"

#: ``PATH`` of :func:`busybox_image` (the one docker's busybox image sets).
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: Applets :func:`busybox_rootfs_layer` links to ``/bin/busybox`` by default.
BUSYBOX_APPLETS: tuple[str, ...] = (
    "sh",
    "echo",
    "cat",
    "sleep",
    "ls",
    "id",
    "wget",
    "httpd",
    "true",
    "false",
    "env",
    "mkdir",
    "rm",
    "touch",
    "ps",
    "kill",
    "hostname",
    "grep",
    "head",
    "tail",
    "nc",
    "date",
    "seq",
    "wc",
    "yes",
    "dd",
    "top",
    "mount",
    "pwd",
    "stat",
    "test",
    "chmod",
    "chown",
    "cp",
    "mv",
    "ln",
    "uname",
    "whoami",
    "cut",
    "sed",
    "find",
    "tr",
    "umount",
    "xargs",
)

_BUSYBOX_BINARY = Path("/bin/busybox")

# Media types.
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
_LAYER_MEDIA_TYPES: dict[tuple[str, str], str] = {
    ("oci", "gzip"): "application/vnd.oci.image.layer.v1.tar+gzip",
    ("oci", "zstd"): "application/vnd.oci.image.layer.v1.tar+zstd",
    ("oci", "none"): "application/vnd.oci.image.layer.v1.tar",
    ("docker", "gzip"): "application/vnd.docker.image.rootfs.diff.tar.gzip",
    # Not in the Docker schema 2 spec; containerd and moby know it.
    ("docker", "zstd"): "application/vnd.docker.image.rootfs.diff.tar.zstd",
    ("docker", "none"): "application/vnd.docker.image.rootfs.diff.tar",
}

_GOARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv7l": "arm",
    "armv6l": "arm",
    "i386": "386",
    "i686": "386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
    "mips64": "mips64",
}


def host_architecture() -> str:
    """This machine's architecture as Go (``GOARCH``) and OCI platforms name it."""
    machine = platform.machine().lower()
    return _GOARCH.get(machine, machine)


def other_architecture() -> str:
    """An architecture that is not this machine's (``arm64`` on amd64, ``s390x`` else)."""
    return "arm64" if host_architecture() != "arm64" else "s390x"


def sha256_digest(data: bytes) -> str:
    """``sha256:<hex>`` of *data*."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


# --------------------------------------------------------------------------------------------
# Layers


@attrs.frozen
class FileSpec:
    """One entry of :func:`tar_layer` beyond a plain file (which a ``bytes`` value gives).

    Use the constructors: :meth:`file`, :meth:`dir`, :meth:`symlink`, :meth:`hardlink`,
    :meth:`whiteout`, :meth:`opaque`. ``mode`` is the permission bits (with setuid, setgid
    and sticky; default 0644 for files, 0755 for directories, 0777 for symlinks).
    """

    kind: Literal["file", "dir", "symlink", "hardlink", "whiteout", "opaque"] = "file"
    data: bytes = b""
    target: str = ""
    mode: int | None = None
    uid: int = 0
    gid: int = 0
    mtime: int = FIXED_MTIME

    @classmethod
    def file(cls, data: bytes = b"", *, mode: int = 0o644, uid: int = 0, gid: int = 0) -> FileSpec:
        """A regular file."""
        return cls("file", data=data, mode=mode, uid=uid, gid=gid)

    @classmethod
    def dir(cls, *, mode: int = 0o755, uid: int = 0, gid: int = 0) -> FileSpec:
        """A directory."""
        return cls("dir", mode=mode, uid=uid, gid=gid)

    @classmethod
    def symlink(cls, target: str, *, uid: int = 0, gid: int = 0) -> FileSpec:
        """A symbolic link to *target* (written as given: relative or absolute)."""
        return cls("symlink", target=target, mode=0o777, uid=uid, gid=gid)

    @classmethod
    def hardlink(cls, target: str) -> FileSpec:
        """A hard link to *target*, another path of the same layer (without leading ``/``)."""
        return cls("hardlink", target=target)

    @classmethod
    def whiteout(cls) -> FileSpec:
        """Delete this path of lower layers: ``a/b`` is written as the entry ``a/.wh.b``."""
        return cls("whiteout")

    @classmethod
    def opaque(cls, *, mode: int = 0o755) -> FileSpec:
        """This directory hides everything lower layers have in it.

        ``a`` is written as the directory ``a/`` and the entry ``a/.wh..wh..opq``.
        """
        return cls("opaque", mode=mode)


def _norm(path: str) -> str:
    parts = [p for p in path.strip("/").split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise ValueError(f"bad layer path {path!r}")
    return "/".join(parts)


def tar_layer(files: Mapping[str, bytes | FileSpec], *, parents: bool = True) -> bytes:
    """An uncompressed, deterministic tar layer of *files* (``{path: bytes | FileSpec}``).

    Paths may start with ``/``; they are written relative (``bin/sh``), as image layers are.
    ``bytes`` is a regular file with mode 0644. With *parents* (the default) every missing
    parent directory is added (0755, root); entries are sorted by path with hard links last
    (their targets must come first), all with mtime :data:`FIXED_MTIME`.
    """
    entries: dict[str, FileSpec] = {}
    for raw, value in files.items():
        path = _norm(raw)
        spec = value if isinstance(value, FileSpec) else FileSpec.file(value)
        if spec.kind == "whiteout":
            head, _, name = path.rpartition("/")
            path = f"{head}/.wh.{name}" if head else f".wh.{name}"
            spec = attrs.evolve(spec, kind="file", mode=0o644)
        elif spec.kind == "opaque":
            entries[path] = attrs.evolve(spec, kind="dir")
            path = f"{path}/.wh..wh..opq"
            spec = FileSpec.file(b"")
        entries[path] = spec
    if parents:
        for path in list(entries):
            parts = path.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                entries.setdefault("/".join(parts[:i]), FileSpec.dir())

    def order(item: tuple[str, FileSpec]) -> tuple[bool, str]:
        return item[1].kind == "hardlink", item[0]

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, spec in sorted(entries.items(), key=order):
            info = tarfile.TarInfo(path)
            info.mtime = spec.mtime
            info.uid, info.gid = spec.uid, spec.gid
            info.uname = info.gname = ""
            data: bytes | None = None
            if spec.kind == "file":
                info.type = tarfile.REGTYPE
                info.mode = 0o644 if spec.mode is None else spec.mode
                info.size = len(spec.data)
                data = spec.data
            elif spec.kind == "dir":
                info.type = tarfile.DIRTYPE
                info.mode = 0o755 if spec.mode is None else spec.mode
            elif spec.kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.mode = 0o777 if spec.mode is None else spec.mode
                info.linkname = spec.target
            elif spec.kind == "hardlink":
                target = _norm(spec.target)
                if target not in entries:
                    raise ValueError(f"hard link {path!r} to {target!r}: no such entry")
                info.type = tarfile.LNKTYPE
                info.mode = entries[target].mode or 0o644
                info.linkname = target
            else:  # pragma: no cover - normalised above
                raise ValueError(f"unknown kind {spec.kind!r}")
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def busybox_rootfs_layer(
    extra_files: Mapping[str, bytes | FileSpec] | None = None,
    *,
    applets: Sequence[str] = BUSYBOX_APPLETS,
    busybox: Path = _BUSYBOX_BINARY,
) -> bytes:
    """An uncompressed tar layer with a runnable busybox root filesystem.

    ``bin/busybox`` (copied from *busybox*, mode 0755), ``bin/<applet> -> busybox`` for each
    of *applets*, directories ``etc``, ``tmp`` (1777), ``proc``, ``sys``, ``dev``, ``root``
    (0700), ``var``, ``usr/bin``, ``home/app`` (owned by 1000:1000), ``etc/passwd`` with
    ``root`` (0), ``nobody`` (65534) and ``app`` (1000:1000), ``etc/group`` with ``root``,
    ``nogroup`` (65534) and ``app`` (1000), and empty ``etc/hosts``, ``etc/resolv.conf``,
    ``etc/hostname`` (bind-mount targets). *extra_files* are added (and may replace any of
    those). Deterministic: the same arguments (and busybox binary) give the same bytes.

    Raises :class:`FileNotFoundError` without the busybox binary (Debian: ``busybox-static``).
    """
    files: dict[str, bytes | FileSpec] = {
        "bin": FileSpec.dir(),
        "bin/busybox": FileSpec.file(busybox.read_bytes(), mode=0o755),
        "dev": FileSpec.dir(),
        "etc": FileSpec.dir(),
        "etc/passwd": (
            b"root:x:0:0:root:/root:/bin/sh\n"
            b"app:x:1000:1000:app:/home/app:/bin/sh\n"
            b"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
        ),
        "etc/group": b"root:x:0:\napp:x:1000:\nnogroup:x:65534:\n",
        "etc/hosts": b"",
        "etc/resolv.conf": b"",
        "etc/hostname": b"",
        "home": FileSpec.dir(),
        "home/app": FileSpec.dir(uid=1000, gid=1000),
        "proc": FileSpec.dir(),
        "root": FileSpec.dir(mode=0o700),
        "sys": FileSpec.dir(),
        "tmp": FileSpec.dir(mode=0o1777),
        "usr": FileSpec.dir(),
        "usr/bin": FileSpec.dir(),
        "var": FileSpec.dir(),
    }
    for applet in applets:
        if applet != "busybox":
            files[f"bin/{applet}"] = FileSpec.symlink("busybox")
    files.update({_norm(k): v for k, v in (extra_files or {}).items()})
    return tar_layer(files)


# --------------------------------------------------------------------------------------------
# Images


def _compress(data: bytes, compression: Compression, level: int | None) -> bytes:
    if compression == "gzip":
        return gzip.compress(data, compresslevel=6 if level is None else level, mtime=0)
    if compression == "zstd":
        zstd: Any = importlib.import_module("zstandard")  # optional: pip install zstandard
        return bytes(zstd.ZstdCompressor(level=3 if level is None else level).compress(data))
    if compression == "none":
        return data
    raise ValueError(f"unknown compression {compression!r}")


@attrs.frozen
class Layer:
    """One layer of an :class:`Image`: its blob as stored in a registry and its tar."""

    blob: bytes = attrs.field(repr=False)
    media_type: str
    diff_id: str
    uncompressed: bytes = attrs.field(repr=False, eq=False)

    @property
    def digest(self) -> str:
        """Digest of the (compressed) blob."""
        return sha256_digest(self.blob)

    @property
    def size(self) -> int:
        return len(self.blob)

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


class Artifact:
    """What a tag can name: an :class:`Image` or an :class:`ImageIndex`."""

    __slots__ = ()

    manifest: bytes
    media_type: str

    @property
    def digest(self) -> str:
        """The manifest digest."""
        return sha256_digest(self.manifest)

    @property
    def size(self) -> int:
        """Size of the manifest (as in a descriptor)."""
        return len(self.manifest)

    @property
    def manifest_json(self) -> dict[str, Any]:
        """The parsed manifest."""
        result: dict[str, Any] = json.loads(self.manifest)
        return result

    def descriptor(self) -> dict[str, Any]:
        """The manifest's descriptor."""
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@attrs.frozen
class Image(Artifact):
    """An image as a registry stores it: layer blobs, config JSON and manifest JSON.

    ``config`` and ``manifest`` are the exact bytes to push; :attr:`digest` is the manifest
    digest (what ``image@sha256:...`` references and ``Docker-Content-Digest`` reports),
    :attr:`config_digest` the image id (``ImageStatus.id`` / ``crictl images`` id).
    """

    layers: tuple[Layer, ...]
    config: bytes = attrs.field(repr=False)
    manifest: bytes = attrs.field(repr=False)
    media_type: str
    config_media_type: str
    architecture: str
    os: str
    variant: str | None = None

    @property
    def config_digest(self) -> str:
        """The config digest, i.e. the image id."""
        return sha256_digest(self.config)

    @property
    def id(self) -> str:
        """Same as :attr:`config_digest`."""
        return self.config_digest

    @property
    def total_size(self) -> int:
        """Manifest, config and layer blobs together (``ImageStatus.size`` of containerd)."""
        return len(self.manifest) + len(self.config) + sum(layer.size for layer in self.layers)

    @property
    def diff_ids(self) -> list[str]:
        return [layer.diff_id for layer in self.layers]

    @property
    def config_json(self) -> dict[str, Any]:
        """The parsed config."""
        result: dict[str, Any] = json.loads(self.config)
        return result

    @property
    def blobs(self) -> dict[str, bytes]:
        """``{digest: bytes}`` of the config and layer blobs (not the manifest)."""
        out = {self.config_digest: self.config}
        out.update((layer.digest, layer.blob) for layer in self.layers)
        return out

    def platform(self) -> dict[str, str]:
        result = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            result["variant"] = self.variant
        return result

    def descriptor(self, *, platform: bool = False) -> dict[str, Any]:
        """The manifest's descriptor (with ``platform`` for an index entry)."""
        result: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if platform:
            result["platform"] = self.platform()
        return result


@attrs.frozen
class ImageIndex(Artifact):
    """An OCI image index or Docker manifest list of :class:`Image` s (see :func:`build_index`)."""

    images: tuple[Image, ...]
    manifest: bytes = attrs.field(repr=False)
    media_type: str

    def for_platform(self, architecture: str, os: str = "linux") -> Image:
        """The image for *architecture* / *os*; :class:`KeyError` if there is none."""
        for image in self.images:
            if image.architecture == architecture and image.os == os:
                return image
        raise KeyError(f"{os}/{architecture}")


_LIST_KEYS = ("Volumes", "ExposedPorts")


def _container_config(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The image config's ``config`` object; ``Volumes`` / ``ExposedPorts`` may be lists."""
    result: dict[str, Any] = {}
    for key, given in (config or {}).items():
        value: Any = given
        if key in _LIST_KEYS and not isinstance(given, Mapping):
            value = {str(item): {} for item in given}
        elif key in _LIST_KEYS:
            value = {str(k): dict(v) for k, v in given.items()}
        elif isinstance(given, tuple):
            value = list(given)
        elif isinstance(given, Mapping):
            value = dict(given)
        result[key] = value
    return result


def build_image(
    layers: Sequence[bytes],
    *,
    config: Mapping[str, Any] | None = None,
    compression: Compression = "gzip",
    media: Media = "oci",
    architecture: str | None = None,
    os: str = "linux",
    variant: str | None = None,
    compression_level: int | None = None,
    annotations: Mapping[str, str] | None = None,
    history: Sequence[str] | None = None,
) -> Image:
    """An :class:`Image` of *layers* (uncompressed tars, lowest first).

    *config* is the image config's ``config`` object, in the docker/OCI spelling:
    ``Entrypoint``, ``Cmd``, ``Env`` (``["K=V"]``), ``WorkingDir``, ``User``, ``Volumes``,
    ``StopSignal``, ``Labels``, ``ExposedPorts`` (``Volumes`` and ``ExposedPorts`` may be
    given as lists: ``["80/tcp"]``); other keys are written as given. The blobs are
    compressed with *compression* (``zstd`` needs the ``zstandard`` package); the manifest is
    OCI (``application/vnd.oci.image.manifest.v1+json``) or Docker schema 2
    (``application/vnd.docker.distribution.manifest.v2+json``) after *media*. *architecture*
    defaults to this machine's (:func:`host_architecture`). *history* gives one
    ``created_by`` per layer. *annotations* go into an OCI manifest.
    """
    if media not in ("oci", "docker"):
        raise ValueError(f"unknown media {media!r}")
    arch = architecture or host_architecture()
    layer_type = _LAYER_MEDIA_TYPES[(media, compression)]
    built = tuple(
        Layer(
            blob=_compress(tar, compression, compression_level),
            media_type=layer_type,
            diff_id=sha256_digest(tar),
            uncompressed=tar,
        )
        for tar in layers
    )
    if history is not None and len(history) != len(layers):
        raise ValueError("history needs one entry per layer")
    created_by = list(history) if history is not None else ["criadapt.testing.images"] * len(built)
    cfg: dict[str, Any] = {"created": _CREATED, "architecture": arch, "os": os}
    if variant:
        cfg["variant"] = variant
    cfg["config"] = _container_config(config)
    cfg["rootfs"] = {"type": "layers", "diff_ids": [layer.diff_id for layer in built]}
    cfg["history"] = [{"created": _CREATED, "created_by": by} for by in created_by]
    config_bytes = _dumps(cfg)
    manifest_type, config_type = (
        (OCI_MANIFEST, OCI_CONFIG) if media == "oci" else (DOCKER_MANIFEST, DOCKER_CONFIG)
    )
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": {
            "mediaType": config_type,
            "digest": sha256_digest(config_bytes),
            "size": len(config_bytes),
        },
        "layers": [layer.descriptor() for layer in built],
    }
    if annotations:
        if media != "oci":
            raise ValueError("annotations need media='oci'")
        manifest["annotations"] = dict(annotations)
    return Image(
        layers=built,
        config=config_bytes,
        manifest=_dumps(manifest),
        media_type=manifest_type,
        config_media_type=config_type,
        architecture=arch,
        os=os,
        variant=variant,
    )


def build_index(images: Sequence[Image], *, media: Media = "oci") -> ImageIndex:
    """An OCI image index (``application/vnd.oci.image.index.v1+json``) or, with
    ``media="docker"``, a Docker manifest list of *images*, each with its ``platform``."""
    media_type = OCI_INDEX if media == "oci" else DOCKER_MANIFEST_LIST
    body = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": [image.descriptor(platform=True) for image in images],
    }
    return ImageIndex(images=tuple(images), manifest=_dumps(body), media_type=media_type)


def busybox_image(
    *,
    extra_files: Mapping[str, bytes | FileSpec] | None = None,
    config: Mapping[str, Any] | None = None,
    compression: Compression = "gzip",
    media: Media = "oci",
    architecture: str | None = None,
) -> Image:
    """A one-layer busybox image (:func:`busybox_rootfs_layer`): ``Cmd ["sh"]``,
    ``Env [PATH]`` unless *config* says otherwise (it is merged over those)."""
    cfg: dict[str, Any] = {"Env": [DEFAULT_PATH], "Cmd": ["sh"]}
    cfg.update(config or {})
    return build_image(
        [busybox_rootfs_layer(extra_files)],
        config=cfg,
        compression=compression,
        media=media,
        architecture=architecture,
    )


def big_image(
    total_mb: float = 50,
    layers: int = 5,
    *,
    seed: int = 0,
    compression: Compression = "gzip",
    media: Media = "oci",
    base: bool = True,
) -> Image:
    """An image of about *total_mb* MiB of incompressible, deterministic data in *layers*
    layers (file ``data/layer-<i>.bin`` of seeded PRNG bytes each), on top of a busybox
    layer if *base* (so it can run ``sh``/``sleep``). gzip uses level 1 (the data does not
    compress anyway); building 50 MiB takes about a second."""
    if layers < 1:
        raise ValueError("layers must be >= 1")
    total = int(total_mb * 1024 * 1024)
    tars: list[bytes] = [busybox_rootfs_layer()] if base else []
    for i in range(layers):
        size = total // layers + (1 if i < total % layers else 0)
        data = random.Random(f"{seed}:{i}").randbytes(size)
        tars.append(tar_layer({f"data/layer-{i}.bin": data}))
    cfg = {"Env": [DEFAULT_PATH], "Cmd": ["sh"], "Labels": {"criadapt.test": "big"}}
    return build_image(tars, config=cfg, compression=compression, media=media, compression_level=1)


# --------------------------------------------------------------------------------------------
# Archives


def _named(images_with_names: Named) -> list[tuple[str | None, Artifact]]:
    if isinstance(images_with_names, Mapping):
        return list(images_with_names.items())
    return list(images_with_names)


def _oci_entries(images_with_names: Named) -> dict[str, bytes]:
    """``{path: bytes}`` of an OCI image layout of the named images/indexes."""
    blobs: dict[str, bytes] = {}

    def add_image(image: Image) -> None:
        blobs[image.digest] = image.manifest
        blobs.update(image.blobs)

    manifests: list[dict[str, Any]] = []
    for name, item in _named(images_with_names):
        if isinstance(item, ImageIndex):
            blobs[item.digest] = item.manifest
            for child in item.images:
                add_image(child)
        elif isinstance(item, Image):
            add_image(item)
        else:
            raise TypeError(f"not an Image or ImageIndex: {item!r}")
        descriptor = item.descriptor()
        if name:
            descriptor["annotations"] = {"org.opencontainers.image.ref.name": name}
        manifests.append(descriptor)
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
    files = {
        "oci-layout": _dumps({"imageLayoutVersion": "1.0.0"}),
        "index.json": _dumps(index),
    }
    for digest, data in blobs.items():
        algo, _, hexpart = digest.partition(":")
        files[f"blobs/{algo}/{hexpart}"] = data
    return files


def _write_tar(files: Mapping[str, bytes | FileSpec], dest: Path) -> Path:
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.write_bytes(tar_layer(files))
    tmp.replace(dest)
    return dest


def write_oci_layout(images_with_names: Named, dest_tar: Path) -> Path:
    """Write an OCI image layout archive to *dest_tar* and return it.

    *images_with_names* is ``{name: image}`` or ``[(name | None, image)]`` with
    :class:`Image` or :class:`ImageIndex` values; each is an entry of ``index.json``, *name*
    its ``org.opencontainers.image.ref.name`` annotation (``skopeo ... oci-archive:T:NAME``
    selects it; podman and ``ctr import`` take it as the image name, so a full reference like
    ``example.com/test/busybox:latest`` is usually what you want). Blobs are under
    ``blobs/sha256/<hex>``; the tar is deterministic.
    """
    return _write_tar(_oci_entries(images_with_names), dest_tar)


def write_oci_dir(images_with_names: Named, dest_dir: Path) -> Path:
    """Like :func:`write_oci_layout`, as a directory (for ``umoci`` or ``skopeo ... oci:``)."""
    dest_dir = Path(dest_dir)
    for rel, data in _oci_entries(images_with_names).items():
        path = dest_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return dest_dir


def _repo_tag(name: str) -> tuple[str, str]:
    repo, sep, tag = name.rpartition(":")
    if not sep or "/" in tag:
        return name, "latest"
    return repo, tag


def write_docker_archive(images_with_names: Named, dest_tar: Path) -> Path:
    """Write what ``docker save`` writes to *dest_tar* and return it.

    The classic layout (docker < 25, still read by every docker, podman and skopeo):
    ``manifest.json`` (``[{"Config", "RepoTags", "Layers"}]``), the config as
    ``<config-hex>.json``, each layer uncompressed as ``<diff-id-hex>/layer.tar`` (with
    ``VERSION`` and ``json``) and ``repositories``. Names without a tag get ``:latest``; the
    same image under several names is one entry with several ``RepoTags``; a ``None`` name
    is an untagged entry. Only :class:`Image` s: an archive has no indexes.
    """
    files: dict[str, bytes | FileSpec] = {}
    entries: dict[str, dict[str, Any]] = {}
    repositories: dict[str, dict[str, str]] = {}
    for name, image in _named(images_with_names):
        if not isinstance(image, Image):
            raise TypeError("a docker archive holds images, not indexes")
        config_name = image.config_digest.partition(":")[2] + ".json"
        files[config_name] = image.config
        layer_paths = []
        for layer in image.layers:
            hexpart = layer.diff_id.partition(":")[2]
            files[f"{hexpart}/VERSION"] = b"1.0"
            files[f"{hexpart}/json"] = _dumps({"id": hexpart, "created": _CREATED})
            files[f"{hexpart}/layer.tar"] = layer.uncompressed
            layer_paths.append(f"{hexpart}/layer.tar")
        entry = entries.setdefault(
            image.config_digest,
            {"Config": config_name, "RepoTags": None, "Layers": layer_paths},
        )
        if name:
            repo, tag = _repo_tag(name)
            entry["RepoTags"] = [*(entry["RepoTags"] or []), f"{repo}:{tag}"]
            if image.layers:
                last = image.layers[-1].diff_id.partition(":")[2]
                repositories.setdefault(repo, {})[tag] = last
    files["manifest.json"] = _dumps(list(entries.values()))
    if repositories:
        files["repositories"] = _dumps(repositories)
    return _write_tar(files, dest_tar)
