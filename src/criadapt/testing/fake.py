"""An in-memory reference backend for testing CRI clients without root.

It is the backend named ``fake`` (entry point in ``criadapt.backends``); in a test, call
``criadapt_configure(config=None, pluginmanager=pm)`` and, at the end,
``criadapt_unconfigure(config=None)``. Every RPC is answered with the semantics of the CRI
contract and of the leading runtimes, but nothing runs: there are no processes, namespaces,
files or network; state lives in memory and is lost when the backend is unconfigured.
``Version`` reports runtime ``criadapt-fake``, the criadapt version in semver form
(``0.1.0.dev0`` → ``0.1.0-dev0``) and API ``v1``.

Sandboxes
    ``RunPodSandbox`` accepts the runtime handlers ``""`` (default) and ``"fake"``; any other
    is ``INVALID_ARGUMENT``. The name (pod name, namespace, uid, attempt) is reserved until
    ``RemovePodSandbox``, so a second sandbox with the same metadata is ``ALREADY_EXISTS``
    (containerd's "failed to reserve sandbox name"). A sandbox gets a pod IP from
    ``10.88.0.0/16`` or, once ``UpdateRuntimeConfig`` set one, from the pod CIDR(s) (the
    gateway, the first host address, is skipped; with an IPv4 and an IPv6 CIDR the second
    address is reported in ``additional_ips``). Sandboxes on the host network
    (``namespace_options.network == NODE``) have no IP. ``StopPodSandbox`` force-stops the
    containers, releases the IP (the status then reports an empty IP) and leaves the sandbox
    ``SANDBOX_NOTREADY``; ``RemovePodSandbox`` stops it if needed and removes its containers.
    Stop and remove are idempotent.

Containers
    ``CreateContainer`` needs a ``SANDBOX_READY`` sandbox (``NOT_FOUND`` / ``FAILED_PRECONDITION``)
    and a pulled image (``NOT_FOUND``); the name (metadata name + attempt) is reserved in the
    sandbox until ``RemoveContainer`` (``ALREADY_EXISTS``). Also checked, as the contract
    asks: a privileged container needs a privileged sandbox (``INVALID_ARGUMENT``);
    ``run_as_username`` must exist in the image, whose ``/etc/passwd`` knows only ``root`` (0)
    and ``nobody`` (65534) (``FAILED_PRECONDITION``); a ``TARGET`` namespace needs a
    ``target_id`` naming a container of the same sandbox; a recursive read-only mount must be
    read-only and private; an image mount must have no host path and a pulled image. Host
    paths are not checked (nothing is mounted).

    A container's command is never run: a started container stays ``CONTAINER_RUNNING`` until
    it is stopped. ``StopContainer`` (idempotent) behaves as if the process honoured the stop
    signal at once:

    - running, ``timeout > 0`` (graceful): exit code 0, reason ``Completed`` (the fake process
      exits at once on the stop signal; 137/``Error`` if that signal is ``SIGKILL``);
    - running, ``timeout == 0`` (immediate kill): exit code 137 (128 + SIGKILL), reason
      ``Error``, as containerd reports a killed container;
    - running, stopped by ``StopPodSandbox`` or a forced ``RemoveContainer``: 137, ``Error``;
    - created but never started: ``CONTAINER_EXITED`` with exit code 0, reason
      ``NeverStarted`` and ``started_at`` 0;
    - already exited: unchanged.

    ``ReopenContainerLog`` succeeds for a running container and is ``FAILED_PRECONDITION``
    otherwise; no log file is ever written (``log_path`` is only reported).
    ``UpdateContainerResources`` works on created and running containers (an exited one is
    ``FAILED_PRECONDITION``), replaces the Linux and/or Windows resources given and is reported
    in ``ContainerStatus.resources``; the request's annotations are ignored (a container's
    annotations never change).

ExecSync
    ``ExecSync`` needs a running container and runs ``cmd`` in a tiny interpreter over a
    per-container in-memory filesystem (``/etc/hostname``, ``/etc/hosts``,
    ``/etc/resolv.conf``, ``/etc/passwd``, ``/etc/group`` and the usual directories; mount
    targets exist as empty directories). Commands (``/bin/echo`` and the like resolve to the
    base name):

    - ``echo [-n] [-e] ARGS`` (stdout ``ARGS`` + newline), ``true``, ``false`` (exit 1), ``:``;
    - ``sleep N`` (``N`` in seconds, ``s``/``m``/``h``/``d`` suffixes, ``infinity``): really
      sleeps. With ``timeout > 0`` the whole command has ``timeout`` seconds, after which the
      call fails with ``DEADLINE_EXCEEDED`` (as kubelet's exec probes expect); the caller's own
      gRPC deadline is honoured the same way. Stopping the container kills the command
      (exit 137);
    - ``cat [FILE...]`` (a missing file: exit 1 and ``cat: FILE: No such file or directory``),
      ``touch``, ``rm [-f] [-r]``, ``mkdir [-p]``, ``ls``, ``test``/``[`` (``-e -f -d -s -n
      -z``, ``= !=``, ``-eq -ne -lt -le -gt -ge``), ``pwd``, ``cd``, ``hostname``, ``env``,
      ``printenv [VAR]``, ``id``, ``whoami``, ``exit [N]``, ``stty [size]`` (only in a TTY
      session of ``Exec``: the size last sent by the client, ``0 0`` before any);
    - ``sh|bash|ash|dash -c SCRIPT [ARG0 ARGS...]`` (also ``sh FILE``): commands separated by
      ``;``, newlines, ``&&`` and ``||``; quotes and backslashes; ``$VAR``, ``${VAR}``, ``$?``,
      ``$0``-``$9``; redirections ``>``, ``>>``, ``<``, ``N>``, ``N>&M`` (``/dev/null``
      discards). Pipes, ``&``, subshells, command substitution and compound commands
      (``if``, ``for``...) are rejected with exit 2;
    - anything else: exit 127 and ``<cmd>: command not found`` on stderr.

Streaming
    ``Exec``, ``Attach`` and ``PortForward`` validate the request (``NOT_FOUND``; a container
    that is not running or a sandbox that is not ready is ``FAILED_PRECONDITION``; ``Attach``
    with a ``tty`` that differs from the container's is ``INVALID_ARGUMENT``) and return a URL
    of the running streaming server (:func:`criadapt.streaming.server.current`, started by
    ``criadapt serve``); without one they answer ``UNIMPLEMENTED``. The capability
    ``streaming`` is reported only while a streaming server runs. Behind the URLs:

    - exec runs ``cmd`` through the ExecSync interpreter and writes its output when it ends,
      except that, with stdin, ``cat`` (no arguments) copies stdin to stdout as it arrives and
      ``sh``/``bash``/``ash``/``dash`` (no arguments, or ``-i``) read and run one line at a
      time. With a TTY the terminal behaves like a pty in canonical mode: input is echoed,
      ``\\r`` ends a line, ``^C`` interrupts (exit 130), ``^D`` on an empty line ends input,
      backspace edits the line, output newlines become ``\\r\\n``, the interactive shell
      prints the prompt ``# `` (``$ `` for non-root users), and ``stty size`` reports the
      size of the latest resize. Commands in the shell get an empty stdin. ``sleep`` ends
      early (exit 137) when the client disconnects or the container stops;
    - attach echoes stdin to stdout until stdin ends (exit 0), the client disconnects (-1) or
      the container stops (its exit code); without stdin it waits for the last two;
    - port-forward is an echo server on every port: what is read is written back until the
      client closes its side.

Images
    ``PullImage`` normalises references as Docker does, minimally: ``busybox`` becomes
    ``docker.io/library/busybox:latest``. The image id is ``sha256:`` + the SHA-256 of the
    normalised reference, its size 1,000,000 bytes, ``repo_digests`` holds ``repo@sha256:...``
    (a deterministic fake digest, or the digest pulled by) and ``image_ref`` is the id.
    An unparsable reference (empty, blanks, upper case in the path, bad tag or digest) is
    ``INVALID_ARGUMENT``; **a reference whose repository contains "notfound" fails with
    ``NOT_FOUND``**, so clients can test that path. Images whose name contains ``pause`` are
    reported ``pinned``. Images are looked up by tag, digest reference or id (with or without
    ``sha256:``); ``ImageStatus`` of a missing image answers ``image=None``; ``RemoveImage``
    is idempotent and removes images still used by containers (they keep their image id).
    ``ImageSpec.runtime_handler`` other than ``""``/``"fake"`` is ``INVALID_ARGUMENT``.

Events
    ``GetContainerEvents`` streams the events that happen after the call: for containers
    (created, started, stopped, deleted) and, as containerd and CRI-O do for kubelet's evented
    PLEG, for sandboxes (``container_id`` = sandbox id: created and started by
    ``RunPodSandbox``, stopped by ``StopPodSandbox``, deleted by ``RemovePodSandbox``). Each
    event carries the sandbox status and the statuses of its containers at that moment. The
    stream ends when the backend is unconfigured or the caller's deadline passes; a subscriber
    more than 10,000 events behind is dropped with ``RESOURCE_EXHAUSTED``.

Stats and the rest
    Stats are deterministic: each running container uses 10 millicores (CPU time grows by
    1% of its running time) and 1 MiB of memory, and has a 4 KiB writable layer;
    ``ListContainerStats`` and ``ListPodSandboxStats`` report running containers and ready
    sandboxes only. ``Status`` reports ``RuntimeReady`` and ``NetworkReady``, the handlers
    ``""`` and ``"fake"``; ``RuntimeConfig`` reports the ``cgroupfs`` driver;
    ``CheckpointContainer`` records the checkpoint (shown in the verbose container status)
    without writing anything; ``ListMetricDescriptors`` is empty; ``ListPodSandboxMetrics``
    lists ready sandboxes with no metrics; ``UpdatePodSandboxResources`` stores the resources
    (shown in the verbose sandbox status). Verbose statuses return ``info={"info": <JSON>}``.

All state sits behind one lock that is never held while a command sleeps.
"""

from __future__ import annotations

import hashlib
import ipaddress
import itertools
import json
import math
import posixpath
import queue
import re
import secrets
import shlex
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Final

import attrs
import pluggy

import criadapt
from criadapt import hookimpl
from criadapt import models as m
from criadapt.call import CallContext
from criadapt.errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unimplemented,
)
from criadapt.streaming import PortStream, StreamIO, TerminalSize
from criadapt.streaming import server as streaming_server
from criadapt.validators import ValidationError

__all__ = [
    "BACKEND_PLUGIN_NAME",
    "FakeBackend",
    "criadapt_configure",
    "criadapt_unconfigure",
]

#: name under which :func:`criadapt_configure` registers the backend object
BACKEND_PLUGIN_NAME: Final = "fake-backend"
#: runtime handlers the fake knows; "" is the default one
RUNTIME_HANDLERS: Final = ("", "fake")
RUNTIME_NAME: Final = "criadapt-fake"
#: the CRI ``VersionResponse.version`` (version of the kubelet runtime API we speak)
KUBELET_API_VERSION: Final = "0.1.0"

IMAGE_SIZE: Final = 1_000_000
DEFAULT_POD_CIDR: Final = "10.88.0.0/16"
MIB: Final = 1024 * 1024
WRITABLE_LAYER_BYTES: Final = 4096
#: CPU the fake processes burn: 10 millicores
NANO_CORES: Final = 10_000_000
EVENT_BACKLOG: Final = 10_000

STREAMING_UNIMPLEMENTED: Final = "no streaming server is running (criadapt serve starts one)"
#: interactive shells the fake streams line by line
_SHELLS: Final = frozenset({"sh", "bash", "ash", "dash"})
_SIGINT_EXIT: Final = 130

_SIGKILL_EXIT: Final = 137


