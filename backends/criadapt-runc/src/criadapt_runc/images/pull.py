"""Pulling an image: resolve the manifest, fetch blobs, unpack layers, record the image."""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from criadapt.errors import DataLoss, InvalidArgument
from criadapt.images import Reference
from criadapt.models import AuthConfig
from criadapt_runc.images.registry import Platform, RegistryClient, ResolvedImage
from criadapt_runc.images.store import ImageStore, StoredImage, chain_ids

log = logging.getLogger("criadapt.runc.pull")


def image_layers(config: bytes, layer_count: int, what: str) -> list[str]:
    """The diff ids of an image config, checked against the manifest's layer count."""
    try:
        parsed = json.loads(config)
        diff_ids = parsed["rootfs"]["diff_ids"]
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidArgument(f"{what}: image config has no rootfs.diff_ids") from exc
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) for d in diff_ids):
        raise InvalidArgument(f"{what}: rootfs.diff_ids is not a list of digests")
    if len(diff_ids) != layer_count:
        raise DataLoss(
            f"{what}: the manifest has {layer_count} layers but the config {len(diff_ids)}"
        )
    return diff_ids


class Puller:
    """Pulls images from registries into an :class:`ImageStore`."""

    def __init__(self, store: ImageStore, client: RegistryClient, *, parallelism: int = 3) -> None:
        self.store = store
        self.client = client
        self.parallelism = max(1, parallelism)

    def pull(self, ref: Reference, auth: AuthConfig | None = None) -> StoredImage:
        started = time.monotonic()
        resolved = self.client.resolve(ref, auth, Platform.host())
        store = self.store
        store.ingest_bytes(resolved.manifest_digest, resolved.manifest)
        config_digest = resolved.config.digest
        if store.has_blob(config_digest, resolved.config.size):
            config = store.read_blob(config_digest)
        else:
            config = self.client.fetch_bytes(resolved, resolved.config, auth)
            store.ingest_bytes(config_digest, config)
        diff_ids = image_layers(config, len(resolved.layers), str(ref))
        chain = chain_ids(diff_ids)

        def fetch_and_unpack(index: int) -> None:
            layer = resolved.layers[index]
            if not store.has_blob(layer.digest, layer.size):
                store.ingest(
                    layer.digest,
                    layer.size,
                    lambda out: self.client.fetch_blob(resolved, layer, out, auth),
                )
            parent = chain[index - 1] if index else None
            store.ensure_snapshot(chain[index], parent, diff_ids[index], layer.digest)

        todo = [
            i
            for i, layer in enumerate(resolved.layers)
            if not (store.has_blob(layer.digest, layer.size) and store.has_snapshot(chain[i]))
        ]
        if todo:
            with ThreadPoolExecutor(self.parallelism, thread_name_prefix="pull") as pool:
                for future in [pool.submit(fetch_and_unpack, i) for i in todo]:
                    future.result()
        image = store.commit_image(
            image_id=config_digest,
            manifest_digest=resolved.manifest_digest,
            config=config,
            chain=chain,
            size=len(resolved.manifest) + len(config) + sum(x.size for x in resolved.layers),
            blobs=[resolved.manifest_digest, config_digest, *(x.digest for x in resolved.layers)],
            names=names_for(ref, resolved),
        )
        log.info(
            "pulled %s as %s (%d layers, %d fetched) in %.3f s",
            ref,
            image.id[:19],
            len(chain),
            len(todo),
            time.monotonic() - started,
        )
        return image


def names_for(ref: Reference, resolved: ResolvedImage) -> list[tuple[str, str]]:
    """The tag name (if pulled by tag) and the repo digest name of a pulled image."""
    names: list[tuple[str, str]] = []
    if ref.tag:
        names.append((str(ref), "tag"))
    top = resolved.index_digest or resolved.manifest_digest
    names.append((str(ref.with_digest(top)), "digest"))
    return names


__all__ = ["Puller", "image_layers", "names_for"]
