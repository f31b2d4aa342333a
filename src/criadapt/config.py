"""criadapt's configuration: one TOML file, typed attrs classes, CLI flags on top.

Precedence is *defaults < file < command-line flags*. :func:`load_config` reads the file
with :mod:`tomllib`, applies the flags given as dotted ``overrides`` and structures the
result with a strict cattrs converter (:func:`make_converter`): unknown keys and values of
the wrong TOML type are errors, never silently converted. Every problem is reported in one
:class:`ConfigError` that names the file and each offending key by its full dotted path
(``streaming.prot``, ``registry.mirrors."docker.io".endpoints[0]``).

Each field carries its documentation in ``metadata["doc"]``, so the defaults, the checks
and the commented default file (:func:`default_config_toml`) live in one place;
``docs/configuration.md`` is the reference for users.

Backends keep their own settings in ``[backends.<name>]`` tables. The core does not know
their keys: :attr:`Config.backends` holds them raw and a backend structures its table into
its own attrs class with :func:`backend_section`, with the same strictness and messages.
"""

from __future__ import annotations

import datetime
import difflib
import math
import os
import re
import textwrap
import tomllib
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.cols import (
    homogenous_tuple_structure_factory,
    is_mapping,
    is_sequence,
    list_structure_factory,
    mapping_structure_factory,
)
from cattrs.errors import (
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
)
from cattrs.gen import make_dict_structure_fn

__all__ = [
    "DEFAULT_PATH",
    "LOG_LEVELS",
    "CniConfig",
    "Config",
    "ConfigError",
    "MetricsConfig",
    "MirrorConfig",
    "RegistryConfig",
    "StreamingConfig",
    "backend_section",
    "config_to_toml",
    "default_config_toml",
    "load_config",
    "loads_config",
    "make_converter",
    "schema_keys",
]

T = TypeVar("T")

DEFAULT_PATH = Path("/etc/criadapt/criadapt.toml")
"""Read by :func:`load_config` when no path is given, if it exists."""

LOG_LEVELS = ("debug", "info", "warning", "error")

_OVERRIDES_SOURCE = "command-line flags"


