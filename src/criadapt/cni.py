"""Pod networking through CNI plugins, shared by the runc, docker and podman backends.

:class:`CniManager` is a small, self-contained CNI runtime (what libcni and containerd's
go-cni do for containerd, ocicni for CRI-O):

* **Configuration.** The first file of ``conf_dir`` in lexical order with the suffix
  ``.conflist``, ``.conf`` or ``.json`` is *the* network (files that do not parse are skipped
  with a warning). A single-plugin ``.conf`` is wrapped into a list. The directory is
  re-scanned on every call, and files are re-parsed only when a name, size or mtime changed.
* **ADD** (:meth:`CniManager.setup`). ``loopback`` first, with a built-in configuration (as
  containerd does), then each plugin of the list in order, each given the previous plugin's
  result as ``prevResult``. Capability arguments (``portMappings``, ``dns``, ``cgroupPath``,
  ``io.kubernetes.cri.pod-annotations``) reach a plugin in ``runtimeConfig`` only when its
  ``capabilities`` map declares them. After success the list, the result, ``CNI_ARGS`` and the
  capability arguments are cached in ``<cache_dir>/<network>-<container_id>-<ifname>.json``
  (written atomically). If a plugin fails, the whole list is deleted again (reverse order),
  so that no IP address or veth is left behind, and :class:`CniError` is raised.
* **DEL** (:meth:`CniManager.teardown`). It uses the *cached* list and arguments, so it undoes
  exactly what ADD did even when ``conf_dir`` has changed since. Without a cache entry it
  falls back to the current configuration. When the network namespace is gone (file missing,
  or no longer a namespace), DEL still runs with an empty ``CNI_NETNS`` so that IPAM plugins
  release the address. DEL is idempotent: a successful DEL removes the cache entry, and see
  :func:`is_not_found` for the plugin errors that DEL tolerates.
* **CHECK** (:meth:`CniManager.check`) runs CHECK with the cached list and result (CNI 0.4.0+).

Plugins run as plain subprocesses (no shell) with a pipe as stdin, a timeout per call (the
plugin's whole process group is killed), and the CNI error JSON (``code``, ``msg``,
``details``) is turned into the message of :class:`CniError`. All methods are thread-safe;
calls for the same container are serialized, calls for different containers run in parallel.
"""

from __future__ import annotations

import contextlib
import copy
import ipaddress
import json
import logging
import os
import re
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from criadapt.errors import InvalidArgument, Unavailable

__all__ = [
    "CONF_SUFFIXES",
    "LOOPBACK_CONF",
    "NOT_READY_REASON",
    "CniError",
    "CniManager",
    "NetworkAttachment",
    "PortMapping",
    "is_not_found",
    "sandbox_ips",
]

log = logging.getLogger("criadapt.cni")

#: suffixes of configuration files, as libcni and containerd's go-cni read them
CONF_SUFFIXES = (".conf", ".conflist", ".json")
#: the built-in configuration of the loopback plugin, run before the configured network
LOOPBACK_CONF: Mapping[str, Any] = {
    "cniVersion": "1.0.0",
    "name": "cni-loopback",
    "type": "loopback",
}
#: ``NetworkReady`` reason when the network is not usable (containerd's wording)
NOT_READY_REASON = "NetworkPluginNotReady"

#: CNI error code 3: "container unknown or does not exist"
CNI_CODE_NOT_EXIST = 3
#: texts of plugin error messages that mean "already gone" (see :func:`is_not_found`)
_NOT_FOUND_TEXTS = ("not found", "no such file or directory", "does not exist", "no such device")
#: container ids and network names as libcni validates them (they end up in file names)
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")
_CACHE_KIND = "criadaptCniCacheV1"
_ANNOTATIONS_CAPABILITY = "io.kubernetes.cri.pod-annotations"
_PROTOCOLS = frozenset({"tcp", "udp", "sctp"})
_STDERR_TAIL = 2000


