"""Pull side of the OCI distribution API (Docker Registry HTTP API v2).

:class:`RegistryClient` resolves a :class:`~criadapt.images.Reference` to one platform's
manifest (:meth:`RegistryClient.resolve`) and streams blobs into files while verifying them
(:meth:`RegistryClient.fetch_blob`). It follows what containerd and Docker do:

* **Endpoints.** The mirrors configured for the reference's registry host are tried in order,
  then the registry itself (``docker.io`` is served by ``registry-1.docker.io``). A mirror URL is
  ``[http[s]://]host[:port][/prefix]``; as in containerd's ``hosts.toml``, ``/v2`` is appended
  to the prefix unless it ends with it already, and requests to a mirror carry
  ``?ns=<registry host>``. Any failure of a mirror moves on to the next endpoint; the error
  reported is the registry's own. Plain HTTP is used for loopback hosts (127.0.0.0/8, ``::1``,
  ``localhost``); hosts listed as *insecure* are tried over HTTPS without certificate
  verification and fall back to HTTP when that fails at the TLS or connection level (Docker's
  rule); every other host is HTTPS only.
* **Manifests.** Asked for with the OCI and Docker schema 2 media types; an index (or Docker
  manifest list) is narrowed to one platform. Every manifest's bytes are checked against the
  digest asked for (or announced by ``Docker-Content-Digest``). Docker schema 1 is refused.
* **Authentication.** Anonymous first; on ``401`` the ``WWW-Authenticate`` challenge is
  answered: Bearer (token from the realm, anonymous, with basic credentials, an OAuth2 refresh
  grant for ``identity_token``, or ``registry_token`` used as is) or Basic. Tokens are cached
  per endpoint, scope and credentials until shortly before they expire, and the challenge is
  remembered so later requests authenticate up front. Credentials are only ever sent to the
  registry (and its token realm), to a mirror only when ``AuthConfig.server_address`` names it,
  and never across a redirect to another host.
* **Blobs.** Streamed in chunks with a read timeout of ``stall_timeout`` on the socket: a slow
  transfer goes on as long as bytes keep arriving, and one that stays silent that long fails
  with :class:`~criadapt.errors.DeadlineExceeded`. A connection dropped mid-transfer is resumed
  once with ``Range``. Size and digest of the whole blob are verified at the end.

Every failure is one of :mod:`criadapt.errors`; no ``requests`` or ``urllib3`` exception
escapes. Connections honour ``HTTP(S)_PROXY``/``NO_PROXY`` (never for loopback hosts) and
``REQUESTS_CA_BUNDLE``/``SSL_CERT_FILE``, but not ``.netrc``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import http.client
import io
import ipaddress
import json
import logging
import os as _os
import platform as _host
import re
import struct
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import urlencode, urljoin, urlsplit

import attrs
import requests
import urllib3

from criadapt.errors import (
    CriError,
    DataLoss,
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from criadapt.images.reference import Reference, check_digest

if TYPE_CHECKING:
    from criadapt.models import AuthConfig

__all__ = [
    "MEDIA_TYPE_DOCKER_MANIFEST",
    "MEDIA_TYPE_DOCKER_MANIFEST_LIST",
    "MEDIA_TYPE_OCI_INDEX",
    "MEDIA_TYPE_OCI_MANIFEST",
    "Descriptor",
    "Platform",
    "RegistryClient",
    "ResolvedImage",
]

LOG = logging.getLogger("criadapt.runc.pull")

MEDIA_TYPE_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_TYPE_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_TYPE_DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MEDIA_TYPE_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
_SCHEMA1_MEDIA_TYPES = frozenset(
    {
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    }
)
INDEX_MEDIA_TYPES = frozenset({MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_DOCKER_MANIFEST_LIST})
MANIFEST_MEDIA_TYPES = frozenset({MEDIA_TYPE_OCI_MANIFEST, MEDIA_TYPE_DOCKER_MANIFEST})
_ACCEPT = ", ".join(
    [
        MEDIA_TYPE_OCI_INDEX,
        MEDIA_TYPE_OCI_MANIFEST,
        MEDIA_TYPE_DOCKER_MANIFEST_LIST,
        MEDIA_TYPE_DOCKER_MANIFEST,
    ]
)

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
_DOCKER_HUB_ALIASES = (DOCKER_HUB, "index.docker.io", DOCKER_HUB_API)

#: containerd's limit on a manifest or index
MAX_MANIFEST_BYTES = 4 << 20
#: limit of :meth:`RegistryClient.fetch_bytes` (image configs)
MAX_SMALL_BLOB_BYTES = 32 << 20
_CHUNK = 256 << 10
_MAX_REDIRECTS = 10
_MAX_INDEX_DEPTH = 3
_DEFAULT_TOKEN_LIFETIME = 60.0
_LOG_EVERY_BYTES = 10 << 20
_LOG_EVERY_SECONDS = 5.0
_LOG_MIN_SECONDS = 1.0
_HASHES = ("sha256", "sha384", "sha512")


# --------------------------------------------------------------------------- data model


@attrs.frozen
class Platform:
    """An OCI platform (``os``/``architecture``/``variant``, Go's GOOS/GOARCH names)."""

    os: str
    architecture: str
    variant: str = ""

    @classmethod
    def host(cls) -> Platform:
        """``linux`` and the GOARCH (and variant) of this machine's userland."""
        machine = _host.machine().lower()
        level = re.fullmatch(r"armv(\d+)\w*", machine)
        if machine in _MACHINES:
            arch, variant = _MACHINES[machine]
        elif level:
            arch, variant = "arm", f"v{level.group(1)}"
        elif re.fullmatch(r"i[3-6]86", machine):
            arch, variant = "386", ""
        else:
            arch, variant = machine or "amd64", ""
        if struct.calcsize("P") == 4:  # 32-bit userland on a 64-bit kernel
            if arch == "amd64":
                arch, variant = "386", ""
            elif arch == "arm64":
                arch, variant = "arm", "v8"
        return cls("linux", arch, variant)

    @classmethod
    def parse(cls, text: str) -> Platform:
        """``os/arch[/variant]``, e.g. ``linux/arm64/v8``."""
        parts = text.strip().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise InvalidArgument(f"invalid platform {text!r} (expected os/arch[/variant])")
        return cls(*parts)

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


_MACHINES: dict[str, tuple[str, str]] = {
    "x86_64": ("amd64", ""),
    "amd64": ("amd64", ""),
    "x64": ("amd64", ""),
    "aarch64": ("arm64", "v8"),
    "arm64": ("arm64", "v8"),
    "aarch64_be": ("arm64be", ""),
    "armv8l": ("arm", "v8"),
    "armv7l": ("arm", "v7"),
    "armv7": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "armv5tel": ("arm", "v5"),
    "ppc64le": ("ppc64le", ""),
    "ppc64": ("ppc64", ""),
    "s390x": ("s390x", ""),
    "riscv64": ("riscv64", ""),
    "mips64": ("mips64", ""),
    "mips64el": ("mips64le", ""),
    "mips": ("mips", ""),
    "mipsel": ("mipsle", ""),
    "loongarch64": ("loong64", ""),
}


@attrs.frozen
class Descriptor:
    """An OCI content descriptor."""

    media_type: str
    digest: str
    size: int
    urls: tuple[str, ...] = ()
    annotations: Mapping[str, str] = attrs.field(factory=dict, hash=False)
    platform: Platform | None = None


@attrs.frozen
class ResolvedImage:
    """One platform's manifest of an image, and where it was found."""

    #: the reference as asked for
    reference: Reference
    #: base URL that served the manifest: the registry (``http://127.0.0.1:5000``) or a mirror
    endpoint: str
    #: repository path on that endpoint
    repository: str
    #: digest of the platform manifest (repo digests are ``name@manifest_digest``)
    manifest_digest: str
    manifest: bytes
    manifest_media_type: str
    #: digest of the index (manifest list) when the reference pointed at one
    index_digest: str | None
    config: Descriptor
    layers: tuple[Descriptor, ...]


# --------------------------------------------------------------------------- internals


@attrs.frozen
class _Endpoint:
    #: ``scheme://netloc[/prefix]`` as reported in ResolvedImage.endpoint
    base: str
    #: ``host[:port]``, lower case
    netloc: str
    #: value of the ``ns`` query parameter (the registry host) for a mirror; empty otherwise
    ns: str = ""
    #: the scheme was chosen by the insecure rule and may fall back to http
    probe: bool = False

    @property
    def mirror(self) -> bool:
        return bool(self.ns)

    @property
    def api(self) -> str:
        base = self.base.rstrip("/")
        return base if base.endswith("/v2") else base + "/v2"

    def with_scheme(self, scheme: str) -> _Endpoint:
        rest = self.base.split("://", 1)[1]
        return attrs.evolve(self, base=f"{scheme}://{rest}", probe=False)


@attrs.frozen
class _Challenge:
    scheme: str  # "bearer" | "basic"
    params: Mapping[str, str] = attrs.field(hash=False)


@attrs.frozen(repr=False)
class _Creds:
    username: str = ""
    password: str = ""
    identity_token: str = ""
    registry_token: str = ""
    server_address: str = ""

    def __repr__(self) -> str:  # never show secrets
        return f"_Creds(username={self.username!r})"

    @property
    def basic(self) -> bool:
        return bool(self.username or self.password)

    @property
    def key(self) -> str:
        """A fingerprint of the secrets (cache key; the secrets are not kept in the key)."""
        material = "\0".join(
            (self.username, self.password, self.identity_token, self.registry_token)
        )
        return hashlib.sha256(material.encode()).hexdigest()

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")

    @classmethod
    def from_auth(cls, auth: AuthConfig | None) -> _Creds | None:
        if auth is None:
            return None
        username, password = auth.username, auth.password
        if not (username or password) and auth.auth:
            text = auth.auth.strip()
            try:
                decoded = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
                username, sep, password = decoded.decode("utf-8").partition(":")
            except (binascii.Error, ValueError):
                sep = ""
            if not sep:
                raise InvalidArgument("AuthConfig.auth is not base64 of 'username:password'")
        creds = cls(
            username, password, auth.identity_token, auth.registry_token, auth.server_address
        )
        if not (creds.basic or creds.identity_token or creds.registry_token):
            return None
        return creds

    def allowed_for(self, endpoint: _Endpoint) -> bool:
        """The registry gets them; a mirror only when ``server_address`` names it."""
        if not endpoint.mirror:
            return True
        address = self.server_address.strip().lower()
        if not address:
            return False
        parts = urlsplit(address if "://" in address else "//" + address)
        if not parts.netloc:
            return False
        if parts.netloc == endpoint.netloc:
            return True
        return parts.port is None and parts.hostname == _hostname(endpoint.netloc)


class _TransportError(Exception):
    """A request failed below HTTP (refused, DNS, TLS, timeout, dropped)."""

    def __init__(self, url: str, detail: str, *, stalled: bool = False) -> None:
        super().__init__(detail)
        self.url = url
        self.detail = detail
        self.stalled = stalled


@attrs.define
class _Transfer:
    digest: str
    size: int
    hasher: Any
    written: int = 0
    started: float = 0.0
    logged_at: float = 0.0
    logged_bytes: int = 0


def _hostname(netloc: str) -> str:
    return (urlsplit("//" + netloc).hostname or netloc).lower()


def _is_loopback(host: str) -> bool:
    host = host.lower().strip("[]")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _hasher(digest: str) -> Any:
    algorithm = digest.partition(":")[0]
    if algorithm not in _HASHES:
        raise InvalidArgument(f"unsupported digest algorithm in {digest!r}")
    return hashlib.new(algorithm)


def _digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def _parse_challenges(header: str) -> list[_Challenge]:
    """Parse ``WWW-Authenticate`` (RFC 7235; several challenges may be comma-joined)."""
    challenges: list[_Challenge] = []
    params: dict[str, str] = {}
    token = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
    pos, end = 0, len(header)
    while pos < end:
        while pos < end and header[pos] in " \t,":
            pos += 1
        match = token.match(header, pos)
        if not match:
            break
        name = match.group(0)
        pos = match.end()
        probe = pos
        while probe < end and header[probe] in " \t":
            probe += 1
        if probe < end and header[probe] == "=" and challenges:
            pos = probe + 1
            while pos < end and header[pos] in " \t":
                pos += 1
            if pos < end and header[pos] == '"':
                pos += 1
                value = []
                while pos < end and header[pos] != '"':
                    if header[pos] == "\\" and pos + 1 < end:
                        pos += 1
                    value.append(header[pos])
                    pos += 1
                pos += 1
                params[name.lower()] = "".join(value)
            else:
                value_match = re.compile(r"[^,\s]*").match(header, pos)
                assert value_match is not None
                params[name.lower()] = value_match.group(0)
                pos = value_match.end()
        elif probe < end and header[probe] == "=":
            pos = probe + 1  # a parameter before any scheme: ignore
        else:
            params = {}
            challenges.append(_Challenge(name.lower(), params))
    return challenges


def _registry_message(resp: requests.Response) -> str:
    """The registry's error text (``{"errors": [{"code", "message"}]}``), shortened."""
    try:
        raw = resp.raw.read(64 << 10, decode_content=True) if resp.raw is not None else b""
    except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError, ValueError):
        raw = b""  # only used to enrich a message
    finally:
        resp.close()
    text = raw.decode("utf-8", "replace").strip()
    try:
        errors = json.loads(text).get("errors")
        if isinstance(errors, list) and errors:
            first = errors[0]
            code, message = str(first.get("code", "")), str(first.get("message", ""))
            return f"{code}: {message}" if code and message else code or message
    except (ValueError, AttributeError):
        pass
    text = " ".join(text.split())
    return text[:200] + ("…" if len(text) > 200 else "")


