"""A real image registry for tests and benchmarks, and proxies that misbehave in front of it.

:class:`Registry` runs the CNCF distribution registry (Debian: ``docker-registry``, i.e.
``/usr/bin/docker-registry serve CONFIG``) on ``127.0.0.1`` with a free port and a
temporary storage directory, plain HTTP, deletes enabled and optional htpasswd (basic)
auth; it pushes :class:`~criadapt.testing.images.Image` s and
:class:`~criadapt.testing.images.ImageIndex` es with the registry's HTTP API and can
corrupt a stored blob. Clients must treat it as insecure (plain HTTP):
``skopeo --tls-verify=false``, containerd ``config_path`` hosts with ``http://``, docker
``insecure-registries``, podman ``registries.conf`` ``insecure = true``.

:class:`FaultProxy` (alias :data:`SlowProxy`) forwards everything verbatim to a registry
and stalls, drops or throttles blob (or manifest) transfers on demand; :class:`TokenAuthProxy`
puts Bearer-token auth (``WWW-Authenticate: Bearer realm=...,service=...,scope=...`` and a
``/token`` endpoint) in front of one.

As a pytest plugin (``pytest_plugins = ["criadapt.testing.registry"]``) it gives the
fixtures:

``registry`` (session)
    a plain :class:`Registry` (no auth); do not corrupt or delete in it, other tests
    share it;
``auth_registry`` (session)
    a :class:`Registry` with htpasswd auth, user :data:`AUTH_USER` (``tester``) password
    :data:`AUTH_PASSWORD` (``s3cret``); its :meth:`Registry.push` authenticates;
``fresh_registry`` (function)
    a plain :class:`Registry` of the test alone (for :meth:`Registry.corrupt_blob`,
    deletes, ...);
``busybox_image`` (session)
    :func:`criadapt.testing.images.busybox_image` (OCI, gzip, this machine's architecture),
    built once;
``pushed_busybox`` (session)
    ``busybox_image`` pushed to ``registry`` as ``test/busybox:latest``: the reference
    ``"127.0.0.1:PORT/test/busybox:latest"``.

Fixtures needing the registry skip when ``/usr/bin/docker-registry`` (or
``$CRIADAPT_DOCKER_REGISTRY``) is missing, ``auth_registry`` also without ``htpasswd``
(apache2-utils: the registry only accepts bcrypt entries), ``busybox_image`` without
``/bin/busybox`` (busybox-static).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import math
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import attrs
import pytest

from criadapt.testing import images as _images
from criadapt.testing.images import Image, ImageIndex

__all__ = [
    "AUTH_PASSWORD",
    "AUTH_USER",
    "MANIFEST_ACCEPT",
    "Fault",
    "FaultProxy",
    "ProxyRequest",
    "Registry",
    "RegistryError",
    "RegistryUnavailable",
    "Response",
    "SlowProxy",
    "TokenAuthProxy",
    "TokenRequest",
    "auth_registry",
    "busybox_image",
    "docker_registry_binary",
    "fresh_registry",
    "http_request",
    "pushed_busybox",
    "registry",
]

#: User and password of the ``auth_registry`` fixture.
AUTH_USER = "tester"
AUTH_PASSWORD = "s3cret"

#: ``Accept`` header for manifests of every kind we build.
MANIFEST_ACCEPT = ", ".join(
    (
        _images.OCI_MANIFEST,
        _images.OCI_INDEX,
        _images.DOCKER_MANIFEST,
        _images.DOCKER_MANIFEST_LIST,
    )
)

_BLOB_PATH = re.compile(r"^/v2/(?P<repo>.+?)/blobs/(?P<digest>[a-z0-9]+:[a-f0-9]+)$")
_MANIFEST_PATH = re.compile(r"^/v2/(?P<repo>.+?)/manifests/(?P<ref>[^/]+)$")
_REPO_PATH = re.compile(r"^/v2/(?P<repo>.+?)/(?:blobs|manifests|tags)/")
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


def docker_registry_binary() -> Path:
    """The registry binary: ``$CRIADAPT_DOCKER_REGISTRY`` or ``/usr/bin/docker-registry``."""
    return Path(os.environ.get("CRIADAPT_DOCKER_REGISTRY", "/usr/bin/docker-registry"))


class RegistryError(RuntimeError):
    """The registry answered something unexpected."""


class RegistryUnavailable(RegistryError):
    """The registry binary is missing or would not start."""


def _basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@attrs.frozen
class Response:
    """An HTTP response, read in full."""

    status: int
    headers: Message = attrs.field(repr=False)
    body: bytes = attrs.field(repr=False)

    def header(self, name: str, default: str = "") -> str:
        value = self.headers.get(name)
        return default if value is None else str(value)

    def json(self) -> Any:
        return json.loads(self.body)


def http_request(
    method: str,
    url: str,
    *,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> Response:
    """One plain-HTTP request to *url*; never raises for an HTTP status."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"need an http:// URL, not {url!r}")
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        conn.request(method, target, body=body, headers=dict(headers or {}))
        resp = conn.getresponse()
        data = resp.read()
        return Response(resp.status, resp.msg, data)
    finally:
        conn.close()