class CniError(Unavailable):
    """A CNI operation failed: no configuration, a missing plugin, or a plugin error.

    For a plugin that exited non-zero, ``cni_code``, ``cni_msg`` and ``cni_details`` hold its
    CNI error JSON (``cni_code`` is None when it printed none); ``plugin`` is its type.
    """

    def __init__(
        self,
        message: str,
        *,
        plugin: str = "",
        cni_code: int | None = None,
        cni_msg: str = "",
        cni_details: str = "",
        plugin_failed: bool = False,
    ) -> None:
        super().__init__(message)
        self.plugin = plugin
        self.cni_code = cni_code
        self.cni_msg = cni_msg
        self.cni_details = cni_details
        #: True when the plugin ran and reported an error (not a timeout, not a missing binary)
        self.plugin_failed = plugin_failed


def _lower(value: object) -> str:
    return str(value).lower()


def _check_protocol(_instance: object, _attribute: object, value: str) -> None:
    if value not in _PROTOCOLS:
        raise InvalidArgument(f"port mapping protocol {value!r} is not tcp, udp or sctp")


@attrs.frozen
class PortMapping:
    """A host port forwarded to the pod (CRI ``PortMapping``; given to ``portMappings``)."""

    host_port: int
    container_port: int
    #: "tcp", "udp" or "sctp" (any case is accepted and lowered)
    protocol: str = attrs.field(default="tcp", converter=_lower, validator=_check_protocol)
    host_ip: str = ""

    def to_cni(self) -> dict[str, Any]:
        """The ``portMappings`` entry of the CNI convention."""
        entry: dict[str, Any] = {
            "hostPort": self.host_port,
            "containerPort": self.container_port,
            "protocol": self.protocol,
        }
        if self.host_ip:
            entry["hostIP"] = self.host_ip
        return entry


@attrs.frozen
class NetworkAttachment:
    """What CNI ADD gave a pod."""

    network_name: str
    interface: str
    #: addresses of the interface in the pod's netns, without prefix length, IPv4 first
    ips: tuple[str, ...]
    #: the final plugin result (CNI result JSON, in the version of the configuration)
    result: Mapping[str, Any] = attrs.field(hash=False)

    @property
    def primary_ip(self) -> str:
        """The first address ("" when the plugins assigned none)."""
        return self.ips[0] if self.ips else ""


@attrs.frozen
class _Network:
    name: str
    cni_version: str
    conflist: Mapping[str, Any]
    source: Path


@attrs.frozen
class _Invocation:
    """Everything but the command that one run of a plugin list needs."""

    container_id: str
    netns: str
    ifname: str
    cni_args: tuple[tuple[str, str], ...]
    capability_args: Mapping[str, Any]


class _RefLock:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0


def is_not_found(error: CniError) -> bool:
    """Whether a DEL error only says that what DEL would remove is already gone.

    DEL tolerates exactly these: a plugin that *ran* and reported CNI error code 3
    ("container unknown or does not exist"), or whose message or details contain
    "not found", "no such file or directory", "does not exist" or "no such device" (the
    netlink and file errors of a link, netns, chain or IPAM entry that is already removed).
    A missing plugin binary, a timeout, undecodable output or any other error is never
    tolerated: the cache entry stays and the caller must retry.
    """
    if not error.plugin_failed:
        return False
    if error.cni_code == CNI_CODE_NOT_EXIST:
        return True
    text = f"{error.cni_msg} {error.cni_details}".lower()
    return any(fragment in text for fragment in _NOT_FOUND_TEXTS)


def _version_tuple(version: str) -> tuple[int, ...]:
    if not version:
        return (0, 1, 0)  # what plugins assume when cniVersion is missing
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        return (0, 0, 0)


def _same_path(left: str, right: str) -> bool:
    if left == right:
        return True
    try:
        return os.path.realpath(left) == os.path.realpath(right)
    except OSError:  # pragma: no cover - realpath rarely fails
        return False


def _strip_prefix(address: str) -> str | None:
    try:
        return str(ipaddress.ip_interface(address.strip()).ip)
    except ValueError:
        return None


