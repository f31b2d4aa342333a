"""The runc backend's ImageService against a real registry, through a real criadapt server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from criadapt import errors
from criadapt import models as m
from criadapt.client import Client
from criadapt.testing.images import (
    FileSpec,
    build_image,
    build_index,
    busybox_image,
    busybox_rootfs_layer,
    other_architecture,
    tar_layer,
    write_docker_archive,
    write_oci_layout,
)
from criadapt.testing.registry import Fault, FaultProxy, Registry, TokenAuthProxy
from criadapt_runc.testing import RuncServer

SPEC = m.ImageSpec


def pull(cri: Client, ref: str, auth: m.AuthConfig | None = None) -> str:
    return cri.pull_image(image=SPEC(image=ref), auth=auth).image_ref


def status(cri: Client, ref: str) -> m.Image | None:
    return cri.image_status(image=SPEC(image=ref)).image


def test_pull_status_list_remove_repull(cri: Client, registry: Registry) -> None:
    image = busybox_image(config={"User": "1000", "Labels": {"a": "b"}})
    ref = registry.push(image, "svc/busybox", "v1")
    image_id = pull(cri, ref)
    assert image_id == image.config_digest
    found = status(cri, ref)
    assert found is not None
    name = f"{registry.host}/svc/busybox"
    assert found.id == image_id
    assert found.repo_tags == (f"{name}:v1",)
    assert found.repo_digests == (f"{name}@{image.digest}",)
    assert found.size == image.total_size
    assert found.uid == m.Int64Value(value=1000)
    assert found.username == ""
    # by id (with and without the algorithm) and by digest
    assert status(cri, image_id) == found
    assert status(cri, image_id.removeprefix("sha256:")) == found
    assert status(cri, f"{name}@{image.digest}") == found
    listed = cri.list_images().images
    assert [i.id for i in listed] == [image_id]
    filtered = cri.list_images(filter=m.ImageFilter(image=SPEC(image=ref))).images
    assert [i.id for i in filtered] == [image_id]
    assert cri.list_images(filter=m.ImageFilter(image=SPEC(image="nope:1"))).images == ()
    verbose = cri.image_status(image=SPEC(image=ref), verbose=True)
    info = json.loads(verbose.info["info"])
    assert info["imageSpec"]["config"]["Labels"] == {"a": "b"}
    # remove by tag removes the image (all its names); idempotent
    cri.remove_image(image=SPEC(image=ref))
    cri.remove_image(image=SPEC(image=ref))
    cri.remove_image(image=SPEC(image=image_id))
    assert status(cri, ref) is None
    assert status(cri, image_id) is None
    assert cri.list_images().images == ()
    # re-pull works and the content is back
    assert pull(cri, ref) == image_id
    assert status(cri, ref) is not None


def test_remove_collects_unreferenced_content(
    runc_server: Callable[..., RuncServer], registry: Registry
) -> None:
    server = runc_server()
    cri = server.client
    assert cri is not None
    shared = busybox_rootfs_layer()
    one = build_image([shared, tar_layer({"one": b"1"})])
    two = build_image([shared, tar_layer({"two": b"2"})])
    ref_one = registry.push(one, "gc/one", "latest")
    ref_two = registry.push(two, "gc/two", "latest")
    pull(cri, ref_one)
    pull(cri, ref_two)
    snapshots = server.root / "snapshots"
    assert len([p for p in snapshots.iterdir() if not p.name.startswith(".")]) == 3
    cri.remove_image(image=SPEC(image=ref_one))
    left = [p for p in snapshots.iterdir() if not p.name.startswith(".")]
    assert len(left) == 2  # the shared busybox layer stays for image two
    blobs = {p.name for p in (server.root / "blobs" / "sha256").iterdir()}
    assert one.config_digest.removeprefix("sha256:") not in blobs
    assert two.config_digest.removeprefix("sha256:") in blobs
    cri.remove_image(image=SPEC(image=ref_two))
    assert [p for p in snapshots.iterdir() if not p.name.startswith(".")] == []
    assert list((server.root / "blobs" / "sha256").iterdir()) == []


def test_whiteouts_and_opaque_directories(
    runc_server: Callable[..., RuncServer], registry: Registry, tmp_path: Path
) -> None:
    server = runc_server()
    cri = server.client
    assert cri is not None
    lower = tar_layer({"etc/gone": b"x", "etc/kept": b"k", "d/a": b"a", "d/b": b"b"})
    upper = tar_layer({"etc/gone": FileSpec.whiteout(), "d": FileSpec.opaque(), "d/c": b"c"})
    image = build_image([busybox_rootfs_layer(), lower, upper])
    ref = registry.push(image, "layers/two", "latest")
    pull(cri, ref)
    info = json.loads(cri.image_status(image=SPEC(image=ref), verbose=True).info["info"])
    dirs = info["snapshots"]
    mountpoint = tmp_path / "merged"
    mountpoint.mkdir()
    lowerdir = ":".join(reversed(dirs))
    subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lowerdir}", str(mountpoint)],
        check=True,
    )
    try:
        assert not (mountpoint / "etc" / "gone").exists()
        assert (mountpoint / "etc" / "kept").read_bytes() == b"k"
        assert sorted(os.listdir(mountpoint / "d")) == ["c"]
        assert (mountpoint / "bin" / "busybox").is_file()
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)


def test_index_with_two_platforms_selects_this_machine(cri: Client, registry: Registry) -> None:
    here = busybox_image(config={"Labels": {"arch": "here"}})
    there = busybox_image(config={"Labels": {"arch": "there"}}, architecture=other_architecture())
    index = build_index([there, here])
    ref = registry.push_index(index, "multi/busybox", "latest")
    image_id = pull(cri, ref)
    assert image_id == here.config_digest
    found = status(cri, ref)
    assert found is not None
    assert found.repo_digests == (f"{registry.host}/multi/busybox@{index.digest}",)


def test_index_without_this_platform_is_not_found(cri: Client, registry: Registry) -> None:
    there = busybox_image(architecture=other_architecture())
    ref = registry.push_index(build_index([there]), "multi/other", "latest")
    with pytest.raises(errors.NotFound, match="no image for"):
        pull(cri, ref)
    assert cri.list_images().images == ()


def test_docker_schema2_and_zstd(cri: Client, registry: Registry) -> None:
    docker = busybox_image(media="docker", config={"Labels": {"kind": "docker"}})
    zstd = busybox_image(compression="zstd", config={"Labels": {"kind": "zstd"}})
    assert pull(cri, registry.push(docker, "media/docker", "1")) == docker.config_digest
    assert pull(cri, registry.push(zstd, "media/zstd", "1")) == zstd.config_digest


def test_htpasswd_registry(cri: Client, auth_registry: Registry) -> None:
    image = busybox_image(config={"Labels": {"auth": "basic"}})
    ref = auth_registry.push(image, "private/busybox", "latest")
    with pytest.raises(errors.Unauthenticated):
        pull(cri, ref)
    with pytest.raises(errors.Unauthenticated):
        pull(cri, ref, m.AuthConfig(username="tester", password="wrong"))
    good = m.AuthConfig(
        username=auth_registry.username or "", password=auth_registry.password or ""
    )
    assert pull(cri, ref, good) == image.config_digest


def test_bearer_token_registry(cri: Client, registry: Registry) -> None:
    image = busybox_image(config={"Labels": {"auth": "token"}})
    registry.push(image, "token/busybox", "latest")
    with TokenAuthProxy(registry, username="u", password="p") as proxy:
        ref = proxy.reference("token/busybox")
        with pytest.raises(errors.Unauthenticated):
            pull(cri, ref)
        assert pull(cri, ref, m.AuthConfig(username="u", password="p")) == image.config_digest
        assert proxy.token_requests


def test_mirror_is_used_and_the_name_kept(
    runc_server: Callable[..., RuncServer], registry: Registry
) -> None:
    image = busybox_image(config={"Labels": {"mirror": "yes"}})
    registry.push(image, "library/pause", "3.10")
    server = runc_server(
        f'[registry.mirrors."registry.k8s.io"]\nendpoints = ["http://{registry.host}"]\n'
    )
    cri = server.client
    assert cri is not None
    assert pull(cri, "registry.k8s.io/library/pause:3.10") == image.config_digest
    found = status(cri, "registry.k8s.io/library/pause:3.10")
    assert found is not None
    assert found.repo_tags == ("registry.k8s.io/library/pause:3.10",)


def test_corrupted_blob_is_refused_and_nothing_stored(
    runc_server: Callable[..., RuncServer], fresh_registry: Registry
) -> None:
    server = runc_server()
    cri = server.client
    assert cri is not None
    image = busybox_image(config={"Labels": {"corrupt": "yes"}})
    ref = fresh_registry.push(image, "bad/busybox", "latest")
    fresh_registry.corrupt_blob(image.layers[0].digest)
    with pytest.raises(errors.DataLoss):
        pull(cri, ref)
    assert cri.list_images().images == ()
    assert status(cri, ref) is None
    blobs = {p.name for p in (server.root / "blobs" / "sha256").iterdir()}
    assert image.layers[0].digest.removeprefix("sha256:") not in blobs
    assert [p for p in (server.root / "snapshots").iterdir()] == []
    assert list((server.root / "ingest").iterdir()) == []


def test_unknown_image_and_bad_references(cri: Client, registry: Registry) -> None:
    with pytest.raises(errors.NotFound):
        pull(cri, f"{registry.host}/no/such:image")
    with pytest.raises(errors.InvalidArgument):
        pull(cri, "Upper/Case")
    with pytest.raises(errors.Unavailable):
        pull(cri, "127.0.0.1:1/nothing/listens:here")
    assert status(cri, "docker.io/library/never-pulled:1") is None


def test_two_concurrent_pulls_do_the_work_once(
    runc_server: Callable[..., RuncServer], registry: Registry
) -> None:
    server = runc_server()
    image = busybox_image(config={"Labels": {"concurrent": "yes"}})
    registry.push(image, "conc/busybox", "latest")
    with FaultProxy(registry) as proxy:
        proxy.add_fault(Fault(rate=2_000_000))  # slow enough for the pulls to overlap
        ref = proxy.reference("conc/busybox")
        results: list[str] = []
        failures: list[BaseException] = []

        def one() -> None:
            try:
                with Client(server.config.listen, timeout=120) as c:
                    results.append(pull(c, ref))
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=one) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not failures, failures
        assert results == [image.config_digest] * 2
        layer_gets = [
            r for r in proxy.requests if r.method == "GET" and image.layers[0].digest in r.path
        ]
        assert len(layer_gets) == 1


def test_stalled_transfer_is_cancelled_but_slow_one_is_not(
    runc_server: Callable[..., RuncServer], registry: Registry
) -> None:
    server = runc_server("[backends.runc]\npull_stall_timeout = 1.0\n")
    cri = server.client
    assert cri is not None
    slow = busybox_image(extra_files={"speed": b"slow"})  # distinct layers, not shared
    stalled = busybox_image(extra_files={"speed": b"stalled"})
    registry.push(slow, "speed/slow", "latest")
    registry.push(stalled, "speed/stalled", "latest")
    with FaultProxy(registry) as proxy:
        size = slow.layers[0].size
        # slow but moving: the whole layer takes ~3 s, longer than the stall timeout
        proxy.add_fault(Fault(digest=slow.layers[0].digest, rate=size / 3))
        proxy.add_fault(Fault(digest=stalled.layers[0].digest, after_bytes=1024, stall=30))
        started = time.monotonic()
        assert pull(cri, proxy.reference("speed/slow")) == slow.config_digest
        assert time.monotonic() - started > 2
        started = time.monotonic()
        stalled_ref = proxy.reference("speed/stalled")
        with pytest.raises(errors.DeadlineExceeded, match="no data"):
            pull(cri, stalled_ref)
        assert time.monotonic() - started < 15
    assert status(cri, stalled_ref) is None


KILLED_PULL = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from criadapt.images import parse_reference
    from criadapt_runc.images.pull import Puller
    from criadapt_runc.images.registry import RegistryClient
    from criadapt_runc.images.store import ImageStore

    store = ImageStore(Path(sys.argv[1]))
    Puller(store, RegistryClient()).pull(parse_reference(sys.argv[2]))
    """
)