# --------------------------------------------------------------------------------------------
# The registry


class Registry:
    """A ``docker-registry serve`` on ``127.0.0.1:<free port>``; use it as a context manager.

    *htpasswd* ``(user, password)`` enables basic auth (the file is made with
    ``htpasswd -Bbn``: the registry reads only bcrypt). *root* is the directory for the
    config, log and storage (default: a new temporary directory, removed by :meth:`stop`).
    *extra_config* is merged over the generated configuration (top-level keys replaced).
    With *die_with_parent* the registry gets SIGTERM when the thread that started it ends
    (``PR_SET_PDEATHSIG``, set with util-linux ``setpriv`` when it is installed), so a killed
    test run leaves no registry behind; start it from a thread that outlives it (the main
    thread, as fixtures do).
    """

    def __init__(
        self,
        *,
        htpasswd: tuple[str, str] | None = None,
        root: Path | None = None,
        binary: Path | str | None = None,
        startup_timeout: float = 30.0,
        extra_config: Mapping[str, Any] | None = None,
        die_with_parent: bool = True,
    ) -> None:
        self.binary = Path(binary) if binary is not None else docker_registry_binary()
        self.auth = htpasswd
        self.startup_timeout = startup_timeout
        self.extra_config = dict(extra_config or {})
        self.die_with_parent = die_with_parent
        self._given_root = Path(root) if root is not None else None
        self.root: Path | None = None
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT`` (the registry part of image references)."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{self.host}"

    @property
    def username(self) -> str | None:
        return self.auth[0] if self.auth else None

    @property
    def password(self) -> str | None:
        return self.auth[1] if self.auth else None

    @property
    def storage(self) -> Path:
        """The filesystem driver's ``rootdirectory``."""
        if self.root is None:
            raise RegistryError("registry not started")
        return self.root / "storage"

    @property
    def log_path(self) -> Path:
        if self.root is None:
            raise RegistryError("registry not started")
        return self.root / "registry.log"

    def log(self) -> str:
        """What the registry has logged so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except (OSError, RegistryError):
            return ""

    def _config(self) -> dict[str, Any]:
        assert self.root is not None
        config: dict[str, Any] = {
            "version": "0.1",
            "log": {"level": "info", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage)},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
                "redirect": {"disable": True},
            },
            "http": {
                "addr": self.host,
                "secret": "criadapt-test-registry",
                "headers": {"X-Content-Type-Options": ["nosniff"]},
            },
            "health": {"storagedriver": {"enabled": False}},
        }
        if self.auth:
            config["auth"] = {
                "htpasswd": {"realm": "criadapt-test", "path": str(self.root / "htpasswd")}
            }
        config.update(self.extra_config)
        return config

    def _write_htpasswd(self) -> None:
        assert self.root is not None and self.auth is not None
        tool = shutil.which("htpasswd")
        if tool is None:
            raise RegistryUnavailable("htpasswd (apache2-utils) is needed for an auth registry")
        user, password = self.auth
        out = subprocess.run(
            [tool, "-Bbn", user, password], check=True, capture_output=True, text=True
        ).stdout
        (self.root / "htpasswd").write_text(out.strip() + "\n")

    def start(self) -> Registry:
        """Start the registry and wait until ``GET /v2/`` answers 200 or 401."""
        if self.process is not None:
            return self
        if not self.binary.exists():
            raise RegistryUnavailable(f"{self.binary} not found (Debian: docker-registry)")
        self.root = self._given_root or Path(tempfile.mkdtemp(prefix="criadapt-registry-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.storage.mkdir(exist_ok=True)
        if self.auth:
            self._write_htpasswd()
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        last = ""
        for _attempt in range(8):
            self.port = _free_port()
            config_path = self.root / "config.yml"
            # YAML is a superset of JSON: no YAML library needed.
            config_path.write_text(json.dumps(self._config(), indent=2))
            with self.log_path.open("ab") as log:
                self.process = subprocess.Popen(
                    [*self._pdeathsig(), str(self.binary), "serve", str(config_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
            if self._wait_ready():
                return self
            last = self.log()
            self._kill()
            if "address already in use" not in last:
                break
        self.process = None
        raise RegistryUnavailable(f"docker-registry did not start; log:\n{last[-4000:]}")

    def _pdeathsig(self) -> list[str]:
        """``setpriv --pdeathsig TERM --`` (util-linux) when *die_with_parent* and present:
        it sets ``PR_SET_PDEATHSIG`` and execs the registry (same pid)."""
        setpriv = shutil.which("setpriv") if self.die_with_parent else None
        return [setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []

    def _wait_ready(self) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                status = http_request("GET", self.url + "/v2/", timeout=2).status
            except OSError:
                status = 0
            if status in (200, 401):
                return True
            time.sleep(0.05)
        return False

    def _kill(self) -> None:
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    def stop(self) -> None:
        """Stop the registry (SIGTERM, wait, SIGKILL) and remove a temporary root."""
        self._kill()
        self.process = None
        if self.root is not None and self._given_root is None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> Registry:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- HTTP API ---------------------------------------------------------------------------

    def reference(self, repository: str, tag: str | None = "latest", digest: str = "") -> str:
        """``127.0.0.1:PORT/<repository>:<tag>`` (or ``@<digest>`` without a tag)."""
        if tag:
            return f"{self.host}/{repository}:{tag}"
        return f"{self.host}/{repository}@{digest}"

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        auth: bool = True,
    ) -> Response:
        """A request to the registry (*path* like ``/v2/...`` or a full URL), with basic auth
        when the registry has htpasswd and *auth*."""
        all_headers = dict(headers or {})
        if auth and self.auth and "Authorization" not in all_headers:
            all_headers["Authorization"] = _basic(*self.auth)
        url = path if path.startswith("http://") else self.url + path
        return http_request(method, url, body=body, headers=all_headers)

    def _expect(self, resp: Response, *statuses: int, what: str) -> Response:
        if resp.status not in statuses:
            raise RegistryError(
                f"{what}: HTTP {resp.status}: {resp.body[:500].decode(errors='replace')}"
            )
        return resp

    def blob_exists(self, repository: str, digest: str) -> bool:
        return self.request("HEAD", f"/v2/{repository}/blobs/{digest}").status == 200

    def push_blob(self, repository: str, data: bytes, digest: str | None = None) -> str:
        """Upload *data* (monolithic: ``POST`` an upload, ``PUT`` it with ``digest``) unless
        ``HEAD`` finds it; return its digest."""
        digest = digest or _images.sha256_digest(data)
        if self.blob_exists(repository, digest):
            return digest
        start = self._expect(
            self.request("POST", f"/v2/{repository}/blobs/uploads/", body=b""),
            202,
            what=f"start upload of {digest}",
        )
        location = start.header("Location")
        if not location:
            raise RegistryError("upload without Location")
        if not location.startswith("http"):
            location = self.url + location
        sep = "&" if "?" in location else "?"
        self._expect(
            self.request(
                "PUT",
                f"{location}{sep}digest={urllib.parse.quote(digest)}",
                body=data,
                headers={"Content-Type": "application/octet-stream"},
            ),
            201,
            what=f"upload of {digest}",
        )
        return digest

    def push_manifest(
        self, repository: str, reference: str, manifest: bytes, media_type: str
    ) -> str:
        """``PUT /v2/<repository>/manifests/<reference>``; return ``Docker-Content-Digest``."""
        resp = self._expect(
            self.request(
                "PUT",
                f"/v2/{repository}/manifests/{reference}",
                body=manifest,
                headers={"Content-Type": media_type},
            ),
            201,
            what=f"push of manifest {repository}:{reference}",
        )
        return resp.header("Docker-Content-Digest") or _images.sha256_digest(manifest)

    def push(self, image: Image, repository: str, tag: str | None = "latest") -> str:
        """Push *image*'s blobs and manifest as *repository*:*tag* (by digest only when *tag*
        is ``None``); return the reference (``127.0.0.1:PORT/repo:tag`` or ``...@sha256:``)."""
        for digest, data in image.blobs.items():
            self.push_blob(repository, data, digest)
        self.push_manifest(repository, tag or image.digest, image.manifest, image.media_type)
        return self.reference(repository, tag, image.digest)

    def push_index(self, index: ImageIndex, repository: str, tag: str | None = "latest") -> str:
        """Push every image of *index* by digest, then the index as *repository*:*tag*."""
        for image in index.images:
            self.push(image, repository, None)
        self.push_manifest(repository, tag or index.digest, index.manifest, index.media_type)
        return self.reference(repository, tag, index.digest)

    def get_manifest(
        self, repository: str, reference: str, *, accept: str = MANIFEST_ACCEPT
    ) -> Response:
        """``GET /v2/<repository>/manifests/<reference>`` accepting every manifest type."""
        return self.request(
            "GET", f"/v2/{repository}/manifests/{reference}", headers={"Accept": accept}
        )

    def get_blob(self, repository: str, digest: str) -> bytes:
        return self._expect(
            self.request("GET", f"/v2/{repository}/blobs/{digest}"), 200, what=digest
        ).body

    def delete_manifest(self, repository: str, digest: str) -> None:
        self._expect(
            self.request("DELETE", f"/v2/{repository}/manifests/{digest}"),
            202,
            what=f"delete of {repository}@{digest}",
        )

    def tags(self, repository: str) -> list[str]:
        resp = self.request("GET", f"/v2/{repository}/tags/list")
        if resp.status == 404:
            return []
        tags: list[str] = self._expect(resp, 200, what="tags").json().get("tags") or []
        return tags

    def catalog(self) -> list[str]:
        repos: list[str] = (
            self._expect(self.request("GET", "/v2/_catalog"), 200, what="catalog")
            .json()
            .get("repositories")
            or []
        )
        return repos

    # -- storage ----------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        """The data file of a stored blob: ``docker/registry/v2/blobs/sha256/<2>/<hex>/data``."""
        algo, _, hexpart = digest.partition(":")
        return self.storage / "docker/registry/v2/blobs" / algo / hexpart[:2] / hexpart / "data"

    def corrupt_blob(self, digest: str, data: bytes | None = None) -> None:
        """Make the registry serve bytes that do not match *digest*.

        By default every byte is inverted, so the size stays the same (the registry
        announces the stored file's size, so clients read it all and must notice the digest
        mismatch rather than a short read); *data* replaces the content with other bytes.
        Do not use it on the shared session ``registry``.
        """
        path = self.blob_path(digest)
        if not path.exists():
            raise FileNotFoundError(f"blob {digest} is not stored in {self.storage}")
        original = path.read_bytes()
        new = bytes(b ^ 0xFF for b in original) if data is None else data
        if _images.sha256_digest(new) == digest:
            raise ValueError("replacement data has the same digest")
        path.write_bytes(new)


# --------------------------------------------------------------------------------------------
# Proxies


@attrs.frozen
class ProxyRequest:
    """A request a proxy handled: what it forwarded (or answered) and how much body it sent."""

    method: str
    path: str
    status: int
    headers: dict[str, str] = attrs.field(repr=False)
    body_bytes: int = 0
    fault: bool = False


def _header_dict(message: Message) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in message.items():
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    owner: _Proxy


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def _dispatch(self) -> None:
        self.server.owner._handle(self)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _dispatch

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Abort(Exception):
    """The handler dropped the client connection."""


class _Proxy:
    """A threaded HTTP server on 127.0.0.1 that forwards to *upstream* (``host:port`` or a
    :class:`Registry`)."""

    def __init__(self, upstream: Registry | str, *, timeout: float = 120.0) -> None:
        self._upstream = upstream
        self.timeout = timeout
        self.requests: list[ProxyRequest] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._connections: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def upstream(self) -> str:
        return self._upstream.host if isinstance(self._upstream, Registry) else self._upstream

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("proxy not started")
        return int(self._server.server_address[1])

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def reference(self, repository: str, tag: str = "latest") -> str:
        return f"{self.host}/{repository}:{tag}"

    def start(self) -> Self:
        if self._server is not None:
            return self
        self._closing.clear()
        server = _Server(("127.0.0.1", 0), _Handler)
        server.owner = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name=type(self).__name__, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and cut every open connection (stalled transfers end too)."""
        self._closing.set()
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        with self._lock:
            conns = list(self._connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        server.server_close()
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- handling ---------------------------------------------------------------------------

    def _handle(self, h: _Handler) -> None:
        with self._lock:
            self._connections.add(h.connection)
        try:
            self.handle_request(h)
        except _Abort:
            h.close_connection = True
        except (OSError, http.client.HTTPException):
            h.close_connection = True
            with contextlib.suppress(OSError):
                h.connection.shutdown(socket.SHUT_RDWR)
        finally:
            with self._lock:
                self._connections.discard(h.connection)

    def handle_request(self, h: _Handler) -> None:
        self.forward(h, self.read_body(h))

    @staticmethod
    def read_body(h: _Handler) -> bytes:
        if "chunked" in (h.headers.get("Transfer-Encoding") or "").lower():
            out = bytearray()
            while True:
                size = int(h.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while h.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += h.rfile.read(size)
                h.rfile.readline()
        length = int(h.headers.get("Content-Length") or 0)
        return h.rfile.read(length) if length else b""

    def _abort(self, h: _Handler) -> None:
        with contextlib.suppress(OSError):
            h.wfile.flush()
        with contextlib.suppress(OSError):
            h.connection.shutdown(socket.SHUT_RDWR)
        raise _Abort

    def _record(self, h: _Handler, status: int, sent: int, fault: bool = False) -> None:
        entry = ProxyRequest(
            method=h.command,
            path=h.path,
            status=status,
            headers=_header_dict(h.headers),
            body_bytes=sent,
            fault=fault,
        )
        with self._lock:
            self.requests.append(entry)

    def respond(
        self,
        h: _Handler,
        status: int,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer *h* ourselves (not forwarded)."""
        h.send_response(status)
        for key, value in (headers or {}).items():
            h.send_header(key, value)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)
        self._record(h, status, len(body))

    def forward(
        self,
        h: _Handler,
        body: bytes,
        *,
        set_headers: Mapping[str, str] | None = None,
        drop_headers: tuple[str, ...] = (),
    ) -> None:
        """Forward *h* to the upstream verbatim (``Host`` included, so the upstream's
        ``Location`` URLs point back at the proxy) and stream the answer back."""
        extra = dict(set_headers or {})
        dropped = {name.lower() for name in (*drop_headers, *extra)}
        dropped |= _HOP_BY_HOP | {"content-length"}
        # A list, not a dict: clients repeat headers (Go sends one Accept per media type).
        headers = [(k, v) for k, v in h.headers.items() if k.lower() not in dropped]
        headers += extra.items()
        if not any(k.lower() == "host" for k, _ in headers):
            headers.append(("Host", self.host))
        if body or h.command in ("POST", "PUT", "PATCH"):
            headers.append(("Content-Length", str(len(body))))
        conn = http.client.HTTPConnection(self.upstream, timeout=self.timeout)
        try:
            conn.putrequest(h.command, h.path, skip_host=True, skip_accept_encoding=True)
            for key, value in headers:
                conn.putheader(key, value)
            conn.endheaders(body or None)
            resp = conn.getresponse()
            h.send_response_only(resp.status, resp.reason)
            length_header = resp.getheader("Content-Length")
            for key, value in resp.getheaders():
                if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                    h.send_header(key, value)
            no_body = h.command == "HEAD" or resp.status in (204, 304) or resp.status < 200
            if no_body:
                if length_header is not None:
                    h.send_header("Content-Length", length_header)
                h.end_headers()
                self._record(h, resp.status, 0)
                return
            if length_header is None or resp.chunked:
                data = resp.read()
                h.send_header("Content-Length", str(len(data)))
                h.end_headers()
                h.wfile.write(data)
                self._record(h, resp.status, len(data))
                return
            length = int(length_header)
            h.send_header("Content-Length", str(length))
            h.end_headers()
            self.send_body(h, resp, length)
        finally:
            conn.close()

    def send_body(self, h: _Handler, resp: http.client.HTTPResponse, length: int) -> None:
        sent = 0
        while sent < length:
            chunk = resp.read(min(65536, length - sent))
            if not chunk:
                break
            h.wfile.write(chunk)
            sent += len(chunk)
        self._record(h, resp.status, sent)


# -- fault proxy --------------------------------------------------------------------------------


@attrs.define
class Fault:
    """What :class:`FaultProxy` does to matching responses.

    A response matches when it is a ``GET`` of a blob (*target* ``"blob"``), of a manifest
    (``"manifest"``) or anything with a body (``"any"``), answered 200/206, of *digest*
    (blob digest or manifest reference) if given; the fault applies to the next *times*
    matching responses (``None``: all). The proxy forwards the status and headers (the full
    ``Content-Length``) and then the body at *rate* bytes/s (``None``: at once); after
    *after_bytes* bytes of body it stalls for *stall* seconds (``math.inf``: until the proxy
    stops or the client leaves), then drops the connection if *drop*, else goes on.
    """

    after_bytes: int = 0
    stall: float | None = None
    drop: bool = False
    rate: float | None = None
    digest: str | None = None
    target: Literal["blob", "manifest", "any"] = "blob"
    times: int | None = None
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        if method != "GET" or (self.times is not None and self.hits >= self.times):
            return False
        clean = urllib.parse.urlsplit(path).path
        blob = _BLOB_PATH.match(clean)
        manifest = _MANIFEST_PATH.match(clean)
        if self.target == "blob" and blob is None:
            return False
        if self.target == "manifest" and manifest is None:
            return False
        if self.digest is None:
            return True
        if blob is not None:
            return blob["digest"] == self.digest
        return manifest is not None and manifest["ref"] == self.digest


class FaultProxy(_Proxy):
    """An HTTP proxy in front of a registry that stalls, drops or throttles transfers.

    Everything is forwarded verbatim (401 challenges, ``WWW-Authenticate``, ``Location``,
    ``Docker-Content-Digest``, ...) until a :class:`Fault` matches. Point a client at
    :attr:`host` instead of the registry's (``proxy.reference("test/busybox")``)::

        with FaultProxy(registry) as proxy:
            proxy.stall(after_bytes=4096)            # every blob stalls forever after 4 KiB
            start_pull(proxy.reference("test/busybox"))
            assert proxy.stalled.wait(10)
    """

    def __init__(self, upstream: Registry | str, *, timeout: float = 120.0) -> None:
        super().__init__(upstream, timeout=timeout)
        self.faults: list[Fault] = []
        #: Set when a transfer starts to stall.
        self.stalled = threading.Event()
        #: Number of connections dropped mid-body.
        self.dropped = 0

    def add_fault(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def stall(
        self,
        after_bytes: int = 0,
        seconds: float = math.inf,
        *,
        digest: str | None = None,
        times: int | None = None,
        target: Literal["blob", "manifest", "any"] = "blob",
    ) -> Fault:
        """Stall matching transfers after *after_bytes* for *seconds* (default: forever)."""
        return self.add_fault(
            Fault(after_bytes, stall=seconds, digest=digest, times=times, target=target)
        )

    def drop(
        self,
        after_bytes: int = 0,
        *,
        digest: str | None = None,
        times: int | None = None,
        target: Literal["blob", "manifest", "any"] = "blob",
    ) -> Fault:
        """Close the connection of matching transfers after *after_bytes*."""
        return self.add_fault(
            Fault(after_bytes, drop=True, digest=digest, times=times, target=target)
        )

    def throttle(
        self,
        bytes_per_second: float,
        *,
        digest: str | None = None,
        times: int | None = None,
        target: Literal["blob", "manifest", "any"] = "blob",
    ) -> Fault:
        """Send the body of matching transfers at *bytes_per_second*."""
        return self.add_fault(
            Fault(rate=bytes_per_second, digest=digest, times=times, target=target)
        )

    def clear(self) -> None:
        """Remove every fault (transfers already stalled stay stalled) and reset events."""
        with self._lock:
            self.faults.clear()
        self.stalled.clear()

    def _take_fault(self, h: _Handler, status: int) -> Fault | None:
        if status not in (200, 206):
            return None
        with self._lock:
            for fault in self.faults:
                if fault.matches(h.command, h.path):
                    fault.hits += 1
                    return fault
        return None

    def send_body(self, h: _Handler, resp: http.client.HTTPResponse, length: int) -> None:
        fault = self._take_fault(h, resp.status)
        if fault is None:
            super().send_body(h, resp, length)
            return
        sent = 0
        started = time.monotonic()
        triggered = fault.stall is None and not fault.drop
        step = 65536 if not fault.rate else max(1, min(65536, int(fault.rate / 20)))
        try:
            while True:
                if not triggered and sent >= fault.after_bytes:
                    triggered = True
                    if fault.stall is not None:
                        self.stalled.set()
                        if self._wait_stall(h, fault.stall):
                            self._abort(h)
                    if fault.drop:
                        with self._lock:
                            self.dropped += 1
                        self._abort(h)
                if sent >= length:
                    break
                want = min(step, length - sent)
                if not triggered:
                    want = min(want, fault.after_bytes - sent)
                chunk = resp.read(want)
                if not chunk:
                    break
                h.wfile.write(chunk)
                h.wfile.flush()
                sent += len(chunk)
                if fault.rate and sent < length:
                    ahead = sent / fault.rate - (time.monotonic() - started)
                    if ahead > 0 and self._closing.wait(ahead):
                        self._abort(h)
        finally:
            self._record(h, resp.status, sent, fault=True)

    def _wait_stall(self, h: _Handler, seconds: float) -> bool:
        """Stall; ``True`` if the proxy is stopping or the client went away."""
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self._closing.wait(min(left, 0.2)):
                return True
            if _peer_closed(h.connection):
                return True


def _peer_closed(sock: socket.socket) -> bool:
    """Whether the client has closed its side (it sends nothing else while we reply)."""
    try:
        sock.setblocking(False)
        try:
            return sock.recv(1, socket.MSG_PEEK) == b""
        finally:
            sock.setblocking(True)
    except BlockingIOError:
        return False
    except OSError:
        return True


#: Another name of :class:`FaultProxy`.
SlowProxy = FaultProxy


# -- token auth proxy -------------------------------------------------------------------------


@attrs.frozen
class TokenRequest:
    """A request to :class:`TokenAuthProxy`'s token endpoint."""

    method: str
    service: str | None
    scopes: tuple[str, ...]
    username: str | None
    grant_type: str | None
    granted: bool


def _scope_grants(scopes: tuple[str, ...]) -> frozenset[tuple[str, str]]:
    grants: set[tuple[str, str]] = set()
    for scope in scopes:
        for item in scope.split():
            kind, _, rest = item.partition(":")
            name, _, actions = rest.rpartition(":")
            if kind == "repository" and name:
                grants.update((name, action) for action in actions.split(",") if action)
    return frozenset(grants)


class TokenAuthProxy(_Proxy):
    """A proxy in front of a registry that requires Bearer tokens, as Docker Hub does.

    Without a valid token a ``/v2/...`` request gets 401 with ``WWW-Authenticate: Bearer
    realm="http://127.0.0.1:PORT/token",service="test-registry",scope="repository:<repo>:pull"``
    (``pull,push`` for writes; no scope for ``/v2/``). ``GET /token?service=..&scope=..``
    (and the OAuth2 ``POST /token`` with ``grant_type=password`` or ``refresh_token``)
    returns ``{"token", "access_token", "expires_in", "issued_at"}``; with *username* /
    *password* it requires them (basic auth on ``GET``, form fields on ``POST``) and answers
    401 otherwise. A token grants the requested scopes; with *check_scope* a request needs
    its repository and action (``pull`` for ``GET``/``HEAD``, ``push`` else) in them. Every
    token request is recorded in :attr:`token_requests`; :meth:`revoke_tokens` invalidates
    the issued tokens (for refresh tests). Authorised requests are forwarded with the
    client's ``Authorization`` replaced by the registry's basic credentials, if it has any.
    """

    def __init__(
        self,
        upstream: Registry | str,
        *,
        username: str | None = None,
        password: str | None = None,
        service: str = "test-registry",
        check_scope: bool = True,
        oauth_post: bool = True,
        expires_in: int = 300,
        upstream_auth: tuple[str, str] | None = None,
        timeout: float = 120.0,
    ) -> None:
        super().__init__(upstream, timeout=timeout)
        self.username = username
        self.password = password
        self.service = service
        self.check_scope = check_scope
        self.oauth_post = oauth_post
        self.expires_in = expires_in
        if upstream_auth is None and isinstance(upstream, Registry):
            upstream_auth = upstream.auth
        self.upstream_auth = upstream_auth
        self.token_requests: list[TokenRequest] = []
        self.tokens: dict[str, frozenset[tuple[str, str]]] = {}
        self._refresh: dict[str, str | None] = {}

    @property
    def realm(self) -> str:
        return f"{self.url}/token"

    def revoke_tokens(self) -> None:
        with self._lock:
            self.tokens.clear()

    def handle_request(self, h: _Handler) -> None:
        body = self.read_body(h)
        path = urllib.parse.urlsplit(h.path).path
        if path == "/token":
            self._token(h, body)
            return
        if not path.startswith("/v2"):
            self.respond(h, 404, b"not found\n")
            return
        repo_match = _REPO_PATH.match(path)
        repo = repo_match["repo"] if repo_match else None
        action = "pull" if h.command in ("GET", "HEAD") else "push"
        if not self._authorised(h.headers.get("Authorization") or "", repo, action):
            challenge = f'Bearer realm="{self.realm}",service="{self.service}"'
            if repo:
                actions = "pull" if action == "pull" else "pull,push"
                challenge += f',scope="repository:{repo}:{actions}"'
            error = {
                "errors": [
                    {"code": "UNAUTHORIZED", "message": "authentication required", "detail": None}
                ]
            }
            self.respond(
                h,
                401,
                json.dumps(error).encode(),
                {
                    "Content-Type": "application/json; charset=utf-8",
                    "Docker-Distribution-Api-Version": "registry/2.0",
                    "WWW-Authenticate": challenge,
                },
            )
            return
        upstream = {"Authorization": _basic(*self.upstream_auth)} if self.upstream_auth else {}
        self.forward(h, body, set_headers=upstream, drop_headers=("Authorization",))

    def _authorised(self, header: str, repo: str | None, action: str) -> bool:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            return False
        with self._lock:
            grants = self.tokens.get(token.strip())
        if grants is None:
            return False
        if not self.check_scope or repo is None:
            return True
        return (repo, action) in grants or (action == "pull" and (repo, "push") in grants)

    def _token(self, h: _Handler, body: bytes) -> None:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(h.path).query)
        username: str | None = None
        password: str | None = None
        grant_type: str | None = None
        if h.command == "POST":
            if not self.oauth_post:
                self.respond(h, 404, b"not found\n")
                return
            form = urllib.parse.parse_qs(body.decode(errors="replace"))
            query = {**query, **form}
            grant_type = (form.get("grant_type") or [""])[0]
            if grant_type == "password":
                username = (form.get("username") or [""])[0]
                password = (form.get("password") or [""])[0]
            elif grant_type == "refresh_token":
                refresh = (form.get("refresh_token") or [""])[0]
                with self._lock:
                    known = refresh in self._refresh
                    username = self._refresh.get(refresh)
                password = self.password if known else None
            else:
                self.respond(h, 400, b'{"error":"unsupported_grant_type"}')
                return
        elif h.command == "GET":
            scheme, _, encoded = (h.headers.get("Authorization") or "").partition(" ")
            if scheme.lower() == "basic":
                with contextlib.suppress(ValueError):
                    decoded = base64.b64decode(encoded.strip()).decode()
                    username, _, password = decoded.partition(":")
        else:
            self.respond(h, 405, b"method not allowed\n")
            return
        service = (query.get("service") or [""])[0] or None
        scopes = tuple(query.get("scope") or ())
        granted = self.username is None or (username == self.username and password == self.password)
        with self._lock:
            self.token_requests.append(
                TokenRequest(h.command, service, scopes, username, grant_type, granted)
            )
        if not granted:
            self.respond(
                h,
                401,
                b'{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}',
                {
                    "Content-Type": "application/json",
                    "WWW-Authenticate": 'Basic realm="criadapt-token"',
                },
            )
            return
        token = secrets.token_hex(16)
        answer: dict[str, Any] = {
            "token": token,
            "access_token": token,
            "expires_in": self.expires_in,
            "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        with self._lock:
            self.tokens[token] = _scope_grants(scopes)
            if h.command == "POST":
                refresh = secrets.token_hex(16)
                self._refresh[refresh] = username
                answer["refresh_token"] = refresh
                answer["scope"] = " ".join(scopes)
        self.respond(h, 200, json.dumps(answer).encode(), {"Content-Type": "application/json"})


# --------------------------------------------------------------------------------------------
# pytest fixtures


def _start_or_skip(reg: Registry) -> Registry:
    if not reg.binary.exists():
        pytest.skip(f"{reg.binary} not found: apt-get install docker-registry")
    if reg.auth and shutil.which("htpasswd") is None:
        pytest.skip("htpasswd not found: apt-get install apache2-utils")
    return reg.start()


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A plain session-wide registry (see the module docs)."""
    reg = _start_or_skip(Registry(root=tmp_path_factory.mktemp("registry")))
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A session-wide registry with htpasswd user ``tester`` / ``s3cret``."""
    reg = Registry(
        htpasswd=(AUTH_USER, AUTH_PASSWORD), root=tmp_path_factory.mktemp("auth-registry")
    )
    yield _start_or_skip(reg)
    reg.stop()


@pytest.fixture
def fresh_registry(tmp_path: Path) -> Iterator[Registry]:
    """A plain registry of this test alone."""
    reg = _start_or_skip(Registry(root=tmp_path / "registry"))
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def busybox_image() -> Image:
    """:func:`criadapt.testing.images.busybox_image`, built once."""
    try:
        return _images.busybox_image()
    except FileNotFoundError as exc:
        pytest.skip(f"{exc}: apt-get install busybox-static")


@pytest.fixture(scope="session")
def pushed_busybox(registry: Registry, busybox_image: Image) -> str:
    """``busybox_image`` pushed to ``registry``: ``"127.0.0.1:PORT/test/busybox:latest"``."""
    return registry.push(busybox_image, "test/busybox", "latest")
