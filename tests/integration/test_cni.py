"""criadapt.cni against the real CNI plugins (bridge, host-local, portmap, loopback).

Tests marked ``needs_root`` create their own network namespaces (``ip netns add``), a bridge
with a unique name and a 10.89.N.0/24 subnet that nothing on the host uses, keep host-local's
state under ``tmp_path`` and remove all of it in ``finally`` blocks / fixture teardown. The
other tests use fake plugins (scripts in a temporary bin dir, including a fake ``loopback``,
so that nothing ever touches the host's own network namespace).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from criadapt.cni import (
    CniError,
    CniManager,
    NetworkAttachment,
    PortMapping,
    is_not_found,
    sandbox_ips,
)
from criadapt.errors import InvalidArgument

PLUGINS = Path("/usr/lib/cni")
BUSYBOX = Path("/bin/busybox")
HOST_NETNS = "/proc/self/ns/net"  # only ever given to fake plugins

needs_root = pytest.mark.skipif(
    os.geteuid() != 0
    or not (PLUGINS / "bridge").is_file()
    or shutil.which("ip") is None
    or shutil.which("nsenter") is None,
    reason="needs root, iproute2, nsenter and containernetworking-plugins in /usr/lib/cni",
)
pytestmark = pytest.mark.integration


def run(*args: str, check: bool = True) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}): {proc.stderr}")
    return proc.stdout


# ---- fixtures: a private network per test ---------------------------------------------------


class Net:
    """One test's network: bridge name, subnet, dirs, conflists and managers."""

    def __init__(self, tmp_path: Path, octet: int) -> None:
        self.tmp = tmp_path
        self.octet = octet
        self.subnet = ipaddress.ip_network(f"10.89.{octet}.0/24")
        self.bridge = f"cnit{uuid.uuid4().hex[:8]}"
        self.conf_dir = tmp_path / "net.d"
        self.cache_dir = tmp_path / "cache"
        self.data_dir = tmp_path / "ipam"
        self.conf_dir.mkdir()
        self.name = "cnitest"
        self.bridges = [self.bridge]
        self.attached: list[tuple[CniManager, str, str]] = []

    def bridge_plugin(
        self, *, bridge: str | None = None, data_dir: Path | None = None, subnet: str = ""
    ) -> dict[str, Any]:
        return {
            "type": "bridge",
            "bridge": bridge or self.bridge,
            "isGateway": True,
            "ipMasq": False,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": subnet or str(self.subnet)}]],
                "dataDir": str(data_dir or self.data_dir),
            },
        }

    def conflist(
        self, *, name: str = "", portmap: bool = True, extra: tuple[dict[str, Any], ...] = ()
    ) -> dict[str, Any]:
        plugins = [self.bridge_plugin(), *extra]
        if portmap:
            plugins.append({"type": "portmap", "capabilities": {"portMappings": True}})
        return {"cniVersion": "1.0.0", "name": name or self.name, "plugins": plugins}

    def write(self, conflist: Mapping[str, Any], filename: str = "10-test.conflist") -> Path:
        path = self.conf_dir / filename
        path.write_text(json.dumps(conflist))
        return path

    def manager(self, *bin_dirs: Path, timeout: float = 30.0) -> CniManager:
        return CniManager(
            self.conf_dir, bin_dirs or (PLUGINS,), cache_dir=self.cache_dir, timeout=timeout
        )

    def setup(self, mgr: CniManager, netns: str, **kw: Any) -> NetworkAttachment:
        container_id = kw.pop("container_id", uuid.uuid4().hex)
        self.attached.append((mgr, container_id, netns))
        return mgr.setup(
            container_id=container_id,
            netns=netns,
            pod_name=kw.pop("pod_name", "pod"),
            pod_namespace=kw.pop("pod_namespace", "default"),
            pod_uid=kw.pop("pod_uid", "uid-1"),
            **kw,
        )

    def allocated(self, network: str = "", data_dir: Path | None = None) -> set[str]:
        """IP addresses host-local holds (its state files named after addresses)."""
        folder = (data_dir or self.data_dir) / (network or self.name)
        if not folder.is_dir():
            return set()
        found = set()
        for entry in folder.iterdir():
            with contextlib.suppress(ValueError):
                found.add(str(ipaddress.ip_address(entry.name)))
        return found