class ConfigError(ValueError):
    """The configuration is unreadable or invalid.

    ``problems`` lists ``(dotted key, problem)`` pairs; ``source`` names the file (or
    ``"command-line flags"``) when known. ``str(error)`` is a complete message for users.
    """

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        problems: Iterable[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.source = source
        self.problems = tuple(problems)

    @property
    def keys(self) -> tuple[str, ...]:
        """The dotted keys named by :attr:`problems`, in order."""
        return tuple(key for key, _ in self.problems)

    def __str__(self) -> str:
        return self.message


# --- field validators ----------------------------------------------------------------------
# They raise ConfigError naming the attribute; while loading, the error walker prefixes the
# path of the enclosing table, so users see `streaming.port`, not `port`.


def _invalid(key: str, problem: str) -> ConfigError:
    return ConfigError(f"{key}: {problem}", problems=[(key, problem)])


def _non_empty(instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if not value:
        raise _invalid(attribute.name, "must not be empty")


def _absolute_path(instance: Any, attribute: attrs.Attribute[Any], value: Path) -> None:
    if not isinstance(value, Path) or not value.is_absolute():
        raise _invalid(attribute.name, f"must be an absolute path, got {str(value)!r}")


def _absolute_paths(instance: Any, attribute: attrs.Attribute[Any], value: Sequence[Path]) -> None:
    for index, path in enumerate(value):
        if not isinstance(path, Path) or not path.is_absolute():
            raise _invalid(
                f"{attribute.name}[{index}]", f"must be an absolute path, got {str(path)!r}"
            )


def _unix_socket_url(instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    path = value.removeprefix("unix://")
    if path == value or not path.startswith("/") or path.endswith("/") or "\x00" in path:
        raise _invalid(
            attribute.name,
            f"must be unix:// followed by an absolute socket path "
            f"(e.g. unix:///run/criadapt/criadapt.sock), got {value!r}",
        )


def _grace_period(instance: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise _invalid(attribute.name, f"must be a number of seconds >= 0, got {value!r}")


def _log_level(instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if value not in LOG_LEVELS:
        raise _invalid(attribute.name, f"must be one of {', '.join(LOG_LEVELS)}; got {value!r}")


def _port(instance: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 0 <= value <= 65535:
        raise _invalid(attribute.name, f"must be a port number in 0..65535, got {value}")


def _host_problem(host: str) -> str | None:
    """Why ``host`` is not a registry host (``name`` or ``name:port``), or None if it is."""
    if not host:
        return "must not be empty"
    if "://" in host or "/" in host or any(ch.isspace() for ch in host):
        return f"must be a registry host such as 'registry.local:5000', got {host!r}"
    return None


def _hosts(instance: Any, attribute: attrs.Attribute[Any], value: Sequence[str]) -> None:
    for index, host in enumerate(value):
        if problem := _host_problem(host):
            raise _invalid(f"{attribute.name}[{index}]", problem)


def _mirror_hosts(
    instance: Any, attribute: attrs.Attribute[Any], value: Mapping[str, MirrorConfig]
) -> None:
    for host in value:
        if problem := _host_problem(host):
            raise _invalid(f"{attribute.name}.{_toml_key(host)}", f"mirrored host {problem}")


def _endpoints(instance: Any, attribute: attrs.Attribute[Any], value: Sequence[str]) -> None:
    for index, url in enumerate(value):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise _invalid(
                f"{attribute.name}[{index}]",
                f"must be an http:// or https:// URL with a host, got {url!r}",
            )


def _listen_address(instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    """``""`` (off) or ``host:port``; IPv6 hosts in brackets, an empty host means all."""
    if not value:
        return
    host, sep, port = value.rpartition(":")
    bad = (
        not sep
        or not (port.isascii() and port.isdigit())
        or int(port) > 65535
        or (":" in host and not (host.startswith("[") and host.endswith("]")))
    )
    if bad:
        raise _invalid(
            attribute.name,
            f"must be empty (off) or host:port such as '127.0.0.1:9090' or '[::1]:9090', "
            f"got {value!r}",
        )


def _doc(doc: str, *, example: str | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"doc": doc}
    if example is not None:
        metadata["example"] = example
    return metadata


# --- the schema ------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class StreamingConfig:
    """``[streaming]``: the HTTP server behind Exec, Attach and PortForward URLs."""

    address: str = attrs.field(
        default="127.0.0.1",
        validator=_non_empty,
        metadata=_doc(
            "Address the streaming server listens on; the kubelet fetches the URLs that "
            "Exec, Attach and PortForward return from here."
        ),
    )
    port: int = attrs.field(
        default=0,
        validator=_port,
        metadata=_doc("TCP port of the streaming server, 0..65535; 0 picks any free port."),
    )


@attrs.frozen(kw_only=True)
class CniConfig:
    """``[cni]``: where the CNI network configuration and plugin binaries are."""

    conf_dir: Path = attrs.field(
        default=Path("/etc/cni/net.d"),
        validator=_absolute_path,
        metadata=_doc("Directory of CNI network configuration files (*.conf, *.conflist)."),
    )
    bin_dirs: tuple[Path, ...] = attrs.field(
        default=(Path("/opt/cni/bin"), Path("/usr/lib/cni")),
        validator=_absolute_paths,
        metadata=_doc("Directories searched for CNI plugin binaries, in order."),
    )


@attrs.frozen(kw_only=True)
class MirrorConfig:
    """``[registry.mirrors."<host>"]``: mirrors tried before the registry ``<host>``."""

    endpoints: tuple[str, ...] = attrs.field(
        default=(),
        validator=_endpoints,
        metadata=_doc(
            "Mirror URLs (http:// or https://) tried in order before the registry itself, "
            "which is always the last resort."
        ),
    )


_MIRROR_EXAMPLE = """\
[registry.mirrors."docker.io"]
endpoints = ["https://mirror.gcr.io"]"""

_BACKENDS_EXAMPLE = """\
[backends.<name>]
some_key = "value\""""


@attrs.frozen(kw_only=True)
class RegistryConfig:
    """``[registry]``: how images are pulled."""

    insecure: tuple[str, ...] = attrs.field(
        default=(),
        validator=_hosts,
        metadata=_doc(
            "Registry hosts (name or name:port) that may be reached over plain HTTP or "
            "HTTPS with an unverified certificate. Registries on loopback addresses "
            "(localhost, 127.0.0.0/8, ::1) are plain-HTTP-capable without being listed, "
            "as Docker does."
        ),
    )
    mirrors: Mapping[str, MirrorConfig] = attrs.field(
        factory=dict,
        validator=_mirror_hosts,
        metadata=_doc(
            'Pull-through mirrors, one [registry.mirrors."<host>"] table per mirrored '
            "registry host (quote hosts that contain dots); none by default.",
            example=_MIRROR_EXAMPLE,
        ),
    )


@attrs.frozen(kw_only=True)
class MetricsConfig:
    """``[metrics]``: the Prometheus endpoint."""

    address: str = attrs.field(
        default="",
        validator=_listen_address,
        metadata=_doc(
            "host:port to serve Prometheus metrics on at /metrics, e.g. '127.0.0.1:9090' "
            "or '[::1]:9090' (an empty host listens on all addresses); empty turns "
            "metrics off."
        ),
    )


@attrs.frozen(kw_only=True)
class Config:
    """The whole configuration; ``Config()`` is the built-in default."""

    backend: str = attrs.field(
        default="runc",
        validator=_non_empty,
        metadata=_doc(
            "Name of the backend to serve, an entry point in the 'criadapt.backends' group "
            "('criadapt backends' lists the installed ones)."
        ),
    )
    listen: str = attrs.field(
        default="unix:///run/criadapt/criadapt.sock",
        validator=_unix_socket_url,
        metadata=_doc(
            "gRPC endpoint for the kubelet: unix:// followed by an absolute socket path."
        ),
    )
    root: Path = attrs.field(
        default=Path("/var/lib/criadapt"),
        validator=_absolute_path,
        metadata=_doc(
            "Directory of persistent state (images, container metadata); survives reboots."
        ),
    )
    state: Path = attrs.field(
        default=Path("/run/criadapt"),
        validator=_absolute_path,
        metadata=_doc("Directory of runtime state (sockets, pid files); may live on tmpfs."),
    )
    grace_period: float = attrs.field(
        default=10.0,
        validator=_grace_period,
        metadata=_doc(
            "Seconds that in-flight requests get to finish after SIGTERM before the server "
            "stops; 0 or more."
        ),
    )
    log_level: str = attrs.field(
        default="info",
        validator=_log_level,
        metadata=_doc(f"Log level, one of: {', '.join(LOG_LEVELS)}."),
    )
    streaming: StreamingConfig = attrs.field(
        factory=StreamingConfig,
        metadata=_doc("Streaming server for Exec, Attach and PortForward."),
    )
    cni: CniConfig = attrs.field(
        factory=CniConfig, metadata=_doc("Pod networking through CNI plugins.")
    )
    registry: RegistryConfig = attrs.field(
        factory=RegistryConfig, metadata=_doc("Image registries.")
    )
    metrics: MetricsConfig = attrs.field(
        factory=MetricsConfig, metadata=_doc("Prometheus metrics.")
    )
    backends: Mapping[str, Mapping[str, Any]] = attrs.field(
        factory=dict,
        metadata=_doc(
            "Backend-specific settings: one [backends.<name>] table per backend, whose keys "
            "that backend documents and checks itself; none by default.",
            example=_BACKENDS_EXAMPLE,
        ),
    )


# --- strict structuring ---------------------------------------------------------------------


def _toml_type(value: Any) -> str:
    """Name a parsed value by its TOML type, for messages."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, datetime.date | datetime.time):
        return "a date/time"
    return f"a {type(value).__name__}"


class _WrongType(TypeError):
    def __init__(self, expected: str, value: Any) -> None:
        shown = f" ({value!r})" if not isinstance(value, Mapping | list | tuple) else ""
        super().__init__(f"expected {expected}, got {_toml_type(value)}{shown}")


def _structure_str(value: Any, _: type) -> str:
    if not isinstance(value, str):
        raise _WrongType("a string", value)
    return value


def _structure_int(value: Any, _: type) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _WrongType("an integer", value)
    return value


def _structure_float(value: Any, _: type) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _WrongType("a number", value)
    return float(value)


def _structure_bool(value: Any, _: type) -> bool:
    if not isinstance(value, bool):
        raise _WrongType("a boolean (true or false)", value)
    return value


def _structure_path(value: Any, _: type) -> Path:
    if not isinstance(value, str):
        raise _WrongType("a path string", value)
    return Path(value)


def _checked(
    hook: Callable[[Any, Any], T], accepts: type | tuple[type, ...], expected: str
) -> Callable[[Any, Any], T]:
    def structure(value: Any, type_: Any) -> T:
        if not isinstance(value, accepts):
            raise _WrongType(expected, value)
        return hook(value, type_)

    return structure


def _attrs_hook(cl: Any, converter: cattrs.Converter) -> Callable[[Any, Any], Any]:
    return _checked(make_dict_structure_fn(cl, converter), Mapping, "a table")


def _sequence_hook(type_: Any, converter: cattrs.Converter) -> Callable[[Any, Any], Any]:
    # Without the check, a string would be structured as a sequence of its characters.
    if getattr(type_, "__origin__", None) is tuple:
        hook = homogenous_tuple_structure_factory(type_, converter)
    else:
        hook = list_structure_factory(type_, converter)
    return _checked(hook, (list, tuple), "an array")


def _mapping_hook(type_: Any, converter: cattrs.Converter) -> Callable[[Any, Any], Any]:
    return _checked(mapping_structure_factory(type_, converter), Mapping, "a table")


def make_converter() -> cattrs.Converter:
    """A strict converter for TOML data: no unknown keys, no type coercion.

    Strings, integers and booleans must have the TOML type their field declares; a float
    field also takes an integer (``grace_period = 5``); paths are strings; arrays must be
    arrays and tables tables. Backends may use it for their own sections, though
    :func:`backend_section` is usually all they need.
    """
    converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    converter.register_structure_hook(str, _structure_str)
    converter.register_structure_hook(int, _structure_int)
    converter.register_structure_hook(float, _structure_float)
    converter.register_structure_hook(bool, _structure_bool)
    converter.register_structure_hook(Path, _structure_path)
    converter.register_structure_hook_factory(attrs.has, _attrs_hook)
    converter.register_structure_hook_factory(is_mapping, _mapping_hook)
    converter.register_structure_hook_factory(is_sequence, _sequence_hook)
    return converter


_CONVERTER = make_converter()


# --- error translation ----------------------------------------------------------------------

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _toml_string(key)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _suggest(key: str, cl: type, path: str) -> str:
    if not attrs.has(cl):
        return ""
    names = [field.name for field in attrs.fields(cl)]
    close = difflib.get_close_matches(key, names, n=1)
    return f" (did you mean {_join(path, close[0])}?)" if close else ""


def _problems(exc: BaseException, path: str) -> list[tuple[str, str]]:
    """Flatten a cattrs error tree into ``(dotted key, problem)`` pairs."""
    if isinstance(exc, ClassValidationError):
        with_notes, without = exc.group_exceptions()
        found = []
        for sub, note in with_notes:
            found += _problems(sub, _join(path, _toml_key(note.name)))
        for sub in without:
            found += _problems(sub, path)
        return found
    if isinstance(exc, IterableValidationError):
        iter_notes, others = exc.group_exceptions()
        found = []
        for sub, inote in iter_notes:
            index = inote.index
            where = f"{path}[{index}]" if isinstance(index, int) else _join(path, _toml_key(index))
            found += _problems(sub, where)
        for sub in others:
            found += _problems(sub, path)
        return found
    if isinstance(exc, ForbiddenExtraKeysError):
        return [
            (_join(path, _toml_key(key)), "unknown key" + _suggest(key, exc.cl, path))
            for key in sorted(exc.extra_fields)
        ]
    if isinstance(exc, ConfigError) and exc.problems:
        return [(_join(path, key), problem) for key, problem in exc.problems]
    if isinstance(exc, KeyError):
        return [(path, "required key missing")]
    return [(path or "(top level)", str(exc) or type(exc).__name__)]


def _config_error(exc: BaseException, *, source: str | None, path: str = "") -> ConfigError:
    problems = _problems(exc, path)
    where = f"invalid configuration in {source}" if source else "invalid configuration"
    if len(problems) == 1:
        message = f"{where}: {problems[0][0]}: {problems[0][1]}"
    else:
        message = f"{where}:" + "".join(f"\n  {key}: {problem}" for key, problem in problems)
    return ConfigError(message, source=source, problems=problems)


def _structure(data: Any, cl: type[T], *, source: str | None, path: str = "") -> T:
    try:
        return _CONVERTER.structure(data, cl)
    except Exception as exc:  # cattrs wraps everything in ExceptionGroups; translate them all
        raise _config_error(exc, source=source, path=path) from exc


# --- loading ----------------------------------------------------------------------------------


def _split_key(key: str) -> list[str]:
    """Split a dotted key with TOML's own rules, so ``registry.mirrors."docker.io"`` works."""
    try:
        parsed: Any = tomllib.loads(f"{key} = 0")
    except tomllib.TOMLDecodeError:
        parsed = None
    parts: list[str] = []
    node = parsed
    while isinstance(node, dict) and len(node) == 1:
        [(part, node)] = node.items()
        parts.append(part)
    if not parts or node != 0 or "\n" in key:
        raise ConfigError(
            f"invalid override key {key!r}: expected a dotted key such as 'streaming.port'",
            source=_OVERRIDES_SOURCE,
            problems=[(key, "not a dotted key")],
        )
    return parts


def _plain(value: Any) -> Any:
    """Override values as TOML data: paths as strings, tuples as arrays."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    return value


def _apply_overrides(data: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = dict(data)
    for key, value in overrides.items():
        if value is None:
            continue
        *tables, leaf = _split_key(key)
        node = merged
        for depth, part in enumerate(tables):
            child = node.get(part, {})
            if not isinstance(child, Mapping):
                where = ".".join(_toml_key(p) for p in tables[: depth + 1])
                raise ConfigError(
                    f"invalid configuration in {_OVERRIDES_SOURCE}: cannot set {key!r}: "
                    f"{where} is not a table",
                    source=_OVERRIDES_SOURCE,
                    problems=[(where, "not a table")],
                )
            node[part] = dict(child)  # copy on the way down: never mutate the caller's data
            node = node[part]
        node[leaf] = _plain(value)
    return merged


def loads_config(
    text: str, *, source: str = "<string>", overrides: Mapping[str, Any] | None = None
) -> Config:
    """Parse TOML ``text`` into a :class:`Config`; ``source`` names it in errors."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{source}: TOML syntax error: {exc}", source=source, problems=[("", str(exc))]
        ) from exc
    return _from_data(data, source=source, overrides=overrides)


def _from_data(
    data: Mapping[str, Any], *, source: str, overrides: Mapping[str, Any] | None
) -> Config:
    config = _structure(data, Config, source=source)
    if overrides and any(value is not None for value in overrides.values()):
        # The file alone is valid, so whatever fails now came from the flags.
        config = _structure(_apply_overrides(data, overrides), Config, source=_OVERRIDES_SOURCE)
    return config


def load_config(
    path: str | os.PathLike[str] | None = None, *, overrides: Mapping[str, Any] | None = None
) -> Config:
    """Read the configuration: defaults, then the file at ``path``, then ``overrides``.

    ``path`` None reads :data:`DEFAULT_PATH` if it exists and uses the defaults otherwise;
    an explicit path must exist. ``overrides`` maps dotted keys to values from command-line
    flags (``{"backend": "fake", "streaming.port": 10010}``); None values are skipped (flag
    not given), paths may be :class:`os.PathLike`, and the values are checked like the
    file's. Raises :class:`ConfigError` naming the file and every bad key.
    """
    if path is None:
        if not DEFAULT_PATH.exists():
            return _from_data({}, source="defaults", overrides=overrides)
        path = DEFAULT_PATH
    source = os.fspath(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(
            f"configuration file not found: {source}", source=source, problems=[("", "not found")]
        ) from exc
    except OSError as exc:
        raise ConfigError(
            f"cannot read configuration file {source}: {exc.strerror or exc}",
            source=source,
            problems=[("", str(exc))],
        ) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{source}: not UTF-8 text: {exc}", source=source, problems=[("", str(exc))]
        ) from exc
    return loads_config(text, source=source, overrides=overrides)


def backend_section(config: Config, name: str, cls: type[T]) -> T:
    """Structure the ``[backends.<name>]`` table into the backend's attrs class ``cls``.

    A missing table gives ``cls()`` with its defaults. Unknown keys and wrong types raise
    :class:`ConfigError` naming ``backends.<name>.<key>``, exactly like the core keys.
    """
    data = config.backends.get(name, {})
    path = _join("backends", _toml_key(name))
    return _structure(data, cls, source=None, path=path)


def schema_keys() -> tuple[str, ...]:
    """Every dotted key of the schema, tables included, in file order.

    Keys under a mapping of tables use a placeholder: ``registry.mirrors.<host>.endpoints``,
    ``backends.<name>``.
    """
    keys: list[str] = []

    def walk(table: Any, prefix: str) -> None:
        for field in attrs.fields(type(table)):
            key = _join(prefix, field.name)
            keys.append(key)
            value = getattr(table, field.name)
            if attrs.has(type(value)):
                walk(value, key)
            elif field.name == "mirrors":
                walk(MirrorConfig(), f"{key}.<host>")
            elif field.name == "backends":
                keys.append(f"{key}.<name>")

    walk(Config(), "")
    return tuple(keys)


# --- TOML output ------------------------------------------------------------------------------

_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def _toml_string(text: str) -> str:
    chars = (
        _ESCAPES.get(ch) or (f"\\u{ord(ch):04x}" if ord(ch) < 0x20 or ord(ch) == 0x7F else ch)
        for ch in text
    )
    return '"' + "".join(chars) + '"'


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)  # repr of inf/nan is TOML's inf/nan
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, os.PathLike):
        return _toml_string(os.fspath(value))
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, Mapping):
        items = ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + items + " }" if items else "{}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _comment(text: str, out: list[str]) -> None:
    out.extend(f"# {line}" for line in textwrap.wrap(text, 90))


def _is_table(value: Any) -> bool:
    return attrs.has(type(value)) or isinstance(value, Mapping)


def _emit_table(table: Any, path: list[str], out: list[str]) -> None:
    """Write the keys of ``table`` (attrs instance or mapping), then its sub-tables."""
    if attrs.has(type(table)):
        entries = [
            (field.name, getattr(table, field.name), field.metadata)
            for field in attrs.fields(type(table))
        ]
    else:
        entries = [(key, value, {}) for key, value in table.items()]
    for key, value, metadata in entries:
        if not _is_table(value):
            if "doc" in metadata:
                _comment(metadata["doc"], out)
            out.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for key, value, metadata in entries:
        if not _is_table(value):
            continue
        sub = [*path, key]
        header = "[" + ".".join(_toml_key(part) for part in sub) + "]"
        out.append("")
        if "doc" in metadata:
            _comment(metadata["doc"], out)
        if attrs.has(type(value)) or "example" not in metadata:
            out.append(header)
            _emit_table(value, sub, out)
            continue
        # A mapping of tables (mirrors, backends): one table per entry, or the example.
        if not value:
            out.append("# For example:")
            out.extend(f"# {line}" for line in metadata["example"].splitlines())
        for index, (name, entry) in enumerate(value.items()):
            if index:
                out.append("")
            out.append(header[:-1] + "." + _toml_key(name) + "]")
            _emit_table(entry, [*sub, name], out)


def config_to_toml(config: Config) -> str:
    """``config`` as a TOML document, each key under a comment from its field's doc."""
    out = [
        "# criadapt configuration (TOML): https://toml.io",
        "# Every key is shown with its default value and may be left out.",
        "# Precedence: built-in defaults < this file < command-line flags.",
        "",
    ]
    _emit_table(config, [], out)
    return "\n".join(out) + "\n"


def default_config_toml() -> str:
    """The default configuration as commented TOML; loading it gives ``Config()``."""
    return config_to_toml(Config())
