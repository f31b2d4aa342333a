"""Importing image archives: OCI image layouts and ``docker save`` archives (air-gapped nodes).

Imported images go through the same store as pulled ones: every blob is verified by digest,
every layer unpacked once into a shared snapshot, names recorded in one transaction.

- **OCI layout** (``oci-layout`` + ``index.json`` + ``blobs/``): every manifest (or the host
  platform's manifest of an index) of ``index.json`` is imported; the annotation
  ``org.opencontainers.image.ref.name`` gives its name: a full reference
  (``docker.io/library/busybox:1.36``, as ``ctr``/``skopeo`` write it) or, when it is only a
  tag, nothing usable, so the image is known by id only. The repo digest is
  ``name@<manifest digest>``.
- **docker save** (``manifest.json``): each entry's ``RepoTags`` become tags; layers are the
  uncompressed tars (their digest is their diff id). A Docker schema2 manifest is synthesised
  for the record, and there is no repo digest (as with ``docker load``).
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from criadapt.errors import InvalidArgument, NotFound
from criadapt.images import parse_reference
from criadapt_runc.images.pull import image_layers
from criadapt_runc.images.registry import Platform
from criadapt_runc.images.store import ImageStore, StoredImage, chain_ids

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
REF_NAME = "org.opencontainers.image.ref.name"


class _Archive:
    """Random access to the members of a tar archive by normalised name."""

    def __init__(self, path: Path) -> None:
        try:
            self.tar = tarfile.open(path)  # noqa: SIM115 - closed by import_archive
        except (OSError, tarfile.TarError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InvalidArgument(f"{path}: not a readable tar archive ({reason})") from exc
        self.members = {
            str(PurePosixPath("/", m.name))[1:]: m for m in self.tar.getmembers() if m.isfile()
        }

    def has(self, name: str) -> bool:
        return name in self.members

    def open(self, name: str) -> Any:
        member = self.members.get(name)
        stream = self.tar.extractfile(member) if member else None
        if stream is None:
            raise InvalidArgument(f"archive has no member {name!r}")
        return stream

    def read(self, name: str) -> bytes:
        data: bytes = self.open(name).read()
        return data

    def json(self, name: str) -> Any:
        try:
            return json.loads(self.read(name))
        except ValueError as exc:
            raise InvalidArgument(f"archive member {name} is not JSON: {exc}") from exc

    def size(self, name: str) -> int:
        return self.members[name].size

    def blob_name(self, digest: str) -> str:
        algorithm, _, encoded = digest.partition(":")
        return f"blobs/{algorithm}/{encoded}"


def import_archive(store: ImageStore, path: Path) -> list[StoredImage]:
    """Import every image of an OCI layout or docker-save archive; return them."""
    archive = _Archive(Path(path))
    try:
        if archive.has("index.json"):
            return list(_import_oci(store, archive))
        if archive.has("manifest.json"):
            return list(_import_docker(store, archive))
        raise InvalidArgument(f"{path}: neither an OCI image layout nor a docker save archive")
    finally:
        archive.tar.close()


def _store_blob(store: ImageStore, archive: _Archive, digest: str, size: int | None) -> None:
    name = archive.blob_name(digest)
    if not archive.has(name):
        raise InvalidArgument(f"archive lacks blob {digest}")
    with archive.open(name) as stream:
        store.ingest_file(digest, size, stream)


def _import_oci(store: ImageStore, archive: _Archive) -> Iterator[StoredImage]:
    index = archive.json("index.json")
    for descriptor in index.get("manifests", []):
        name = (descriptor.get("annotations") or {}).get(REF_NAME, "")
        manifest_descriptor = descriptor
        index_digest = None
        if descriptor.get("mediaType") in (OCI_INDEX, DOCKER_LIST):
            index_digest = descriptor["digest"]
            _store_blob(store, archive, index_digest, descriptor.get("size"))
            manifest_descriptor = _select_platform(
                json.loads(store.read_blob(index_digest)), index_digest
            )
        digest = manifest_descriptor["digest"]
        _store_blob(store, archive, digest, manifest_descriptor.get("size"))
        manifest = json.loads(store.read_blob(digest))
        yield _import_manifest(
            store, archive, manifest, digest, len(store.read_blob(digest)), name, index_digest
        )


def _select_platform(index: dict[str, Any], digest: str) -> dict[str, Any]:
    host = Platform.host()
    candidates = [
        d
        for d in index.get("manifests", [])
        if (d.get("platform") or {}).get("os") == host.os
        and (d.get("platform") or {}).get("architecture") == host.architecture
    ]
    if not candidates:
        raise NotFound(f"index {digest} has no image for {host.os}/{host.architecture}")
    exact = [d for d in candidates if (d.get("platform") or {}).get("variant", "") == host.variant]
    chosen: dict[str, Any] = (exact or candidates)[0]
    return chosen


def _import_manifest(
    store: ImageStore,
    archive: _Archive,
    manifest: dict[str, Any],
    manifest_digest: str,
    manifest_size: int,
    name: str,
    index_digest: str | None,
) -> StoredImage:
    config_descriptor = manifest.get("config") or {}
    layers = manifest.get("layers") or []
    config_digest = config_descriptor.get("digest", "")
    _store_blob(store, archive, config_digest, config_descriptor.get("size"))
    config = store.read_blob(config_digest)
    diff_ids = image_layers(config, len(layers), f"manifest {manifest_digest}")
    chain = chain_ids(diff_ids)
    for i, layer in enumerate(layers):
        _store_blob(store, archive, layer["digest"], layer.get("size"))
        store.ensure_snapshot(chain[i], chain[i - 1] if i else None, diff_ids[i], layer["digest"])
    names: list[tuple[str, str]] = []
    ref = _full_reference(name)
    if ref is not None:
        if ref.tag:
            names.append((str(ref), "tag"))
        names.append((str(ref.with_digest(index_digest or manifest_digest)), "digest"))
    return store.commit_image(
        image_id=config_digest,
        manifest_digest=manifest_digest,
        config=config,
        chain=chain,
        size=manifest_size + len(config) + sum(int(layer.get("size", 0)) for layer in layers),
        blobs=[manifest_digest, config_digest, *(layer["digest"] for layer in layers)],
        names=names,
    )


def _full_reference(name: str) -> Any:
    """A reference from a ref.name annotation, or None when it is only a tag."""
    if not name or ("/" not in name and ":" not in name):
        return None
    try:
        return parse_reference(name)
    except InvalidArgument:
        return None


def _import_docker(store: ImageStore, archive: _Archive) -> Iterator[StoredImage]:
    entries = archive.json("manifest.json")
    if not isinstance(entries, list):
        raise InvalidArgument("manifest.json of a docker archive must be a list")
    for entry in entries:
        config_name = str(entry["Config"])
        config = archive.read(config_name)
        config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
        store.ingest_bytes(config_digest, config)
        layer_descriptors: list[dict[str, Any]] = []
        for layer_name in entry.get("Layers", []):
            hasher = hashlib.sha256()
            with archive.open(layer_name) as stream:
                while chunk := stream.read(1 << 20):
                    hasher.update(chunk)
            digest = "sha256:" + hasher.hexdigest()
            size = archive.size(layer_name)
            with archive.open(layer_name) as stream:
                store.ingest_file(digest, size, stream)
            layer_descriptors.append(
                {"mediaType": DOCKER_LAYER_TAR, "size": size, "digest": digest}
            )
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": DOCKER_MANIFEST,
                "config": {
                    "mediaType": DOCKER_CONFIG,
                    "size": len(config),
                    "digest": config_digest,
                },
                "layers": layer_descriptors,
            },
            separators=(",", ":"),
        ).encode()
        manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        store.ingest_bytes(manifest_digest, manifest)
        diff_ids = image_layers(config, len(layer_descriptors), config_name)
        chain = chain_ids(diff_ids)
        for i, layer in enumerate(layer_descriptors):
            store.ensure_snapshot(
                chain[i], chain[i - 1] if i else None, diff_ids[i], layer["digest"]
            )
        names = [(str(parse_reference(tag)), "tag") for tag in entry.get("RepoTags") or []]
        yield store.commit_image(
            image_id=config_digest,
            manifest_digest=manifest_digest,
            config=config,
            chain=chain,
            size=len(manifest) + len(config) + sum(int(x["size"]) for x in layer_descriptors),
            blobs=[manifest_digest, config_digest, *(x["digest"] for x in layer_descriptors)],
            names=names,
        )