def free_octet() -> int:
    """A 10.89.N.0/24 that no address or route of the host uses now."""
    used = run("ip", "-o", "addr") + run("ip", "route")
    candidates = [n for n in range(100, 250) if f"10.89.{n}." not in used]
    return random.choice(candidates)


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    network = Net(tmp_path, free_octet() if os.geteuid() == 0 else 250)
    try:
        yield network
    finally:
        for mgr, container_id, netns in network.attached:
            with contextlib.suppress(CniError):
                mgr.teardown(container_id=container_id, netns=netns)
        if os.geteuid() == 0 and shutil.which("ip"):
            for bridge in network.bridges:
                run("ip", "link", "delete", bridge, check=False)


@pytest.fixture
def netns() -> Iterator[Callable[[], str]]:
    created: list[str] = []

    def make() -> str:
        name = f"cnit-{uuid.uuid4().hex[:10]}"
        run("ip", "netns", "add", name)
        created.append(name)
        return f"/run/netns/{name}"

    try:
        yield make
    finally:
        for name in created:
            run("ip", "netns", "delete", name, check=False)


def in_netns(path: str, *args: str, check: bool = True) -> str:
    return run("nsenter", f"--net={path}", *args, check=check)


def host_veth(attachment: NetworkAttachment, bridge: str) -> str:
    """The host end of the pod's veth, from the bridge plugin's result."""
    names = [
        i["name"]
        for i in attachment.result["interfaces"]
        if not i.get("sandbox") and i["name"] != bridge
    ]
    assert len(names) == 1, attachment.result
    return str(names[0])


def host_links() -> set[str]:
    return {
        line.split(":")[1].strip().split("@")[0] for line in run("ip", "-o", "link").splitlines()
    }


# ---- fake plugins ---------------------------------------------------------------------------

RECORDER = """\
#!{python}
# Records its invocation (command, CNI_* env, stdin) as a JSON line in a log file.
import json, os, sys
LOG = {log!r}
conf = json.load(sys.stdin)
env = {{k: v for k, v in os.environ.items() if k.startswith("CNI_")}}
with open(LOG, "a") as log:
    call = {{"type": os.path.basename(sys.argv[0]), "env": env, "conf": conf}}
    log.write(json.dumps(call) + "\\n")
behaviour = conf.get("behaviour", {{}}).get(env["CNI_COMMAND"], "")
if behaviour.startswith("error:"):
    code, msg = behaviour[6:].split(":", 1)
    print(json.dumps({{"cniVersion": "1.0.0", "code": int(code), "msg": msg, "details": "d"}}))
    sys.exit(1)
if behaviour == "sleep":
    import subprocess
    child = subprocess.Popen(["sleep", "60"])
    open(LOG + ".child", "w").write(str(child.pid))
    child.wait()
if env["CNI_COMMAND"] == "ADD":
    if "prevResult" in conf:
        print(json.dumps(conf["prevResult"]))
    else:
        print(json.dumps(conf.get("result", {{"cniVersion": "1.0.0"}})))
"""

FAKE_RESULT = {
    "cniVersion": "1.0.0",
    "interfaces": [
        {"name": "host0", "mac": "aa:bb:cc:dd:ee:00"},
        {"name": "eth0", "mac": "aa:bb:cc:dd:ee:01", "sandbox": HOST_NETNS},
    ],
    "ips": [
        {"address": "fd00:89::7/64", "interface": 1},
        {"address": "10.89.250.9/24", "interface": 0},
        {"address": "10.89.250.7/24", "interface": 1, "gateway": "10.89.250.1"},
    ],
}