def sandbox_ips(result: Mapping[str, Any], netns: str) -> tuple[str, ...]:
    """The pod's addresses in a CNI result: IPv4 first, then IPv6, no prefix length.

    For 0.3.0+ results these are the ``ips`` whose ``interface`` index names an interface
    whose ``sandbox`` is ``netns``; when no interface matches, the ``ips`` that name no
    interface at all. For 0.1.0/0.2.0 results, ``ip4.ip`` and ``ip6.ip``.
    """
    candidates: list[str] = []
    if "ips" in result or "interfaces" in result:
        interfaces = result.get("interfaces") or []
        in_sandbox = {
            index
            for index, interface in enumerate(interfaces)
            if isinstance(interface, Mapping)
            and isinstance(interface.get("sandbox"), str)
            and interface["sandbox"]
            and _same_path(interface["sandbox"], netns)
        }
        matched: list[str] = []
        unassigned: list[str] = []
        for entry in result.get("ips") or []:
            if not isinstance(entry, Mapping) or not isinstance(entry.get("address"), str):
                continue
            index = entry.get("interface")
            if index is None:
                unassigned.append(entry["address"])
            elif isinstance(index, int) and index in in_sandbox:
                matched.append(entry["address"])
        candidates = matched or unassigned
    else:
        for key in ("ip4", "ip6"):
            entry = result.get(key)
            if isinstance(entry, Mapping) and isinstance(entry.get("ip"), str):
                candidates.append(entry["ip"])
    addresses: list[str] = []
    for candidate in candidates:
        address = _strip_prefix(candidate)
        if address is not None and address not in addresses:
            addresses.append(address)
    return tuple(sorted(addresses, key=lambda a: ipaddress.ip_address(a).version))


def _describe(plugin: Mapping[str, Any], network: str) -> str:
    return f"type={plugin.get('type')!r} name={network!r}"


def _error_text(stdout: bytes, stderr: bytes) -> tuple[int | None, str, str]:
    """(code, msg, details) of a failed plugin: its CNI error JSON, or its raw output."""
    text = stdout.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text) if text else None
    except ValueError:
        data = None
    if isinstance(data, Mapping) and ("msg" in data or "code" in data):
        code = data.get("code")
        return (
            code if isinstance(code, int) else None,
            str(data.get("msg") or ""),
            str(data.get("details") or ""),
        )
    raw = text or stderr.decode("utf-8", "replace").strip()
    return None, raw[-_STDERR_TAIL:] or "no output", ""


