"""The ImageService RPC hooks of the runc backend."""

from __future__ import annotations

import json
import logging
import threading
import time

from criadapt import hookimpl
from criadapt import models as m
from criadapt.errors import InvalidArgument, NotFound, Unavailable
from criadapt.images import is_image_id, parse_reference
from criadapt_runc.images.pull import Puller
from criadapt_runc.images.store import ImageStore, StoredImage

log = logging.getLogger("criadapt.runc.images")

#: ImageFsInfo walks the store at most this often (kubelet asks every 10 s or so)
USAGE_MAX_AGE = 5.0


def image_user(image: StoredImage) -> tuple[m.Int64Value | None, str]:
    """(uid, username) of the image's ``User``: numeric user → uid, else username."""
    user = str(image.runtime_config.get("User") or "")
    name = user.split(":", 1)[0]
    if not name:
        return None, ""
    if name.isdigit():
        return m.Int64Value(value=int(name)), ""
    return None, name


class ImageService:
    """Hooks for PullImage, ImageStatus, ListImages, RemoveImage, ImageFsInfo."""

    def __init__(
        self, store: ImageStore, puller: Puller | None, pinned: tuple[str, ...] = ()
    ) -> None:
        self.store = store
        self.puller = puller
        self._pinned_refs = tuple(pinned)
        self._usage: tuple[float, int, int] | None = None
        self._usage_lock = threading.Lock()

    # -- conversions ------------------------------------------------------------------------
    def _pinned(self, image: StoredImage) -> bool:
        names = set(image.repo_tags) | set(image.repo_digests) | {image.id}
        for ref in self._pinned_refs:
            try:
                text = ref if is_image_id(ref) else str(parse_reference(ref))
            except InvalidArgument:
                continue
            if text in names:
                return True
        return False

    def to_cri(self, image: StoredImage) -> m.Image:
        uid, username = image_user(image)
        return m.Image(
            id=image.id,
            repo_tags=image.repo_tags,
            repo_digests=image.repo_digests,
            size=image.size,
            uid=uid,
            username=username,
            spec=m.ImageSpec(image=image.id),
            pinned=self._pinned(image),
        )

    def _find(self, spec: m.ImageSpec | None) -> StoredImage | None:
        if spec is None or not spec.image:
            raise InvalidArgument("image.image is required")
        return self.store.lookup(spec.image)

    # -- hooks ------------------------------------------------------------------------------
    @hookimpl
    def criadapt_pull_image(
        self, image: m.ImageSpec, auth: m.AuthConfig | None
    ) -> m.PullImageResponse:
        text = image.image
        if is_image_id(text):
            found = self.store.lookup(text)
            if found is None:
                raise NotFound(f"image {text} is not present and an id cannot be pulled")
            return m.PullImageResponse(image_ref=found.id)
        if self.puller is None:
            raise Unavailable("this image store is offline: it cannot pull")
        stored = self.puller.pull(parse_reference(text), auth)
        return m.PullImageResponse(image_ref=stored.id)

    @hookimpl
    def criadapt_image_status(self, image: m.ImageSpec, verbose: bool) -> m.ImageStatusResponse:
        found = self._find(image)
        if found is None:
            return m.ImageStatusResponse()
        info = {}
        if verbose:
            info["info"] = json.dumps(
                {
                    "imageSpec": found.config_json,
                    "chainID": found.chain[-1] if found.chain else "",
                    "manifestDigest": found.manifest_digest,
                    "snapshots": [str(p) for p in self.store.snapshot_dirs(found)],
                }
            )
        return m.ImageStatusResponse(image=self.to_cri(found), info=info)

    @hookimpl
    def criadapt_list_images(self, filter: m.ImageFilter | None) -> m.ListImagesResponse:
        if filter is not None and filter.image is not None and filter.image.image:
            try:
                found = self.store.lookup(filter.image.image)
            except InvalidArgument:
                found = None
            images = [found] if found else []
        else:
            images = self.store.images()
        return m.ListImagesResponse(images=[self.to_cri(i) for i in images])

    @hookimpl
    def criadapt_remove_image(self, image: m.ImageSpec) -> m.RemoveImageResponse:
        found = self._find(image)
        if found is not None and self.store.remove(found.id):
            log.info("removed image %s (%s)", found.id[:19], ", ".join(found.repo_tags))
            self.store.gc()
        return m.RemoveImageResponse()

    @hookimpl
    def criadapt_image_fs_info(self) -> m.ImageFsInfoResponse:
        now = time.time()
        with self._usage_lock:
            if self._usage is None or now - self._usage[0] > USAGE_MAX_AGE:
                used, inodes = self.store.usage()
                self._usage = (now, used, inodes)
            _, used, inodes = self._usage
        usage = m.FilesystemUsage(
            timestamp=int(now * 1e9),
            fs_id=m.FilesystemIdentifier(mountpoint=str(self.store.root)),
            used_bytes=m.UInt64Value(value=used),
            inodes_used=m.UInt64Value(value=inodes),
        )
        return m.ImageFsInfoResponse(image_filesystems=[usage])