class Fake:
    """A bin dir of recording fake plugins (named ``loopback``, ``rec1``, ``rec2``)."""

    def __init__(self, tmp_path: Path) -> None:
        self.bin = tmp_path / "fakebin"
        self.bin.mkdir()
        self.log = tmp_path / "calls.jsonl"
        for name in ("loopback", "rec1", "rec2"):
            script = self.bin / name
            script.write_text(RECORDER.format(python=sys.executable, log=str(self.log)))
            script.chmod(0o755)

    def plugin(self, name: str, **extra: Any) -> dict[str, Any]:
        return {"type": name, "result": FAKE_RESULT, **extra}

    def calls(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        calls = [json.loads(line) for line in self.log.read_text().splitlines()]
        self.log.write_text("")
        return calls


@pytest.fixture
def fake(tmp_path: Path) -> Fake:
    return Fake(tmp_path)


# ---- pure tests -----------------------------------------------------------------------------


def test_sandbox_ips_of_each_result_version() -> None:
    ns = "/run/netns/x"
    v100 = {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "cni0"}, {"name": "veth1"}, {"name": "eth0", "sandbox": ns}],
        "ips": [
            {"address": "10.89.0.1/24", "interface": 0},
            {"address": "fd00::5/64", "interface": 2},
            {"address": "10.89.0.5/24", "interface": 2, "gateway": "10.89.0.1"},
        ],
    }
    assert sandbox_ips(v100, ns) == ("10.89.0.5", "fd00::5")
    v040 = {
        "cniVersion": "0.4.0",
        "interfaces": [{"name": "eth0", "sandbox": ns}],
        "ips": [{"version": "4", "address": "10.89.0.6/16", "interface": 0}],
    }
    assert sandbox_ips(v040, ns) == ("10.89.0.6",)
    # 0.3.1 result without interfaces (e.g. a bare IPAM result): unassigned ips count
    v031 = {"cniVersion": "0.3.1", "ips": [{"version": "4", "address": "10.89.0.7/24"}]}
    assert sandbox_ips(v031, ns) == ("10.89.0.7",)
    v020 = {"cniVersion": "0.2.0", "ip6": {"ip": "fd00::8/64"}, "ip4": {"ip": "10.89.0.8/24"}}
    assert sandbox_ips(v020, ns) == ("10.89.0.8", "fd00::8")
    assert sandbox_ips({"cniVersion": "1.0.0"}, ns) == ()
    # the sandbox of another netns does not count
    assert sandbox_ips(v100, "/run/netns/other") == ()


def test_status_and_config_selection(tmp_path: Path, fake: Fake) -> None:
    conf_dir = tmp_path / "net.d"
    mgr = CniManager(conf_dir, [fake.bin], cache_dir=tmp_path / "cache")
    # no directory at all, then an empty one
    assert mgr.network() is None
    assert mgr.status() == (
        False,
        "NetworkPluginNotReady",
        f"no network config found in {conf_dir}",
    )
    conf_dir.mkdir()
    (conf_dir / "README").write_text("not a config")
    assert mgr.status()[0] is False
    # an unparseable file is skipped (and named in the message while nothing else is there)
    (conf_dir / "00-broken.conflist").write_text("{nope")
    ready, _reason, message = mgr.status()
    assert not ready and "00-broken.conflist" in message
    # the first valid file in lexical order wins; a .conf is wrapped into a list
    (conf_dir / "20-list.conflist").write_text(
        json.dumps({"cniVersion": "1.0.0", "name": "listnet", "plugins": [fake.plugin("rec1")]})
    )
    assert mgr.network() == (
        "listnet",
        {"cniVersion": "1.0.0", "name": "listnet", "plugins": [fake.plugin("rec1")]},
    )
    assert mgr.status() == (True, "", "")
    single = {"cniVersion": "0.4.0", "name": "single", **fake.plugin("rec2")}
    (conf_dir / "10-single.conf").write_text(json.dumps(single))
    assert mgr.network() == (
        "single",
        {"cniVersion": "0.4.0", "name": "single", "plugins": [single]},
    )
    # the result is a copy: mutating it does not change the manager's view
    found = mgr.network()
    assert found is not None
    found[1]["plugins"].clear()
    assert mgr.network() == (
        "single",
        {"cniVersion": "0.4.0", "name": "single", "plugins": [single]},
    )
    # a plugin of the list that does not exist (or is not executable) → not ready
    (conf_dir / "05-missing.conflist").write_text(
        json.dumps(
            {"cniVersion": "1.0.0", "name": "m", "plugins": [fake.plugin("rec1"), {"type": "nope"}]}
        )
    )
    assert mgr.status() == (
        False,
        "NetworkPluginNotReady",
        f"cni plugin nope not found in {fake.bin}",
    )
    (fake.bin / "nope").write_text("#!/bin/sh\n")
    assert mgr.status()[0] is False  # not executable
    (fake.bin / "nope").chmod(0o755)
    assert mgr.status() == (True, "", "")
    # loopback is needed too
    (fake.bin / "loopback").unlink()
    assert mgr.status() == (
        False,
        "NetworkPluginNotReady",
        f"cni plugin loopback not found in {fake.bin}",
    )
    # an in-place edit of the chosen file is seen as well
    (conf_dir / "05-missing.conflist").write_text(
        json.dumps({"cniVersion": "1.0.0", "name": "edited", "plugins": [fake.plugin("rec1")]})
    )
    assert mgr.network() is not None and mgr.network()[0] == "edited"  # type: ignore[index]


