"""The ImageService: ``PullImage``, ``ImageStatus``, ``ListImages``, ``RemoveImage``,
``ImageFsInfo``."""

from __future__ import annotations

import uuid

import pytest

from criadapt import models as m
from criadapt.client import Client
from criadapt.errors import CriError
from criadapt.testing.contract.helpers import capable_call
from criadapt.testing.plugin import PulledImage


def missing_image() -> str:
    """A valid reference to an image nobody has pulled."""
    return f"localhost/criadapt-contract-missing-{uuid.uuid4().hex[:12]}:v1"


def image_of(cri: Client, reference: str) -> m.Image | None:
    return cri.image_status(image=m.ImageSpec(image=reference)).image


def test_pull_returns_an_image_ref(test_image: PulledImage) -> None:
    assert test_image.image_ref


def test_pull_again_gives_the_same_ref(cri: Client, test_image: PulledImage) -> None:
    again = cri.pull_image(image=m.ImageSpec(image=test_image.name))
    assert again.image_ref == test_image.image_ref


def test_status_by_name(cri: Client, test_image: PulledImage) -> None:
    image = image_of(cri, test_image.name)
    assert image is not None, f"ImageStatus({test_image.name!r}) found nothing after the pull"
    assert image.id
    assert image.size > 0, "Image.size must be > 0"
    assert image.repo_tags or image.repo_digests, "the image has neither tags nor digests"


def test_status_by_image_ref(cri: Client, test_image: PulledImage) -> None:
    by_name, by_ref = image_of(cri, test_image.name), image_of(cri, test_image.image_ref)
    assert by_name is not None and by_ref is not None
    assert by_ref.id == by_name.id


def test_verbose_status(cri: Client, test_image: PulledImage) -> None:
    response = cri.image_status(image=m.ImageSpec(image=test_image.name), verbose=True)
    assert response.image is not None


def test_status_of_a_missing_image_is_none(cri: Client) -> None:
    """api.proto: not an error but ``image`` unset; kubelet then pulls."""
    response = cri.image_status(image=m.ImageSpec(image=missing_image()))
    assert response.image is None


def test_list_includes_the_pulled_image(cri: Client, test_image: PulledImage) -> None:
    pulled = image_of(cri, test_image.name)
    assert pulled is not None
    images = cri.list_images().images
    assert pulled.id in [image.id for image in images]
    for image in images:
        assert image.id
        assert image.size > 0, f"image {image.id} has size 0"


def test_list_with_a_filter(cri: Client, test_image: PulledImage) -> None:
    pulled = image_of(cri, test_image.name)
    assert pulled is not None
    listed = cri.list_images(filter=m.ImageFilter(image=m.ImageSpec(image=test_image.name)))
    assert pulled.id in [image.id for image in listed.images]
    missing = cri.list_images(filter=m.ImageFilter(image=m.ImageSpec(image=missing_image())))
    assert missing.images == ()


def test_remove_of_a_missing_image_succeeds(cri: Client) -> None:
    cri.remove_image(image=m.ImageSpec(image=missing_image()))


def test_remove_then_pull_again(cri: Client, test_image: PulledImage) -> None:
    spec = m.ImageSpec(image=test_image.name)
    try:
        cri.remove_image(image=spec)
        assert image_of(cri, test_image.name) is None, "the image is still there after remove"
        cri.remove_image(image=spec)  # idempotent
        cri.remove_image(image=m.ImageSpec(image=test_image.image_ref))
    finally:
        again = cri.pull_image(image=spec)
    assert again.image_ref == test_image.image_ref
    assert image_of(cri, test_image.name) is not None


def test_pull_of_a_missing_image_fails(cri: Client) -> None:
    reference = f"localhost:1/criadapt-contract-notfound-{uuid.uuid4().hex[:12]}:v1"
    with pytest.raises(CriError):
        cri.pull_image(image=m.ImageSpec(image=reference))
    assert image_of(cri, reference) is None


def test_image_fs_info(cri: Client, backend_info: m.BackendInfo) -> None:
    response = capable_call(backend_info, "image_fs_info", cri.image_fs_info)
    if response is None:
        return
    assert response.image_filesystems, "ImageFsInfo reports no image filesystem"
    for usage in (*response.image_filesystems, *response.container_filesystems):
        assert usage.timestamp > 0, "FilesystemUsage.timestamp must be > 0"
        assert usage.fs_id is not None and usage.fs_id.mountpoint
        assert usage.used_bytes is not None