def test_pull_killed_half_way_then_retried(
    runc_server: Callable[..., RuncServer], registry: Registry, tmp_path: Path
) -> None:
    image = busybox_image(config={"Labels": {"killed": "yes"}})
    registry.push(image, "killed/busybox", "latest")
    base = tmp_path / "killed"
    base.mkdir()
    store_root = base / "root" / "runc"
    with FaultProxy(registry) as proxy:
        proxy.add_fault(Fault(digest=image.layers[0].digest, after_bytes=100_000, stall=60))
        ref = proxy.reference("killed/busybox")
        child = subprocess.Popen([sys.executable, "-c", KILLED_PULL, str(store_root), ref])
        try:
            assert proxy.stalled.wait(30)
            time.sleep(0.3)
            child.send_signal(signal.SIGKILL)
        finally:
            child.wait(10)
    partial = list((store_root / "ingest").iterdir())
    assert partial, "the killed pull should have left a partial download"
    server = runc_server(base=base)
    cri = server.client
    assert cri is not None
    assert cri.list_images().images == ()
    assert list((store_root / "ingest").iterdir()) == []  # cleaned at start
    direct = registry.reference("killed/busybox")
    assert pull(cri, direct) == image.config_digest


def test_image_fs_info_reports_real_usage(cri: Client, registry: Registry) -> None:
    before = cri.image_fs_info().image_filesystems[0]
    pull(cri, registry.push(busybox_image(config={"Labels": {"fs": "1"}}), "fs/one", "latest"))
    time.sleep(5.1)  # the usage walk is cached for 5 s
    after = cri.image_fs_info().image_filesystems[0]
    assert after.fs_id is not None and after.fs_id.mountpoint.endswith("/runc")
    assert after.used_bytes is not None and before.used_bytes is not None
    assert after.used_bytes.value > before.used_bytes.value + 500_000  # busybox is ~1-2 MB
    assert after.inodes_used is not None and after.inodes_used.value > 10