def test_arguments_capabilities_chaining_and_cache(tmp_path: Path, fake: Fake) -> None:
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir()
    caps = {
        "portMappings": True,
        "dns": True,
        "cgroupPath": True,
        "io.kubernetes.cri.pod-annotations": True,
        "bandwidth": False,
    }
    first = fake.plugin("rec1", capabilities=caps)
    second = fake.plugin("rec2", capabilities={"portMappings": True})
    listfile = conf_dir / "10-rec.conflist"
    listfile.write_text(
        json.dumps({"cniVersion": "1.0.0", "name": "recnet", "plugins": [first, second]})
    )
    cache_dir = tmp_path / "cache"
    mgr = CniManager(conf_dir, [fake.bin, PLUGINS], cache_dir=cache_dir, interface="eth0")

    attachment = mgr.setup(
        container_id="c0ffee",
        netns=HOST_NETNS,
        pod_name="web",
        pod_namespace="ns1",
        pod_uid="uid-9",
        port_mappings=[
            PortMapping(20080, 80, "TCP"),
            PortMapping(0, 81),
            PortMapping(53, 53, "udp", "10.89.0.1"),
        ],
        dns={"servers": ["10.89.0.10"], "searches": ["svc.local"], "options": ["ndots:5"]},
        cgroup_path="/kubepods/pod-uid-9",
        annotations={"a": "b"},
    )
    assert attachment.network_name == "recnet"
    assert attachment.interface == "eth0"
    assert attachment.ips == ("10.89.250.7", "fd00:89::7")  # sandbox only, IPv4 first
    assert attachment.result == FAKE_RESULT
    calls = fake.calls()
    assert [(c["type"], c["env"]["CNI_COMMAND"]) for c in calls] == [
        ("loopback", "ADD"),
        ("rec1", "ADD"),
        ("rec2", "ADD"),
    ]
    cni_args = (
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=web;"
        "K8S_POD_INFRA_CONTAINER_ID=c0ffee;K8S_POD_UID=uid-9"
    )
    for call in calls:
        env = call["env"]
        assert env["CNI_CONTAINERID"] == "c0ffee"
        assert env["CNI_NETNS"] == HOST_NETNS
        assert env["CNI_ARGS"] == cni_args
        assert env["CNI_PATH"] == f"{fake.bin}:{PLUGINS}"
    loop, rec1, rec2 = (c["conf"] for c in calls)
    assert calls[0]["env"]["CNI_IFNAME"] == "lo"
    assert loop["name"] == "cni-loopback" and "runtimeConfig" not in loop
    assert calls[1]["env"]["CNI_IFNAME"] == "eth0"
    assert rec1["name"] == "recnet" and rec1["cniVersion"] == "1.0.0"
    assert "prevResult" not in rec1
    assert rec1["runtimeConfig"] == {
        "portMappings": [
            {"hostPort": 20080, "containerPort": 80, "protocol": "tcp"},
            {"hostPort": 53, "containerPort": 53, "protocol": "udp", "hostIP": "10.89.0.1"},
        ],
        "dns": {"servers": ["10.89.0.10"], "searches": ["svc.local"], "options": ["ndots:5"]},
        "cgroupPath": "/kubepods/pod-uid-9",
        "io.kubernetes.cri.pod-annotations": {"a": "b"},
    }
    assert rec2["prevResult"] == FAKE_RESULT
    assert set(rec2["runtimeConfig"]) == {"portMappings"}
    cache_file = cache_dir / "recnet-c0ffee-eth0.json"
    assert cache_file.is_file()
    assert [p.name for p in cache_dir.iterdir()] == [cache_file.name]  # no temp file left

    # CHECK: cached config and result, in order, then loopback
    mgr.check(container_id="c0ffee", netns=HOST_NETNS)
    calls = fake.calls()
    assert [(c["type"], c["env"]["CNI_COMMAND"]) for c in calls] == [
        ("rec1", "CHECK"),
        ("rec2", "CHECK"),
        ("loopback", "CHECK"),
    ]
    assert calls[0]["conf"]["prevResult"] == FAKE_RESULT

    # the config changes: DEL still uses the cached list, CNI_ARGS and capability args
    listfile.write_text(
        json.dumps({"cniVersion": "1.0.0", "name": "newnet", "plugins": [fake.plugin("rec2")]})
    )
    mgr.teardown(container_id="c0ffee", netns=HOST_NETNS, pod_name="other", pod_namespace="x")
    calls = fake.calls()
    assert [(c["type"], c["env"]["CNI_COMMAND"]) for c in calls] == [
        ("rec2", "DEL"),
        ("rec1", "DEL"),
        ("loopback", "DEL"),
    ]
    assert all(c["env"]["CNI_ARGS"] == cni_args for c in calls)
    assert calls[0]["conf"]["name"] == "recnet"
    assert calls[0]["conf"]["prevResult"] == FAKE_RESULT
    assert calls[1]["conf"]["runtimeConfig"] == rec1["runtimeConfig"]
    assert not cache_file.exists()

    # no cache entry any more: DEL uses the current config and the arguments given
    mgr.teardown(container_id="c0ffee", netns=None, pod_name="other", pod_namespace="x")
    calls = fake.calls()
    assert [(c["type"], c["env"]["CNI_COMMAND"]) for c in calls] == [
        ("rec2", "DEL"),
        ("loopback", "DEL"),
    ]
    assert calls[0]["conf"]["name"] == "newnet"
    assert "prevResult" not in calls[0]["conf"]
    assert calls[0]["env"]["CNI_NETNS"] == ""
    assert "K8S_POD_NAME=other;" in calls[0]["env"]["CNI_ARGS"]

    # CHECK without a cache entry is an error
    with pytest.raises(CniError, match="no cached CNI attachment"):
        mgr.check(container_id="c0ffee", netns=HOST_NETNS)