def _semver(version: str) -> str:
    """``0.1.0.dev0`` → ``0.1.0-dev0``: the CRI wants semver-compatible runtime versions."""
    match = re.match(r"^(\d+)\.(\d+)(?:\.(\d+))?[.+-]?(.*)$", version)
    if not match:
        return "0.0.0-" + re.sub(r"[^0-9A-Za-z.-]", "-", version or "unknown")
    major, minor, patch, rest = match.groups()
    core = f"{major}.{minor}.{patch or 0}"
    rest = re.sub(r"[^0-9A-Za-z.-]", "-", rest)
    return f"{core}-{rest}" if rest else core


RUNTIME_VERSION: Final = _semver(criadapt.__version__)


# ---------------------------------------------------------------------------------------------
# lifecycle


_CONFIGURED: list[tuple[object, pluggy.PluginManager, FakeBackend]] = []
_CONFIGURED_LOCK = threading.Lock()


@hookimpl
def criadapt_configure(config: object, pluginmanager: pluggy.PluginManager) -> None:
    """Create a :class:`FakeBackend`, register it as ``fake-backend``; ``config`` may be None."""
    backend = FakeBackend()
    pluginmanager.register(backend, name=BACKEND_PLUGIN_NAME)
    with _CONFIGURED_LOCK:
        _CONFIGURED.append((config, pluginmanager, backend))


@hookimpl
def criadapt_unconfigure(config: object) -> None:
    """Close and unregister the backends configured with this very ``config`` object.

    Closing ends every ``GetContainerEvents`` stream and kills running ``ExecSync`` commands.
    (Backends are matched by the identity of ``config``, since this hook is not told the plugin
    manager: with ``config=None`` every backend configured with None is closed.)
    """
    with _CONFIGURED_LOCK:
        mine = [entry for entry in _CONFIGURED if entry[0] is config]
        _CONFIGURED[:] = [entry for entry in _CONFIGURED if entry[0] is not config]
    for _, pm, backend in mine:
        backend.close()
        if pm.is_registered(backend):
            pm.unregister(backend)


# ---------------------------------------------------------------------------------------------
# image references


_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_DOMAIN = re.compile(
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"(?::[0-9]+)?"
)
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}")
_IMAGE_ID = re.compile(r"(?:sha256:)?([0-9a-f]{64})")


@attrs.frozen
class _Reference:
    """A normalised image reference: ``repo[:tag][@digest]``."""

    repo: str
    tag: str
    digest: str

    def __str__(self) -> str:
        return (
            self.repo
            + (f":{self.tag}" if self.tag else "")
            + (f"@{self.digest}" if self.digest else "")
        )

    @property
    def lookup_key(self) -> str:
        """The name the image store indexes: the digest reference if any, else the tag."""
        return f"{self.repo}@{self.digest}" if self.digest else f"{self.repo}:{self.tag}"


def _parse_reference(reference: str) -> _Reference:
    """Normalise ``reference`` like Docker (``busybox`` → ``docker.io/library/busybox:latest``)."""
    if not reference or any(c.isspace() for c in reference):
        raise InvalidArgument(f"invalid image reference {reference!r}: empty or has blanks")
    name, at, digest = reference.partition("@")
    if at and not _DIGEST.fullmatch(digest):
        raise InvalidArgument(f"invalid image reference {reference!r}: bad digest {digest!r}")
    tag = ""
    slash, colon = name.rfind("/"), name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise InvalidArgument(f"invalid image reference {reference!r}: bad tag {tag!r}")
    parts = name.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        domain, path = parts[0], parts[1:]
        if not _DOMAIN.fullmatch(domain):
            raise InvalidArgument(f"invalid image reference {reference!r}: bad registry {domain!r}")
    else:
        domain, path = "docker.io", parts
    if domain == "index.docker.io":
        domain = "docker.io"
    if domain == "docker.io" and len(path) == 1:
        path = ["library", *path]
    for component in path:
        if not _PATH_COMPONENT.fullmatch(component):
            raise InvalidArgument(
                f"invalid image reference {reference!r}: repository path component "
                f"{component!r} must be lower case [a-z0-9] separated by '.', '_', '__' or '-'"
            )
    repo = f"{domain}/{'/'.join(path)}"
    if len(repo) > 255:
        raise InvalidArgument(f"invalid image reference {reference!r}: name longer than 255")
    if not tag and not digest:
        tag = "latest"
    return _Reference(repo, tag, digest)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _check_handler(handler: str) -> None:
    if handler not in RUNTIME_HANDLERS:
        raise InvalidArgument(
            f"unknown runtime handler {handler!r} (the fake knows {list(RUNTIME_HANDLERS)})"
        )


# ---------------------------------------------------------------------------------------------
# records (frozen; changed with attrs.evolve under the backend lock)


@attrs.frozen(kw_only=True)
class _Image:
    id: str
    repo_tags: tuple[str, ...]
    repo_digests: tuple[str, ...]
    size: int
    spec: m.ImageSpec
    pinned: bool
    pulled_at: int

    def names(self) -> tuple[str, ...]:
        return (*self.repo_tags, *self.repo_digests)


@attrs.frozen(kw_only=True)
class _Sandbox:
    id: str
    config: m.PodSandboxConfig
    runtime_handler: str
    state: m.PodSandboxState
    created_at: int
    pid: int
    ip: str = ""
    additional_ips: tuple[str, ...] = ()
    overhead: m.LinuxContainerResources | None = None
    resources: m.LinuxContainerResources | None = None


@attrs.frozen(kw_only=True)
class _Container:
    id: str
    sandbox_id: str
    config: m.ContainerConfig
    image_id: str
    state: m.ContainerState
    created_at: int
    log_path: str
    user: m.ContainerUser
    resources: m.ContainerResources | None
    started_at: int = 0
    finished_at: int = 0
    exit_code: int = 0
    reason: str = ""
    message: str = ""
    pid: int = 0
    checkpoints: tuple[str, ...] = ()
    #: mutable parts, shared by every version of the record
    fs: _FakeFs = attrs.field(eq=False, repr=False)
    stopped: threading.Event = attrs.field(factory=threading.Event, eq=False, repr=False)


def _namespace_options(config: m.PodSandboxConfig) -> m.NamespaceOption:
    linux = config.linux
    context = linux.security_context if linux else None
    options = context.namespace_options if context else None
    return options or m.NamespaceOption()


def _host_network(config: m.PodSandboxConfig) -> bool:
    return _namespace_options(config).network == m.NamespaceMode.NODE


