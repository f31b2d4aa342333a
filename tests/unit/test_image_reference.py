from __future__ import annotations

import pytest

from criadapt.errors import InvalidArgument
from criadapt.images import is_image_id, parse_reference

D = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("text", "normal", "familiar"),
    [
        ("busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"),
        ("library/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("index.docker.io/library/busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("user/app:v1", "docker.io/user/app:v1", "user/app:v1"),
        ("registry.k8s.io/pause:3.10", "registry.k8s.io/pause:3.10", "registry.k8s.io/pause:3.10"),
        ("127.0.0.1:5000/test/busybox", "127.0.0.1:5000/test/busybox:latest", None),
        ("localhost/app", "localhost/app:latest", None),
        ("localhost:5000/a/b/c:tag", "localhost:5000/a/b/c:tag", None),
        (f"busybox@{D}", f"docker.io/library/busybox@{D}", f"busybox@{D}"),
        (f"busybox:1.36@{D}", f"docker.io/library/busybox@{D}", None),
        ("quay.io/a_b/c-d.e__f:x.Y-1", "quay.io/a_b/c-d.e__f:x.Y-1", None),
        ("[::1]:5000/app", "[::1]:5000/app:latest", None),
    ],
)
def test_normalisation(text: str, normal: str, familiar: str | None) -> None:
    ref = parse_reference(text)
    assert str(ref) == normal
    assert str(parse_reference(normal)) == normal
    if familiar is not None:
        assert ref.familiar == familiar


@pytest.mark.parametrize(
    "text",
    [
        "",
        " busybox",
        "BusyBox",
        "docker.io/Library/busybox",
        "busybox:",
        "busybox:-x",
        "busybox@sha256:abc",
        "busybox@sha256:" + "A" * 64,
        "a//b",
        "a/b/",
        "-a",
        "host:port:5000/a",
        "a" * 300,
        "sha256:" + "b" * 64,
    ],
)
def test_invalid_references(text: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_reference(text)


def test_ids_and_digest_forms() -> None:
    assert is_image_id("sha256:" + "0" * 64)
    assert is_image_id("0" * 64)
    assert not is_image_id("sha256:" + "0" * 63)
    ref = parse_reference("busybox")
    assert str(ref.with_digest(D)) == f"docker.io/library/busybox@{D}"
    assert ref.name == "docker.io/library/busybox"