def test_del_tolerates_only_not_found(tmp_path: Path, fake: Fake) -> None:
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir()

    def write(del_behaviour: str) -> None:
        plugin = fake.plugin("rec1", behaviour={"DEL": del_behaviour})
        (conf_dir / "10.conflist").write_text(
            json.dumps({"cniVersion": "1.0.0", "name": "n", "plugins": [plugin]})
        )

    mgr = CniManager(conf_dir, [fake.bin], cache_dir=tmp_path / "cache")
    write("error:11:try again later")
    mgr.setup(container_id="c1", netns=HOST_NETNS, pod_name="p", pod_namespace="n", pod_uid="u")
    cache_file = tmp_path / "cache" / "n-c1-eth0.json"
    # the cached config fails DEL with code 11: an error, the cache entry stays
    with pytest.raises(CniError, match=r"try again later: d \(CNI error code 11\)") as info:
        mgr.teardown(container_id="c1", netns=HOST_NETNS)
    assert info.value.cni_code == 11 and not is_not_found(info.value)
    assert info.value.code == "UNAVAILABLE"
    assert cache_file.exists()
    # a "not found" class error is tolerated (code 3, or the text of a vanished object)
    for behaviour in ("error:3:container gone", "error:999:link eth0 not found"):
        mgr.setup(container_id="c2", netns=HOST_NETNS, pod_name="p", pod_namespace="n", pod_uid="u")
        cached = json.loads((tmp_path / "cache" / "n-c2-eth0.json").read_text())
        cached["config"]["plugins"][0]["behaviour"] = {"DEL": behaviour}
        (tmp_path / "cache" / "n-c2-eth0.json").write_text(json.dumps(cached))
        mgr.teardown(container_id="c2", netns=HOST_NETNS)
        assert not (tmp_path / "cache" / "n-c2-eth0.json").exists()
    # a missing plugin binary is never tolerated
    (fake.bin / "rec1").rename(fake.bin / "rec1.away")
    with pytest.raises(CniError, match="cni plugin rec1 not found") as info:
        mgr.teardown(container_id="c1", netns=HOST_NETNS)
    assert not is_not_found(info.value)
    (fake.bin / "rec1.away").rename(fake.bin / "rec1")
    # fixed: the cached entry (which still says code 11) is replaced by hand, DEL succeeds
    cached = json.loads(cache_file.read_text())
    cached["config"]["plugins"][0]["behaviour"] = {}
    cache_file.write_text(json.dumps(cached))
    mgr.teardown(container_id="c1", netns=HOST_NETNS)
    assert not cache_file.exists()