def _with(message: str, detail: str) -> str:
    return f"{message}: {detail}" if detail else message


def _describe(exc: BaseException) -> str:
    text = str(exc)
    if "Connection refused" in text or isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if any(
        marker in text
        for marker in (
            "NameResolutionError",
            "Name or service not known",
            "Temporary failure in name resolution",
            "nodename nor servname",
            "No address associated",
        )
    ):
        return "cannot resolve host name"
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "timed out connecting"
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS error: " + text[-200:]
    if isinstance(exc, requests.exceptions.TooManyRedirects):
        return "too many redirects"
    if len(text) > 200:
        text = "…" + text[-200:]
    return text or type(exc).__name__


def _header_digest(resp: requests.Response) -> str:
    value = resp.headers.get("Docker-Content-Digest", "").strip()
    try:
        return check_digest(value) if value else ""
    except InvalidArgument:
        return ""


def _json_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataLoss(f"malformed {what}: not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise DataLoss(f"malformed {what}: not a JSON object")
    return value


def _detect_media_type(doc: Mapping[str, Any], content_type: str) -> str:
    declared = doc.get("mediaType")
    if doc.get("schemaVersion") == 1:
        return "application/vnd.docker.distribution.manifest.v1+json"
    if isinstance(declared, str) and declared:
        return declared
    known = INDEX_MEDIA_TYPES | MANIFEST_MEDIA_TYPES | _SCHEMA1_MEDIA_TYPES
    if content_type in known:
        return content_type
    if "manifests" in doc:
        return MEDIA_TYPE_OCI_INDEX
    if "config" in doc or "layers" in doc:
        return MEDIA_TYPE_OCI_MANIFEST
    return content_type or "unknown"


def _parse_descriptor(value: Any, what: str) -> Descriptor:
    if not isinstance(value, dict):
        raise DataLoss(f"malformed {what}: descriptor is not an object")
    media_type = value.get("mediaType", "")
    digest = value.get("digest")
    size = value.get("size")
    if not isinstance(media_type, str):
        raise DataLoss(f"malformed {what}: mediaType is not a string")
    if not isinstance(digest, str):
        raise DataLoss(f"malformed {what}: descriptor without digest")
    try:
        check_digest(digest)
    except InvalidArgument as exc:
        raise DataLoss(f"malformed {what}: {exc}") from None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise DataLoss(f"malformed {what}: descriptor {digest} has no valid size")
    urls = value.get("urls") or []
    annotations = value.get("annotations") or {}
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise DataLoss(f"malformed {what}: urls of {digest}")
    if not isinstance(annotations, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
    ):
        raise DataLoss(f"malformed {what}: annotations of {digest}")
    platform = None
    raw_platform = value.get("platform")
    if isinstance(raw_platform, dict):
        platform = Platform(
            str(raw_platform.get("os", "")),
            str(raw_platform.get("architecture", "")),
            str(raw_platform.get("variant", "") or ""),
        )
    return Descriptor(media_type, digest, size, tuple(urls), dict(annotations), platform)


# --------------------------------------------------------------------------- platforms

_ARCH_ALIASES = {
    "x86_64": "amd64",
    "x86-64": "amd64",
    "aarch64": "arm64",
    "armhf": "arm",
    "armel": "arm",
    "i386": "386",
    "i686": "386",
}
#: architectures whose variants are ordered CPU levels (a v7 CPU runs v6 code, ...)
_LEVELLED = frozenset({"arm", "arm64", "amd64"})


def _normalize(platform: Platform) -> tuple[str, str, str]:
    os_name = platform.os.lower()
    arch = _ARCH_ALIASES.get(platform.architecture.lower(), platform.architecture.lower())
    variant = platform.variant.lower()
    if platform.architecture.lower() == "armel" and not variant:
        variant = "v6"
    if variant and variant[0].isdigit():
        variant = "v" + variant
    if arch == "arm64" and variant in ("", "v8", "v8.0"):
        variant = "v8"
    elif arch == "arm" and not variant:
        variant = "v7"
    elif arch == "amd64" and not variant:
        variant = "v1"
    return os_name, arch, variant


def _level(variant: str) -> tuple[int, ...] | None:
    match = re.fullmatch(r"v(\d+)(?:\.(\d+))?", variant)
    if not match:
        return None
    return (int(match.group(1)), int(match.group(2) or 0))


def _platform_rank(have: Platform, want: Platform) -> tuple[int, ...] | None:
    """Lower is better; ``None`` if an image for *have* cannot run on *want*."""
    h_os, h_arch, h_variant = _normalize(have)
    w_os, w_arch, w_variant = _normalize(want)
    if h_os != w_os or h_arch != w_arch:
        return None
    if h_variant == w_variant:
        return (0,)
    if w_arch in _LEVELLED:
        h_level, w_level = _level(h_variant), _level(w_variant)
        if h_level is not None and w_level is not None and h_level < w_level:
            return (1, *(-n for n in h_level))
        return None
    if not w_variant:
        return (2,)
    return None


def _select_platform(manifests: Sequence[Descriptor], want: Platform, ref: Reference) -> Descriptor:
    ranked: list[tuple[tuple[int, ...], int, Descriptor]] = []
    for position, desc in enumerate(manifests):
        if desc.platform is None:
            continue
        rank = _platform_rank(desc.platform, want)
        if rank is not None:
            ranked.append((rank, position, desc))
    if not ranked:
        available = sorted(
            {
                str(d.platform)
                for d in manifests
                if d.platform is not None and d.platform.os not in ("", "unknown")
            }
        )
        raise NotFound(
            f"no image for {want} in {ref} (available: {', '.join(available) or 'none'})"
        )
    ranked.sort(key=lambda item: (item[0], item[1]))
    return ranked[0][2]


# --------------------------------------------------------------------------- the client


class RegistryClient:
    """Pulls manifests and blobs from registries and their mirrors; safe to share by threads."""

    def __init__(
        self,
        *,
        mirrors: Mapping[str, Sequence[str]] = {},
        insecure: Sequence[str] = (),
        stall_timeout: float = 60.0,
        connect_timeout: float = 10.0,
        user_agent: str = "criadapt",
    ) -> None:
        self._mirrors = {host.lower(): tuple(urls) for host, urls in mirrors.items()}
        for host, urls in self._mirrors.items():
            for url in urls:
                parts = urlsplit(url.strip() if "://" in url else "//" + url.strip())
                if parts.scheme not in ("", "http", "https") or not parts.netloc:
                    raise InvalidArgument(f"invalid mirror {url!r} for {host}")
        self._insecure_hosts: set[str] = set()
        self._insecure_nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in insecure:
            text = entry.strip().lower()
            if "://" in text:
                text = urlsplit(text).netloc
            text = text.rstrip("/")
            if not text:
                continue
            if "/" in text:
                try:
                    self._insecure_nets.append(ipaddress.ip_network(text, strict=False))
                    continue
                except ValueError:
                    raise InvalidArgument(f"invalid insecure registry {entry!r}") from None
            self._insecure_hosts.add(text)
        if self._insecure_hosts or self._insecure_nets:
            # the operator asked for unverified TLS to these hosts; do not warn on every request
            warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)
        self.stall_timeout = stall_timeout
        self.connect_timeout = connect_timeout
        self.user_agent = user_agent
        self._lock = threading.Lock()
        self._tokens: dict[tuple[str, str, str], tuple[str, float]] = {}
        self._challenges: dict[str, _Challenge] = {}
        self._schemes: dict[str, str] = {}
        self._local = threading.local()
        self._sessions: weakref.WeakSet[requests.Session] = weakref.WeakSet()
        #: monotonic clock (replaceable in tests)
        self.clock: Callable[[], float] = time.monotonic

    # ----------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Close pooled connections (of every thread's session)."""
        with self._lock:
            sessions = list(self._sessions)
        for session in sessions:
            session.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False  # proxies and CAs handled explicitly; never .netrc
            session.headers["User-Agent"] = self.user_agent
            self._local.session = session
            with self._lock:
                self._sessions.add(session)
        return session

    # ----------------------------------------------------------------- endpoints

    def _is_insecure(self, netloc: str) -> bool:
        netloc = netloc.lower()
        host = _hostname(netloc)
        if netloc in self._insecure_hosts or host in self._insecure_hosts:
            return True
        if self._insecure_nets:
            try:
                address = ipaddress.ip_address(host)
            except ValueError:
                return False
            return any(address in net for net in self._insecure_nets)
        return False

    def _default_scheme(self, netloc: str) -> tuple[str, bool]:
        """(scheme, may fall back to http) for a host given without scheme."""
        if _is_loopback(_hostname(netloc)):
            return "http", False
        return "https", self._is_insecure(netloc)

    def _origin(self, ref: Reference) -> _Endpoint:
        netloc = DOCKER_HUB_API if ref.domain == DOCKER_HUB else ref.domain.lower()
        scheme, probe = self._default_scheme(netloc)
        return _Endpoint(f"{scheme}://{netloc}", netloc, "", probe)

    def _mirror(self, url: str, ref: Reference) -> _Endpoint:
        text = url.strip()
        explicit = "://" in text
        parts = urlsplit(text if explicit else "//" + text)
        if (explicit and parts.scheme not in ("http", "https")) or not parts.netloc:
            raise InvalidArgument(f"invalid mirror {url!r} for {ref.domain}")
        netloc = parts.netloc.lower()
        if explicit:
            scheme = parts.scheme
            probe = scheme == "https" and self._is_insecure(netloc)
        else:
            scheme, probe = self._default_scheme(netloc)
        path = parts.path.rstrip("/")
        return _Endpoint(f"{scheme}://{netloc}{path}", netloc, ref.domain, probe)

    def _endpoints(self, ref: Reference) -> list[_Endpoint]:
        keys = _DOCKER_HUB_ALIASES if ref.domain == DOCKER_HUB else (ref.domain.lower(),)
        urls: list[str] = []
        for key in keys:
            urls.extend(self._mirrors.get(key, ()))
        origin = self._origin(ref)
        endpoints = [self._mirror(url, ref) for url in urls]
        endpoints = [e for e in endpoints if e.base != origin.base]
        return [*endpoints, origin]

    def _endpoint_for(self, image: ResolvedImage) -> _Endpoint:
        origin = self._origin(image.reference)
        parts = urlsplit(image.endpoint)
        netloc = parts.netloc.lower()
        mirror = netloc != origin.netloc or parts.path.strip("/") != ""
        base = image.endpoint.rstrip("/")
        return _Endpoint(base, netloc, image.reference.domain if mirror else "", False)

    def _effective(self, endpoint: _Endpoint) -> _Endpoint:
        """Decide https or http for an insecure host (https first, as Docker does)."""
        if not endpoint.probe:
            return endpoint
        with self._lock:
            known = self._schemes.get(endpoint.netloc)
        if known:
            return endpoint.with_scheme(known)
        for scheme in ("https", "http"):
            candidate = endpoint.with_scheme(scheme)
            try:
                resp = self._send("GET", candidate.api + "/", {}, None)
            except _TransportError as exc:
                LOG.info("%s: %s", candidate.base, exc.detail)
                continue
            resp.close()
            with self._lock:
                self._schemes[endpoint.netloc] = scheme
            if scheme == "http":
                LOG.warning("insecure registry %s: using plain http", endpoint.netloc)
            return candidate
        return endpoint.with_scheme("https")

    # ----------------------------------------------------------------- transport

    def _verify(self, url: str) -> bool | str:
        netloc = urlsplit(url).netloc
        if self._is_insecure(netloc):
            return False
        return _os.environ.get("REQUESTS_CA_BUNDLE") or _os.environ.get("SSL_CERT_FILE") or True

    def _proxies(self, url: str) -> dict[str, str]:
        if _is_loopback(urlsplit(url).hostname or ""):
            return {}
        proxies: dict[str, str] = requests.utils.get_environ_proxies(url)
        return proxies

    def _send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        authorization: str | None,
        *,
        data: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """One request, following redirects; Authorization only to the first URL's origin."""
        first = urlsplit(url)
        origin = (first.scheme, first.netloc.lower())
        for _hop in range(_MAX_REDIRECTS + 1):
            parts = urlsplit(url)
            request_headers = dict(headers)
            if authorization and (parts.scheme, parts.netloc.lower()) == origin:
                request_headers["Authorization"] = authorization
            try:
                resp = self._session().request(
                    method,
                    url,
                    headers=request_headers,
                    data=data,
                    timeout=(self.connect_timeout, self.stall_timeout),
                    allow_redirects=False,
                    stream=True,
                    verify=self._verify(url),
                    proxies=self._proxies(url),
                )
            except requests.exceptions.ReadTimeout:
                raise _TransportError(url, "no response", stalled=True) from None
            except (
                requests.RequestException,
                urllib3.exceptions.HTTPError,
                http.client.HTTPException,
                OSError,
                ValueError,
            ) as exc:
                raise _TransportError(url, _describe(exc)) from None
            location = resp.headers.get("Location")
            if resp.status_code in (301, 302, 303, 307, 308) and location:
                resp.close()
                url = urljoin(url, location)
                if urlsplit(url).scheme not in ("http", "https"):
                    raise _TransportError(url, f"redirect to unsupported URL {url!r}")
                if resp.status_code == 303:
                    method, data = "GET", None
                continue
            return resp
        raise _TransportError(url, "too many redirects")

    def _read_body(self, resp: requests.Response, limit: int, url: str) -> bytes:
        parts: list[bytes] = []
        total = 0
        try:
            while True:
                chunk = resp.raw.read1(_CHUNK, decode_content=True)
                if not chunk:
                    break
                total += len(chunk)
                if total > limit:
                    raise InvalidArgument(f"response from {url} exceeds {limit} bytes")
                parts.append(chunk)
        except urllib3.exceptions.ReadTimeoutError:
            raise _TransportError(url, "stalled", stalled=True) from None
        except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as exc:
            raise _TransportError(url, _describe(exc)) from None
        finally:
            resp.close()
        return b"".join(parts)

    def _transport_error(self, exc: _TransportError, endpoint: _Endpoint, what: str) -> CriError:
        where = endpoint.base
        host = urlsplit(exc.url).netloc
        if host and host.lower() != endpoint.netloc:
            where += f" (redirected to {host})"
        if exc.stalled:
            return DeadlineExceeded(
                f"no data for {self.stall_timeout:g} s from {where} while fetching {what}"
            )
        return Unavailable(f"cannot reach {where} while fetching {what}: {exc.detail}")

    # ----------------------------------------------------------------- authentication

    def _authorization(
        self, endpoint: _Endpoint, scope: str, creds: _Creds | None, *, fresh: bool
    ) -> str | None:
        """The Authorization header for *endpoint* as far as its known challenge goes."""
        with self._lock:
            challenge = self._challenges.get(endpoint.base)
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            return creds.basic_header() if creds is not None and creds.basic else None
        if creds is not None and creds.registry_token:
            return f"Bearer {creds.registry_token}"
        key = (endpoint.base, scope, creds.key if creds is not None else "")
        now = self.clock()
        if not fresh:
            with self._lock:
                cached = self._tokens.get(key)
            if cached is not None and cached[1] > now:
                return f"Bearer {cached[0]}"
        token, lifetime = self._fetch_token(endpoint, challenge, scope, creds)
        expiry = now + lifetime - min(10.0, lifetime / 10)
        with self._lock:
            self._tokens[key] = (token, expiry)
        return f"Bearer {token}"

    def _fetch_token(
        self, endpoint: _Endpoint, challenge: _Challenge, scope: str, creds: _Creds | None
    ) -> tuple[str, float]:
        realm = challenge.params.get("realm", "")
        registry = endpoint.netloc
        if urlsplit(realm).scheme not in ("http", "https") or not urlsplit(realm).netloc:
            raise Unauthenticated(
                f"registry {registry} asked for a bearer token with an invalid realm {realm!r}"
            )
        service = challenge.params.get("service", "")
        scopes = [scope]
        for extra in challenge.params.get("scope", "").split():
            if extra not in scopes:
                scopes.append(extra)
        what = f"token for {registry} from {urlsplit(realm).netloc}"
        headers = {"Accept": "application/json"}
        try:
            resp = None
            if creds is not None and creds.identity_token:
                form = {
                    "grant_type": "refresh_token",
                    "refresh_token": creds.identity_token,
                    "client_id": self.user_agent,
                    "access_type": "offline",
                    "scope": " ".join(scopes),
                }
                if service:
                    form["service"] = service
                resp = self._send("POST", realm, headers, None, data=form)
                if resp.status_code in (404, 405) and creds.basic:
                    resp.close()
                    resp = None  # no OAuth2 endpoint: fall back to the basic GET flow
            if resp is None:
                query: list[tuple[str, str]] = []
                if service:
                    query.append(("service", service))
                query.extend(("scope", s) for s in scopes)
                authorization = None
                if creds is not None and creds.basic:
                    query.append(("account", creds.username))
                    authorization = creds.basic_header()
                separator = "&" if urlsplit(realm).query else "?"
                url = realm + separator + urlencode(query) if query else realm
                resp = self._send("GET", url, headers, authorization)
        except _TransportError as exc:
            raise self._transport_error(exc, endpoint, what) from None
        status = resp.status_code
        if status != 200:
            message = _registry_message(resp)
            if status == 401:
                if creds is None:
                    raise Unauthenticated(_with(f"token server refused {what}", message))
                raise Unauthenticated(
                    _with(f"registry {registry}: credentials rejected by the token server", message)
                )
            if status == 403:
                raise PermissionDenied(_with(f"token server denied {what}", message))
            if status == 429:
                raise ResourceExhausted(_with(f"token server rate-limited {what}", message))
            if status >= 500:
                raise Unavailable(_with(f"token server failed ({status}) for {what}", message))
            raise Unauthenticated(_with(f"token server answered {status} for {what}", message))
        try:
            body = self._read_body(resp, 1 << 20, realm)
        except _TransportError as exc:
            raise self._transport_error(exc, endpoint, what) from None
        except InvalidArgument:
            raise Unavailable(f"oversized token response for {what}") from None
        try:
            doc = json.loads(body)
            token = doc.get("token") or doc.get("access_token")
            expires_in = doc.get("expires_in")
        except (ValueError, AttributeError, UnicodeDecodeError):
            token, expires_in = None, None
        if not isinstance(token, str) or not token:
            raise Unavailable(f"invalid token response for {what}")
        lifetime = _DEFAULT_TOKEN_LIFETIME
        if (
            isinstance(expires_in, (int, float))
            and not isinstance(expires_in, bool)
            and expires_in > 0
        ):
            lifetime = float(expires_in)
        return token, lifetime

    def _get(
        self,
        endpoint: _Endpoint,
        repository: str,
        path: str,
        creds: _Creds | None,
        *,
        what: str,
        subject: str,
        headers: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """GET ``<api>/<repository>/<path>`` answering authentication challenges.

        Returns the response (any status but 401); ``subject`` names the image in errors.
        """
        url = f"{endpoint.api}/{repository}/{path}"
        if endpoint.ns:
            url += "?" + urlencode({"ns": endpoint.ns})
        scope = f"repository:{repository}:pull"
        request_headers = dict(headers or {})
        authorization = self._authorization(endpoint, scope, creds, fresh=False)
        for attempt in range(2):
            try:
                resp = self._send("GET", url, request_headers, authorization)
            except _TransportError as exc:
                raise self._transport_error(exc, endpoint, what) from None
            if resp.status_code != 401:
                return resp
            header = resp.headers.get("WWW-Authenticate", "")
            message = _registry_message(resp)
            challenges = _parse_challenges(header)
            usable = [c for c in challenges if c.scheme == "bearer"] or [
                c for c in challenges if c.scheme == "basic"
            ]
            if attempt == 1 or not usable:
                raise self._unauthenticated(endpoint, creds, subject, message, bool(usable))
            with self._lock:
                self._challenges[endpoint.base] = usable[0]
            if usable[0].scheme == "basic" and (creds is None or not creds.basic):
                raise self._unauthenticated(endpoint, creds, subject, message, True)
            authorization = self._authorization(
                endpoint, scope, creds, fresh=authorization is not None
            )
        raise AssertionError("unreachable")

    def _unauthenticated(
        self,
        endpoint: _Endpoint,
        creds: _Creds | None,
        subject: str,
        message: str,
        understood: bool,
    ) -> Unauthenticated:
        registry = endpoint.netloc
        if not understood:
            text = f"registry {registry} demands an unsupported authentication for {subject}"
        elif creds is None:
            text = (
                f"pull access denied for {subject}: registry {registry} requires "
                "authentication (no credentials given"
                + (" for this mirror)" if endpoint.mirror else ")")
            )
        else:
            text = f"registry {registry} rejected the credentials for {subject}"
        return Unauthenticated(_with(text, message))

    # ----------------------------------------------------------------- manifests

    def _status_error(
        self, resp: requests.Response, endpoint: _Endpoint, subject: str, what: str
    ) -> CriError:
        status = resp.status_code
        message = _registry_message(resp)
        where = endpoint.base
        if status == 403:
            return PermissionDenied(
                _with(f"registry {endpoint.netloc} denied access to {subject}", message)
            )
        if status == 404:
            if what == "manifest":
                return NotFound(_with(f"image not found: {subject} ({where})", message))
            return NotFound(_with(f"{what} of {subject} not found at {where}", message))
        if status == 429:
            return ResourceExhausted(
                _with(f"registry {endpoint.netloc} rate-limited the pull of {subject}", message)
            )
        if 400 <= status < 500:
            return InvalidArgument(
                _with(f"registry {endpoint.netloc} refused {what} of {subject} ({status})", message)
            )
        return Unavailable(
            _with(f"registry {where} answered {status} for {what} of {subject}", message)
        )

    def _fetch_manifest(
        self,
        endpoint: _Endpoint,
        ref: Reference,
        target: str,
        creds: _Creds | None,
        expected: Descriptor | None = None,
    ) -> tuple[bytes, str, str, dict[str, Any]]:
        """Fetch and verify one manifest: (bytes, media type, digest, parsed JSON)."""
        subject = str(ref) if expected is None else f"{ref.name}@{target}"
        what = f"manifest {target}"
        if ":" in target:
            _hasher(target)  # an algorithm we can verify
        resp = self._get(
            endpoint,
            ref.path,
            f"manifests/{target}",
            creds,
            what=what,
            subject=subject,
            headers={"Accept": _ACCEPT},
        )
        if resp.status_code != 200:
            raise self._status_error(resp, endpoint, subject, "manifest")
        content_type = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
        announced = _header_digest(resp)
        length = resp.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > MAX_MANIFEST_BYTES:
            resp.close()
            raise InvalidArgument(f"manifest of {subject} is larger than {MAX_MANIFEST_BYTES}")
        try:
            body = self._read_body(resp, MAX_MANIFEST_BYTES, resp.url)
        except _TransportError as exc:
            raise self._transport_error(exc, endpoint, what) from None
        if ":" in target:
            digest = _digest_of(body, target.partition(":")[0])
            if digest != target:
                raise DataLoss(
                    f"manifest from {endpoint.base} does not match digest {target} (got {digest})"
                )
        else:
            digest = _digest_of(body)
        if announced and announced.partition(":")[0] in _HASHES:
            actual = _digest_of(body, announced.partition(":")[0])
            if actual != announced:
                raise DataLoss(
                    f"manifest of {subject} from {endpoint.base} does not match its "
                    f"Docker-Content-Digest {announced} (got {actual})"
                )
        if expected is not None and expected.size != len(body):
            raise DataLoss(
                f"manifest {target} from {endpoint.base} has {len(body)} bytes, "
                f"the index says {expected.size}"
            )
        doc = _json_object(body, f"manifest {digest} of {subject}")
        media_type = _detect_media_type(doc, content_type)
        if media_type in _SCHEMA1_MEDIA_TYPES:
            raise InvalidArgument(
                f"{subject} is a Docker schema1 image: schema1 not supported "
                "(push it again with a current Docker, buildah or crane)"
            )
        return body, media_type, digest, doc

    def resolve(
        self, ref: Reference, auth: AuthConfig | None = None, platform: Platform | None = None
    ) -> ResolvedImage:
        """Find the manifest of *ref* for *platform* (default: this host's)."""
        want = platform if platform is not None else Platform.host()
        creds = _Creds.from_auth(auth)
        endpoints = self._endpoints(ref)
        failures: list[str] = []
        for position, endpoint in enumerate(endpoints):
            allowed = creds if creds is not None and creds.allowed_for(endpoint) else None
            try:
                effective = self._effective(endpoint)
                return self._resolve_at(effective, ref, allowed, want)
            except CriError as exc:
                if position == len(endpoints) - 1:
                    if failures and isinstance(exc, Unavailable):
                        raise Unavailable(
                            f"{exc}; mirrors tried first: {'; '.join(failures)}"
                        ) from None
                    raise
                LOG.info("mirror %s failed for %s (%s); trying the next", endpoint.base, ref, exc)
                failures.append(f"{endpoint.base}: {exc}")
        raise AssertionError("unreachable")  # the origin is always the last endpoint

    def _resolve_at(
        self, endpoint: _Endpoint, ref: Reference, creds: _Creds | None, want: Platform
    ) -> ResolvedImage:
        target = ref.digest or ref.tag
        body, media_type, digest, doc = self._fetch_manifest(endpoint, ref, target, creds)
        index_digest: str | None = None
        depth = 0
        while media_type in INDEX_MEDIA_TYPES:
            depth += 1
            if depth > _MAX_INDEX_DEPTH:
                raise InvalidArgument(f"{ref}: indexes nested too deep")
            if index_digest is None:
                index_digest = digest
            entries = doc.get("manifests")
            if not isinstance(entries, list):
                raise DataLoss(f"malformed index {digest} of {ref}: no manifests list")
            descriptors = [_parse_descriptor(e, f"index {digest} of {ref}") for e in entries]
            chosen = _select_platform(descriptors, want, ref)
            LOG.debug("%s: %s selected %s", ref, want, chosen.digest)
            body, media_type, digest, doc = self._fetch_manifest(
                endpoint, ref, chosen.digest, creds, chosen
            )
        if media_type not in MANIFEST_MEDIA_TYPES:
            raise InvalidArgument(f"{ref}: unsupported manifest media type {media_type!r}")
        what = f"manifest {digest} of {ref}"
        config = _parse_descriptor(doc.get("config"), what)
        raw_layers = doc.get("layers")
        if not isinstance(raw_layers, list):
            raise DataLoss(f"malformed {what}: no layers list")
        layers = tuple(_parse_descriptor(layer, what) for layer in raw_layers)
        return ResolvedImage(
            reference=ref,
            endpoint=endpoint.base,
            repository=ref.path,
            manifest_digest=digest,
            manifest=body,
            manifest_media_type=media_type,
            index_digest=index_digest,
            config=config,
            layers=layers,
        )

    # ----------------------------------------------------------------- blobs

    def fetch_bytes(
        self, image: ResolvedImage, descriptor: Descriptor, auth: AuthConfig | None = None
    ) -> bytes:
        """A small blob (an image config), verified."""
        if descriptor.size > MAX_SMALL_BLOB_BYTES:
            raise InvalidArgument(
                f"blob {descriptor.digest} of {image.reference} is too large "
                f"({descriptor.size} bytes) to fetch into memory"
            )
        buffer = io.BytesIO()
        self.fetch_blob(image, descriptor, buffer, auth)
        return buffer.getvalue()

    def fetch_blob(
        self,
        image: ResolvedImage,
        descriptor: Descriptor,
        out: BinaryIO,
        auth: AuthConfig | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Stream blob *descriptor* of *image* into *out*, verifying size and digest.

        *progress* is called with the number of bytes of this blob received so far. On
        :class:`DataLoss` (and any other error) *out* holds partial or wrong data: discard it.
        """
        check_digest(descriptor.digest)
        creds = _Creds.from_auth(auth)
        endpoint = self._endpoint_for(image)
        endpoints = [endpoint]
        if endpoint.mirror:  # a mirror that lost the blob: the registry may still have it
            endpoints.append(self._origin(image.reference))
        for position, candidate in enumerate(endpoints):
            transfer = _Transfer(descriptor.digest, descriptor.size, _hasher(descriptor.digest))
            allowed = creds if creds is not None and creds.allowed_for(candidate) else None
            try:
                effective = self._effective(candidate)
                self._download(effective, image, descriptor, out, allowed, transfer, progress)
                return
            except CriError as exc:
                if position == len(endpoints) - 1 or transfer.written:
                    raise
                LOG.info(
                    "mirror %s failed for blob %s (%s); trying %s",
                    candidate.base,
                    descriptor.digest,
                    exc,
                    endpoints[position + 1].base,
                )

    def _download(
        self,
        endpoint: _Endpoint,
        image: ResolvedImage,
        descriptor: Descriptor,
        out: BinaryIO,
        creds: _Creds | None,
        transfer: _Transfer,
        progress: Callable[[int], None] | None,
    ) -> None:
        digest = descriptor.digest
        subject = str(image.reference)
        what = f"blob {digest}"
        transfer.started = transfer.logged_at = self.clock()
        resp = self._get(
            endpoint,
            image.repository,
            f"blobs/{digest}",
            creds,
            what=what,
            subject=subject,
            headers={"Accept-Encoding": "identity"},
        )
        if resp.status_code != 200:
            raise self._status_error(resp, endpoint, subject, what)
        LOG.debug("fetching %s (%d bytes) from %s", digest, descriptor.size, resp.url)
        try:
            self._pump(resp, transfer, out, progress, image, skip=0)
        except _TransportError as exc:
            if exc.stalled or not transfer.written or transfer.written >= descriptor.size:
                raise self._transport_error(exc, endpoint, what) from None
            LOG.warning(
                "connection dropped after %d of %d bytes of %s (%s); resuming",
                transfer.written,
                descriptor.size,
                digest,
                exc.detail,
            )
            self._resume(endpoint, image, descriptor, out, creds, transfer, progress)
        self._verify_blob(transfer, endpoint, image)

    def _resume(
        self,
        endpoint: _Endpoint,
        image: ResolvedImage,
        descriptor: Descriptor,
        out: BinaryIO,
        creds: _Creds | None,
        transfer: _Transfer,
        progress: Callable[[int], None] | None,
    ) -> None:
        digest = descriptor.digest
        what = f"blob {digest}"
        subject = str(image.reference)
        resp = self._get(
            endpoint,
            image.repository,
            f"blobs/{digest}",
            creds,
            what=what,
            subject=subject,
            headers={"Accept-Encoding": "identity", "Range": f"bytes={transfer.written}-"},
        )
        skip = 0
        if resp.status_code == 206:
            match = re.match(r"bytes\s+(\d+)-", resp.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != transfer.written:
                resp.close()
                raise Unavailable(
                    f"{endpoint.base} answered a bad range while resuming {what} of {subject}"
                )
        elif resp.status_code == 200:
            skip = transfer.written  # range ignored: drop what we already have
        else:
            raise self._status_error(resp, endpoint, subject, what)
        try:
            self._pump(resp, transfer, out, progress, image, skip=skip)
        except _TransportError as exc:
            raise self._transport_error(exc, endpoint, what) from None

    def _pump(
        self,
        resp: requests.Response,
        transfer: _Transfer,
        out: BinaryIO,
        progress: Callable[[int], None] | None,
        image: ResolvedImage,
        *,
        skip: int,
    ) -> None:
        url = resp.url
        raw = resp.raw
        try:
            while True:
                try:
                    chunk = raw.read1(_CHUNK, decode_content=False)
                except urllib3.exceptions.ReadTimeoutError:
                    raise _TransportError(url, "stalled", stalled=True) from None
                except (
                    urllib3.exceptions.HTTPError,
                    http.client.HTTPException,
                    OSError,
                    ValueError,
                ) as exc:
                    raise _TransportError(url, _describe(exc)) from None
                if not chunk:
                    return
                if skip:
                    dropped = min(skip, len(chunk))
                    skip -= dropped
                    chunk = chunk[dropped:]
                    if not chunk:
                        continue
                if transfer.written + len(chunk) > transfer.size:
                    raise DataLoss(
                        f"blob {transfer.digest} of {image.reference} from {urlsplit(url).netloc} "
                        f"is larger than the {transfer.size} bytes announced"
                    )
                out.write(chunk)
                transfer.hasher.update(chunk)
                transfer.written += len(chunk)
                if progress is not None:
                    progress(transfer.written)
                self._log_progress(transfer, image)
        finally:
            resp.close()

    def _log_progress(self, transfer: _Transfer, image: ResolvedImage) -> None:
        now = self.clock()
        since = now - transfer.logged_at
        if since < _LOG_MIN_SECONDS:
            return
        if (
            since < _LOG_EVERY_SECONDS
            and transfer.written - transfer.logged_bytes < _LOG_EVERY_BYTES
        ):
            return
        elapsed = max(now - transfer.started, 1e-6)
        LOG.info(
            "pulling %s: blob %s %.1f of %.1f MB (%d%%, %.1f MB/s)",
            image.reference,
            transfer.digest[:19],
            transfer.written / 1e6,
            transfer.size / 1e6,
            100 * transfer.written // max(transfer.size, 1),
            transfer.written / elapsed / 1e6,
        )
        transfer.logged_at = now
        transfer.logged_bytes = transfer.written

    def _verify_blob(self, transfer: _Transfer, endpoint: _Endpoint, image: ResolvedImage) -> None:
        if transfer.written != transfer.size:
            raise DataLoss(
                f"blob {transfer.digest} of {image.reference} from {endpoint.base} has "
                f"{transfer.written} bytes, expected {transfer.size}"
            )
        algorithm = transfer.digest.partition(":")[0]
        actual = f"{algorithm}:{transfer.hasher.hexdigest()}"
        if actual != transfer.digest:
            raise DataLoss(
                f"blob {transfer.digest} of {image.reference} from {endpoint.base} does not "
                f"match its digest (got {actual})"
            )
        LOG.debug("blob %s verified (%d bytes)", transfer.digest, transfer.written)