def test_import_oci_and_docker_archives(
    runc_server: Callable[..., RuncServer], tmp_path: Path
) -> None:
    oci = busybox_image(config={"Labels": {"from": "oci"}})
    docker = busybox_image(config={"Labels": {"from": "docker"}})
    oci_tar = write_oci_layout([("example.com/demo/oci:1.0", oci)], tmp_path / "oci.tar")
    docker_tar = write_docker_archive(
        [("example.com/demo/docker:2.0", docker)], tmp_path / "docker.tar"
    )
    server = runc_server()
    cri = server.client
    assert cri is not None
    env = {**os.environ}
    for archive in (oci_tar, docker_tar):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "criadapt",
                "images",
                "import",
                str(archive),
                "--backend=runc",
                "--root",
                str(server.config.root),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
    found = status(cri, "example.com/demo/oci:1.0")
    assert found is not None and found.id == oci.config_digest
    assert found.repo_digests == (f"example.com/demo/oci@{oci.digest}",)
    found = status(cri, "example.com/demo/docker:2.0")
    assert found is not None and found.id == docker.config_digest
    listing = subprocess.run(
        [
            sys.executable,
            "-m",
            "criadapt",
            "images",
            "list",
            "--backend=runc",
            "--root",
            str(server.config.root),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "example.com/demo/oci:1.0" in listing and "example.com/demo/docker:2.0" in listing


def test_import_refuses_garbage(runc_server: Callable[..., RuncServer], tmp_path: Path) -> None:
    server = runc_server()
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar at all")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "criadapt",
            "images",
            "import",
            str(junk),
            "--backend=runc",
            "--root",
            str(server.config.root),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "not a readable tar archive" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_images_survive_a_restart(
    runc_server: Callable[..., RuncServer], registry: Registry, tmp_path: Path
) -> None:
    base = tmp_path / "restart"
    base.mkdir()
    server = runc_server(base=base)
    cri = server.client
    assert cri is not None
    image = busybox_image(config={"Labels": {"restart": "yes"}})
    ref = registry.push(image, "restart/busybox", "latest")
    pull(cri, ref)
    server.stop()
    again = runc_server(base=base)
    assert again.client is not None
    found = status(again.client, ref)
    assert found is not None and found.id == image.config_digest


def test_warm_pull_does_not_fetch_layers(cri: Client, registry: Registry) -> None:
    image = busybox_image(config={"Labels": {"warm": "yes"}})
    registry.push(image, "warm/busybox", "latest")
    with FaultProxy(registry) as proxy:
        ref = proxy.reference("warm/busybox")
        pull(cri, ref)
        before = len(proxy.requests)
        pull(cri, ref)
        new = proxy.requests[before:]
        assert all("/blobs/" not in r.path for r in new), [r.path for r in new]