def test_timeout_kills_the_plugin_and_rolls_back(tmp_path: Path, fake: Fake) -> None:
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir()
    (conf_dir / "10.conflist").write_text(
        json.dumps(
            {
                "cniVersion": "1.0.0",
                "name": "slow",
                "plugins": [fake.plugin("rec1"), fake.plugin("rec2", behaviour={"ADD": "sleep"})],
            }
        )
    )
    mgr = CniManager(conf_dir, [fake.bin], cache_dir=tmp_path / "cache", timeout=1.0)
    start = time.monotonic()
    with pytest.raises(
        CniError, match=r"type='rec2' name='slow' failed \(add\): timed out after 1s"
    ):
        mgr.setup(container_id="c1", netns=HOST_NETNS, pod_name="p", pod_namespace="n", pod_uid="u")
    assert time.monotonic() - start < 10
    child = int(Path(str(fake.log) + ".child").read_text())
    deadline = time.monotonic() + 5
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # the plugin's own child (sleep 60) was killed with its group
    with contextlib.suppress(FileNotFoundError):  # gone, or a zombie nobody reaps
        assert Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    calls = [(c["type"], c["env"]["CNI_COMMAND"]) for c in fake.calls()]
    assert calls == [
        ("loopback", "ADD"),
        ("rec1", "ADD"),
        ("rec2", "ADD"),
        ("rec2", "DEL"),
        ("rec1", "DEL"),
        ("loopback", "DEL"),
    ]
    assert not list((tmp_path / "cache").glob("*.json"))


def test_invalid_arguments(tmp_path: Path, fake: Fake) -> None:
    mgr = CniManager(tmp_path, [fake.bin], cache_dir=tmp_path / "cache")
    for bad in ("", "../x", "a/b", "-x"):
        with pytest.raises(InvalidArgument):
            mgr.teardown(container_id=bad, netns=None)
    with pytest.raises(InvalidArgument):
        PortMapping(1, 2, "icmp")
    with pytest.raises(InvalidArgument):
        CniManager(tmp_path, [], cache_dir=tmp_path, interface="x" * 16)
    # setup needs a network namespace and a configuration
    with pytest.raises(CniError, match="does not exist"):
        mgr.setup(container_id="c", netns=str(tmp_path), pod_name="", pod_namespace="", pod_uid="")
    with pytest.raises(CniError, match="no network config found"):
        mgr.setup(container_id="c", netns=HOST_NETNS, pod_name="", pod_namespace="", pod_uid="")


# ---- real plugins ---------------------------------------------------------------------------


