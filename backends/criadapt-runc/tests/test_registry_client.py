"""RegistryClient against small in-process HTTP registries (127.0.0.1 only, no real registry)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from criadapt.errors import (
    DataLoss,
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from criadapt.images import parse_reference
from criadapt.models import AuthConfig
from criadapt_runc.images import registry as registry_mod
from criadapt_runc.images.registry import (
    MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_DOCKER_MANIFEST_LIST,
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_MANIFEST,
    Platform,
    RegistryClient,
    ResolvedImage,
)

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
AMD64 = Platform("linux", "amd64")
ARM64 = Platform("linux", "arm64", "v8")


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class Image:
    repo: str
    tag: str
    manifest: bytes
    digest: str
    config: bytes
    layers: list[bytes]

    @property
    def config_digest(self) -> str:
        return sha(self.config)


@dataclass
class FakeRegistry:
    """A registry serving manifests and blobs from dicts, with knobs for misbehaviour."""

    manifests: dict[tuple[str, str], tuple[str, bytes]] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    #: None (open), "bearer" or "basic"
    auth: str | None = None
    #: bearer: an anonymous token may pull
    anonymous: bool = True
    users: dict[str, str] = field(default_factory=lambda: {"alice": "wonderland"})
    refresh_tokens: dict[str, str] = field(default_factory=lambda: {"refresh-xyz": "alice"})
    static_tokens: set[str] = field(default_factory=lambda: {"static-abc"})
    issued: dict[str, str] = field(default_factory=dict)
    forbidden: set[str] = field(default_factory=set)
    expires_in: int = 300
    #: answer every /v2 request with this status
    fail: int | None = None
    #: digest -> "stall" | "slow" | "corrupt" | "drop" | "drop-ignore-range" | "redirect"
    blob_mode: dict[str, str] = field(default_factory=dict)
    redirect_to: str = ""
    #: (repo, reference) -> Docker-Content-Digest to announce instead of the real one
    fake_digest: dict[tuple[str, str], str] = field(default_factory=dict)
    #: path prefix before /v2 (a mirror behind a path)
    prefix: str = ""
    #: omit the mediaType field from stored manifests' Content-Type header
    content_type: bool = True
    requests: list[Seen] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    drops: int = 0

    def __post_init__(self) -> None:
        registry = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                registry.handle(self)

            do_POST = do_HEAD = do_GET

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()

    def seen(self, kind: str) -> list[Seen]:
        return [s for s in self.requests if f"/{kind}/" in s.path or s.path == f"/{kind}"]

    # ------------------------------------------------------------------ content

    def add_image(
        self,
        repo: str = "app",
        tag: str = "v1",
        layers: list[bytes] | None = None,
        *,
        docker: bool = False,
        media_type_field: bool = True,
        os_arch: tuple[str, str] = ("linux", "amd64"),
    ) -> Image:
        layers = layers if layers is not None else [b"layer-one" * 100, b"layer-two" * 50]
        config = json.dumps(
            {"os": os_arch[0], "architecture": os_arch[1], "rootfs": {"type": "layers"}}
        ).encode()
        media_type = MEDIA_TYPE_DOCKER_MANIFEST if docker else MEDIA_TYPE_OCI_MANIFEST
        doc: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": {
                "mediaType": DOCKER_CONFIG if docker else OCI_CONFIG,
                "digest": sha(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": DOCKER_LAYER if docker else OCI_LAYER,
                    "digest": sha(layer),
                    "size": len(layer),
                }
                for layer in layers
            ],
        }
        if not media_type_field:
            del doc["mediaType"]
        manifest = json.dumps(doc).encode()
        digest = sha(manifest)
        self.manifests[(repo, tag)] = (media_type, manifest)
        self.manifests[(repo, digest)] = (media_type, manifest)
        self.blobs[sha(config)] = config
        for layer in layers:
            self.blobs[sha(layer)] = layer
        return Image(repo, tag, manifest, digest, config, layers)

    def add_index(
        self, repo: str, tag: str, entries: list[tuple[Platform, Image]], *, docker: bool = False
    ) -> tuple[bytes, str]:
        media_type = MEDIA_TYPE_DOCKER_MANIFEST_LIST if docker else MEDIA_TYPE_OCI_INDEX
        manifests = []
        for platform, image in entries:
            item = {
                "mediaType": MEDIA_TYPE_DOCKER_MANIFEST if docker else MEDIA_TYPE_OCI_MANIFEST,
                "digest": image.digest,
                "size": len(image.manifest),
                "platform": {"os": platform.os, "architecture": platform.architecture},
            }
            if platform.variant:
                item["platform"]["variant"] = platform.variant
            manifests.append(item)
        body = json.dumps({"schemaVersion": 2, "mediaType": media_type, "manifests": manifests})
        data = body.encode()
        self.manifests[(repo, tag)] = (media_type, data)
        self.manifests[(repo, sha(data))] = (media_type, data)
        return data, sha(data)

    # ------------------------------------------------------------------ HTTP

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        seen = Seen(h.command, parts.path, parse_qs(parts.query), dict(h.headers.items()), body)
        self.requests.append(seen)
        path = parts.path
        if path == "/token":
            return self.token(h, seen)
        if path.startswith("/storage/"):
            return self.blob(h, path.rsplit("/", 1)[1], storage=True)
        if not path.startswith(self.prefix + "/v2/"):
            return self.send(h, 404, error="NOT_FOUND")
        path = path[len(self.prefix) :]
        if self.fail:
            return self.send(h, self.fail, error="UNAVAILABLE", message="injected failure")
        match = re.fullmatch(r"/v2/(.+)/(manifests|blobs)/([^/]+)", path)
        if path == "/v2/":
            if not self.authorized(h, ""):
                return None
            return self.send(h, 200, b"{}")
        if not match:
            return self.send(h, 404, error="NOT_FOUND")
        repo, kind, reference = match.groups()
        if not self.authorized(h, repo):
            return None
        if repo in self.forbidden:
            return self.send(h, 403, error="DENIED", message="requested access is denied")
        if kind == "blobs":
            return self.blob(h, reference)
        found = self.manifests.get((repo, reference))
        if found is None:
            return self.send(h, 404, error="MANIFEST_UNKNOWN", message="manifest unknown")
        media_type, data = found
        headers = {"Docker-Content-Digest": self.fake_digest.get((repo, reference), sha(data))}
        if self.content_type:
            headers["Content-Type"] = media_type
        return self.send(h, 200, data, headers)

    def send(
        self,
        h: BaseHTTPRequestHandler,
        status: int,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        *,
        error: str = "",
        message: str = "",
    ) -> None:
        if error:
            body = json.dumps({"errors": [{"code": error, "message": message or error}]}).encode()
        h.send_response(status)
        for name, value in (headers or {}).items():
            h.send_header(name, value)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)

    def challenge(self, repo: str) -> str:
        if self.auth == "basic":
            return 'Basic realm="fake registry"'
        return (
            f'Bearer realm="{self.url}/token",service="fake-registry",'
            f'scope="repository:{repo}:pull"'
        )

    def authorized(self, h: BaseHTTPRequestHandler, repo: str) -> bool:
        if self.auth is None:
            return True
        given = h.headers.get("Authorization", "")
        ok = False
        if self.auth == "basic":
            ok = given in {basic(u, p) for u, p in self.users.items()}
        elif given.startswith("Bearer "):
            token = given[len("Bearer ") :]
            user = self.issued.get(token)
            ok = token in self.static_tokens or (
                user is not None and (user != "" or self.anonymous)
            )
        if not ok:
            self.send(
                h,
                401,
                headers={"WWW-Authenticate": self.challenge(repo)},
                error="UNAUTHORIZED",
                message="authentication required",
            )
        return ok

    def token(self, h: BaseHTTPRequestHandler, seen: Seen) -> None:
        user: str | None = ""
        if h.command == "POST":
            form = parse_qs(seen.body.decode())
            if form.get("grant_type") != ["refresh_token"]:
                return self.send(h, 400, error="unsupported_grant_type")
            user = self.refresh_tokens.get(form.get("refresh_token", [""])[0])
        elif "Authorization" in h.headers:
            given = h.headers["Authorization"]
            user = next((u for u, p in self.users.items() if basic(u, p) == given), None)
        if user is None:
            return self.send(h, 401, error="UNAUTHORIZED", message="bad credentials")
        token = f"tok-{len(self.issued)}"
        self.issued[token] = user
        key = "access_token" if h.command == "POST" else "token"
        return self.send(h, 200, json.dumps({key: token, "expires_in": self.expires_in}).encode())

    def blob(self, h: BaseHTTPRequestHandler, digest: str, storage: bool = False) -> None:
        data = self.blobs.get(digest)
        if data is None:
            return self.send(h, 404, error="BLOB_UNKNOWN", message="blob unknown")
        mode = self.blob_mode.get(digest, "")
        if mode == "redirect" and not storage:
            return self.send(h, 307, headers={"Location": f"{self.redirect_to}/storage/{digest}"})
        if mode == "corrupt":
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        if mode in ("stall", "slow"):
            h.send_response(200)
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            pieces = [
                data[i : i + len(data) // 6 + 1] for i in range(0, len(data), len(data) // 6 + 1)
            ]
            for index, piece in enumerate(pieces):
                h.wfile.write(piece)
                h.wfile.flush()
                if mode == "stall" and index == 0:
                    self.stop.wait(5)
                    h.close_connection = True
                    return None
                if self.stop.wait(0.2):
                    return None
            return None
        if mode.startswith("drop"):
            wanted = h.headers.get("Range", "")
            match = re.fullmatch(r"bytes=(\d+)-", wanted)
            if match and mode == "drop":
                start = int(match.group(1))
                return self.send(
                    h,
                    206,
                    data[start:],
                    {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"},
                )
            if self.drops == 0:
                self.drops += 1
                h.send_response(200)
                h.send_header("Content-Length", str(len(data)))
                h.end_headers()
                h.wfile.write(data[: len(data) // 2])
                h.wfile.flush()
                h.close_connection = True
                return None
        return self.send(h, 200, data, {"Content-Type": "application/octet-stream"})


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture
def make_registry() -> Iterator[Callable[..., FakeRegistry]]:
    made: list[FakeRegistry] = []

    def make(**kwargs: Any) -> FakeRegistry:
        registry = FakeRegistry(**kwargs)
        made.append(registry)
        return registry

    yield make
    for registry in made:
        registry.close()


@pytest.fixture
def reg(make_registry: Callable[..., FakeRegistry]) -> FakeRegistry:
    return make_registry()


@pytest.fixture
def client() -> Iterator[RegistryClient]:
    with RegistryClient(stall_timeout=5, connect_timeout=2) as c:
        yield c


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def ref(registry: FakeRegistry, rest: str = "app:v1") -> Any:
    return parse_reference(f"{registry.host}/{rest}")


def pull_all(client: RegistryClient, image: ResolvedImage, **kwargs: Any) -> list[bytes]:
    out = []
    for layer in image.layers:
        buffer = io.BytesIO()
        client.fetch_blob(image, layer, buffer, **kwargs)
        out.append(buffer.getvalue())
    return out


# ---------------------------------------------------------------------------- manifests


def test_tag_pull_oci(reg: FakeRegistry, client: RegistryClient) -> None:
    image = reg.add_image()
    resolved = client.resolve(ref(reg), platform=AMD64)
    assert resolved.reference == ref(reg)
    assert resolved.endpoint == reg.url
    assert resolved.repository == "app"
    assert resolved.manifest == image.manifest
    assert resolved.manifest_digest == image.digest
    assert resolved.manifest_media_type == MEDIA_TYPE_OCI_MANIFEST
    assert resolved.index_digest is None
    assert resolved.config.digest == image.config_digest
    assert resolved.config.media_type == OCI_CONFIG
    assert [d.digest for d in resolved.layers] == [sha(layer) for layer in image.layers]
    assert client.fetch_bytes(resolved, resolved.config) == image.config
    seen_progress: list[int] = []
    buffer = io.BytesIO()
    client.fetch_blob(resolved, resolved.layers[0], buffer, progress=seen_progress.append)
    assert buffer.getvalue() == image.layers[0]
    assert seen_progress[-1] == len(image.layers[0])
    manifest_request = reg.seen("manifests")[0]
    accept = manifest_request.headers["Accept"]
    for media_type in (
        MEDIA_TYPE_OCI_INDEX,
        MEDIA_TYPE_OCI_MANIFEST,
        MEDIA_TYPE_DOCKER_MANIFEST_LIST,
        MEDIA_TYPE_DOCKER_MANIFEST,
    ):
        assert media_type in accept
    assert "distribution.manifest.v1" not in accept
    assert manifest_request.headers["User-Agent"] == "criadapt"


def test_docker_schema2(reg: FakeRegistry, client: RegistryClient) -> None:
    image = reg.add_image(docker=True)
    resolved = client.resolve(ref(reg), platform=AMD64)
    assert resolved.manifest_media_type == MEDIA_TYPE_DOCKER_MANIFEST
    assert resolved.config.media_type == DOCKER_CONFIG
    assert {d.media_type for d in resolved.layers} == {DOCKER_LAYER}
    assert pull_all(client, resolved) == image.layers


def test_media_type_from_content_type_or_structure(
    make_registry: Callable[..., FakeRegistry], client: RegistryClient
) -> None:
    with_header = make_registry()
    with_header.add_image(docker=True, media_type_field=False)
    assert (
        client.resolve(ref(with_header), platform=AMD64).manifest_media_type
        == MEDIA_TYPE_DOCKER_MANIFEST
    )
    bare = make_registry(content_type=False)
    bare.add_image(media_type_field=False)
    assert client.resolve(ref(bare), platform=AMD64).manifest_media_type == MEDIA_TYPE_OCI_MANIFEST


def test_digest_pull(reg: FakeRegistry, client: RegistryClient) -> None:
    image = reg.add_image()
    resolved = client.resolve(ref(reg, f"app@{image.digest}"), platform=AMD64)
    assert resolved.manifest_digest == image.digest
    assert resolved.reference.digest == image.digest
    assert reg.seen("manifests")[0].path.endswith(f"/manifests/{image.digest}")


def test_digest_pull_verifies_bytes(reg: FakeRegistry, client: RegistryClient) -> None:
    image = reg.add_image()
    wrong = "sha256:" + "0" * 64
    reg.manifests[("app", wrong)] = reg.manifests[("app", image.digest)]
    with pytest.raises(DataLoss, match="does not match digest"):
        client.resolve(ref(reg, f"app@{wrong}"), platform=AMD64)


def test_tag_pull_checks_docker_content_digest(reg: FakeRegistry, client: RegistryClient) -> None:
    reg.add_image()
    reg.fake_digest[("app", "v1")] = "sha256:" + "1" * 64
    with pytest.raises(DataLoss, match="Docker-Content-Digest"):
        client.resolve(ref(reg), platform=AMD64)


def test_schema1_is_refused(reg: FakeRegistry, client: RegistryClient) -> None:
    body = json.dumps({"schemaVersion": 1, "name": "app", "tag": "old", "fsLayers": []}).encode()
    reg.manifests[("app", "old")] = (
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        body,
    )
    with pytest.raises(InvalidArgument, match="schema1 not supported"):
        client.resolve(ref(reg, "app:old"), platform=AMD64)


def test_malformed_manifest_is_data_loss(reg: FakeRegistry, client: RegistryClient) -> None:
    reg.manifests[("app", "bad")] = (MEDIA_TYPE_OCI_MANIFEST, b"{not json")
    with pytest.raises(DataLoss, match="not JSON"):
        client.resolve(ref(reg, "app:bad"), platform=AMD64)


# ---------------------------------------------------------------------------- platforms


@pytest.mark.parametrize("docker", [False, True])
def test_index_selects_platform(reg: FakeRegistry, client: RegistryClient, docker: bool) -> None:
    amd = reg.add_image(tag="amd", layers=[b"amd64 layer"], docker=docker)
    arm = reg.add_image(
        tag="arm", layers=[b"arm64 layer"], docker=docker, os_arch=("linux", "arm64")
    )
    attestation = reg.add_image(tag="att", layers=[b"in-toto"], os_arch=("unknown", "unknown"))
    _, index_digest = reg.add_index(
        "app",
        "multi",
        [(Platform("unknown", "unknown"), attestation), (AMD64, amd), (ARM64, arm)],
        docker=docker,
    )
    on_arm = client.resolve(ref(reg, "app:multi"), platform=Platform("linux", "arm64"))
    assert on_arm.index_digest == index_digest
    assert on_arm.manifest_digest == arm.digest
    assert on_arm.manifest == arm.manifest
    assert pull_all(client, on_arm) == [b"arm64 layer"]
    on_amd = client.resolve(ref(reg, f"app@{index_digest}"), platform=AMD64)
    assert (on_amd.index_digest, on_amd.manifest_digest) == (index_digest, amd.digest)


def test_index_without_the_platform(reg: FakeRegistry, client: RegistryClient) -> None:
    amd = reg.add_image(tag="amd", layers=[b"a"])
    arm = reg.add_image(tag="arm", layers=[b"b"], os_arch=("linux", "arm64"))
    reg.add_index("app", "multi", [(AMD64, amd), (ARM64, arm)])
    with pytest.raises(NotFound) as info:
        client.resolve(ref(reg, "app:multi"), platform=Platform("linux", "s390x"))
    message = str(info.value)
    assert "no image for linux/s390x in" in message
    assert "app:multi" in message
    assert "(available: linux/amd64, linux/arm64/v8)" in message


def test_arm_variants(reg: FakeRegistry, client: RegistryClient) -> None:
    v6 = reg.add_image(tag="v6", layers=[b"v6"], os_arch=("linux", "arm"))
    v7 = reg.add_image(tag="v7", layers=[b"v7"], os_arch=("linux", "arm"))
    reg.add_index(
        "app", "arm", [(Platform("linux", "arm", "v6"), v6), (Platform("linux", "arm", "v7"), v7)]
    )
    r = ref(reg, "app:arm")
    assert client.resolve(r, platform=Platform("linux", "arm", "v8")).manifest_digest == v7.digest
    assert client.resolve(r, platform=Platform("linux", "arm")).manifest_digest == v7.digest
    assert client.resolve(r, platform=Platform("linux", "arm", "v6")).manifest_digest == v6.digest
    with pytest.raises(NotFound, match="linux/arm/v5"):
        client.resolve(r, platform=Platform("linux", "arm", "v5"))


def test_index_entry_must_match_its_digest(reg: FakeRegistry, client: RegistryClient) -> None:
    amd = reg.add_image(tag="amd", layers=[b"a"])
    reg.add_index("app", "multi", [(AMD64, amd)])
    reg.manifests[("app", amd.digest)] = (MEDIA_TYPE_OCI_MANIFEST, amd.manifest + b" ")
    with pytest.raises(DataLoss):
        client.resolve(ref(reg, "app:multi"), platform=AMD64)


@pytest.mark.parametrize(
    ("machine", "expected"),
    [
        ("x86_64", "linux/amd64"),
        ("aarch64", "linux/arm64/v8"),
        ("armv7l", "linux/arm/v7"),
        ("armv6l", "linux/arm/v6"),
        ("i686", "linux/386"),
        ("ppc64le", "linux/ppc64le"),
        ("s390x", "linux/s390x"),
    ],
)
def test_host_platform(monkeypatch: pytest.MonkeyPatch, machine: str, expected: str) -> None:
    monkeypatch.setattr(registry_mod._host, "machine", lambda: machine)
    monkeypatch.setattr(registry_mod.struct, "calcsize", lambda fmt: 8)
    assert str(Platform.host()) == expected


# ---------------------------------------------------------------------------- auth


def test_bearer_anonymous_token_is_cached(
    make_registry: Callable[..., FakeRegistry], client: RegistryClient
) -> None:
    reg = make_registry(auth="bearer")
    image = reg.add_image()
    first = client.resolve(ref(reg), platform=AMD64)
    assert len(reg.seen("token")) == 1
    token_request = reg.seen("token")[0]
    assert token_request.query["scope"] == ["repository:app:pull"]
    assert token_request.query["service"] == ["fake-registry"]
    assert "Authorization" not in token_request.headers
    second = client.resolve(ref(reg), platform=AMD64)
    assert second.manifest_digest == first.manifest_digest
    assert pull_all(client, second) == image.layers
    assert len(reg.seen("token")) == 1
    # the second resolve authenticated up front: no second 401
    manifest_requests = reg.seen("manifests")
    assert len(manifest_requests) == 3
    assert "Authorization" not in manifest_requests[0].headers
    assert manifest_requests[2].headers["Authorization"] == "Bearer tok-0"


def test_bearer_token_expires(
    make_registry: Callable[..., FakeRegistry], client: RegistryClient
) -> None:
    reg = make_registry(auth="bearer", expires_in=60)
    reg.add_image()
    now = [1000.0]
    client.clock = lambda: now[0]
    client.resolve(ref(reg), platform=AMD64)
    now[0] += 30
    client.resolve(ref(reg), platform=AMD64)
    assert len(reg.seen("token")) == 1
    now[0] += 31
    client.resolve(ref(reg), platform=AMD64)
    assert len(reg.seen("token")) == 2


@pytest.mark.parametrize(
    "auth",
    [
        AuthConfig(username="alice", password="wonderland"),
        AuthConfig(auth=base64.b64encode(b"alice:wonderland").decode()),
    ],
)
def test_bearer_with_credentials(
    make_registry: Callable[..., FakeRegistry], client: RegistryClient, auth: AuthConfig
) -> None:
    reg = make_registry(auth="bearer", anonymous=False)
    image = reg.add_image()
    resolved = client.resolve(ref(reg), auth, platform=AMD64)
    assert pull_all(client, resolved, auth=auth) == image.layers
    tokens = reg.seen("token")
    assert len(tokens) == 1
    assert tokens[0].headers["Authorization"] == basic("alice", "wonderland")
    assert tokens[0].query["account"] == ["alice"]


def test_bearer_private_without_credentials(
    make_registry: Callable[..., FakeRegistry], client: RegistryClient
) -> None:
    reg = make_registry(auth="bearer", anonymous=False)
    reg.add_image()
    with pytest.raises(Unauthenticated, match=re.escape(reg.host)) as info:
        client.resolve(ref(reg), platform=AMD64)
    assert "no credentials" in str(info.value)


def test_bearer_wrong_password(
    make_registry: Callable[..., FakeRegistry], client: RegistryClient
) -> None:
    reg = make_registry(auth="bearer", anonymous=False)
    reg.add_image()
    with pytest.raises(Unauthenticated, match=re.escape(reg.host)):
        client.resolve(ref(reg), AuthConfig(username="alice", password="nope"), platform=AMD64)


def test_identity_token_refresh_grant(
    make_registry: Callable[..., FakeRegistry], client: RegistryClient
) -> None:
    reg = make_registry(auth="bearer", anonymous=False)
    reg.add_image()
    client.resolve(ref(reg), AuthConfig(identity_token="refresh-xyz"), platform=AMD64)
    (grant,) = reg.seen("token")
    assert grant.method == "POST"
    form = parse_qs(grant.body.decode())
    assert form["grant_type"] == ["refresh_token"]
    assert form["refresh_token"] == ["refresh-xyz"]
    assert form["service"] == ["fake-registry"]
    assert form["scope"] == ["repository:app:pull"]
    with pytest.raises(Unauthenticated):
        client.resolve(ref(reg), AuthConfig(identity_token="stale"), platform=AMD64)


def test_registry_token_used_directly(
    make_registry: Callable[..., FakeRegistry], client: RegistryClient
) -> None:
    reg = make_registry(auth="bearer", anonymous=False)
    image = reg.add_image()
    auth = AuthConfig(registry_token="static-abc")
    resolved = client.resolve(ref(reg), auth, platform=AMD64)
    assert pull_all(client, resolved, auth=auth) == image.layers
    assert reg.seen("token") == []
    assert reg.seen("manifests")[-1].headers["Authorization"] == "Bearer static-abc"


def test_basic_auth(make_registry: Callable[..., FakeRegistry], client: RegistryClient) -> None:
    reg = make_registry(auth="basic")
    image = reg.add_image()
    with pytest.raises(Unauthenticated, match="no credentials"):
        client.resolve(ref(reg), platform=AMD64)
    with pytest.raises(Unauthenticated, match=f"registry {re.escape(reg.host)} rejected"):
        client.resolve(ref(reg), AuthConfig(username="alice", password="x"), platform=AMD64)
    auth = AuthConfig(username="alice", password="wonderland")
    resolved = client.resolve(ref(reg), auth, platform=AMD64)
    assert pull_all(client, resolved, auth=auth) == image.layers
    assert reg.seen("blobs")[-1].headers["Authorization"] == basic("alice", "wonderland")
    assert reg.seen("token") == []


def test_invalid_auth_field(reg: FakeRegistry, client: RegistryClient) -> None:
    reg.add_image()
    with pytest.raises(InvalidArgument, match=r"AuthConfig\.auth"):
        client.resolve(ref(reg), AuthConfig(auth="!!!"), platform=AMD64)


def test_401_without_challenge(reg: FakeRegistry, client: RegistryClient) -> None:
    reg.fail = 401
    with pytest.raises(Unauthenticated, match="unsupported authentication"):
        client.resolve(ref(reg), platform=AMD64)


# ---------------------------------------------------------------------------- error mapping


def test_permission_denied(
    make_registry: Callable[..., FakeRegistry], client: RegistryClient
) -> None:
    reg = make_registry(auth="bearer", forbidden={"app"})
    reg.add_image()
    with pytest.raises(PermissionDenied, match="denied"):
        client.resolve(ref(reg), platform=AMD64)


def test_not_found(reg: FakeRegistry, client: RegistryClient) -> None:
    with pytest.raises(NotFound, match=re.escape(f"image not found: {reg.host}/app:v1")):
        client.resolve(ref(reg), platform=AMD64)


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (500, Unavailable),
        (503, Unavailable),
        (429, ResourceExhausted),
        (400, InvalidArgument),
    ],
)
def test_status_mapping(
    reg: FakeRegistry, client: RegistryClient, status: int, error: type[Exception]
) -> None:
    reg.fail = status
    with pytest.raises(error, match=re.escape(reg.host)):
        client.resolve(ref(reg), platform=AMD64)


def test_connection_refused(client: RegistryClient) -> None:
    port = closed_port()
    with pytest.raises(Unavailable, match=re.escape(f"http://127.0.0.1:{port}")) as info:
        client.resolve(parse_reference(f"127.0.0.1:{port}/app:v1"), platform=AMD64)
    assert "connection refused" in str(info.value)


def test_insecure_registry_falls_back_to_http(
    reg: FakeRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(registry_mod, "_is_loopback", lambda host: False)
    reg.add_image()
    with RegistryClient(insecure=[reg.host], connect_timeout=2, stall_timeout=2) as insecure:
        assert insecure.resolve(ref(reg), platform=AMD64).endpoint == reg.url
    strict = RegistryClient(connect_timeout=2, stall_timeout=2)
    with pytest.raises(Unavailable, match=re.escape(f"https://{reg.host}")):
        strict.resolve(ref(reg), platform=AMD64)
    strict.close()


def test_endpoint_selection() -> None:
    client = RegistryClient(
        mirrors={
            "docker.io": ["https://mirror.example.com/prefix/", "mirror.local:5000"],
            "localhost:5000": ["http://127.0.0.1:6000/v2"],
        },
        insecure=["registry.lan:5000"],
    )
    bases = [e.base for e in client._endpoints(parse_reference("busybox"))]
    assert bases == [
        "https://mirror.example.com/prefix",
        "https://mirror.local:5000",
        "https://registry-1.docker.io",
    ]
    hub = client._endpoints(parse_reference("busybox"))
    assert hub[0].api == "https://mirror.example.com/prefix/v2"
    assert hub[0].ns == "docker.io"
    assert hub[-1].ns == ""
    local = client._endpoints(parse_reference("localhost:5000/x"))
    assert [e.api for e in local] == ["http://127.0.0.1:6000/v2", "http://localhost:5000/v2"]
    assert client._endpoints(parse_reference("[::1]:5000/x"))[-1].base == "http://[::1]:5000"
    (quay,) = client._endpoints(parse_reference("quay.io/a/b"))
    assert (quay.base, quay.probe) == ("https://quay.io", False)
    (lan,) = client._endpoints(parse_reference("registry.lan:5000/a"))
    assert (lan.base, lan.probe) == ("https://registry.lan:5000", True)
    with pytest.raises(InvalidArgument):
        RegistryClient(mirrors={"docker.io": ["ftp://mirror"]})


# ---------------------------------------------------------------------------- mirrors


def test_mirrors_in_order_then_origin(
    make_registry: Callable[..., FakeRegistry],
) -> None:
    origin = make_registry(auth="basic")
    image = origin.add_image()
    empty_mirror = make_registry()
    dead = f"http://127.0.0.1:{closed_port()}"
    client = RegistryClient(mirrors={origin.host: [dead, empty_mirror.url]}, connect_timeout=2)
    auth = AuthConfig(username="alice", password="wonderland", server_address=origin.host)
    r = ref(origin)
    resolved = client.resolve(r, auth, platform=AMD64)
    assert resolved.reference == r
    assert resolved.endpoint == origin.url
    assert pull_all(client, resolved, auth=auth) == image.layers
    mirror_requests = empty_mirror.seen("manifests")
    assert len(mirror_requests) == 1
    assert mirror_requests[0].query["ns"] == [origin.host]
    assert all("Authorization" not in s.headers for s in empty_mirror.requests)
    assert origin.seen("manifests")[-1].headers["Authorization"] == basic("alice", "wonderland")


def test_mirror_serves_the_image(make_registry: Callable[..., FakeRegistry]) -> None:
    origin = make_registry()
    mirror = make_registry(prefix="/cache")
    image = mirror.add_image()
    client = RegistryClient(mirrors={origin.host: [mirror.url + "/cache"]})
    resolved = client.resolve(ref(origin), platform=AMD64)
    assert resolved.endpoint == mirror.url + "/cache"
    assert resolved.reference == ref(origin)
    assert pull_all(client, resolved) == image.layers
    assert origin.requests == []
    assert all(s.query["ns"] == [origin.host] for s in mirror.requests)


def test_credentials_go_to_a_mirror_named_by_server_address(
    make_registry: Callable[..., FakeRegistry],
) -> None:
    origin = make_registry()
    mirror = make_registry(auth="basic")
    image = mirror.add_image()
    client = RegistryClient(mirrors={origin.host: [mirror.url]})
    # credentials meant for the origin are not offered to the mirror, which then fails
    with pytest.raises(NotFound):
        client.resolve(ref(origin), AuthConfig(username="alice", password="wonderland"))
    assert all("Authorization" not in s.headers for s in mirror.requests)
    auth = AuthConfig(username="alice", password="wonderland", server_address=mirror.host)
    resolved = client.resolve(ref(origin), auth, platform=AMD64)
    assert resolved.endpoint == mirror.url
    assert pull_all(client, resolved, auth=auth) == image.layers


def test_mirror_missing_a_blob_falls_back_to_origin(
    make_registry: Callable[..., FakeRegistry],
) -> None:
    origin = make_registry()
    mirror = make_registry()
    image = origin.add_image()
    mirror.add_image()
    del mirror.blobs[sha(image.layers[1])]
    client = RegistryClient(mirrors={origin.host: [mirror.url]})
    resolved = client.resolve(ref(origin), platform=AMD64)
    assert resolved.endpoint == mirror.url
    assert pull_all(client, resolved) == image.layers
    assert len(origin.seen("blobs")) == 1


def test_every_endpoint_down(make_registry: Callable[..., FakeRegistry]) -> None:
    origin = make_registry(fail=502)
    dead = f"http://127.0.0.1:{closed_port()}"
    client = RegistryClient(mirrors={origin.host: [dead]})
    with pytest.raises(Unavailable) as info:
        client.resolve(ref(origin), platform=AMD64)
    assert origin.url in str(info.value)
    assert dead in str(info.value)


# ---------------------------------------------------------------------------- blobs


def test_blob_digest_mismatch(reg: FakeRegistry, client: RegistryClient) -> None:
    image = reg.add_image()
    digest = sha(image.layers[0])
    reg.blob_mode[digest] = "corrupt"
    resolved = client.resolve(ref(reg), platform=AMD64)
    with pytest.raises(DataLoss, match=digest):
        client.fetch_blob(resolved, resolved.layers[0], io.BytesIO())


def test_blob_size_mismatch(reg: FakeRegistry, client: RegistryClient) -> None:
    image = reg.add_image()
    digest = sha(image.layers[0])
    reg.blobs[digest] = image.layers[0] + b"extra"
    resolved = client.resolve(ref(reg), platform=AMD64)
    with pytest.raises(DataLoss, match=digest):
        client.fetch_blob(resolved, resolved.layers[0], io.BytesIO())


def test_blob_not_found(reg: FakeRegistry, client: RegistryClient) -> None:
    image = reg.add_image()
    del reg.blobs[sha(image.layers[0])]
    resolved = client.resolve(ref(reg), platform=AMD64)
    with pytest.raises(NotFound):
        client.fetch_blob(resolved, resolved.layers[0], io.BytesIO())


def test_blob_stall_and_slow_blob(reg: FakeRegistry) -> None:
    stalled = b"s" * 3000
    slow = b"m" * 3000
    reg.add_image(layers=[stalled, slow])
    reg.blob_mode[sha(stalled)] = "stall"
    reg.blob_mode[sha(slow)] = "slow"
    with RegistryClient(stall_timeout=0.5, connect_timeout=2) as client:
        resolved = client.resolve(ref(reg), platform=AMD64)
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded) as info:
            client.fetch_blob(resolved, resolved.layers[0], io.BytesIO())
        assert time.monotonic() - started < 3
        assert str(info.value) == (
            f"no data for 0.5 s from {reg.url} while fetching blob {sha(stalled)}"
        )
        started = time.monotonic()
        buffer = io.BytesIO()
        progress: list[int] = []
        client.fetch_blob(resolved, resolved.layers[1], buffer, progress=progress.append)
        assert time.monotonic() - started > 0.5  # longer than the stall timeout, yet fine
        assert buffer.getvalue() == slow
        assert len(progress) > 1


def test_blob_redirect_drops_authorization(
    make_registry: Callable[..., FakeRegistry], client: RegistryClient
) -> None:
    storage = make_registry()
    reg = make_registry(auth="bearer", anonymous=False, redirect_to=storage.url)
    image = reg.add_image()
    digest = sha(image.layers[0])
    reg.blob_mode[digest] = "redirect"
    storage.blobs[digest] = image.layers[0]
    auth = AuthConfig(username="alice", password="wonderland")
    resolved = client.resolve(ref(reg), auth, platform=AMD64)
    buffer = io.BytesIO()
    client.fetch_blob(resolved, resolved.layers[0], buffer, auth)
    assert buffer.getvalue() == image.layers[0]
    assert reg.seen("blobs")[-1].headers["Authorization"].startswith("Bearer ")
    (fetched,) = storage.seen("storage")
    assert "Authorization" not in fetched.headers


@pytest.mark.parametrize("mode", ["drop", "drop-ignore-range"])
def test_blob_resumes_after_a_dropped_connection(
    reg: FakeRegistry, client: RegistryClient, mode: str
) -> None:
    layer = bytes(range(256)) * 64
    reg.add_image(layers=[layer])
    reg.blob_mode[sha(layer)] = mode
    resolved = client.resolve(ref(reg), platform=AMD64)
    buffer = io.BytesIO()
    client.fetch_blob(resolved, resolved.layers[0], buffer)
    assert buffer.getvalue() == layer
    first, second = reg.seen("blobs")
    assert "Range" not in first.headers
    assert second.headers["Range"] == f"bytes={len(layer) // 2}-"


def test_fetch_bytes_refuses_large_blobs(reg: FakeRegistry, client: RegistryClient) -> None:
    reg.add_image()
    resolved = client.resolve(ref(reg), platform=AMD64)
    huge = registry_mod.Descriptor(OCI_LAYER, "sha256:" + "2" * 64, 1 << 40)
    with pytest.raises(InvalidArgument, match="too large"):
        client.fetch_bytes(resolved, huge)


def test_progress_is_logged(
    reg: FakeRegistry, client: RegistryClient, caplog: pytest.LogCaptureFixture
) -> None:
    slow = b"p" * 3000
    reg.add_image(layers=[slow])
    reg.blob_mode[sha(slow)] = "slow"
    resolved = client.resolve(ref(reg), platform=AMD64)
    ticks = iter(range(0, 10_000, 6))  # every reading of the clock is 6 s later
    client.clock = lambda: float(next(ticks))
    with caplog.at_level("INFO", logger="criadapt.runc.pull"):
        client.fetch_blob(resolved, resolved.layers[0], io.BytesIO())
    lines = [r.getMessage() for r in caplog.records if r.name == "criadapt.runc.pull"]
    assert lines
    assert all(sha(slow)[:19] in line and "MB" in line for line in lines)
