"""Image references, parsed and normalised as kubelet, Docker and containerd do.

``busybox`` → ``docker.io/library/busybox:latest``; ``quay.io/a/b@sha256:…`` keeps its digest
and gets no tag; a reference with both a tag and a digest is resolved by its digest (the tag is
dropped, as containerd's ``ParseDockerRef`` does). Repository paths must be lower case.
"""

from __future__ import annotations

import re

import attrs

from criadapt.errors import InvalidArgument

DEFAULT_DOMAIN = "docker.io"
LEGACY_DOMAIN = "index.docker.io"
OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_PATH = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_DOMAIN_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(rf"^(?:{_DOMAIN_LABEL}(?:\.{_DOMAIN_LABEL})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$")
_HEX_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}
_ID = re.compile(r"^(sha256:)?[a-f0-9]{64}$")


def is_image_id(text: str) -> bool:
    """``sha256:<64 hex>`` or a bare 64-hex id (what ``ImageStatus`` may be asked by)."""
    return bool(_ID.match(text))


def check_digest(digest: str) -> str:
    """Validate ``algorithm:hex``; return it."""
    if not _DIGEST.match(digest):
        raise InvalidArgument(f"invalid digest {digest!r}")
    algorithm, _, encoded = digest.partition(":")
    want = _HEX_LENGTHS.get(algorithm)
    if want is not None and (len(encoded) != want or not re.fullmatch(r"[a-f0-9]+", encoded)):
        raise InvalidArgument(f"invalid {algorithm} digest {digest!r}")
    return digest


@attrs.frozen
class Reference:
    """A normalised image reference."""

    #: registry host[:port], e.g. ``docker.io``, ``127.0.0.1:5000``
    domain: str
    #: repository path, e.g. ``library/busybox``
    path: str
    #: tag, empty when the reference is by digest
    tag: str = ""
    #: ``sha256:…`` or empty
    digest: str = ""

    @property
    def name(self) -> str:
        """``domain/path``: the repository name without tag or digest."""
        return f"{self.domain}/{self.path}"

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    def with_digest(self, digest: str) -> Reference:
        """``name@digest`` (the repo-digest form of an image pulled under this name)."""
        return Reference(self.domain, self.path, "", check_digest(digest))

    @property
    def familiar(self) -> str:
        """The short form Docker shows: ``busybox:latest`` for docker.io/library/busybox."""
        text = str(self)
        if self.domain == DEFAULT_DOMAIN:
            text = text[len(DEFAULT_DOMAIN) + 1 :]
            if text.startswith(OFFICIAL_PREFIX) and "/" not in self.path[len(OFFICIAL_PREFIX) :]:
                text = text[len(OFFICIAL_PREFIX) :]
        return text


def parse_reference(text: str) -> Reference:
    """Parse and normalise an image reference; :class:`InvalidArgument` if it is not one."""
    original = text
    if not text or text != text.strip() or len(text) > 4096:
        raise InvalidArgument(f"invalid image reference {original!r}")
    if is_image_id(text):
        raise InvalidArgument(f"{original!r} is an image id, not a reference")
    name, at, digest = text.partition("@")
    if at:
        check_digest(digest)
    tag = ""
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
        if not _TAG.match(tag):
            raise InvalidArgument(f"invalid tag {tag!r} in image reference {original!r}")
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        domain, path = first, rest
        if not _DOMAIN.match(domain):
            raise InvalidArgument(f"invalid registry {domain!r} in image reference {original!r}")
    else:
        domain, path = DEFAULT_DOMAIN, name
    if domain == LEGACY_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = OFFICIAL_PREFIX + path
    if not _PATH.match(path):
        problem = "must be lower case" if path.lower() != path else "is not a valid repository"
        raise InvalidArgument(f"image reference {original!r}: repository {path!r} {problem}")
    if len(domain) + 1 + len(path) > 255:
        raise InvalidArgument(f"image reference {original!r}: repository name too long")
    if digest:
        tag = ""  # resolved by digest; the tag carries no meaning (containerd does the same)
    elif not tag:
        tag = DEFAULT_TAG
    return Reference(domain, path, tag, digest)