@needs_root
def test_setup_and_teardown(net: Net, netns: Callable[[], str]) -> None:
    net.write(net.conflist())
    mgr = net.manager()
    assert mgr.status() == (True, "", "")
    ns = netns()
    start = time.monotonic()
    attachment = net.setup(mgr, ns, container_id="pod1")
    setup_ms = (time.monotonic() - start) * 1000
    assert attachment.network_name == "cnitest"
    assert len(attachment.ips) == 1
    ip = attachment.ips[0]
    assert ipaddress.ip_address(ip) in net.subnet
    assert ip != str(net.subnet[1])  # .1 is the bridge's (isGateway)
    addrs = in_netns(ns, "ip", "-o", "addr")
    assert re.search(rf"\beth0\s+inet {re.escape(ip)}/24\b", addrs), addrs
    assert "UP" in in_netns(ns, "ip", "-o", "link", "show", "lo").split(">")[0]
    veth = host_veth(attachment, net.bridge)
    assert veth in host_links()
    assert net.allocated() == {ip}
    assert (net.cache_dir / "cnitest-pod1-eth0.json").is_file()

    start = time.monotonic()
    mgr.teardown(container_id="pod1", netns=ns, pod_name="pod", pod_namespace="default")
    teardown_ms = (time.monotonic() - start) * 1000
    assert net.allocated() == set()
    assert veth not in host_links()
    assert run("ip", "-o", "link", "show", "master", net.bridge).strip() == ""
    assert "eth0" not in in_netns(ns, "ip", "-o", "link")
    assert not (net.cache_dir / "cnitest-pod1-eth0.json").exists()
    # idempotent, also without the netns path
    mgr.teardown(container_id="pod1", netns=ns)
    mgr.teardown(container_id="pod1", netns=None)
    print(f"\nCNI bridge+portmap: setup {setup_ms:.0f} ms, teardown {teardown_ms:.0f} ms")


@needs_root
@pytest.mark.skipif(not BUSYBOX.is_file(), reason="needs /bin/busybox for ping")
def test_two_pods_on_one_bridge_reach_each_other(net: Net, netns: Callable[[], str]) -> None:
    net.write(net.conflist(portmap=False))
    mgr = net.manager()
    ns_a, ns_b = netns(), netns()
    a = net.setup(mgr, ns_a, container_id="poda")
    b = net.setup(mgr, ns_b, container_id="podb")
    assert a.ips[0] != b.ips[0]
    in_netns(ns_a, str(BUSYBOX), "ping", "-c1", "-W2", b.ips[0])
    in_netns(ns_b, str(BUSYBOX), "ping", "-c1", "-W2", a.ips[0])
    mgr.teardown(container_id="poda", netns=ns_a)
    mgr.teardown(container_id="podb", netns=ns_b)
    assert net.allocated() == set()


@needs_root
def test_teardown_after_the_netns_is_gone(net: Net, netns: Callable[[], str]) -> None:
    net.write(net.conflist())
    mgr = net.manager()
    ns = netns()
    attachment = net.setup(mgr, ns, container_id="gone1")
    veth = host_veth(attachment, net.bridge)
    assert net.allocated() == set(attachment.ips)
    run("ip", "netns", "delete", Path(ns).name)
    assert not Path(ns).exists()
    mgr.teardown(container_id="gone1", netns=ns)
    assert net.allocated() == set()
    assert veth not in host_links()
    assert not list(net.cache_dir.glob("*.json"))
    mgr.teardown(container_id="gone1", netns=ns)


@needs_root
@pytest.mark.parametrize("change", ["changed", "removed"])
def test_del_uses_the_cached_config(net: Net, netns: Callable[[], str], change: str) -> None:
    listfile = net.write(net.conflist())
    mgr = net.manager()
    ns = netns()
    attachment = net.setup(mgr, ns, container_id="cached1")
    assert net.allocated() == set(attachment.ips)
    other_data = net.tmp / "ipam-other"
    if change == "changed":
        other = net.conflist(name="othernet")
        other["plugins"][0] = net.bridge_plugin(
            bridge=net.bridge + "x", data_dir=other_data, subnet=f"10.89.{net.octet}.0/25"
        )
        net.bridges.append(net.bridge + "x")
        listfile.write_text(json.dumps(other))
        assert mgr.network() is not None and mgr.network()[0] == "othernet"  # type: ignore[index]
    else:
        listfile.unlink()
        assert mgr.network() is None
    mgr.teardown(container_id="cached1", netns=ns)
    assert net.allocated() == set()  # released in the *cached* network's IPAM store
    assert not other_data.exists()  # the new config was not used
    assert "eth0" not in in_netns(ns, "ip", "-o", "link")
    assert not list(net.cache_dir.glob("*.json"))