class CniManager:
    """Sets up and tears down pod networks with the CNI plugins of one configuration dir."""

    def __init__(
        self,
        conf_dir: Path,
        bin_dirs: Sequence[Path],
        *,
        cache_dir: Path,
        interface: str = "eth0",
        timeout: float = 60.0,
    ) -> None:
        if not interface or len(interface) > 15 or any(c in interface for c in "/: \t\n"):
            raise InvalidArgument(f"invalid interface name {interface!r}")
        if timeout <= 0:
            raise InvalidArgument("CNI timeout must be positive")
        self.conf_dir = Path(conf_dir)
        self.bin_dirs = tuple(Path(d) for d in bin_dirs)
        self.cache_dir = Path(cache_dir)
        self.interface = interface
        self.timeout = timeout
        self._conf_lock = threading.Lock()
        self._signature: object = object()  # never equal to a real signature
        self._network: _Network | None = None
        self._load_errors: tuple[str, ...] = ()
        self._locks_guard = threading.Lock()
        self._locks: dict[str, _RefLock] = {}

    # ---- configuration -------------------------------------------------------------------

    def network(self) -> tuple[str, Mapping[str, Any]] | None:
        """(name, conflist) of the configured network, or None when there is none."""
        network = self._current()
        if network is None:
            return None
        return network.name, copy.deepcopy(dict(network.conflist))

    def status(self) -> tuple[bool, str, str]:
        """(ready, reason, message) for the CRI ``NetworkReady`` condition."""
        network = self._current()
        if network is None:
            message = f"no network config found in {self.conf_dir}"
            if self._load_errors:
                message += " (skipped: " + "; ".join(self._load_errors) + ")"
            return False, NOT_READY_REASON, message
        types = [str(LOOPBACK_CONF["type"])]
        types += [str(plugin["type"]) for plugin in network.conflist["plugins"]]
        for plugin_type in types:
            if self._find_plugin(plugin_type) is None:
                return False, NOT_READY_REASON, self._missing_plugin_message(plugin_type)
        return True, "", ""

    def _current(self) -> _Network | None:
        with self._conf_lock:
            signature = self._scan_signature()
            if signature != self._signature:
                self._network, self._load_errors = self._load()
                self._signature = signature
                if self._network is not None:
                    log.info("CNI network %r from %s", self._network.name, self._network.source)
            return self._network

    def _conf_files(self) -> list[os.DirEntry[str]]:
        try:
            entries = list(os.scandir(self.conf_dir))
        except OSError:
            return []
        files = [
            entry
            for entry in entries
            if entry.name.endswith(CONF_SUFFIXES) and entry.is_file(follow_symlinks=True)
        ]
        return sorted(files, key=lambda entry: entry.name)

    def _scan_signature(self) -> object:
        try:
            dir_mtime = os.stat(self.conf_dir).st_mtime_ns
        except OSError:
            return None
        parts: list[tuple[str, int, int, int]] = []
        for entry in self._conf_files():
            try:
                st = entry.stat(follow_symlinks=True)
            except OSError:
                continue
            parts.append((entry.name, st.st_mtime_ns, st.st_size, st.st_ino))
        return dir_mtime, tuple(parts)

    def _load(self) -> tuple[_Network | None, tuple[str, ...]]:
        errors: list[str] = []
        for entry in self._conf_files():
            path = Path(entry.path)
            try:
                return _parse_conf_file(path), tuple(errors)
            except (OSError, ValueError) as exc:
                log.warning("skipping CNI config %s: %s", path, exc)
                errors.append(f"{path.name}: {exc}")
        return None, tuple(errors)

    def _find_plugin(self, plugin_type: str) -> Path | None:
        if not plugin_type or "/" in plugin_type or plugin_type in (".", ".."):
            return None
        for directory in self.bin_dirs:
            candidate = directory / plugin_type
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return candidate
        return None

    def _missing_plugin_message(self, plugin_type: str) -> str:
        dirs = ":".join(str(d) for d in self.bin_dirs)
        return f"cni plugin {plugin_type} not found in {dirs}"

    # ---- public operations ---------------------------------------------------------------

    def setup(
        self,
        *,
        container_id: str,
        netns: str,
        pod_name: str,
        pod_namespace: str,
        pod_uid: str,
        port_mappings: Sequence[PortMapping] = (),
        dns: Mapping[str, Any] | None = None,
        cgroup_path: str = "",
        annotations: Mapping[str, str] | None = None,
    ) -> NetworkAttachment:
        """CNI ADD: loopback, then the configured network, in the network namespace ``netns``.

        Raises :class:`CniError` (after undoing what was added) when there is no
        configuration, a plugin is missing or a plugin fails.
        """
        _check_name("container id", container_id)
        if not _is_netns(netns):
            raise CniError(f"network namespace {netns!r} does not exist")
        network = self._current()
        if network is None:
            raise CniError(f"no network config found in {self.conf_dir}")
        capability_args: dict[str, Any] = {
            "portMappings": [mapping.to_cni() for mapping in port_mappings if mapping.host_port > 0]
        }
        if dns is not None:
            capability_args["dns"] = {
                key: list(dns.get(key) or []) for key in ("servers", "searches", "options")
            }
        if cgroup_path:
            capability_args["cgroupPath"] = cgroup_path
        if annotations is not None:
            capability_args[_ANNOTATIONS_CAPABILITY] = dict(annotations)
        invocation = _Invocation(
            container_id=container_id,
            netns=netns,
            ifname=self.interface,
            cni_args=_cni_args(container_id, pod_name, pod_namespace, pod_uid),
            capability_args=capability_args,
        )
        with self._container_lock(container_id):
            loopback = self._loopback_invocation(invocation, netns)
            self._run_plugin(LOOPBACK_CONF, "cni-loopback", "1.0.0", "ADD", loopback, None)
            try:
                result = self._add_list(network, invocation)
                self._write_cache(network, invocation, result)
            except BaseException as exc:
                notes = self._rollback(network, invocation)
                if isinstance(exc, CniError) and notes:
                    exc.message += " (cleanup after the failure: " + "; ".join(notes) + ")"
                    exc.args = (exc.message,)
                if isinstance(exc, OSError):
                    raise CniError(
                        f"cannot cache the CNI result of network {network.name!r}: {exc}"
                    ) from exc
                raise
        ips = sandbox_ips(result, netns)
        return NetworkAttachment(
            network_name=network.name, interface=self.interface, ips=ips, result=result
        )

    def teardown(
        self,
        *,
        container_id: str,
        netns: str | None,
        pod_name: str = "",
        pod_namespace: str = "",
        pod_uid: str = "",
        port_mappings: Sequence[PortMapping] = (),
    ) -> None:
        """CNI DEL of the pod's network, then of loopback; idempotent.

        Uses the cached configuration and arguments of the ADD when there is a cache entry,
        the current configuration and the given arguments otherwise (only loopback's DEL when
        there is neither). A ``netns`` that is None, missing or no longer a network namespace
        runs DEL with an empty ``CNI_NETNS`` (plugins then release IPAM and host-side state).
        Raises :class:`CniError` when a plugin fails with an error that :func:`is_not_found`
        does not tolerate; the cache entry then stays for the retry.
        """
        _check_name("container id", container_id)
        netns_path = netns if netns and _is_netns(netns) else ""
        with self._container_lock(container_id):
            entries = self._read_cache_entries(container_id)
            if entries:
                for cache_path, network, cached, result in entries:
                    self._del_list(network, attrs.evolve(cached, netns=netns_path), result)
                    with contextlib.suppress(FileNotFoundError):
                        cache_path.unlink()
                identity = entries[0][2]
            else:
                identity = _Invocation(
                    container_id=container_id,
                    netns=netns_path,
                    ifname=self.interface,
                    cni_args=_cni_args(container_id, pod_name, pod_namespace, pod_uid),
                    capability_args={
                        "portMappings": [m.to_cni() for m in port_mappings if m.host_port > 0]
                    },
                )
                current = self._current()
                if current is None:
                    log.info(
                        "CNI DEL of %s: no cached attachment and no network config, "
                        "only loopback to undo",
                        container_id,
                    )
                else:
                    self._del_list(current, identity, None)
            self._del_loopback(self._loopback_invocation(identity, netns_path))

    def check(
        self,
        *,
        container_id: str,
        netns: str,
        pod_name: str = "",
        pod_namespace: str = "",
        pod_uid: str = "",
    ) -> None:
        """CNI CHECK of the cached attachment (and of loopback).

        A no-op for configurations older than CNI 0.4.0 or with ``disableCheck``. Raises
        :class:`CniError` when there is no cached attachment, the namespace is gone or a
        plugin reports a problem. The identity arguments are used only for a cache entry
        written without ``CNI_ARGS``. Note: portmap 1.1.1 fails CHECK for every IPv4-only pod
        (it looks for an ip6tables chain; containernetworking/plugins#819).
        """
        _check_name("container id", container_id)
        if not _is_netns(netns):
            raise CniError(f"network namespace {netns!r} does not exist")
        with self._container_lock(container_id):
            entries = self._read_cache_entries(container_id)
            if not entries:
                raise CniError(f"no cached CNI attachment of container {container_id}")
            for _path, network, cached, result in entries:
                invocation = attrs.evolve(
                    cached,
                    netns=netns,
                    cni_args=cached.cni_args
                    or _cni_args(container_id, pod_name, pod_namespace, pod_uid),
                )
                if _version_tuple(network.cni_version) < (0, 4, 0):
                    continue
                if network.conflist.get("disableCheck") is True:
                    continue
                for plugin in network.conflist["plugins"]:
                    self._run_plugin(
                        plugin, network.name, network.cni_version, "CHECK", invocation, result
                    )
            loopback = self._loopback_invocation(entries[0][2], netns)
            self._run_plugin(LOOPBACK_CONF, "cni-loopback", "1.0.0", "CHECK", loopback, None)

    # ---- plugin lists --------------------------------------------------------------------

    def _add_list(self, network: _Network, invocation: _Invocation) -> Mapping[str, Any]:
        result: Mapping[str, Any] | None = None
        for plugin in network.conflist["plugins"]:
            output = self._run_plugin(
                plugin, network.name, network.cni_version, "ADD", invocation, result
            )
            if output is None:
                log.warning(
                    "CNI plugin %s printed no result on ADD; keeping the previous one",
                    _describe(plugin, network.name),
                )
            else:
                result = output
        return result if result is not None else {"cniVersion": network.cni_version}

    def _del_list(
        self,
        network: _Network,
        invocation: _Invocation,
        prev_result: Mapping[str, Any] | None,
    ) -> None:
        """DEL of every plugin in reverse order; raises the first error not tolerated."""
        if _version_tuple(network.cni_version) < (0, 4, 0):
            prev_result = None  # prevResult on DEL exists since CNI 0.4.0
        failures: list[CniError] = []
        for plugin in reversed(network.conflist["plugins"]):
            try:
                self._run_plugin(
                    plugin, network.name, network.cni_version, "DEL", invocation, prev_result
                )
            except CniError as exc:
                if is_not_found(exc):
                    log.info("tolerated CNI DEL error (already gone): %s", exc)
                else:
                    failures.append(exc)
        if failures:
            if len(failures) > 1:
                first = failures[0]
                first.message += "; also: " + "; ".join(str(f) for f in failures[1:])
                first.args = (first.message,)
            raise failures[0]

    def _rollback(self, network: _Network, invocation: _Invocation) -> list[str]:
        """Undo a failed ADD: DEL of the whole list and of loopback; returns the errors."""
        notes: list[str] = []
        try:
            self._del_list(network, invocation, None)
        except CniError as exc:
            log.error("CNI DEL after a failed ADD of %s failed: %s", invocation.container_id, exc)
            notes.append(str(exc))
        self._del_loopback(self._loopback_invocation(invocation, invocation.netns))
        with contextlib.suppress(OSError):
            self._cache_path(network.name, invocation.container_id).unlink()
        return notes

    @staticmethod
    def _loopback_invocation(invocation: _Invocation, netns: str) -> _Invocation:
        return _Invocation(
            container_id=invocation.container_id,
            netns=netns,
            ifname="lo",
            cni_args=invocation.cni_args,
            capability_args={},
        )

    def _del_loopback(self, loopback: _Invocation) -> None:
        """DEL of loopback; errors are logged, never raised (the netns is going away)."""
        try:
            self._run_plugin(LOOPBACK_CONF, "cni-loopback", "1.0.0", "DEL", loopback, None)
        except CniError as exc:
            log.warning("ignored CNI loopback DEL error: %s", exc)

    # ---- one plugin ----------------------------------------------------------------------

    def _run_plugin(
        self,
        plugin: Mapping[str, Any],
        network_name: str,
        cni_version: str,
        command: str,
        invocation: _Invocation,
        prev_result: Mapping[str, Any] | None,
    ) -> dict[str, Any] | None:
        """Run one plugin; its parsed stdout (None when empty) or :class:`CniError`."""
        plugin_type = str(plugin.get("type", ""))
        what = f"plugin {_describe(plugin, network_name)} failed ({command.lower()})"
        path = self._find_plugin(plugin_type)
        if path is None:
            raise CniError(
                f"{what}: {self._missing_plugin_message(plugin_type)}", plugin=plugin_type
            )
        stdin = json.dumps(
            _plugin_config(plugin, network_name, cni_version, prev_result, invocation)
        ).encode()
        env = {key: value for key, value in os.environ.items() if not key.startswith("CNI_")}
        env.update(
            CNI_COMMAND=command,
            CNI_CONTAINERID=invocation.container_id,
            CNI_NETNS=invocation.netns,
            CNI_IFNAME=invocation.ifname,
            CNI_ARGS=";".join(f"{key}={value}" for key, value in invocation.cni_args),
            CNI_PATH=":".join(str(d) for d in self.bin_dirs),
        )
        try:
            proc = subprocess.Popen(
                [str(path)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                close_fds=True,
                start_new_session=True,  # a timeout kills the plugin and its children
            )
        except OSError as exc:
            raise CniError(f"{what}: cannot run {path}: {exc}", plugin=plugin_type) from exc
        try:
            stdout, stderr = proc.communicate(stdin, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise CniError(
                f"{what}: timed out after {self.timeout:g}s", plugin=plugin_type
            ) from None
        except BaseException:
            _kill_group(proc)
            raise
        if proc.returncode != 0:
            code, msg, details = _error_text(stdout, stderr)
            text = msg + (f": {details}" if details else "")
            if code is not None:
                text += f" (CNI error code {code})"
            else:
                text += f" (exit status {proc.returncode})"
            raise CniError(
                f"{what}: {text}",
                plugin=plugin_type,
                cni_code=code,
                cni_msg=msg,
                cni_details=details,
                plugin_failed=True,
            )
        if stderr.strip():
            log.debug("CNI plugin %s %s stderr: %s", plugin_type, command, stderr[-_STDERR_TAIL:])
        if command != "ADD" or not stdout.strip():
            return None
        try:
            result = json.loads(stdout)
        except ValueError as exc:
            raise CniError(f"{what}: invalid result JSON: {exc}", plugin=plugin_type) from exc
        if not isinstance(result, dict):
            raise CniError(f"{what}: result is not a JSON object", plugin=plugin_type)
        return result

    # ---- cache ---------------------------------------------------------------------------

    def _cache_path(self, network_name: str, container_id: str) -> Path:
        return self.cache_dir / f"{network_name}-{container_id}-{self.interface}.json"

    def _write_cache(
        self, network: _Network, invocation: _Invocation, result: Mapping[str, Any]
    ) -> None:
        entry = {
            "kind": _CACHE_KIND,
            "containerId": invocation.container_id,
            "networkName": network.name,
            "ifName": invocation.ifname,
            "netns": invocation.netns,
            "config": network.conflist,
            "source": str(network.source),
            "cniArgs": [list(pair) for pair in invocation.cni_args],
            "capabilityArgs": invocation.capability_args,
            "result": result,
        }
        self.cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        target = self._cache_path(network.name, invocation.container_id)
        fd, temp = tempfile.mkstemp(dir=self.cache_dir, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(entry, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise

    def _read_cache_entries(
        self, container_id: str
    ) -> list[tuple[Path, _Network, _Invocation, Mapping[str, Any] | None]]:
        """Cache entries of this container and interface (normally at most one)."""
        suffix = f"-{container_id}-{self.interface}.json"
        found: list[tuple[Path, _Network, _Invocation, Mapping[str, Any] | None]] = []
        try:
            names = sorted(os.listdir(self.cache_dir))
        except OSError:
            return found
        for name in names:
            if not name.endswith(suffix) or name.startswith("."):
                continue
            path = self.cache_dir / name
            try:
                entry = json.loads(path.read_text(encoding="utf-8"))
                if not isinstance(entry, dict) or entry.get("kind") != _CACHE_KIND:
                    raise ValueError("not a criadapt CNI cache entry")
                if entry.get("containerId") != container_id or entry.get("ifName") != (
                    self.interface
                ):
                    continue  # a longer container id or network name that happens to match
                conflist = _validate_conflist(entry["config"])
                network = _Network(
                    name=conflist["name"],
                    cni_version=conflist.get("cniVersion", ""),
                    conflist=conflist,
                    source=Path(str(entry.get("source", path))),
                )
                invocation = _Invocation(
                    container_id=container_id,
                    netns=str(entry.get("netns", "")),
                    ifname=self.interface,
                    cni_args=tuple(
                        (str(pair[0]), str(pair[1])) for pair in entry.get("cniArgs") or []
                    ),
                    capability_args=dict(entry.get("capabilityArgs") or {}),
                )
                result = entry.get("result")
            except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
                log.warning("ignoring unreadable CNI cache entry %s: %s", path, exc)
                continue
            found.append((path, network, invocation, result if isinstance(result, dict) else None))
        return found

    # ---- locks ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _container_lock(self, container_id: str) -> Iterator[None]:
        with self._locks_guard:
            ref = self._locks.get(container_id)
            if ref is None:
                ref = self._locks[container_id] = _RefLock()
            ref.users += 1
        try:
            with ref.lock:
                yield
        finally:
            with self._locks_guard:
                ref.users -= 1
                if ref.users == 0:
                    del self._locks[container_id]


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        proc.kill()
    try:
        proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:  # a grandchild escaped the group and holds the pipes
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        proc.wait()


def _plugin_config(
    plugin: Mapping[str, Any],
    network_name: str,
    cni_version: str,
    prev_result: Mapping[str, Any] | None,
    invocation: _Invocation,
) -> dict[str, Any]:
    """The stdin of one plugin: its configuration with name, version, prevResult injected."""
    config = dict(plugin)
    config["name"] = network_name
    config["cniVersion"] = cni_version
    if prev_result is not None:
        config["prevResult"] = prev_result
    capabilities = plugin.get("capabilities")
    runtime_config: dict[str, Any] = {}
    if isinstance(capabilities, Mapping):
        for capability, enabled in capabilities.items():
            if enabled is True and capability in invocation.capability_args:
                runtime_config[capability] = invocation.capability_args[capability]
    if runtime_config:
        config["runtimeConfig"] = runtime_config
    return config


def _cni_args(
    container_id: str, pod_name: str, pod_namespace: str, pod_uid: str
) -> tuple[tuple[str, str], ...]:
    return (
        ("IgnoreUnknown", "1"),
        ("K8S_POD_NAMESPACE", pod_namespace),
        ("K8S_POD_NAME", pod_name),
        ("K8S_POD_INFRA_CONTAINER_ID", container_id),
        ("K8S_POD_UID", pod_uid),
    )


def _check_name(what: str, value: str) -> None:
    if not _NAME_RE.match(value):
        raise InvalidArgument(f"invalid {what} {value!r} for CNI")


_nsfs_dev: int | None = None


def _is_netns(path: str) -> bool:
    """Whether ``path`` is a network namespace (an nsfs file, e.g. a bind mount)."""
    global _nsfs_dev  # noqa: PLW0603 - cached device of the nsfs pseudo filesystem
    if not path:
        return False
    try:
        if _nsfs_dev is None:
            _nsfs_dev = os.stat("/proc/self/ns/net").st_dev
        return os.stat(path).st_dev == _nsfs_dev
    except OSError:
        return False


def _validate_conflist(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    name = data.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"invalid or missing network name {name!r}")
    version = data.get("cniVersion", "")
    if not isinstance(version, str):
        raise ValueError("cniVersion is not a string")
    plugins = data.get("plugins")
    if not isinstance(plugins, list) or not plugins:
        raise ValueError("no plugins in the network configuration list")
    for plugin in plugins:
        if not isinstance(plugin, dict):
            raise ValueError("a plugin configuration is not a JSON object")
        plugin_type = plugin.get("type")
        if not isinstance(plugin_type, str) or not plugin_type:
            raise ValueError("a plugin has no type")
    return data


def _parse_conf_file(path: Path) -> _Network:
    data = json.loads(path.read_bytes())
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    if not path.name.endswith(".conflist") and "plugins" not in data:
        if not isinstance(data.get("type"), str) or not data["type"]:
            raise ValueError("network type not found")
        # a single plugin configuration: wrap it into a list, as libcni does
        data = {
            "cniVersion": data.get("cniVersion", ""),
            "name": data.get("name"),
            "plugins": [data],
        }
    conflist = _validate_conflist(data)
    return _Network(
        name=conflist["name"],
        cni_version=conflist.get("cniVersion", ""),
        conflist=conflist,
        source=path,
    )
