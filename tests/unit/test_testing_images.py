"""criadapt.testing.images and criadapt.testing.registry: images that third-party tools
(skopeo, umoci, the CNCF registry) accept, a real registry, and the misbehaving proxies."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import json
import shutil
import socket
import subprocess
import tarfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

# This module loads the registry plugin (pytest_plugins below) and imports from it: have pytest
# rewrite it before the import, or pytest warns that it cannot.
pytest.register_assert_rewrite("criadapt.testing.registry")

from criadapt.testing import images as I  # noqa: E402
from criadapt.testing.registry import (  # noqa: E402
    AUTH_PASSWORD,
    AUTH_USER,
    MANIFEST_ACCEPT,
    FaultProxy,
    Registry,
    TokenAuthProxy,
    http_request,
)

pytest_plugins = ["criadapt.testing.registry"]

needs_busybox = pytest.mark.skipif(
    not Path("/bin/busybox").exists(), reason="/bin/busybox missing (busybox-static)"
)


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed")
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, f"{args}: {proc.stderr}"
    return proc


def _members(layer: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        return {m.name: m for m in tar.getmembers()}


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- layers -------------------------------------------------------------------------------------


@needs_busybox
def test_busybox_layer_contents_and_determinism() -> None:
    layer = I.busybox_rootfs_layer()
    assert layer == I.busybox_rootfs_layer()
    members = _members(layer)
    busybox = members["bin/busybox"]
    assert busybox.isreg() and busybox.mode == 0o755
    assert busybox.size == Path("/bin/busybox").stat().st_size
    for applet in ("sh", "echo", "sleep", "wget", "httpd", "nc", "mount", "top"):
        assert members[f"bin/{applet}"].issym()
        assert members[f"bin/{applet}"].linkname == "busybox"
    assert members["tmp"].isdir() and members["tmp"].mode == 0o1777
    for d in ("etc", "proc", "sys", "dev", "root", "var"):
        assert members[d].isdir()
    assert {m.mtime for m in members.values()} == {I.FIXED_MTIME}
    assert all(m.uid == 0 and m.gid == 0 for n, m in members.items() if n != "home/app")
    assert list(members) == sorted(members)
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        passwd = tar.extractfile("etc/passwd").read().decode()  # type: ignore[union-attr]
        group = tar.extractfile("etc/group").read().decode()  # type: ignore[union-attr]
    assert "root:x:0:0:" in passwd and "nobody:x:65534:65534:" in passwd
    assert "app:x:1000:1000:" in passwd
    assert "app:x:1000:" in group
    extra = I.busybox_rootfs_layer({"/etc/motd": b"hi", "opt/x": b"y"}, applets=("sh",))
    extra_members = _members(extra)
    assert "etc/motd" in extra_members and "opt" in extra_members
    assert "bin/echo" not in extra_members


def test_tar_layer_filespec_kinds() -> None:
    layer = I.tar_layer(
        {
            "/a/file": I.FileSpec.file(b"data", mode=0o4755, uid=1000, gid=1001),
            "a/link": I.FileSpec.symlink("/a/file"),
            "a/hard": I.FileSpec.hardlink("a/file"),
            "b/gone": I.FileSpec.whiteout(),
            "c": I.FileSpec.opaque(),
            "d": I.FileSpec.dir(mode=0o700),
            "plain": b"x",
        }
    )
    assert layer == I.tar_layer(
        {
            "plain": b"x",
            "d": I.FileSpec.dir(mode=0o700),
            "c": I.FileSpec.opaque(),
            "b/gone": I.FileSpec.whiteout(),
            "a/hard": I.FileSpec.hardlink("a/file"),
            "a/link": I.FileSpec.symlink("/a/file"),
            "/a/file": I.FileSpec.file(b"data", mode=0o4755, uid=1000, gid=1001),
        }
    )
    members = _members(layer)
    names = list(members)
    assert names[-1] == "a/hard"  # hard links after their targets
    f = members["a/file"]
    assert f.isreg() and f.mode == 0o4755 and (f.uid, f.gid) == (1000, 1001)
    assert members["a/link"].issym() and members["a/link"].linkname == "/a/file"
    assert members["a/hard"].islnk() and members["a/hard"].linkname == "a/file"
    assert members["a"].isdir() and members["b"].isdir()  # parents added
    assert members["b/.wh.gone"].isreg() and members["b/.wh.gone"].size == 0
    assert members["c"].isdir() and members["c/.wh..wh..opq"].isreg()
    assert members["d"].mode == 0o700
    assert members["plain"].mode == 0o644
    with pytest.raises(ValueError, match="no such entry"):
        I.tar_layer({"x": I.FileSpec.hardlink("missing")})
    with pytest.raises(ValueError):
        I.tar_layer({"../escape": b""})


# -- images -------------------------------------------------------------------------------------


def _decompress(blob: bytes, media_type: str) -> bytes:
    if media_type.endswith("gzip"):
        return gzip.decompress(blob)
    if media_type.endswith("zstd"):
        zstandard = pytest.importorskip("zstandard")
        return bytes(zstandard.ZstdDecompressor().decompressobj().decompress(blob))
    return blob


@pytest.mark.parametrize("media", ["oci", "docker"])
@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_manifest_and_config_are_consistent(media: Any, compression: Any) -> None:
    if compression == "zstd":
        pytest.importorskip("zstandard")
    tars = [
        I.tar_layer({"etc/hello": b"hello\n"}),
        I.tar_layer({"etc/hello": I.FileSpec.whiteout(), "bin/x": b"y"}),
    ]
    config = {
        "Entrypoint": ["/bin/sh", "-c"],
        "Cmd": ("echo hi",),
        "Env": ["A=1"],
        "WorkingDir": "/work",
        "User": "1000:1000",
        "Volumes": ["/data"],
        "StopSignal": "SIGINT",
        "Labels": {"k": "v"},
        "ExposedPorts": ["80/tcp"],
    }
    image = I.build_image(tars, config=config, compression=compression, media=media)
    again = I.build_image(tars, config=config, compression=compression, media=media)
    assert (image.digest, image.config_digest) == (again.digest, again.config_digest)

    manifest = json.loads(image.manifest)
    cfg = json.loads(image.config)
    assert image.digest == _sha(image.manifest)
    assert image.config_digest == image.id == _sha(image.config)
    assert manifest["schemaVersion"] == 2
    assert manifest["mediaType"] == image.media_type
    assert manifest["config"] == {
        "mediaType": image.config_media_type,
        "digest": image.config_digest,
        "size": len(image.config),
    }
    if media == "oci":
        assert image.media_type == "application/vnd.oci.image.manifest.v1+json"
        assert image.config_media_type == "application/vnd.oci.image.config.v1+json"
        expected_layer = {
            "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
            "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
            "none": "application/vnd.oci.image.layer.v1.tar",
        }[compression]
    else:
        assert image.media_type == "application/vnd.docker.distribution.manifest.v2+json"
        assert image.config_media_type == "application/vnd.docker.container.image.v1+json"
        expected_layer = {
            "gzip": "application/vnd.docker.image.rootfs.diff.tar.gzip",
            "zstd": "application/vnd.docker.image.rootfs.diff.tar.zstd",
            "none": "application/vnd.docker.image.rootfs.diff.tar",
        }[compression]
    assert cfg["rootfs"] == {"type": "layers", "diff_ids": [_sha(t) for t in tars]}
    assert image.diff_ids == [_sha(t) for t in tars]
    assert len(cfg["history"]) == len(tars)
    for desc, layer, tar in zip(manifest["layers"], image.layers, tars, strict=True):
        assert desc == {"mediaType": expected_layer, "digest": _sha(layer.blob), "size": layer.size}
        assert _decompress(layer.blob, expected_layer) == tar
    assert cfg["architecture"] == I.host_architecture() and cfg["os"] == "linux"
    c = cfg["config"]
    assert c["Entrypoint"] == ["/bin/sh", "-c"] and c["Cmd"] == ["echo hi"]
    assert c["Volumes"] == {"/data": {}} and c["ExposedPorts"] == {"80/tcp": {}}
    assert c["User"] == "1000:1000" and c["WorkingDir"] == "/work"
    assert c["StopSignal"] == "SIGINT" and c["Labels"] == {"k": "v"}
    assert set(image.blobs) == {image.config_digest, *(lay.digest for lay in image.layers)}


@needs_busybox
def test_busybox_image_is_deterministic() -> None:
    a, b = I.busybox_image(), I.busybox_image()
    assert a.digest == b.digest and a.config_digest == b.config_digest
    assert a.config_json["config"]["Cmd"] == ["sh"]
    assert I.busybox_image(media="docker").digest != a.digest
    assert I.busybox_image(config={"User": "app"}).config_digest != a.config_digest


@needs_busybox
@pytest.mark.parametrize("media", ["oci", "docker"])
def test_build_index_platforms(media: Any) -> None:
    here = I.busybox_image(media=media)
    there = I.busybox_image(media=media, architecture=I.other_architecture())
    assert I.other_architecture() != I.host_architecture()
    index = I.build_index([here, there], media=media)
    body = index.manifest_json
    assert body["mediaType"] == index.media_type
    assert index.media_type == (
        "application/vnd.oci.image.index.v1+json"
        if media == "oci"
        else "application/vnd.docker.distribution.manifest.list.v2+json"
    )
    assert [m["digest"] for m in body["manifests"]] == [here.digest, there.digest]
    assert [m["platform"]["architecture"] for m in body["manifests"]] == [
        I.host_architecture(),
        I.other_architecture(),
    ]
    assert all(
        m["size"] == len(i.manifest) for m, i in zip(body["manifests"], (here, there), strict=True)
    )
    assert index.for_platform(I.other_architecture()) is there
    assert index.digest == _sha(index.manifest)


@needs_busybox
def test_big_image_is_incompressible_and_deterministic() -> None:
    image = I.big_image(total_mb=2, layers=3)
    assert len(image.layers) == 4  # busybox base + 3 data layers
    data = sum(len(lay.uncompressed) for lay in image.layers[1:])
    assert 2 * 1024 * 1024 <= data < 2 * 1024 * 1024 + 64 * 1024
    assert sum(lay.size for lay in image.layers[1:]) > 0.99 * 2 * 1024 * 1024
    assert I.big_image(total_mb=2, layers=3).digest == image.digest
    assert I.big_image(total_mb=2, layers=3, seed=1).digest != image.digest
    assert len(I.big_image(total_mb=1, layers=2, base=False).layers) == 2


# -- archives -----------------------------------------------------------------------------------


@needs_busybox
def test_oci_layout_archive_is_read_by_skopeo_and_umoci(tmp_path: Path) -> None:
    skopeo = _tool("skopeo")
    image = I.busybox_image()
    index = I.build_index([image, I.busybox_image(architecture=I.other_architecture())])
    archive = I.write_oci_layout({"busybox:latest": image, "multi": index}, tmp_path / "oci.tar")
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        index_json = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
    assert {"oci-layout", "index.json", f"blobs/sha256/{image.digest[7:]}"} <= names
    refs = [m["annotations"]["org.opencontainers.image.ref.name"] for m in index_json["manifests"]]
    assert refs == ["busybox:latest", "multi"]

    out = json.loads(_run(skopeo, "inspect", f"oci-archive:{archive}:busybox:latest").stdout)
    assert out["Digest"] == image.digest
    assert out["Layers"] == [lay.digest for lay in image.layers]
    raw = _run(skopeo, "inspect", "--raw", f"oci-archive:{archive}:multi").stdout
    assert raw.encode() == index.manifest
    _run(
        skopeo,
        "--insecure-policy",
        "copy",
        f"oci-archive:{archive}:busybox:latest",
        f"dir:{tmp_path / 'copied'}",
    )
    assert (tmp_path / "copied" / image.layers[0].digest[7:]).read_bytes() == image.layers[0].blob

    # umoci: an independent unpacker of our layers (it needs a layout directory).
    umoci = _tool("umoci")
    layout = tmp_path / "layout"
    with tarfile.open(archive) as tar:
        tar.extractall(layout, filter="data")
    _run(umoci, "unpack", "--rootless", "--image", f"{layout}:busybox:latest", str(tmp_path / "b"))
    rootfs = tmp_path / "b" / "rootfs"
    assert (rootfs / "bin/busybox").read_bytes() == Path("/bin/busybox").read_bytes()
    assert (rootfs / "bin/sh").is_symlink() and (rootfs / "bin/sh").readlink() == Path("busybox")
    assert "app:x:1000:1000" in (rootfs / "etc/passwd").read_text()
    assert (rootfs / "tmp").stat().st_mode & 0o7777 == 0o1777
    # the directory writer gives the same layout
    I.write_oci_dir({"latest": image}, tmp_path / "dir")
    _run(
        umoci, "unpack", "--rootless", "--image", f"{tmp_path / 'dir'}:latest", str(tmp_path / "c")
    )
    assert (tmp_path / "c" / "rootfs/bin/busybox").exists()


@needs_busybox
def test_oci_layout_whiteouts_applied_by_umoci(tmp_path: Path) -> None:
    umoci = _tool("umoci")
    image = I.build_image(
        [
            I.busybox_rootfs_layer({"opt/a/keep": b"1", "opt/b/old": b"2", "opt/gone": b"3"}),
            I.tar_layer(
                {
                    "opt/gone": I.FileSpec.whiteout(),
                    "opt/b": I.FileSpec.opaque(),
                    "opt/b/new": b"4",
                    "opt/b/hard": I.FileSpec.hardlink("opt/b/new"),
                }
            ),
        ],
        compression="none",
    )
    I.write_oci_dir({"latest": image}, tmp_path / "dir")
    _run(
        umoci, "unpack", "--rootless", "--image", f"{tmp_path / 'dir'}:latest", str(tmp_path / "b")
    )
    opt = tmp_path / "b" / "rootfs" / "opt"
    assert sorted(p.name for p in opt.iterdir()) == ["a", "b"]
    assert sorted(p.name for p in (opt / "b").iterdir()) == ["hard", "new"]
    assert (opt / "b" / "hard").read_bytes() == b"4"
    assert (opt / "b" / "hard").stat().st_ino == (opt / "b" / "new").stat().st_ino
    assert (opt / "a" / "keep").read_bytes() == b"1"


@needs_busybox
def test_docker_archive_is_read_by_skopeo(tmp_path: Path) -> None:
    skopeo = _tool("skopeo")
    image = I.busybox_image(media="docker")
    other = I.build_image([I.tar_layer({"x": b"y"})], media="docker")
    archive = I.write_docker_archive(
        [("test/busybox", image), ("example.com/test/bb:v1", image), ("other:2", other)],
        tmp_path / "docker.tar",
    )
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        repositories = json.load(tar.extractfile("repositories"))  # type: ignore[arg-type]
        layer = tar.extractfile(f"{image.diff_ids[0][7:]}/layer.tar").read()  # type: ignore[union-attr]
    assert manifest[0]["RepoTags"] == ["test/busybox:latest", "example.com/test/bb:v1"]
    assert manifest[0]["Config"] == f"{image.config_digest[7:]}.json"
    assert manifest[0]["Layers"] == [f"{image.diff_ids[0][7:]}/layer.tar"]
    assert _sha(layer) == image.diff_ids[0]
    assert repositories["test/busybox"] == {"latest": image.diff_ids[0][7:]}

    out = json.loads(
        _run(skopeo, "inspect", f"docker-archive:{archive}:test/busybox:latest").stdout
    )
    assert out["Layers"] == image.diff_ids  # docker-archive layers are the uncompressed tars
    assert out["Env"] == [I.DEFAULT_PATH]
    config = json.loads(
        _run(skopeo, "inspect", "--config", f"docker-archive:{archive}:other:2").stdout
    )
    assert config["rootfs"]["diff_ids"] == other.diff_ids
    with pytest.raises(TypeError):
        I.write_docker_archive({"x": I.build_index([image])}, tmp_path / "bad.tar")


# -- registry -----------------------------------------------------------------------------------


def test_push_then_get_manifest(
    registry: Registry, pushed_busybox: str, busybox_image: I.Image
) -> None:
    assert pushed_busybox == f"{registry.host}/test/busybox:latest"
    resp = registry.get_manifest("test/busybox", "latest")
    assert resp.status == 200
    assert resp.body == busybox_image.manifest
    assert resp.header("Docker-Content-Digest") == busybox_image.digest
    assert resp.header("Content-Type") == busybox_image.media_type
    for digest, data in busybox_image.blobs.items():
        assert registry.get_blob("test/busybox", digest) == data
    assert "latest" in registry.tags("test/busybox")
    assert "test/busybox" in registry.catalog()
    # pushing again is a no-op for blobs (HEAD finds them) and keeps the digest
    assert registry.push(busybox_image, "test/busybox", "latest") == pushed_busybox
    by_digest = registry.push(busybox_image, "test/busybox-digest", None)
    assert by_digest == f"{registry.host}/test/busybox-digest@{busybox_image.digest}"


@needs_busybox
@pytest.mark.parametrize("media", ["oci", "docker"])
def test_push_index_and_docker_manifests(registry: Registry, media: Any) -> None:
    here = I.busybox_image(media=media)
    there = I.busybox_image(media=media, architecture=I.other_architecture())
    index = I.build_index([here, there], media=media)
    ref = registry.push_index(index, f"test/multi-{media}", "v1")
    assert ref == f"{registry.host}/test/multi-{media}:v1"
    resp = registry.get_manifest(f"test/multi-{media}", "v1")
    assert resp.body == index.manifest
    assert resp.header("Docker-Content-Digest") == index.digest
    assert resp.header("Content-Type") == index.media_type
    child = registry.get_manifest(f"test/multi-{media}", there.digest)
    assert child.status == 200 and child.body == there.manifest


def test_skopeo_accepts_pushed_image(pushed_busybox: str, busybox_image: I.Image) -> None:
    skopeo = _tool("skopeo")
    out = json.loads(
        _run(skopeo, "inspect", "--tls-verify=false", f"docker://{pushed_busybox}").stdout
    )
    assert out["Digest"] == busybox_image.digest
    assert out["Layers"] == [lay.digest for lay in busybox_image.layers]
    assert out["Architecture"] == I.host_architecture()


@needs_busybox
def test_skopeo_copies_zstd_and_docker_images(registry: Registry, tmp_path: Path) -> None:
    skopeo = _tool("skopeo")
    pytest.importorskip("zstandard")
    for name, image in {
        "zstd": I.busybox_image(compression="zstd"),
        "docker": I.busybox_image(media="docker"),
    }.items():
        ref = registry.push(image, f"test/{name}", "latest")
        dest = tmp_path / name
        _run(
            skopeo,
            "--insecure-policy",
            "copy",
            "--src-tls-verify=false",
            f"docker://{ref}",
            f"dir:{dest}",
        )
        assert (dest / "manifest.json").read_bytes() == image.manifest


def test_auth_registry_requires_basic_auth(auth_registry: Registry, busybox_image: I.Image) -> None:
    anonymous = http_request("GET", auth_registry.url + "/v2/")
    assert anonymous.status == 401
    assert anonymous.header("WWW-Authenticate").startswith("Basic realm=")
    assert auth_registry.request("GET", "/v2/").status == 200
    wrong = auth_registry.request(
        "GET", "/v2/", headers={"Authorization": "Basic " + "dGVzdGVyOndyb25n"}
    )
    assert wrong.status == 401
    ref = auth_registry.push(busybox_image, "test/busybox", "latest")
    assert auth_registry.request("GET", "/v2/test/busybox/tags/list", auth=False).status == 401
    assert auth_registry.get_manifest("test/busybox", "latest").body == busybox_image.manifest
    if shutil.which("skopeo"):
        assert (
            subprocess.run(
                ["skopeo", "inspect", "--tls-verify=false", "--no-creds", f"docker://{ref}"],
                capture_output=True,
                check=False,
            ).returncode
            != 0
        )
        _run(
            "skopeo",
            "inspect",
            "--tls-verify=false",
            "--creds",
            f"{AUTH_USER}:{AUTH_PASSWORD}",
            f"docker://{ref}",
        )


def _parse_challenge(header: str) -> dict[str, str]:
    scheme, _, rest = header.partition(" ")
    assert scheme == "Bearer"
    out = {}
    for part in rest.split('",'):
        key, _, value = part.partition("=")
        out[key.strip()] = value.strip().strip('"')
    return out


def test_token_proxy_challenges_and_accepts_token(
    registry: Registry, pushed_busybox: str, busybox_image: I.Image
) -> None:
    with TokenAuthProxy(registry, username="alice", password="pw") as proxy:
        path = "/v2/test/busybox/manifests/latest"
        resp = http_request("GET", proxy.url + path, headers={"Accept": MANIFEST_ACCEPT})
        assert resp.status == 401
        challenge = _parse_challenge(resp.header("WWW-Authenticate"))
        assert challenge == {
            "realm": f"{proxy.url}/token",
            "service": "test-registry",
            "scope": "repository:test/busybox:pull",
        }
        assert _parse_challenge(
            http_request("GET", proxy.url + "/v2/").header("WWW-Authenticate")
        ) == {
            "realm": f"{proxy.url}/token",
            "service": "test-registry",
        }
        query = urllib.parse.urlencode(
            {"service": challenge["service"], "scope": challenge["scope"]}
        )
        assert http_request("GET", f"{challenge['realm']}?{query}").status == 401
        token_resp = http_request(
            "GET", f"{challenge['realm']}?{query}", headers={"Authorization": "Basic YWxpY2U6cHc="}
        )
        assert token_resp.status == 200
        token = token_resp.json()["token"]
        assert token_resp.json()["access_token"] == token
        ok = http_request(
            "GET",
            proxy.url + path,
            headers={"Accept": MANIFEST_ACCEPT, "Authorization": f"Bearer {token}"},
        )
        assert ok.status == 200 and ok.body == busybox_image.manifest
        assert ok.header("Docker-Content-Digest") == busybox_image.digest
        # the token is for test/busybox pulls only
        other = http_request(
            "GET",
            proxy.url + "/v2/test/other/manifests/latest",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert other.status == 401
        push = http_request(
            "POST",
            proxy.url + "/v2/test/busybox/blobs/uploads/",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert push.status == 401
        assert 'scope="repository:test/busybox:pull,push"' in push.header("WWW-Authenticate")
        assert [(r.username, r.granted, r.scopes) for r in proxy.token_requests] == [
            (None, False, ("repository:test/busybox:pull",)),
            ("alice", True, ("repository:test/busybox:pull",)),
        ]
        # OAuth2 POST
        form = urllib.parse.urlencode(
            {
                "grant_type": "password",
                "username": "alice",
                "password": "pw",
                "service": "test-registry",
                "scope": "repository:test/busybox:pull",
                "client_id": "t",
            }
        ).encode()
        posted = http_request(
            "POST",
            challenge["realm"],
            body=form,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert posted.status == 200 and posted.json()["refresh_token"]
        proxy.revoke_tokens()
        assert (
            http_request(
                "GET", proxy.url + path, headers={"Authorization": f"Bearer {token}"}
            ).status
            == 401
        )

        if shutil.which("skopeo"):
            proxy.token_requests.clear()
            out = _run(
                "skopeo",
                "inspect",
                "--tls-verify=false",
                "--creds",
                "alice:pw",
                f"docker://{proxy.reference('test/busybox')}",
            )
            assert json.loads(out.stdout)["Digest"] == busybox_image.digest
            assert any(r.granted and r.username == "alice" for r in proxy.token_requests)


def test_token_proxy_in_front_of_auth_registry(
    auth_registry: Registry, busybox_image: I.Image
) -> None:
    auth_registry.push(busybox_image, "test/tokened", "latest")
    with TokenAuthProxy(auth_registry) as proxy:  # anyone gets a token; upstream gets basic
        resp = http_request(
            "GET", f"{proxy.realm}?service=test-registry&scope=repository:test/tokened:pull"
        )
        token = resp.json()["token"]
        ok = http_request(
            "GET",
            proxy.url + "/v2/test/tokened/manifests/latest",
            headers={"Accept": MANIFEST_ACCEPT, "Authorization": f"Bearer {token}"},
        )
        assert ok.status == 200 and ok.body == busybox_image.manifest


def _get_blob(
    host: str, path: str, timeout: float
) -> tuple[http.client.HTTPResponse, http.client.HTTPConnection]:
    conn = http.client.HTTPConnection(host, timeout=timeout)
    conn.request("GET", path)
    return conn.getresponse(), conn


def test_fault_proxy_forwards_verbatim(auth_registry: Registry) -> None:
    with FaultProxy(auth_registry) as proxy:
        resp = http_request("GET", proxy.url + "/v2/")
        assert resp.status == 401
        assert resp.header("WWW-Authenticate").startswith("Basic realm=")
        assert resp.header("Docker-Distribution-Api-Version") == "registry/2.0"
        assert (
            http_request(
                "GET", proxy.url + "/v2/", headers={"Authorization": "Basic dGVzdGVyOnMzY3JldA=="}
            ).status
            == 200
        )
        # uploads through the proxy: the registry's Location points back at the proxy
        start = http_request(
            "POST",
            proxy.url + "/v2/test/via-proxy/blobs/uploads/",
            headers={"Authorization": "Basic dGVzdGVyOnMzY3JldA=="},
        )
        assert start.status == 202
        assert start.header("Location").startswith(proxy.url)


def test_fault_proxy_stalls_drops_and_throttles(
    registry: Registry, pushed_busybox: str, busybox_image: I.Image
) -> None:
    layer = busybox_image.layers[0]
    path = f"/v2/test/busybox/blobs/{layer.digest}"
    with FaultProxy(registry) as proxy:
        # stall forever after 1000 bytes
        proxy.stall(after_bytes=1000, times=1)
        resp, conn = _get_blob(proxy.host, path, timeout=1.0)
        assert resp.status == 200 and int(resp.getheader("Content-Length") or 0) == layer.size
        assert resp.read(1000) == layer.blob[:1000]
        with pytest.raises((socket.timeout, TimeoutError)):
            resp.read(1)
        assert proxy.stalled.is_set()
        conn.close()
        # times=1 is used up: the next transfer is clean
        resp, conn = _get_blob(proxy.host, path, timeout=5.0)
        assert resp.read() == layer.blob
        conn.close()

        # stall for a while, then finish
        proxy.clear()
        proxy.stall(after_bytes=10, seconds=0.6, digest=layer.digest)
        started = time.monotonic()
        resp, conn = _get_blob(proxy.host, path, timeout=5.0)
        assert resp.read() == layer.blob
        assert time.monotonic() - started >= 0.55
        conn.close()

        # drop mid-blob
        proxy.clear()
        proxy.drop(after_bytes=5000)
        resp, conn = _get_blob(proxy.host, path, timeout=5.0)
        with pytest.raises(http.client.IncompleteRead) as info:
            resp.read()
        assert len(info.value.partial) == 5000
        assert proxy.dropped == 1
        conn.close()

        # throttle: ~1 MB at 2 MB/s takes about half a second
        proxy.clear()
        proxy.throttle(2_000_000)
        started = time.monotonic()
        resp, conn = _get_blob(proxy.host, path, timeout=5.0)
        assert resp.read() == layer.blob
        elapsed = time.monotonic() - started
        assert layer.size / 2_000_000 * 0.8 <= elapsed < 5
        conn.close()

        # manifests are untouched by blob faults
        proxy.clear()
        proxy.drop(after_bytes=0)
        manifest = http_request(
            "GET",
            proxy.url + "/v2/test/busybox/manifests/latest",
            headers={"Accept": MANIFEST_ACCEPT},
        )
        assert manifest.body == busybox_image.manifest
        faulty = [r for r in proxy.requests if r.fault]
        assert faulty and all("/blobs/" in r.path for r in faulty)


def test_fault_proxy_stall_ends_when_stopped(
    registry: Registry, pushed_busybox: str, busybox_image: I.Image
) -> None:
    layer = busybox_image.layers[0]
    proxy = FaultProxy(registry).start()
    proxy.stall(after_bytes=100)
    resp, conn = _get_blob(proxy.host, f"/v2/test/busybox/blobs/{layer.digest}", timeout=10.0)
    assert resp.read(100) == layer.blob[:100]
    assert proxy.stalled.wait(5)
    started = time.monotonic()
    proxy.stop()
    with pytest.raises((http.client.IncompleteRead, ConnectionError)):
        resp.read()
    assert time.monotonic() - started < 5
    conn.close()


def test_skopeo_sees_stall_and_drop(
    registry: Registry, pushed_busybox: str, tmp_path: Path
) -> None:
    skopeo = _tool("skopeo")
    with FaultProxy(registry) as proxy:
        proxy.stall(after_bytes=4096)
        ref = proxy.reference("test/busybox")
        proc = subprocess.Popen(
            [
                skopeo,
                "--insecure-policy",
                "copy",
                "--src-tls-verify=false",
                f"docker://{ref}",
                f"dir:{tmp_path / 'a'}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert proxy.stalled.wait(30), "skopeo never reached the stall"
            time.sleep(0.5)
            assert proc.poll() is None  # still hanging on the stalled blob
        finally:
            proc.kill()
            proc.wait()
        proxy.clear()
        proxy.drop(after_bytes=4096)
        out = subprocess.run(
            [
                skopeo,
                "--insecure-policy",
                "copy",
                "--retry-times=0",
                "--src-tls-verify=false",
                f"docker://{ref}",
                f"dir:{tmp_path / 'b'}",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert out.returncode != 0


def test_corrupt_blob_changes_served_bytes(
    fresh_registry: Registry, busybox_image: I.Image, tmp_path: Path
) -> None:
    ref = fresh_registry.push(busybox_image, "test/corrupt", "latest")
    layer = busybox_image.layers[0]
    assert fresh_registry.blob_path(layer.digest).read_bytes() == layer.blob
    fresh_registry.corrupt_blob(layer.digest)
    served = fresh_registry.get_blob("test/corrupt", layer.digest)
    assert len(served) == layer.size
    assert served != layer.blob and _sha(served) != layer.digest
    with pytest.raises(FileNotFoundError):
        fresh_registry.corrupt_blob("sha256:" + "0" * 64)
    if shutil.which("skopeo"):
        out = subprocess.run(
            [
                "skopeo",
                "--insecure-policy",
                "copy",
                "--retry-times=0",
                "--src-tls-verify=false",
                f"docker://{ref}",
                f"dir:{tmp_path / 'x'}",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert out.returncode != 0 and "did not match" in out.stderr
    fresh_registry.corrupt_blob(layer.digest, b"short")
    assert fresh_registry.get_blob("test/corrupt", layer.digest) == b"short"


def test_registry_lifecycle(tmp_path: Path) -> None:
    probe = Registry()
    if not probe.binary.exists():
        pytest.skip(f"{probe.binary} missing")
    with Registry() as reg:
        assert reg.host.startswith("127.0.0.1:") and reg.url == f"http://{reg.host}"
        assert http_request("GET", reg.url + "/v2/").status == 200
        proc = reg.process
        root = reg.root
        assert proc is not None and root is not None and root.exists()
        config = json.loads((root / "config.yml").read_text())
        assert config["storage"]["delete"] == {"enabled": True}
        assert config["http"]["addr"] == reg.host
    assert proc.poll() is not None
    assert not root.exists()
    # two at once get different ports
    with Registry(root=tmp_path / "one") as one, Registry(root=tmp_path / "two") as two:
        assert one.port != two.port
    assert (tmp_path / "one" / "registry.log").exists()  # a given root is kept