def _labels_match(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


# ---------------------------------------------------------------------------------------------
# the fake container filesystem and shell


_FAKE_PASSWD: Final = {"root": (0, 0), "nobody": (65534, 65534)}
_BASE_DIRS: Final = (
    "/",
    "/bin",
    "/dev",
    "/etc",
    "/home",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/sys",
    "/tmp",
    "/usr",
    "/usr/bin",
    "/usr/local",
    "/usr/local/bin",
    "/usr/sbin",
    "/var",
    "/var/log",
)


class _FakeFs:
    """A container's files: a dict of paths to bytes plus a set of directories."""

    def __init__(self, files: Mapping[str, bytes], dirs: Iterable[str]) -> None:
        self._lock = threading.Lock()
        self._files = dict(files)
        self._dirs = set(_BASE_DIRS) | set(dirs)
        for path in list(self._dirs) + list(self._files):
            self._add_parents(path)

    def _add_parents(self, path: str) -> None:
        parent = posixpath.dirname(path)
        while parent not in self._dirs:
            self._dirs.add(parent)
            parent = posixpath.dirname(parent)

    def kind(self, path: str) -> str | None:
        """``"file"``, ``"dir"`` or None."""
        with self._lock:
            if path in self._files:
                return "file"
            return "dir" if path in self._dirs else None

    def read(self, path: str) -> bytes | None:
        with self._lock:
            return self._files.get(path)

    def write(self, path: str, data: bytes, append: bool = False) -> str | None:
        """Write a file; returns an error text (``No such file or directory``...) or None."""
        if path == "/dev/null":
            return None
        with self._lock:
            if path in self._dirs:
                return "Is a directory"
            if posixpath.dirname(path) not in self._dirs:
                return "No such file or directory"
            self._files[path] = (self._files.get(path, b"") if append else b"") + data
            return None

    def mkdir(self, path: str, parents: bool) -> str | None:
        with self._lock:
            if path in self._dirs or path in self._files:
                return None if parents and path in self._dirs else "File exists"
            if posixpath.dirname(path) not in self._dirs:
                if not parents:
                    return "No such file or directory"
                self._add_parents(path)
            self._dirs.add(path)
            return None

    def remove(self, path: str, recursive: bool) -> str | None:
        with self._lock:
            if path in self._files:
                del self._files[path]
                return None
            if path not in self._dirs:
                return "No such file or directory"
            if not recursive:
                return "Is a directory"
            if path == "/":
                return "Device or resource busy"
            prefix = path + "/"
            self._dirs = {d for d in self._dirs if d != path and not d.startswith(prefix)}
            self._files = {f: v for f, v in self._files.items() if not f.startswith(prefix)}
            return None

    def listdir(self, path: str) -> list[str]:
        with self._lock:
            prefix = path.rstrip("/") + "/"
            entries = {
                p[len(prefix) :]
                for p in itertools.chain(self._files, self._dirs)
                if p.startswith(prefix) and p != prefix and "/" not in p[len(prefix) :]
            }
            return sorted(entries)


class _Killed(Exception):
    """The container stopped while a command ran (the command dies of SIGKILL)."""


class _Exit(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class _SyntaxProblem(Exception):
    """The script uses syntax the fake shell does not know."""


#: a word of a script: literal text and variable references, expanded when run
_Part = tuple[str, str]  # ("lit", text) | ("var", name)


@attrs.frozen
class _Word:
    parts: tuple[_Part, ...]
    quoted: bool


@attrs.frozen
class _Redirect:
    fd: int
    op: str  # ">", ">>", ">&", "<"
    target: _Word


@attrs.frozen
class _Simple:
    connector: str  # ";", "&&", "||"
    words: tuple[_Word, ...]
    redirects: tuple[_Redirect, ...]


_REDIRECT = re.compile(r"(\d?)(>>|>&|>|<)")
_WORD_END = frozenset(" \t\r\n;&|<>()`")
_RESERVED = frozenset(
    {"if", "then", "else", "elif", "fi", "for", "while", "until", "do", "done", "case", "esac"}
    | {"function", "select", "{", "}", "!", "[[", "]]"}
)
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)([smhd]?)")
_UNITS: Final = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _tokenize(script: str) -> list[tuple[str, Any]]:
    """Tokens: ``("op", ";"|"&&"|"||")``, ``("redir", (fd, op))`` and ``("word", _Word)``."""
    tokens: list[tuple[str, Any]] = []
    i, n = 0, len(script)
    while i < n:
        c = script[i]
        if c in " \t\r":
            i += 1
        elif script.startswith("\\\n", i):
            i += 2
        elif c == "#":
            end = script.find("\n", i)
            i = n if end < 0 else end
        elif c in ";\n":
            tokens.append(("op", ";"))
            i += 1
        elif script.startswith("&&", i) or script.startswith("||", i):
            tokens.append(("op", script[i : i + 2]))
            i += 2
        elif c in "|&()`":
            raise _SyntaxProblem(f"{c!r} (pipes, background jobs and subshells)")
        elif match := _REDIRECT.match(script, i):
            fd_text, op = match.groups()
            fd = int(fd_text) if fd_text else (0 if op == "<" else 1)
            tokens.append(("redir", (fd, op)))
            i = match.end()
        else:
            word, i = _read_word(script, i)
            tokens.append(("word", word))
    return tokens


def _read_word(script: str, i: int) -> tuple[_Word, int]:
    parts: list[_Part] = []
    text: list[str] = []
    quoted = False
    n = len(script)

    def flush() -> None:
        if text:
            parts.append(("lit", "".join(text)))
            text.clear()

    def variable(j: int) -> int:
        """Parse ``$...`` at ``j``; returns the index after it."""
        if j + 1 < n and script[j + 1] == "(":
            raise _SyntaxProblem("'$(' (command substitution)")
        if j + 1 < n and script[j + 1] == "{":
            end = script.find("}", j + 2)
            if end < 0:
                raise _SyntaxProblem("unterminated '${'")
            flush()
            parts.append(("var", script[j + 2 : end]))
            return end + 1
        match = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9?$#@*]").match(script, j + 1)
        if not match:
            text.append("$")
            return j + 1
        flush()
        parts.append(("var", match.group()))
        return match.end()

    while i < n and script[i] not in _WORD_END:
        c = script[i]
        if c == "'":
            end = script.find("'", i + 1)
            if end < 0:
                raise _SyntaxProblem("unterminated single quote")
            text.append(script[i + 1 : end])
            quoted, i = True, end + 1
        elif c == '"':
            quoted, i = True, i + 1
            while True:
                if i >= n:
                    raise _SyntaxProblem("unterminated double quote")
                c = script[i]
                if c == '"':
                    i += 1
                    break
                if c == "\\" and i + 1 < n and script[i + 1] in '$`"\\\n':
                    text.append(script[i + 1])
                    i += 2
                elif c == "$":
                    i = variable(i)
                elif c == "`":
                    raise _SyntaxProblem("'`' (command substitution)")
                else:
                    text.append(c)
                    i += 1
        elif c == "\\":
            if i + 1 < n:
                text.append(script[i + 1])
            quoted, i = True, i + 2
        elif c == "$":
            i = variable(i)
        else:
            text.append(c)
            i += 1
    flush()
    return _Word(tuple(parts), quoted), i


def _parse(script: str) -> list[_Simple]:
    commands: list[_Simple] = []
    connector = ";"
    words: list[_Word] = []
    redirects: list[_Redirect] = []
    tokens = _tokenize(script)
    index = 0

    def finish(next_connector: str) -> None:
        nonlocal connector
        if words or redirects:
            commands.append(_Simple(connector, tuple(words), tuple(redirects)))
        elif next_connector in ("&&", "||") or connector in ("&&", "||"):
            raise _SyntaxProblem(f"nothing before or after {next_connector!r}")
        words.clear()
        redirects.clear()
        connector = next_connector

    while index < len(tokens):
        kind, value = tokens[index]
        if kind == "op":
            finish(value)
        elif kind == "redir":
            index += 1
            if index >= len(tokens) or tokens[index][0] != "word":
                raise _SyntaxProblem("a redirection needs a target")
            fd, op = value
            redirects.append(_Redirect(fd, op, tokens[index][1]))
        else:
            if not words and not value.quoted:
                literal = "".join(text for kind_, text in value.parts if kind_ == "lit")
                if literal in _RESERVED and len(value.parts) == 1:
                    raise _SyntaxProblem(f"{literal!r} (compound commands)")
            words.append(value)
        index += 1
    if connector in ("&&", "||") and not words and not redirects:
        raise _SyntaxProblem(f"nothing after {connector!r}")
    finish(";")
    return commands


class _Shell:
    """Runs the commands listed in the module docstring against a :class:`_FakeFs`."""

    def __init__(
        self,
        fs: _FakeFs,
        env: Mapping[str, str],
        cwd: str,
        user: tuple[int, int, tuple[int, ...]],
        sleep: Callable[[float], None],
    ) -> None:
        self.fs = fs
        self.env = dict(env)
        self.cwd = cwd
        self.user = user
        self.sleep = sleep
        #: the terminal size of a TTY session (None: no terminal)
        self.terminal: Callable[[], TerminalSize] | None = None
        self.commands: dict[str, Callable[[list[str], bytes, bytearray, bytearray], int]] = {
            "echo": self._echo,
            "true": lambda args, stdin, out, err: 0,
            ":": lambda args, stdin, out, err: 0,
            "false": lambda args, stdin, out, err: 1,
            "exit": self._exit,
            "sleep": self._sleep,
            "cat": self._cat,
            "touch": self._touch,
            "rm": self._rm,
            "mkdir": self._mkdir,
            "ls": self._ls,
            "test": self._test,
            "[": self._bracket,
            "pwd": lambda args, stdin, out, err: self._print(out, self.cwd),
            "cd": self._cd,
            "hostname": lambda args, stdin, out, err: self._print(
                out, self.env.get("HOSTNAME", "")
            ),
            "env": self._env,
            "printenv": self._env,
            "id": self._id,
            "whoami": self._whoami,
            "stty": self._stty,
            "sh": self._sh,
            "bash": self._sh,
            "ash": self._sh,
            "dash": self._sh,
        }

    # -- entry point

    def run(self, argv: Sequence[str]) -> tuple[int, bytes, bytes]:
        out, err = bytearray(), bytearray()
        try:
            code = self.command(list(argv), b"", out, err)
        except _Exit as exit_:
            code = exit_.code
        except _Killed:
            code = _SIGKILL_EXIT
        return code, bytes(out), bytes(err)

    def command(self, argv: list[str], stdin: bytes, out: bytearray, err: bytearray) -> int:
        name = argv[0]
        program = posixpath.basename(name) if "/" in name else name
        implementation = self.commands.get(program)
        if implementation is None or not program:
            err += f"{name}: command not found\n".encode()
            return 127
        return implementation(argv[1:], stdin, out, err)

    # -- helpers

    def path(self, path: str) -> str:
        return posixpath.normpath(posixpath.join(self.cwd, path)).replace("//", "/")

    @staticmethod
    def _print(out: bytearray, text: str) -> int:
        out += (text + "\n").encode()
        return 0

    # -- commands

    def _echo(self, args: list[str], stdin: bytes, out: bytearray, err: bytearray) -> int:
        newline, escapes = True, False
        while args and re.fullmatch(r"-[neE]+", args[0]):
            newline = newline and "n" not in args[0]
            escapes = "e" in args[0] or (escapes and "E" not in args[0])
            args = args[1:]
        text = " ".join(args)
        if escapes:
            text = text.replace("\\n", "\n").replace("\\t", "\t").replace("\\\\", "\\")
        out += (text + ("\n" if newline else "")).encode()
        return 0

    def _exit(self, args: list[str], stdin: bytes, out: bytearray, err: bytearray) -> int:
        if not args:
            raise _Exit(int(self.env.get("?", "0")))
        try:
            raise _Exit(int(args[0]) & 0xFF)
        except ValueError:
            err += f"exit: Illegal number: {args[0]}\n".encode()
            raise _Exit(2) from None

    def _sleep(self, args: list[str], stdin: bytes, out: bytearray, err: bytearray) -> int:
        if not args:
            err += b"sleep: missing operand\n"
            return 1
        total = 0.0
        for arg in args:
            if arg in ("inf", "infinity"):
                total = math.inf
                continue
            match = _DURATION.fullmatch(arg)
            if not match:
                err += f"sleep: invalid time interval '{arg}'\n".encode()
                return 1
            total += float(match.group(1)) * _UNITS[match.group(2)]
        self.sleep(total)
        return 0

    def _cat(self, args: list[str], stdin: bytes, out: bytearray, err: bytearray) -> int:
        if not args:
            out += stdin
            return 0
        code = 0
        for arg in args:
            if arg == "-":
                out += stdin
                continue
            path = self.path(arg)
            data = self.fs.read(path)
            if data is not None:
                out += data
            elif self.fs.kind(path) == "dir":
                err += f"cat: {arg}: Is a directory\n".encode()
                code = 1
            else:
                err += f"cat: {arg}: No such file or directory\n".encode()
                code = 1
        return code

    def _touch(self, args: list[str], stdin: bytes, out: bytearray, err: bytearray) -> int:
        code = 0
        for arg in (a for a in args if not a.startswith("-")):
            path = self.path(arg)
            if self.fs.kind(path) is not None:
                continue
            problem = self.fs.write(path, b"", append=True)
            if problem:
                err += f"touch: cannot touch '{arg}': {problem}\n".encode()
                code = 1
        return code

    def _rm(self, args: list[str], stdin: bytes, out: bytearray, err: bytearray) -> int:
        flags = "".join(a[1:] for a in args if a.startswith("-") and len(a) > 1)
        force, recursive = "f" in flags, bool({"r", "R"} & set(flags))
        code = 0
        for arg in (a for a in args if not a.startswith("-") or a == "-"):
            problem = self.fs.remove(self.path(arg), recursive)
            if problem and not (force and problem == "No such file or directory"):
                err += f"rm: cannot remove '{arg}': {problem}\n".encode()
                code = 1
        return code

    def _mkdir(self, args: list[str], stdin: bytes, out: bytearray, err: bytearray) -> int:
        parents = any(a.startswith("-") and "p" in a for a in args)
        code = 0
        for arg in (a for a in args if not a.startswith("-")):
            problem = self.fs.mkdir(self.path(arg), parents)
            if problem:
                err += f"mkdir: cannot create directory '{arg}': {problem}\n".encode()
                code = 1
        return code

    def _ls(self, args: list[str], stdin: bytes, out: bytearray, err: bytearray) -> int:
        targets = [a for a in args if not a.startswith("-")] or ["."]
        code = 0
        for arg in targets:
            path = self.path(arg)
            kind = self.fs.kind(path)
            if kind is None:
                err += f"ls: cannot access '{arg}': No such file or directory\n".encode()
                code = 2
            elif kind == "file":
                self._print(out, arg)
            else:
                if len(targets) > 1:
                    self._print(out, f"{arg}:")
                for entry in self.fs.listdir(path):
                    self._print(out, entry)
        return code

    def _bracket(self, args: list[str], stdin: bytes, out: bytearray, err: bytearray) -> int:
        if args[-1:] != ["]"]:
            err += b"[: missing ]\n"
            return 2
        return self._test(args[:-1], stdin, out, err)

    def _test(self, args: list[str], stdin: bytes, out: bytearray, err: bytearray) -> int:
        negate = False
        if args and args[0] == "!":
            negate, args = True, args[1:]
        try:
            result = self._evaluate(args)
        except ValueError as problem:
            err += f"test: {problem}\n".encode()
            return 2
        return 0 if result != negate else 1

    def _evaluate(self, args: list[str]) -> bool:
        if not args:
            return False
        if len(args) == 1:
            return bool(args[0])
        if len(args) == 2:
            op, operand = args
            if op == "-n":
                return bool(operand)
            if op == "-z":
                return not operand
            kind = self.fs.kind(self.path(operand))
            if op == "-e":
                return kind is not None
            if op == "-f":
                return kind == "file"
            if op == "-d":
                return kind == "dir"
            if op == "-s":
                return bool(self.fs.read(self.path(operand)))
            if op in ("-r", "-w", "-x"):
                return kind is not None
            raise ValueError(f"unknown operator {op}")
        if len(args) == 3:
            left, op, right = args
            if op in ("=", "=="):
                return left == right
            if op == "!=":
                return left != right
            numeric = {"-eq", "-ne", "-lt", "-le", "-gt", "-ge"}
            if op in numeric:
                try:
                    a, b = int(left), int(right)
                except ValueError:
                    raise ValueError("integer expression expected") from None
                return {
                    "-eq": a == b,
                    "-ne": a != b,
                    "-lt": a < b,
                    "-le": a <= b,
                    "-gt": a > b,
                    "-ge": a >= b,
                }[op]
            raise ValueError(f"unknown operator {op}")
        raise ValueError("too many arguments")

    def _cd(self, args: list[str], stdin: bytes, out: bytearray, err: bytearray) -> int:
        target = self.path(args[0] if args else self.env.get("HOME", "/"))
        if self.fs.kind(target) != "dir":
            err += f"cd: can't cd to {args[0] if args else target}\n".encode()
            return 2
        self.cwd = target
        return 0

    def _env(self, args: list[str], stdin: bytes, out: bytearray, err: bytearray) -> int:
        variables = {k: v for k, v in self.env.items() if re.fullmatch(r"[A-Za-z_]\w*", k)}
        if args:
            if args[0] not in variables:
                return 1
            return self._print(out, variables[args[0]])
        for key, value in variables.items():
            self._print(out, f"{key}={value}")
        return 0

    def _names(self) -> tuple[dict[int, str], dict[int, str]]:
        users = {uid: name for name, (uid, _) in _FAKE_PASSWD.items()}
        groups = {gid: name for name, (_, gid) in _FAKE_PASSWD.items()}
        return users, groups

    def _id(self, args: list[str], stdin: bytes, out: bytearray, err: bytearray) -> int:
        uid, gid, groups = self.user
        users, group_names = self._names()

        def named(number: int, names: dict[int, str]) -> str:
            return f"{number}({names[number]})" if number in names else str(number)

        if "-u" in args:
            return self._print(out, str(uid))
        if "-g" in args:
            return self._print(out, str(gid))
        text = f"uid={named(uid, users)} gid={named(gid, group_names)}"
        if groups:
            text += " groups=" + ",".join(named(g, group_names) for g in groups)
        return self._print(out, text)

    def _whoami(self, args: list[str], stdin: bytes, out: bytearray, err: bytearray) -> int:
        users, _ = self._names()
        uid = self.user[0]
        if uid not in users:
            err += f"whoami: cannot find name for user ID {uid}\n".encode()
            return 1
        return self._print(out, users[uid])

    def _stty(self, args: list[str], stdin: bytes, out: bytearray, err: bytearray) -> int:
        if self.terminal is None:
            err += b"stty: standard input: Not a tty\n"
            return 1
        size = self.terminal()
        if args == ["size"]:
            return self._print(out, f"{size.height} {size.width}")
        if not args or args in (["-a"], ["--all"]):
            return self._print(
                out, f"speed 38400 baud; rows {size.height}; columns {size.width}; line = 0;"
            )
        return 0  # settings (raw, -echo...) are accepted and ignored

    def _sh(self, args: list[str], stdin: bytes, out: bytearray, err: bytearray) -> int:
        script: str | None = None
        while args and args[0].startswith("-") and len(args[0]) > 1:
            flag, args = args[0], args[1:]
            if "c" in flag:
                if not args:
                    err += b"sh: -c requires an argument\n"
                    return 2
                script, args = args[0], args[1:]
                break
        positional = args
        if script is None:
            if args:
                data = self.fs.read(self.path(args[0]))
                if data is None:
                    err += f"sh: can't open '{args[0]}': No such file or directory\n".encode()
                    return 127
                script = data.decode(errors="replace")
            else:
                script = stdin.decode(errors="replace")
        saved = (dict(self.env), self.cwd)
        for index, value in enumerate(positional[:10]):
            self.env[str(index)] = value
        try:
            return self.script(script, out, err)
        except _Exit as exit_:
            return exit_.code
        finally:
            self.env, self.cwd = saved

    # -- scripts

    def script(self, script: str, out: bytearray, err: bytearray) -> int:
        try:
            commands = _parse(script)
        except _SyntaxProblem as problem:
            err += f"sh: unsupported syntax in the fake shell: {problem}\n".encode()
            return 2
        status = 0
        for simple in commands:
            if (simple.connector == "&&" and status != 0) or (
                simple.connector == "||" and status == 0
            ):
                continue
            try:
                status = self._run_simple(simple, out, err)
            except _Exit as exit_:
                self.env["?"] = str(exit_.code)
                raise
            self.env["?"] = str(status)
        return status

    def _expand(self, word: _Word) -> str:
        pieces = []
        for kind, text in word.parts:
            if kind == "lit":
                pieces.append(text)
            elif text == "$":
                pieces.append("1")
            else:
                pieces.append(self.env.get(text, "0" if text == "?" else ""))
        return "".join(pieces)

    def _run_simple(self, simple: _Simple, out: bytearray, err: bytearray) -> int:
        argv = []
        for word in simple.words:
            value = self._expand(word)
            if value or word.quoted:
                argv.append(value)
        # where fd 1 and 2 go: "out", "err", "null" or ("file", path, append)
        sinks: dict[int, Any] = {1: "out", 2: "err"}
        stdin = b""
        for redirect in simple.redirects:
            target = self._expand(redirect.target)
            if redirect.op == ">&":
                if target not in ("1", "2"):
                    err += f"sh: {target}: bad file descriptor\n".encode()
                    return 1
                sinks[redirect.fd] = sinks[int(target)]
            elif redirect.op == "<":
                content = self.fs.read(self.path(target))
                if content is None:
                    err += f"sh: can't open {target}: no such file\n".encode()
                    return 1
                stdin = content
            elif target == "/dev/null":
                sinks[redirect.fd] = "null"
            else:
                path = self.path(target)
                problem = self.fs.write(path, b"", append=redirect.op == ">>")
                if problem:
                    err += f"sh: can't create {target}: {problem}\n".encode()
                    return 1
                sinks[redirect.fd] = ("file", path)
        if not argv:
            return 0
        command_out, command_err = bytearray(), bytearray()
        try:
            status = self.command(argv, stdin, command_out, command_err)
        finally:
            for fd, data in ((1, command_out), (2, command_err)):
                sink = sinks.get(fd, "null")
                if sink == "out":
                    out += data
                elif sink == "err":
                    err += data
                elif isinstance(sink, tuple):
                    self.fs.write(sink[1], bytes(data), append=True)
        return status


# ---------------------------------------------------------------------------------------------
# the backend


def _streaming_url_or_unimplemented(kind: streaming_server.StreamKind, request: object) -> str:
    if streaming_server.current() is None:
        raise Unimplemented(STREAMING_UNIMPLEMENTED)  # the fake's own message
    return streaming_server.url_for(kind, request)


class _Interrupted(Exception):
    """^C typed on the fake terminal."""


class _Console:
    """A fake process's side of a streaming session: the client's streams, and with a TTY a
    minimal line discipline (ICRNL, ECHO, ONLCR, canonical lines, ^C, ^D, backspace)."""

    def __init__(self, streams: StreamIO, tty: bool) -> None:
        self.streams = streams
        self.tty = tty
        self.size = TerminalSize(width=0, height=0)
        self._pending = b""
        self._eof = False

    def terminal_size(self) -> TerminalSize:
        return self.size

    def follow_resizes(self) -> None:
        for size in self.streams.resizes():
            self.size = size

    def write_out(self, data: bytes) -> None:
        if data and self.streams.stdout is not None:
            self.streams.stdout.write(data.replace(b"\n", b"\r\n") if self.tty else data)

    def write_err(self, data: bytes) -> None:
        if self.tty:  # one terminal for both
            self.write_out(data)
        elif data and self.streams.stderr is not None:
            self.streams.stderr.write(data)

    def _read(self) -> bytes:
        if self._pending:
            data, self._pending = self._pending, b""
            return data
        if self._eof or self.streams.stdin is None:
            return b""
        data = self.streams.stdin.read(65536)
        self._eof = not data
        return data

    def readline(self) -> bytes | None:
        """The next input line without its newline; None at end of input."""
        if not self.tty:
            line = b""
            while True:
                data = self._read()
                if not data:
                    return line or None
                head, newline, rest = data.partition(b"\n")
                line += head
                if newline:
                    self._pending = rest
                    return line
        typed = bytearray()
        while True:
            data = self._read()
            if not data:
                return bytes(typed) or None
            echo = bytearray()
            for index, byte in enumerate(data):
                if byte in (0x0D, 0x0A):  # ICRNL
                    self._pending = data[index + 1 :]
                    self.write_raw(bytes(echo) + b"\r\n")
                    return bytes(typed)
                if byte == 0x03:
                    self._pending = data[index + 1 :]
                    self.write_raw(bytes(echo) + b"^C\r\n")
                    raise _Interrupted
                if byte == 0x04:
                    if not typed:
                        self._pending = data[index + 1 :]
                        self.write_raw(bytes(echo))
                        return None
                    continue
                if byte in (0x7F, 0x08):
                    if typed:
                        typed.pop()
                        echo += b"\b \b"
                    continue
                typed.append(byte)
                echo.append(byte)
            self.write_raw(bytes(echo))

    def write_raw(self, data: bytes) -> None:
        if data and self.streams.stdout is not None:
            self.streams.stdout.write(data)

    def cat(self) -> int:
        """``cat`` with no arguments: stdin to stdout as it arrives."""
        if not self.tty:
            stdout = self.streams.stdout
            while data := self._read():
                if stdout is not None:
                    stdout.write(data)
            return 0
        try:
            while (line := self.readline()) is not None:
                self.write_out(line + b"\n")
        except _Interrupted:
            return _SIGINT_EXIT
        return 0

    def interactive(self, shell: _Shell, prompt: str) -> int:
        """An interactive shell: read a line, run it, write its output; until EOF or exit."""
        status = 0
        while not self.streams.closed:
            if self.tty:
                self.write_raw(prompt.encode())
            try:
                line = self.readline()
            except _Interrupted:
                status = _SIGINT_EXIT
                continue
            if line is None:
                break
            out, err = bytearray(), bytearray()
            try:
                status = shell.script(line.decode(errors="replace"), out, err)
            except _Exit as exit_:
                status = exit_.code
                line = None
            except _Killed:
                status, line = _SIGKILL_EXIT, None
            self.write_out(bytes(out))
            self.write_err(bytes(err))
            if line is None:
                break
        return status


class _Subscriber:
    def __init__(self) -> None:
        self.queue: queue.Queue[object] = queue.Queue()
        self.pending = 0


_CLOSED = object()
_OVERFLOW = object()


class FakeBackend:
    """The in-memory backend; its methods are the RPC hook implementations."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._sandboxes: dict[str, _Sandbox] = {}
        self._containers: dict[str, _Container] = {}
        self._images: dict[str, _Image] = {}
        self._sandbox_names: dict[tuple[str, str, str, int], str] = {}
        self._container_names: dict[tuple[str, str, int], str] = {}
        self._subscribers: list[_Subscriber] = []
        self._pod_networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = [
            ipaddress.ip_network(DEFAULT_POD_CIDR)
        ]
        self._pod_cidr = ""
        self._pids = itertools.count(1000)
        self._last_ns = 0
        self._closed = False

    # -- lifecycle

    def close(self) -> None:
        """End every event stream and kill every running ``ExecSync``; idempotent."""
        with self._lock:
            self._closed = True
            subscribers, self._subscribers = self._subscribers, []
            containers = list(self._containers.values())
        for subscriber in subscribers:
            subscriber.queue.put(_CLOSED)
        for container in containers:
            container.stopped.set()

    @hookimpl
    def criadapt_backend_info(self) -> m.BackendInfo:
        return m.BackendInfo(
            name="fake",
            version=criadapt.__version__,
            runtime_name=RUNTIME_NAME,
            runtime_version=RUNTIME_VERSION,
            capabilities=frozenset(
                {
                    "exec_sync",
                    "exec_sync_timeout",
                    "stats",
                    "pod_sandbox_stats",
                    "container_events",
                    "checkpoint",
                    "update_container_resources",
                    "update_pod_sandbox_resources",
                    "reopen_container_log",
                    "runtime_config",
                    "pod_sandbox_metrics",
                    "image_fs_info",
                }
                | ({"streaming"} if streaming_server.current() is not None else set())
            ),
            details={
                "state": "in memory",
                "streaming": "echo servers"
                if streaming_server.current() is not None
                else "no streaming server",
            },
        )

    # -- helpers (call with the lock held)

    def _now(self) -> int:
        """Wall-clock nanoseconds, strictly increasing across calls."""
        now = max(time.time_ns(), self._last_ns + 1)
        self._last_ns = now
        return now

    def _new_id(self) -> str:
        while True:
            new = secrets.token_hex(32)
            if new not in self._sandboxes and new not in self._containers:
                return new

    def _sandbox(self, sandbox_id: str) -> _Sandbox:
        try:
            return self._sandboxes[sandbox_id]
        except KeyError:
            raise NotFound(f"pod sandbox {sandbox_id!r} not found") from None

    def _container(self, container_id: str) -> _Container:
        try:
            return self._containers[container_id]
        except KeyError:
            raise NotFound(f"container {container_id!r} not found") from None

    def _running(self, container_id: str) -> _Container:
        container = self._container(container_id)
        if container.state != m.ContainerState.CONTAINER_RUNNING:
            raise FailedPrecondition(
                f"container {container_id!r} is not running (state {container.state.name})"
            )
        return container

    @staticmethod
    def _resolve(wanted: str, ids: Iterable[str]) -> str:
        """An id filter: an exact id, else the one id it is a prefix of (as containerd)."""
        ids = list(ids)
        if wanted in ids:
            return wanted
        matches = [one for one in ids if one.startswith(wanted)]
        return matches[0] if len(matches) == 1 else wanted

    def _find_image(self, reference: str) -> _Image | None:
        by_id = _IMAGE_ID.fullmatch(reference)
        if by_id:
            return self._images.get("sha256:" + by_id.group(1))
        try:
            key = _parse_reference(reference).lookup_key
        except InvalidArgument:
            return None
        for image in self._images.values():
            if key in image.names():
                return image
        return None

    def _allocate_ips(self) -> tuple[str, tuple[str, ...]]:
        used = {sandbox.ip for sandbox in self._sandboxes.values()} | {
            ip for sandbox in self._sandboxes.values() for ip in sandbox.additional_ips
        }
        addresses = []
        families = set()
        for network in self._pod_networks:
            if network.version in families:
                continue
            families.add(network.version)
            for host in itertools.islice(network.hosts(), 1, None):
                if str(host) not in used:
                    addresses.append(str(host))
                    break
            else:
                raise ResourceExhausted(f"no free address left in the pod CIDR {network}")
        return addresses[0], tuple(addresses[1:])

    def _container_status(self, container: _Container) -> m.ContainerStatus:
        config = container.config
        return m.ContainerStatus(
            id=container.id,
            metadata=config.metadata,
            state=container.state,
            created_at=container.created_at,
            started_at=container.started_at,
            finished_at=container.finished_at,
            exit_code=container.exit_code,
            image=config.image,
            image_ref=container.image_id,
            reason=container.reason,
            message=container.message,
            labels=config.labels,
            annotations=config.annotations,
            mounts=config.mounts,
            log_path=container.log_path,
            resources=container.resources,
            image_id=container.image_id,
            user=container.user,
            stop_signal=config.stop_signal or m.Signal.SIGTERM,
        )

    def _sandbox_status(self, sandbox: _Sandbox) -> m.PodSandboxStatus:
        config = sandbox.config
        return m.PodSandboxStatus(
            id=sandbox.id,
            metadata=config.metadata,
            state=sandbox.state,
            created_at=sandbox.created_at,
            network=m.PodSandboxNetworkStatus(
                ip=sandbox.ip,
                additional_ips=tuple(m.PodIP(ip=ip) for ip in sandbox.additional_ips),
            ),
            linux=m.LinuxPodSandboxStatus(
                namespaces=m.Namespace(options=_namespace_options(config))
            ),
            labels=config.labels,
            annotations=config.annotations,
            runtime_handler=sandbox.runtime_handler,
        )

    def _containers_of(self, sandbox_id: str) -> list[_Container]:
        return sorted(
            (c for c in self._containers.values() if c.sandbox_id == sandbox_id),
            key=lambda c: c.created_at,
        )

    def _publish(self, container_id: str, sandbox_id: str, kind: m.ContainerEventType) -> None:
        """Send an event to every subscriber (lock held, so events keep the state order)."""
        if not self._subscribers:
            return
        sandbox = self._sandboxes.get(sandbox_id)
        event = m.ContainerEventResponse(
            container_id=container_id,
            container_event_type=kind,
            created_at=self._now(),
            pod_sandbox_status=self._sandbox_status(sandbox) if sandbox else None,
            containers_statuses=tuple(
                self._container_status(c) for c in self._containers_of(sandbox_id)
            ),
        )
        for subscriber in list(self._subscribers):
            if subscriber.queue.qsize() >= EVENT_BACKLOG:
                self._subscribers.remove(subscriber)
                subscriber.queue.put(_OVERFLOW)
            else:
                subscriber.queue.put(event)

    def _stop(self, container: _Container, timeout: int, forced: bool = False) -> None:
        """Move a created or running container to EXITED (lock held)."""
        now = self._now()
        if container.state == m.ContainerState.CONTAINER_RUNNING:
            killed = forced or timeout == 0 or container.config.stop_signal == m.Signal.SIGKILL
            changes: dict[str, Any] = (
                {"exit_code": _SIGKILL_EXIT, "reason": "Error"}
                if killed
                else {"exit_code": 0, "reason": "Completed"}
            )
        elif container.state == m.ContainerState.CONTAINER_CREATED:
            changes = {
                "exit_code": 0,
                "reason": "NeverStarted",
                "message": "the container was stopped before it was started",
            }
        else:
            return
        container.stopped.set()
        self._containers[container.id] = attrs.evolve(
            container, state=m.ContainerState.CONTAINER_EXITED, finished_at=now, **changes
        )
        self._publish(
            container.id, container.sandbox_id, m.ContainerEventType.CONTAINER_STOPPED_EVENT
        )

    def _remove_container(self, container: _Container) -> None:
        self._stop(container, 0, forced=True)
        del self._containers[container.id]
        metadata = container.config.metadata
        assert metadata is not None
        self._container_names.pop((container.sandbox_id, metadata.name, metadata.attempt), None)
        self._publish(
            container.id, container.sandbox_id, m.ContainerEventType.CONTAINER_DELETED_EVENT
        )

    def _stop_sandbox(self, sandbox: _Sandbox) -> None:
        for container in self._containers_of(sandbox.id):
            self._stop(container, 0, forced=True)
        if sandbox.state == m.PodSandboxState.SANDBOX_READY:
            self._sandboxes[sandbox.id] = attrs.evolve(
                sandbox, state=m.PodSandboxState.SANDBOX_NOTREADY, ip="", additional_ips=()
            )
            self._publish(sandbox.id, sandbox.id, m.ContainerEventType.CONTAINER_STOPPED_EVENT)

    # -- RuntimeService: runtime

    @hookimpl
    def criadapt_version(self, version: str) -> m.VersionResponse:
        return m.VersionResponse(
            version=KUBELET_API_VERSION,
            runtime_name=RUNTIME_NAME,
            runtime_version=RUNTIME_VERSION,
            runtime_api_version="v1",
        )

    @hookimpl
    def criadapt_status(self, verbose: bool) -> m.StatusResponse:
        features = m.RuntimeHandlerFeatures(recursive_read_only_mounts=True, user_namespaces=True)
        info: dict[str, str] = {}
        if verbose:
            with self._lock:
                info["info"] = json.dumps(
                    {
                        "runtime": RUNTIME_NAME,
                        "version": RUNTIME_VERSION,
                        "podCIDR": self._pod_cidr,
                        "podNetworks": [str(net) for net in self._pod_networks],
                        "sandboxes": len(self._sandboxes),
                        "containers": len(self._containers),
                        "images": len(self._images),
                        "cgroupDriver": "cgroupfs",
                        "streaming": "unimplemented",
                    },
                    sort_keys=True,
                )
        return m.StatusResponse(
            status=m.RuntimeStatus(
                conditions=(
                    m.RuntimeCondition(type="RuntimeReady", status=True),
                    m.RuntimeCondition(type="NetworkReady", status=True),
                )
            ),
            info=info,
            runtime_handlers=tuple(
                m.RuntimeHandler(name=name, features=features) for name in RUNTIME_HANDLERS
            ),
            features=m.RuntimeFeatures(supplemental_groups_policy=True),
        )

    @hookimpl
    def criadapt_update_runtime_config(
        self, runtime_config: m.RuntimeConfig | None
    ) -> m.UpdateRuntimeConfigResponse:
        network = runtime_config.network_config if runtime_config else None
        if network is None or not network.pod_cidr:
            return m.UpdateRuntimeConfigResponse()
        try:
            networks = [
                ipaddress.ip_network(part.strip(), strict=False)
                for part in network.pod_cidr.split(",")
                if part.strip()
            ]
        except ValueError as problem:
            raise InvalidArgument(f"invalid pod CIDR {network.pod_cidr!r}: {problem}") from None
        networks.sort(key=lambda net: net.version)
        with self._lock:
            self._pod_cidr = network.pod_cidr
            if networks:
                self._pod_networks = networks
        return m.UpdateRuntimeConfigResponse()

    @hookimpl
    def criadapt_runtime_config(self) -> m.RuntimeConfigResponse:
        return m.RuntimeConfigResponse(
            linux=m.LinuxRuntimeConfiguration(cgroup_driver=m.CgroupDriver.CGROUPFS)
        )

    # -- sandboxes

    @hookimpl
    def criadapt_run_pod_sandbox(
        self, config: m.PodSandboxConfig | None, runtime_handler: str
    ) -> m.RunPodSandboxResponse:
        if config is None or config.metadata is None:  # the request model requires both
            raise InvalidArgument("RunPodSandboxRequest.config.metadata is required")
        _check_handler(runtime_handler)
        userns = _namespace_options(config).userns_options
        if userns is not None and userns.mode not in (m.NamespaceMode.POD, m.NamespaceMode.NODE):
            raise InvalidArgument(
                f"user namespace mode {userns.mode.name} is not supported (only POD and NODE)"
            )
        meta = config.metadata
        key = (meta.name, meta.namespace, meta.uid, meta.attempt)
        with self._lock:
            existing = self._sandbox_names.get(key)
            if existing is not None:
                raise AlreadyExists(
                    f"failed to reserve sandbox name {'_'.join(map(str, key))!r}: "
                    f"it is reserved for {existing!r}"
                )
            ip, additional = ("", ()) if _host_network(config) else self._allocate_ips()
            sandbox = _Sandbox(
                id=self._new_id(),
                config=config,
                runtime_handler=runtime_handler,
                state=m.PodSandboxState.SANDBOX_READY,
                created_at=self._now(),
                pid=next(self._pids),
                ip=ip,
                additional_ips=additional,
            )
            self._sandboxes[sandbox.id] = sandbox
            self._sandbox_names[key] = sandbox.id
            self._publish(sandbox.id, sandbox.id, m.ContainerEventType.CONTAINER_CREATED_EVENT)
            self._publish(sandbox.id, sandbox.id, m.ContainerEventType.CONTAINER_STARTED_EVENT)
        return m.RunPodSandboxResponse(pod_sandbox_id=sandbox.id)

    @hookimpl
    def criadapt_stop_pod_sandbox(self, pod_sandbox_id: str) -> m.StopPodSandboxResponse:
        with self._lock:
            sandbox = self._sandboxes.get(pod_sandbox_id)
            if sandbox is not None:
                self._stop_sandbox(sandbox)
        return m.StopPodSandboxResponse()

    @hookimpl
    def criadapt_remove_pod_sandbox(self, pod_sandbox_id: str) -> m.RemovePodSandboxResponse:
        with self._lock:
            sandbox = self._sandboxes.get(pod_sandbox_id)
            if sandbox is None:
                return m.RemovePodSandboxResponse()
            self._stop_sandbox(sandbox)
            for container in self._containers_of(pod_sandbox_id):
                self._remove_container(container)
            sandbox = self._sandboxes[pod_sandbox_id]
            self._publish(sandbox.id, sandbox.id, m.ContainerEventType.CONTAINER_DELETED_EVENT)
            del self._sandboxes[pod_sandbox_id]
            meta = sandbox.config.metadata
            assert meta is not None
            self._sandbox_names.pop((meta.name, meta.namespace, meta.uid, meta.attempt), None)
        return m.RemovePodSandboxResponse()

    @hookimpl
    def criadapt_pod_sandbox_status(
        self, pod_sandbox_id: str, verbose: bool
    ) -> m.PodSandboxStatusResponse:
        with self._lock:
            sandbox = self._sandbox(pod_sandbox_id)
            containers = self._containers_of(pod_sandbox_id)
            timestamp = self._now()
        info: dict[str, str] = {}
        if verbose:
            info["info"] = json.dumps(
                {
                    "id": sandbox.id,
                    "pid": sandbox.pid,
                    "runtimeHandler": sandbox.runtime_handler,
                    "hostname": sandbox.config.hostname,
                    "logDirectory": sandbox.config.log_directory,
                    "netns": "" if _host_network(sandbox.config) else f"/fake/netns/{sandbox.id}",
                    "overhead": attrs.asdict(sandbox.overhead) if sandbox.overhead else None,
                    "resources": attrs.asdict(sandbox.resources) if sandbox.resources else None,
                    "containers": [c.id for c in containers],
                },
                sort_keys=True,
            )
        return m.PodSandboxStatusResponse(
            status=self._sandbox_status(sandbox),
            info=info,
            containers_statuses=tuple(self._container_status(c) for c in containers),
            timestamp=timestamp,
        )

    @hookimpl
    def criadapt_list_pod_sandbox(
        self, filter: m.PodSandboxFilter | None
    ) -> m.ListPodSandboxResponse:
        with self._lock:
            sandboxes = list(self._sandboxes.values())
        if filter is not None:
            if filter.id:
                wanted = self._resolve(filter.id, (s.id for s in sandboxes))
                sandboxes = [s for s in sandboxes if s.id == wanted]
            if filter.state is not None:
                sandboxes = [s for s in sandboxes if s.state == filter.state.state]
            sandboxes = [
                s for s in sandboxes if _labels_match(s.config.labels, filter.label_selector)
            ]
        return m.ListPodSandboxResponse(
            items=tuple(
                m.PodSandbox(
                    id=s.id,
                    metadata=s.config.metadata,
                    state=s.state,
                    created_at=s.created_at,
                    labels=s.config.labels,
                    annotations=s.config.annotations,
                    runtime_handler=s.runtime_handler,
                )
                for s in sorted(sandboxes, key=lambda s: s.created_at)
            )
        )

    @hookimpl
    def criadapt_update_pod_sandbox_resources(
        self,
        pod_sandbox_id: str,
        overhead: m.LinuxContainerResources | None,
        resources: m.LinuxContainerResources | None,
    ) -> m.UpdatePodSandboxResourcesResponse:
        with self._lock:
            sandbox = self._sandbox(pod_sandbox_id)
            self._sandboxes[pod_sandbox_id] = attrs.evolve(
                sandbox, overhead=overhead, resources=resources
            )
        return m.UpdatePodSandboxResourcesResponse()

    @hookimpl
    def criadapt_port_forward(
        self, pod_sandbox_id: str, port: Sequence[int]
    ) -> m.PortForwardResponse:
        with self._lock:
            sandbox = self._sandbox(pod_sandbox_id)
        if sandbox.state != m.PodSandboxState.SANDBOX_READY:
            raise FailedPrecondition(f"pod sandbox {pod_sandbox_id!r} is not ready")
        request = m.PortForwardRequest(pod_sandbox_id=pod_sandbox_id, port=port)
        return m.PortForwardResponse(url=_streaming_url_or_unimplemented("portforward", request))

    # -- containers

    def _check_container_config(
        self, sandbox: _Sandbox, config: m.ContainerConfig
    ) -> tuple[str, m.ContainerUser]:
        """State-dependent checks of CreateContainer; returns (image id, user). Lock held."""
        assert config.image is not None and config.metadata is not None  # the model checks
        _check_handler(config.image.runtime_handler)
        image = self._find_image(config.image.image)
        if image is None:
            raise NotFound(f"image {config.image.image!r} not found: pull it first")
        context = config.linux.security_context if config.linux else None
        sandbox_linux = sandbox.config.linux
        sandbox_context = sandbox_linux.security_context if sandbox_linux else None
        if (
            context is not None
            and context.privileged
            and not (sandbox_context is not None and sandbox_context.privileged)
        ):
            raise InvalidArgument(
                "a privileged container needs a privileged sandbox "
                "(LinuxSandboxSecurityContext.privileged)"
            )
        options = context.namespace_options if context else None
        if options is not None and m.NamespaceMode.TARGET in (
            options.network,
            options.pid,
            options.ipc,
        ):
            if not options.target_id:
                raise InvalidArgument("namespace mode TARGET needs a target_id")
            target = self._containers.get(options.target_id)
            if target is None or target.sandbox_id != sandbox.id:
                raise NotFound(
                    f"target container {options.target_id!r} not found in sandbox {sandbox.id!r}"
                )
        for mount in config.mounts:
            if mount.recursive_read_only and not (
                mount.readonly and mount.propagation == m.MountPropagation.PROPAGATION_PRIVATE
            ):
                raise InvalidArgument(
                    f"mount {mount.container_path!r}: recursive_read_only needs readonly and "
                    "PROPAGATION_PRIVATE"
                )
            if mount.image is not None and mount.image.image:
                if mount.host_path:
                    raise InvalidArgument(
                        f"mount {mount.container_path!r}: an image mount has no host_path"
                    )
                if self._find_image(mount.image.image) is None:
                    raise NotFound(
                        f"mount {mount.container_path!r}: image {mount.image.image!r} not found"
                    )
        # the identity of the first process
        uid, gid = 0, 0
        if context is not None and context.run_as_user is not None:
            uid = context.run_as_user.value
            gid = next((g for u, g in _FAKE_PASSWD.values() if u == uid), 0)
        elif context is not None and context.run_as_username:
            if context.run_as_username not in _FAKE_PASSWD:
                raise FailedPrecondition(
                    f"user {context.run_as_username!r} not found in the /etc/passwd of image "
                    f"{config.image.image!r} (the fake images know root and nobody)"
                )
            uid, gid = _FAKE_PASSWD[context.run_as_username]
        if context is not None and context.run_as_group is not None:
            gid = context.run_as_group.value
        groups = [gid]
        for group in context.supplemental_groups if context else ():
            if group not in groups:
                groups.append(group)
        user = m.ContainerUser(
            linux=m.LinuxContainerUser(uid=uid, gid=gid, supplemental_groups=tuple(groups))
        )
        return image.id, user

    @staticmethod
    def _initial_fs(sandbox: _Sandbox, config: m.ContainerConfig) -> _FakeFs:
        sandbox_config = sandbox.config
        hostname = sandbox_config.hostname or "fake-node"
        dns = sandbox_config.dns_config
        resolv = "".join(
            [f"nameserver {server}\n" for server in (dns.servers if dns else ())]
            + ([f"search {' '.join(dns.searches)}\n"] if dns and dns.searches else [])
            + ([f"options {' '.join(dns.options)}\n"] if dns and dns.options else [])
        )
        hosts = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        if sandbox.ip:
            hosts += f"{sandbox.ip}\t{hostname}\n"
        files = {
            "/etc/hostname": f"{hostname}\n".encode(),
            "/etc/hosts": hosts.encode(),
            "/etc/resolv.conf": resolv.encode(),
            "/etc/passwd": "".join(
                f"{name}:x:{uid}:{gid}:{name}:/{'root' if uid == 0 else 'nonexistent'}:/bin/sh\n"
                for name, (uid, gid) in _FAKE_PASSWD.items()
            ).encode(),
            "/etc/group": "".join(
                f"{name}:x:{gid}:\n" for name, (_, gid) in _FAKE_PASSWD.items()
            ).encode(),
        }
        dirs = [mount.container_path for mount in config.mounts]
        if config.working_dir:
            dirs.append(posixpath.normpath(config.working_dir))
        return _FakeFs(files, dirs)

    @hookimpl
    def criadapt_create_container(
        self,
        pod_sandbox_id: str,
        config: m.ContainerConfig | None,
        sandbox_config: m.PodSandboxConfig | None,
    ) -> m.CreateContainerResponse:
        if config is None or config.metadata is None:  # the request model requires both
            raise InvalidArgument("CreateContainerRequest.config.metadata is required")
        meta = config.metadata
        with self._lock:
            sandbox = self._sandbox(pod_sandbox_id)
            if sandbox.state != m.PodSandboxState.SANDBOX_READY:
                raise FailedPrecondition(f"pod sandbox {pod_sandbox_id!r} is not ready")
            key = (pod_sandbox_id, meta.name, meta.attempt)
            existing = self._container_names.get(key)
            if existing is not None:
                raise AlreadyExists(
                    f"failed to reserve container name {meta.name!r} (attempt {meta.attempt}) "
                    f"in sandbox {pod_sandbox_id!r}: it is reserved for {existing!r}"
                )
            image_id, user = self._check_container_config(sandbox, config)
            log_path = (
                posixpath.join(sandbox.config.log_directory, config.log_path)
                if sandbox.config.log_directory and config.log_path
                else ""
            )
            linux = config.linux.resources if config.linux else None
            windows = config.windows.resources if config.windows else None
            container = _Container(
                id=self._new_id(),
                sandbox_id=pod_sandbox_id,
                config=config,
                image_id=image_id,
                state=m.ContainerState.CONTAINER_CREATED,
                created_at=self._now(),
                log_path=log_path,
                user=user,
                resources=(
                    m.ContainerResources(linux=linux, windows=windows)
                    if linux is not None or windows is not None
                    else None
                ),
                fs=self._initial_fs(sandbox, config),
            )
            self._containers[container.id] = container
            self._container_names[key] = container.id
            self._publish(
                container.id, pod_sandbox_id, m.ContainerEventType.CONTAINER_CREATED_EVENT
            )
        return m.CreateContainerResponse(container_id=container.id)

    @hookimpl
    def criadapt_start_container(self, container_id: str) -> m.StartContainerResponse:
        with self._lock:
            container = self._container(container_id)
            if container.state != m.ContainerState.CONTAINER_CREATED:
                raise FailedPrecondition(
                    f"container {container_id!r} is in state {container.state.name}, "
                    "only a CONTAINER_CREATED container can be started"
                )
            if self._sandboxes[container.sandbox_id].state != m.PodSandboxState.SANDBOX_READY:
                raise FailedPrecondition(f"pod sandbox {container.sandbox_id!r} is not ready")
            self._containers[container_id] = attrs.evolve(
                container,
                state=m.ContainerState.CONTAINER_RUNNING,
                started_at=self._now(),
                pid=next(self._pids),
            )
            self._publish(
                container_id, container.sandbox_id, m.ContainerEventType.CONTAINER_STARTED_EVENT
            )
        return m.StartContainerResponse()

    @hookimpl
    def criadapt_stop_container(self, container_id: str, timeout: int) -> m.StopContainerResponse:
        with self._lock:
            container = self._containers.get(container_id)
            if container is not None:
                self._stop(container, timeout)
        return m.StopContainerResponse()

    @hookimpl
    def criadapt_remove_container(self, container_id: str) -> m.RemoveContainerResponse:
        with self._lock:
            container = self._containers.get(container_id)
            if container is not None:
                self._remove_container(container)
        return m.RemoveContainerResponse()

    @hookimpl
    def criadapt_list_containers(
        self, filter: m.ContainerFilter | None
    ) -> m.ListContainersResponse:
        with self._lock:
            containers = list(self._containers.values())
            sandbox_ids = list(self._sandboxes)
        if filter is not None:
            if filter.id:
                wanted = self._resolve(filter.id, (c.id for c in containers))
                containers = [c for c in containers if c.id == wanted]
            if filter.state is not None:
                containers = [c for c in containers if c.state == filter.state.state]
            if filter.pod_sandbox_id:
                sandbox = self._resolve(filter.pod_sandbox_id, sandbox_ids)
                containers = [c for c in containers if c.sandbox_id == sandbox]
            containers = [
                c for c in containers if _labels_match(c.config.labels, filter.label_selector)
            ]
        return m.ListContainersResponse(
            containers=tuple(
                m.Container(
                    id=c.id,
                    pod_sandbox_id=c.sandbox_id,
                    metadata=c.config.metadata,
                    image=c.config.image,
                    image_ref=c.image_id,
                    state=c.state,
                    created_at=c.created_at,
                    labels=c.config.labels,
                    annotations=c.config.annotations,
                    image_id=c.image_id,
                )
                for c in sorted(containers, key=lambda c: c.created_at)
            )
        )

    @hookimpl
    def criadapt_container_status(
        self, container_id: str, verbose: bool
    ) -> m.ContainerStatusResponse:
        with self._lock:
            container = self._container(container_id)
        info: dict[str, str] = {}
        if verbose:
            config = container.config
            info["info"] = json.dumps(
                {
                    "id": container.id,
                    "sandboxID": container.sandbox_id,
                    "pid": container.pid,
                    "command": list(config.command),
                    "args": list(config.args),
                    "workingDir": config.working_dir,
                    "envs": {kv.key: kv.value for kv in config.envs},
                    "tty": config.tty,
                    "stdin": config.stdin,
                    "checkpoints": list(container.checkpoints),
                },
                sort_keys=True,
            )
        return m.ContainerStatusResponse(status=self._container_status(container), info=info)

    @hookimpl
    def criadapt_update_container_resources(
        self,
        container_id: str,
        linux: m.LinuxContainerResources | None,
        windows: m.WindowsContainerResources | None,
        annotations: Mapping[str, str],
    ) -> m.UpdateContainerResourcesResponse:
        with self._lock:
            container = self._container(container_id)
            if container.state not in (
                m.ContainerState.CONTAINER_CREATED,
                m.ContainerState.CONTAINER_RUNNING,
            ):
                raise FailedPrecondition(
                    f"container {container_id!r} is {container.state.name}: only created or "
                    "running containers can be updated"
                )
            old = container.resources or m.ContainerResources()
            resources = m.ContainerResources(
                linux=linux if linux is not None else old.linux,
                windows=windows if windows is not None else old.windows,
            )
            self._containers[container_id] = attrs.evolve(container, resources=resources)
        return m.UpdateContainerResourcesResponse()

    @hookimpl
    def criadapt_reopen_container_log(self, container_id: str) -> m.ReopenContainerLogResponse:
        with self._lock:
            self._running(container_id)
        return m.ReopenContainerLogResponse()

    @hookimpl
    def criadapt_checkpoint_container(
        self, container_id: str, location: str, timeout: int
    ) -> m.CheckpointContainerResponse:
        with self._lock:
            container = self._running(container_id)
            where = location or f"/fake/checkpoints/checkpoint-{container_id}-{self._now()}.tar"
            self._containers[container_id] = attrs.evolve(
                container, checkpoints=(*container.checkpoints, where)
            )
        return m.CheckpointContainerResponse()

    # -- exec

    @hookimpl
    def criadapt_exec_sync(
        self, container_id: str, cmd: Sequence[str], timeout: int, call: CallContext
    ) -> m.ExecSyncResponse:
        with self._lock:
            container = self._running(container_id)
            hostname = self._sandboxes[container.sandbox_id].config.hostname or "fake-node"
        start = time.monotonic()
        deadlines: list[tuple[float, str]] = []
        if timeout > 0:
            deadlines.append(
                (start + timeout, f"command {shlex.join(cmd)!r} timed out after {timeout}s")
            )
        if call is not None and call.time_remaining is not None:
            deadlines.append(
                (start + call.time_remaining, "the caller's deadline passed during ExecSync")
            )
        deadline = min(deadlines, default=None)

        def sleep(seconds: float) -> None:
            now = time.monotonic()
            limit = deadline[0] - now if deadline else math.inf
            wait = max(0.0, min(seconds, limit))
            if container.stopped.wait(None if math.isinf(wait) else wait):
                raise _Killed
            if deadline is not None and seconds > limit:
                raise DeadlineExceeded(deadline[1])

        exit_code, stdout, stderr = self._shell(container, hostname, sleep).run(cmd)
        return m.ExecSyncResponse(stdout=stdout, stderr=stderr, exit_code=exit_code)

    @staticmethod
    def _shell(container: _Container, hostname: str, sleep: Callable[[float], None]) -> _Shell:
        """The interpreter in ``container``'s environment, user and working directory."""
        config = container.config
        linux_user = container.user.linux or m.LinuxContainerUser()
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOSTNAME": hostname,
            "HOME": "/root" if linux_user.uid == 0 else "/",
        }
        env.update((kv.key, kv.value) for kv in config.envs)
        return _Shell(
            container.fs,
            env,
            posixpath.normpath(config.working_dir) if config.working_dir else "/",
            (linux_user.uid, linux_user.gid, tuple(linux_user.supplemental_groups)),
            sleep,
        )

    @hookimpl
    def criadapt_exec(
        self,
        container_id: str,
        cmd: Sequence[str],
        tty: bool,
        stdin: bool,
        stdout: bool,
        stderr: bool,
    ) -> m.ExecResponse:
        with self._lock:
            self._running(container_id)
        try:
            request = m.ExecRequest(
                container_id=container_id,
                cmd=cmd,
                tty=tty,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
            )
        except ValidationError as exc:
            raise InvalidArgument(str(exc)) from None
        return m.ExecResponse(url=_streaming_url_or_unimplemented("exec", request))

    @hookimpl
    def criadapt_attach(
        self, container_id: str, tty: bool, stdin: bool, stdout: bool, stderr: bool
    ) -> m.AttachResponse:
        with self._lock:
            container = self._running(container_id)
        if tty != container.config.tty:
            raise InvalidArgument(
                f"tty={tty} does not match the container's tty={container.config.tty}"
            )
        try:
            request = m.AttachRequest(
                container_id=container_id, tty=tty, stdin=stdin, stdout=stdout, stderr=stderr
            )
        except ValidationError as exc:
            raise InvalidArgument(str(exc)) from None
        return m.AttachResponse(url=_streaming_url_or_unimplemented("attach", request))

    # -- streaming sessions (what the URLs above lead to)

    @hookimpl
    def criadapt_stream_exec(
        self, container_id: str, cmd: Sequence[str], tty: bool, streams: StreamIO
    ) -> int:
        with self._lock:
            container = self._running(container_id)
            hostname = self._sandboxes[container.sandbox_id].config.hostname or "fake-node"
        console = _Console(streams, tty)

        def sleep(seconds: float) -> None:
            deadline = time.monotonic() + seconds
            while (remaining := deadline - time.monotonic()) > 0:
                if container.stopped.wait(min(remaining, 0.05)) or streams.closed:
                    raise _Killed

        shell = self._shell(container, hostname, sleep)
        if tty:
            shell.terminal = console.terminal_size
            follower = threading.Thread(
                target=console.follow_resizes, name="fake-exec-resizes", daemon=True
            )
            follower.start()
        try:
            program = posixpath.basename(cmd[0]) if cmd else ""
            interactive_shell = program in _SHELLS and list(cmd[1:]) in ([], ["-i"])
            if streams.stdin is not None and program == "cat" and len(cmd) == 1:
                return console.cat()
            if streams.stdin is not None and interactive_shell:
                return console.interactive(shell, prompt="# " if shell.user[0] == 0 else "$ ")
            code, out, err = shell.run(cmd)
            console.write_out(out)
            console.write_err(err)
            return code
        except BrokenPipeError:
            return _SIGKILL_EXIT  # the client went away: the process would get SIGPIPE/SIGHUP

    @hookimpl
    def criadapt_stream_attach(self, container_id: str, tty: bool, streams: StreamIO) -> int:
        with self._lock:
            container = self._running(container_id)
        stdin, stdout = streams.stdin, streams.stdout
        input_ended = threading.Event()

        def echo() -> None:
            try:
                while stdin is not None and (chunk := stdin.read(65536)):
                    if stdout is not None:
                        stdout.write(chunk)
            except (BrokenPipeError, ValueError):
                pass
            finally:
                input_ended.set()

        if stdin is not None:  # in a thread, so that stopping the container ends the attach
            threading.Thread(target=echo, name="fake-attach-echo", daemon=True).start()
        while not input_ended.wait(0.05):
            if container.stopped.is_set() or streams.closed:
                break
        if container.stopped.is_set():
            with self._lock:
                record = self._containers.get(container_id)
            return record.exit_code if record is not None else _SIGKILL_EXIT
        return -1 if streams.closed else 0

    @hookimpl
    def criadapt_stream_port_forward(
        self, pod_sandbox_id: str, port: int, stream: PortStream
    ) -> None:
        with self._lock:
            sandbox = self._sandbox(pod_sandbox_id)
        if sandbox.state != m.PodSandboxState.SANDBOX_READY:
            raise FailedPrecondition(f"pod sandbox {pod_sandbox_id!r} is not ready")
        try:
            while data := stream.read(65536):
                stream.write(data)
        except BrokenPipeError:
            pass

    # -- stats

    def _container_stats(self, container: _Container, now: int) -> m.ContainerStats:
        running = container.state == m.ContainerState.CONTAINER_RUNNING
        ran_ns = 0
        if container.started_at:
            ran_ns = max(0, (container.finished_at or now) - container.started_at)
        working_set = MIB if running else 0
        linux = container.resources.linux if container.resources else None
        limit = linux.memory_limit_in_bytes if linux else 0
        config = container.config
        return m.ContainerStats(
            attributes=m.ContainerAttributes(
                id=container.id,
                metadata=config.metadata,
                labels=config.labels,
                annotations=config.annotations,
            ),
            cpu=m.CpuUsage(
                timestamp=now,
                usage_core_nano_seconds=m.UInt64Value(value=ran_ns // 100),
                usage_nano_cores=m.UInt64Value(value=NANO_CORES if running else 0),
            ),
            memory=m.MemoryUsage(
                timestamp=now,
                working_set_bytes=m.UInt64Value(value=working_set),
                available_bytes=(
                    m.UInt64Value(value=max(0, limit - working_set)) if limit else None
                ),
                usage_bytes=m.UInt64Value(value=working_set),
                rss_bytes=m.UInt64Value(value=working_set // 2),
                page_faults=m.UInt64Value(value=0),
                major_page_faults=m.UInt64Value(value=0),
            ),
            writable_layer=m.FilesystemUsage(
                timestamp=now,
                fs_id=m.FilesystemIdentifier(mountpoint="/fake/containers"),
                used_bytes=m.UInt64Value(value=WRITABLE_LAYER_BYTES),
                inodes_used=m.UInt64Value(value=1),
            ),
            swap=m.SwapUsage(timestamp=now, swap_usage_bytes=m.UInt64Value(value=0)),
        )

    def _sandbox_stats(
        self, sandbox: _Sandbox, containers: Sequence[_Container], now: int
    ) -> m.PodSandboxStats:
        every = [self._container_stats(c, now) for c in containers]
        running = [
            stats
            for c, stats in zip(containers, every, strict=True)
            if c.state == m.ContainerState.CONTAINER_RUNNING
        ]

        def total(
            pick: Callable[[m.ContainerStats], m.UInt64Value | None],
            of: Sequence[m.ContainerStats] = running,
        ) -> m.UInt64Value:
            return m.UInt64Value(value=sum(v.value for s in of if (v := pick(s)) is not None))

        config = sandbox.config
        return m.PodSandboxStats(
            attributes=m.PodSandboxAttributes(
                id=sandbox.id,
                metadata=config.metadata,
                labels=config.labels,
                annotations=config.annotations,
            ),
            linux=m.LinuxPodSandboxStats(
                cpu=m.CpuUsage(
                    timestamp=now,
                    # cumulative: the CPU time of exited containers counts too
                    usage_core_nano_seconds=total(
                        lambda s: s.cpu.usage_core_nano_seconds if s.cpu else None, every
                    ),
                    usage_nano_cores=total(lambda s: s.cpu.usage_nano_cores if s.cpu else None),
                ),
                memory=m.MemoryUsage(
                    timestamp=now,
                    working_set_bytes=total(
                        lambda s: s.memory.working_set_bytes if s.memory else None
                    ),
                    usage_bytes=total(lambda s: s.memory.usage_bytes if s.memory else None),
                    rss_bytes=total(lambda s: s.memory.rss_bytes if s.memory else None),
                    page_faults=m.UInt64Value(value=0),
                    major_page_faults=m.UInt64Value(value=0),
                ),
                network=m.NetworkUsage(
                    timestamp=now,
                    default_interface=m.NetworkInterfaceUsage(
                        name="eth0",
                        rx_bytes=m.UInt64Value(value=0),
                        rx_errors=m.UInt64Value(value=0),
                        tx_bytes=m.UInt64Value(value=0),
                        tx_errors=m.UInt64Value(value=0),
                    ),
                ),
                process=m.ProcessUsage(
                    timestamp=now, process_count=m.UInt64Value(value=len(running))
                ),
                containers=tuple(running),
            ),
        )

    @hookimpl
    def criadapt_container_stats(self, container_id: str) -> m.ContainerStatsResponse:
        with self._lock:
            container = self._container(container_id)
        return m.ContainerStatsResponse(stats=self._container_stats(container, time.time_ns()))

    @hookimpl
    def criadapt_list_container_stats(
        self, filter: m.ContainerStatsFilter | None
    ) -> m.ListContainerStatsResponse:
        with self._lock:
            containers = [
                c
                for c in self._containers.values()
                if c.state == m.ContainerState.CONTAINER_RUNNING
            ]
            sandbox_ids = list(self._sandboxes)
        if filter is not None:
            if filter.id:
                wanted = self._resolve(filter.id, (c.id for c in containers))
                containers = [c for c in containers if c.id == wanted]
            if filter.pod_sandbox_id:
                sandbox = self._resolve(filter.pod_sandbox_id, sandbox_ids)
                containers = [c for c in containers if c.sandbox_id == sandbox]
            containers = [
                c for c in containers if _labels_match(c.config.labels, filter.label_selector)
            ]
        now = time.time_ns()
        return m.ListContainerStatsResponse(
            stats=tuple(
                self._container_stats(c, now)
                for c in sorted(containers, key=lambda c: c.created_at)
            )
        )

    @hookimpl
    def criadapt_pod_sandbox_stats(self, pod_sandbox_id: str) -> m.PodSandboxStatsResponse:
        with self._lock:
            sandbox = self._sandbox(pod_sandbox_id)
            containers = self._containers_of(pod_sandbox_id)
        return m.PodSandboxStatsResponse(
            stats=self._sandbox_stats(sandbox, containers, time.time_ns())
        )

    @hookimpl
    def criadapt_list_pod_sandbox_stats(
        self, filter: m.PodSandboxStatsFilter | None
    ) -> m.ListPodSandboxStatsResponse:
        with self._lock:
            sandboxes = [
                (s, self._containers_of(s.id))
                for s in self._sandboxes.values()
                if s.state == m.PodSandboxState.SANDBOX_READY
            ]
        if filter is not None:
            if filter.id:
                wanted = self._resolve(filter.id, (s.id for s, _ in sandboxes))
                sandboxes = [(s, cs) for s, cs in sandboxes if s.id == wanted]
            sandboxes = [
                (s, cs)
                for s, cs in sandboxes
                if _labels_match(s.config.labels, filter.label_selector)
            ]
        now = time.time_ns()
        return m.ListPodSandboxStatsResponse(
            stats=tuple(
                self._sandbox_stats(s, cs, now)
                for s, cs in sorted(sandboxes, key=lambda pair: pair[0].created_at)
            )
        )

    @hookimpl
    def criadapt_list_metric_descriptors(self) -> m.ListMetricDescriptorsResponse:
        return m.ListMetricDescriptorsResponse()

    @hookimpl
    def criadapt_list_pod_sandbox_metrics(self) -> m.ListPodSandboxMetricsResponse:
        with self._lock:
            pods = [
                m.PodSandboxMetrics(
                    pod_sandbox_id=s.id,
                    container_metrics=tuple(
                        m.ContainerMetrics(container_id=c.id)
                        for c in self._containers_of(s.id)
                        if c.state == m.ContainerState.CONTAINER_RUNNING
                    ),
                )
                for s in sorted(self._sandboxes.values(), key=lambda s: s.created_at)
                if s.state == m.PodSandboxState.SANDBOX_READY
            ]
        return m.ListPodSandboxMetricsResponse(pod_metrics=tuple(pods))

    # -- events

    @hookimpl
    def criadapt_get_container_events(
        self, call: CallContext
    ) -> Iterable[m.ContainerEventResponse]:
        subscriber = _Subscriber()
        with self._lock:
            if self._closed:
                return iter(())
            self._subscribers.append(subscriber)
        remaining = call.time_remaining if call is not None else None
        deadline = None if remaining is None else time.monotonic() + remaining
        return self._event_stream(subscriber, deadline)

    def _event_stream(
        self, subscriber: _Subscriber, deadline: float | None
    ) -> Iterator[m.ContainerEventResponse]:
        try:
            while True:
                try:
                    if deadline is None:
                        item = subscriber.queue.get()
                    else:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            return
                        item = subscriber.queue.get(timeout=left)
                except queue.Empty:
                    return
                if item is _CLOSED:
                    return
                if item is _OVERFLOW:
                    raise ResourceExhausted(
                        f"the event subscriber fell more than {EVENT_BACKLOG} events behind"
                    )
                assert isinstance(item, m.ContainerEventResponse)
                yield item
        finally:
            with self._lock:
                if subscriber in self._subscribers:
                    self._subscribers.remove(subscriber)

    # -- ImageService

    @hookimpl
    def criadapt_pull_image(
        self,
        image: m.ImageSpec | None,
        auth: m.AuthConfig | None,
        sandbox_config: m.PodSandboxConfig | None,
    ) -> m.PullImageResponse:
        if image is None:  # the request model requires it
            raise InvalidArgument("PullImageRequest.image is required")
        _check_handler(image.runtime_handler)
        with self._lock:
            if _IMAGE_ID.fullmatch(image.image):
                found = self._find_image(image.image)
                if found is None:
                    raise NotFound(f"image {image.image!r} not found: an id cannot be pulled")
                return m.PullImageResponse(image_ref=found.id)
        reference = _parse_reference(image.image)
        if "notfound" in reference.repo:
            raise NotFound(
                f"failed to pull {image.image!r}: {reference.lookup_key} not found "
                "(the fake registry has no repository containing 'notfound')"
            )
        with self._lock:
            existing = self._find_image(str(reference))
            if existing is not None:
                return m.PullImageResponse(image_ref=existing.id)
            digest = reference.digest or "sha256:" + _sha256(f"manifest {reference}")
            pulled = _Image(
                id="sha256:" + _sha256(str(reference)),
                repo_tags=(f"{reference.repo}:{reference.tag}",) if reference.tag else (),
                repo_digests=(f"{reference.repo}@{digest}",),
                size=IMAGE_SIZE,
                spec=attrs.evolve(image, image=str(reference)),
                pinned="pause" in reference.repo,
                pulled_at=self._now(),
            )
            self._images[pulled.id] = pulled
        return m.PullImageResponse(image_ref=pulled.id)

    @staticmethod
    def _image_model(image: _Image) -> m.Image:
        return m.Image(
            id=image.id,
            repo_tags=image.repo_tags,
            repo_digests=image.repo_digests,
            size=image.size,
            uid=m.Int64Value(value=0),
            spec=image.spec,
            pinned=image.pinned,
        )

    @hookimpl
    def criadapt_image_status(
        self, image: m.ImageSpec | None, verbose: bool
    ) -> m.ImageStatusResponse:
        if image is None:
            return m.ImageStatusResponse()
        _check_handler(image.runtime_handler)
        with self._lock:
            found = self._find_image(image.image)
        if found is None:
            return m.ImageStatusResponse()
        info: dict[str, str] = {}
        if verbose:
            info["info"] = json.dumps(
                {
                    "id": found.id,
                    "repoTags": list(found.repo_tags),
                    "repoDigests": list(found.repo_digests),
                    "size": found.size,
                    "pulledAt": found.pulled_at,
                    "imageSpec": {"user": "0", "workingDir": "/", "env": []},
                },
                sort_keys=True,
            )
        return m.ImageStatusResponse(image=self._image_model(found), info=info)

    @hookimpl
    def criadapt_list_images(self, filter: m.ImageFilter | None) -> m.ListImagesResponse:
        spec = filter.image if filter is not None else None
        if spec is not None:
            _check_handler(spec.runtime_handler)
        with self._lock:
            if spec is not None and spec.image:
                found = self._find_image(spec.image)
                images = [found] if found is not None else []
            else:
                images = list(self._images.values())
        return m.ListImagesResponse(
            images=tuple(self._image_model(i) for i in sorted(images, key=lambda i: i.pulled_at))
        )

    @hookimpl
    def criadapt_remove_image(self, image: m.ImageSpec | None) -> m.RemoveImageResponse:
        if image is None:
            return m.RemoveImageResponse()
        _check_handler(image.runtime_handler)
        with self._lock:
            found = self._find_image(image.image)
            if found is not None:
                del self._images[found.id]
        return m.RemoveImageResponse()

    @hookimpl
    def criadapt_image_fs_info(self) -> m.ImageFsInfoResponse:
        now = time.time_ns()
        with self._lock:
            used = sum(image.size for image in self._images.values())
            count = len(self._images)
            containers = len(self._containers)
        return m.ImageFsInfoResponse(
            image_filesystems=(
                m.FilesystemUsage(
                    timestamp=now,
                    fs_id=m.FilesystemIdentifier(mountpoint="/fake/images"),
                    used_bytes=m.UInt64Value(value=used),
                    inodes_used=m.UInt64Value(value=count),
                ),
            ),
            container_filesystems=(
                m.FilesystemUsage(
                    timestamp=now,
                    fs_id=m.FilesystemIdentifier(mountpoint="/fake/containers"),
                    used_bytes=m.UInt64Value(value=WRITABLE_LAYER_BYTES * containers),
                    inodes_used=m.UInt64Value(value=containers),
                ),
            ),
        )