@needs_root
def test_a_failing_plugin_leaves_nothing_behind(net: Net, netns: Callable[[], str]) -> None:
    bin_dir = net.tmp / "bin"
    bin_dir.mkdir()
    failer = bin_dir / "failer"
    failer.write_text(
        "#!/bin/sh\n"
        'if [ "$CNI_COMMAND" = ADD ]; then\n'
        '  echo \'{"cniVersion":"1.0.0","code":7,"msg":"boom from failer","details":"bad key"}\'\n'
        "  exit 1\n"
        "fi\n"
        "exit 0\n"
    )
    failer.chmod(0o755)
    net.write(net.conflist(extra=({"type": "failer"},)))
    mgr = net.manager(bin_dir, PLUGINS)
    ns = netns()
    links_before = host_links()
    with pytest.raises(CniError) as info:
        net.setup(mgr, ns, container_id="fail1", port_mappings=[PortMapping(20999, 80)])
    message = str(info.value)
    assert "type='failer'" in message and "failed (add)" in message
    assert "boom from failer: bad key (CNI error code 7)" in message
    assert info.value.cni_code == 7 and info.value.cni_msg == "boom from failer"
    assert info.value.code == "UNAVAILABLE"
    assert net.allocated() == set()
    assert run("ip", "-o", "link", "show", "master", net.bridge).strip() == ""
    assert not {link for link in host_links() - links_before if link.startswith("veth")}
    assert "eth0" not in in_netns(ns, "ip", "-o", "link")
    assert not list(net.cache_dir.glob("*.json"))


@needs_root
def test_portmap_rules_follow_the_pod(net: Net, netns: Callable[[], str]) -> None:
    net.write(net.conflist())
    mgr = net.manager()
    ns = netns()
    host_port = random.randint(20000, 20998)
    attachment = net.setup(
        mgr, ns, container_id="ports1", port_mappings=[PortMapping(host_port, 8080, "tcp")]
    )
    ip = attachment.ips[0]
    rules = run("iptables", "-w", "-t", "nat", "-S")
    assert f"--dport {host_port} -j DNAT --to-destination {ip}:8080" in rules, rules
    assert 'id: \\"ports1\\"' in rules or 'id: "ports1"' in rules
    mgr.teardown(container_id="ports1", netns=ns)  # no port mappings given: cached ones used
    rules = run("iptables", "-w", "-t", "nat", "-S")
    assert f"--dport {host_port} " not in rules
    assert f"{ip}:8080" not in rules
    assert "ports1" not in rules
    assert net.allocated() == set()


@needs_root
def test_check_reports_a_broken_attachment(net: Net, netns: Callable[[], str]) -> None:
    # bridge only: portmap 1.1.1's CHECK fails on IPv4-only pods (containernetworking/plugins#819)
    conflist = net.conflist(portmap=False)
    net.write(conflist)
    mgr = net.manager()
    ns = netns()
    net.setup(mgr, ns, container_id="check1")
    mgr.check(container_id="check1", netns=ns)
    in_netns(ns, "ip", "addr", "flush", "dev", "eth0")
    with pytest.raises(CniError, match=r"type='bridge' name='cnitest' failed \(check\)"):
        mgr.check(container_id="check1", netns=ns)
    mgr.teardown(container_id="check1", netns=ns)
    assert net.allocated() == set()


@needs_root
def test_concurrent_pods(net: Net, netns: Callable[[], str]) -> None:
    net.write(net.conflist())
    mgr = net.manager()
    namespaces = [netns() for _ in range(4)]
    results: dict[int, NetworkAttachment] = {}
    errors: list[BaseException] = []

    def attach(i: int) -> None:
        try:
            results[i] = net.setup(
                mgr,
                namespaces[i],
                container_id=f"conc{i}",
                port_mappings=[PortMapping(20000 + i + net.octet * 4, 80)],
            )
        except BaseException as exc:
            errors.append(exc)

    def detach(i: int) -> None:
        try:
            mgr.teardown(container_id=f"conc{i}", netns=namespaces[i])
        except BaseException as exc:
            errors.append(exc)

    for target in (attach, detach):
        threads = [threading.Thread(target=target, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors
        if target is attach:
            ips = {r.ips[0] for r in results.values()}
            assert len(ips) == 4
            assert net.allocated() == ips
    assert net.allocated() == set()
    assert not list(net.cache_dir.glob("*.json"))
