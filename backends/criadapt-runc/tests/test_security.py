"""Tests of seccomp and AppArmor resolution (``criadapt_runc.security``).

Unit tests use synthetic profiles (and the host's Podman profile when installed); the runc
tests run busybox containers with the resolved ``linux.seccomp`` (root only).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from criadapt import models as m
from criadapt.errors import FailedPrecondition, InvalidArgument
from criadapt_runc import security
from criadapt_runc.security import (
    BUILTIN_PROFILE,
    DEFAULT_PROFILE_PATH,
    SeccompProfiles,
    apparmor_enabled,
    check_apparmor,
    kernel_version,
    profile_format,
    seccomp_request,
)
from criadapt_runc.testing_bundles import APPLETS, make_bundle, make_rootfs

PT = m.ProfileType
CSC = m.LinuxContainerSecurityContext
SSC = m.LinuxSandboxSecurityContext
CAPS = ("CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE")
X86_ARCHES = ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
HAVE_PODMAN_PROFILE = DEFAULT_PROFILE_PATH.is_file()
needs_podman_profile = pytest.mark.skipif(
    not HAVE_PODMAN_PROFILE,
    reason=f"needs {DEFAULT_PROFILE_PATH} (golang-github-containers-common)",
)


def profile(kind: PT, ref: str = "") -> m.SecurityProfile:
    return m.SecurityProfile(profile_type=kind, localhost_ref=ref)


def names(resolved: dict[str, Any] | None, action: str | None = None) -> set[str]:
    assert resolved is not None
    return {
        n
        for rule in resolved["syscalls"]
        if action is None or rule["action"] == action
        for n in rule["names"]
    }


def rule_for(resolved: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [r for r in resolved["syscalls"] if name in r["names"]]


#: a containers-format profile exercising every filter
CONTAINERS_PROFILE: dict[str, Any] = {
    "defaultAction": "SCMP_ACT_ERRNO",
    "defaultErrno": "ENOSYS",
    "archMap": [
        {
            "architecture": "SCMP_ARCH_X86_64",
            "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        },
        {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
    ],
    "syscalls": [
        {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW", "comment": "", "args": None},
        {"names": ["bpf"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
        {
            "names": ["bpf"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": 1,
            "errno": "EPERM",
            "excludes": {"caps": ["CAP_SYS_ADMIN"]},
        },
        {
            "names": ["both_caps"],
            "action": "SCMP_ACT_ALLOW",
            "includes": {"caps": ["CAP_SYS_ADMIN", "CAP_NET_ADMIN"]},
        },
        {
            "names": ["no_ptrace_or_admin"],
            "action": "SCMP_ACT_ALLOW",
            "excludes": {"caps": ["CAP_SYS_PTRACE", "CAP_SYS_ADMIN"]},
        },
        {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64"]}},
        {"names": ["set_tls"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["arm64"]}},
        {"names": ["not_on_arm"], "action": "SCMP_ACT_ALLOW", "excludes": {"arches": ["arm64"]}},
        {"names": ["new_5_8"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "5.8"}},
        {"names": ["old_only"], "action": "SCMP_ACT_ALLOW", "excludes": {"minKernel": "4.14"}},
        {"name": "single", "action": "SCMP_ACT_LOG", "errnoRet": 5},
        {
            "names": ["personality"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}],
        },
        {"names": [], "action": "SCMP_ACT_ALLOW"},
    ],
}

OCI_PROFILE: dict[str, Any] = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "defaultErrnoRet": 1,  # dropped: meaningless with SCMP_ACT_ALLOW
    "architectures": ["SCMP_ARCH_X86_64"],
    "flags": ["SECCOMP_FILTER_FLAG_LOG"],
    "syscalls": [
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
        {
            "names": ["clone"],
            "action": "SCMP_ACT_ERRNO",
            "args": [{"index": 0, "value": 1, "valueTwo": 1, "op": "SCMP_CMP_MASKED_EQ"}],
        },
    ],
}


def write_json(path: Path, document: Any) -> Path:
    path.write_text(json.dumps(document))
    return path


@pytest.fixture
def containers_file(tmp_path: Path) -> Path:
    return write_json(tmp_path / "containers.json", CONTAINERS_PROFILE)


def profiles(default: Path | None, **kwargs: Any) -> SeccompProfiles:
    kwargs.setdefault("machine", "x86_64")
    kwargs.setdefault("kernel_release", "6.1.0-18-amd64")
    kwargs.setdefault("supported", True)
    return SeccompProfiles(default_profile=default, **kwargs)


# -- what is asked --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("context", "expected"),
    [
        (None, ("RuntimeDefault", "", False)),
        (CSC(), ("RuntimeDefault", "", False)),
        (CSC(seccomp_profile_path="runtime/default"), ("RuntimeDefault", "", True)),
        (CSC(seccomp_profile_path="docker/default"), ("RuntimeDefault", "", True)),
        (CSC(seccomp_profile_path="unconfined"), ("Unconfined", "", True)),
        (CSC(seccomp_profile_path="localhost/etc/p.json"), ("Localhost", "etc/p.json", True)),
        (CSC(seccomp_profile_path="localhost//etc/p.json"), ("Localhost", "/etc/p.json", True)),
        (CSC(seccomp=profile(PT.RuntimeDefault)), ("RuntimeDefault", "", True)),
        (CSC(seccomp=profile(PT.Unconfined)), ("Unconfined", "", True)),
        (CSC(seccomp=profile(PT.Localhost, "/p.json")), ("Localhost", "/p.json", True)),
        (CSC(seccomp=profile(PT.Localhost, "localhost//p.json")), ("Localhost", "/p.json", True)),
        (SSC(seccomp=profile(PT.Unconfined)), ("Unconfined", "", True)),
        (SSC(seccomp_profile_path="runtime/default"), ("RuntimeDefault", "", True)),
    ],
)
def test_seccomp_request(context: Any, expected: tuple[str, str, bool]) -> None:
    assert seccomp_request(context, "RuntimeDefault") == expected


def test_seccomp_request_unset_means() -> None:
    assert seccomp_request(CSC(), "Unconfined") == ("Unconfined", "", False)
    assert seccomp_request(None, "Unconfined") == ("Unconfined", "", False)


def test_v1_field_wins_over_the_deprecated_string() -> None:
    both = CSC(seccomp=profile(PT.Unconfined), seccomp_profile_path="runtime/default")
    assert seccomp_request(both, "RuntimeDefault")[0] == "Unconfined"
    both = CSC(seccomp=profile(PT.RuntimeDefault), seccomp_profile_path="unconfined")
    assert seccomp_request(both, "Unconfined")[0] == "RuntimeDefault"
    both = CSC(seccomp=profile(PT.Localhost, "/a.json"), seccomp_profile_path="localhost//b")
    assert seccomp_request(both, "Unconfined") == ("Localhost", "/a.json", True)


@pytest.mark.parametrize("value", ["default", "runtime/Default", "Unconfined", "/etc/p.json"])
def test_invalid_deprecated_string(value: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid seccomp profile"):
        seccomp_request(CSC(seccomp_profile_path=value), "RuntimeDefault")


def test_unset_means_is_checked() -> None:
    with pytest.raises(ValueError, match="unset_means"):
        SeccompProfiles(unset_means="runtime/default")


def test_kernel_version() -> None:
    assert kernel_version("6.18.44-fc-v595") == (6, 18)
    assert kernel_version("3.12-1-amd64") == (3, 12)
    assert kernel_version("5.8") == (5, 8)
    assert kernel_version("six") is None


def test_profile_format() -> None:
    assert profile_format(CONTAINERS_PROFILE) == "containers"
    assert profile_format(OCI_PROFILE) == "oci"
    assert profile_format({"defaultAction": "SCMP_ACT_ALLOW"}) == "oci"
    assert profile_format({"defaultAction": "SCMP_ACT_ALLOW", "archMap": []}) == "containers"
    rule = {"names": ["x"], "action": "SCMP_ACT_ALLOW", "includes": {}}
    assert profile_format({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [rule]}) == "containers"


# -- resolve --------------------------------------------------------------------------------


def test_unset_follows_unset_means(containers_file: Path) -> None:
    default = profiles(containers_file).resolve(CSC(), capabilities=CAPS, privileged=False)
    assert default is not None
    assert default["defaultAction"] == "SCMP_ACT_ERRNO"
    assert profiles(containers_file).resolve(None, capabilities=CAPS, privileged=False) == default
    unconfined = profiles(containers_file, unset_means="Unconfined")
    assert unconfined.resolve(CSC(), capabilities=CAPS, privileged=False) is None
    assert unconfined.resolve(None, capabilities=CAPS, privileged=False) is None
    explicit = CSC(seccomp=profile(PT.RuntimeDefault))
    assert unconfined.resolve(explicit, capabilities=CAPS, privileged=False) == default


def test_deprecated_strings_resolve(containers_file: Path, tmp_path: Path) -> None:
    p = profiles(containers_file, unset_means="Unconfined")
    default = p.runtime_default(CAPS)
    for value in ("runtime/default", "docker/default"):
        got = p.resolve(CSC(seccomp_profile_path=value), capabilities=CAPS, privileged=False)
        assert got == default
    assert (
        p.resolve(CSC(seccomp_profile_path="unconfined"), capabilities=CAPS, privileged=False)
        is None
    )
    oci = write_json(tmp_path / "oci.json", OCI_PROFILE)
    got = p.resolve(
        CSC(seccomp_profile_path=f"localhost/{oci}"), capabilities=CAPS, privileged=False
    )
    assert got is not None
    assert names(got) == {"mkdir", "mkdirat", "clone"}


def test_v1_field_precedence_in_resolve(containers_file: Path, tmp_path: Path) -> None:
    oci = write_json(tmp_path / "oci.json", OCI_PROFILE)
    p = profiles(containers_file)
    ctx = CSC(seccomp=profile(PT.Localhost, str(oci)), seccomp_profile_path="unconfined")
    got = p.resolve(ctx, capabilities=CAPS, privileged=False)
    assert got is not None
    assert got["defaultAction"] == "SCMP_ACT_ALLOW"
    ctx = CSC(seccomp=profile(PT.Unconfined), seccomp_profile_path=f"localhost/{oci}")
    assert p.resolve(ctx, capabilities=CAPS, privileged=False) is None


def test_privileged_is_always_unconfined(containers_file: Path) -> None:
    p = profiles(containers_file)
    for ctx in (
        None,
        CSC(),
        CSC(seccomp=profile(PT.RuntimeDefault)),
        CSC(seccomp=profile(PT.Localhost, "/does/not/exist.json")),
        CSC(seccomp_profile_path="localhost/relative.json"),
    ):
        assert p.resolve(ctx, capabilities=CAPS, privileged=True) is None


def test_sandbox_context(containers_file: Path) -> None:
    p = profiles(containers_file)
    got = p.resolve(SSC(seccomp=profile(PT.RuntimeDefault)), capabilities=(), privileged=False)
    assert got == p.runtime_default(())
    assert p.resolve(SSC(seccomp=profile(PT.Unconfined)), capabilities=(), privileged=False) is None


# -- conversion -----------------------------------------------------------------------------


def test_containers_conversion_on_x86_64(containers_file: Path) -> None:
    got = profiles(containers_file).runtime_default(CAPS)
    assert got["architectures"] == X86_ARCHES
    assert got["defaultAction"] == "SCMP_ACT_ERRNO"
    assert got["defaultErrnoRet"] == 38  # "ENOSYS"
    assert names(got) == {
        "read",
        "write",
        "bpf",
        "no_ptrace_or_admin",
        "arch_prctl",
        "not_on_arm",
        "new_5_8",
        "single",
        "personality",
    }
    assert rule_for(got, "read") == [
        {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW", "args": []}
    ]
    assert rule_for(got, "bpf") == [
        {"names": ["bpf"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1, "args": []}
    ]
    # errnoRet only for ERRNO/TRACE; a single "name" becomes "names"
    assert rule_for(got, "single") == [{"names": ["single"], "action": "SCMP_ACT_LOG", "args": []}]
    assert rule_for(got, "personality")[0]["args"] == [
        {"index": 0, "value": 8, "valueTwo": 0, "op": "SCMP_CMP_EQ"}
    ]
    for rule in got["syscalls"]:  # nothing of the containers format is left
        assert set(rule) <= {"names", "action", "errnoRet", "args"}
    assert set(got) == {"defaultAction", "defaultErrnoRet", "architectures", "syscalls"}


def test_caps_filtering(containers_file: Path) -> None:
    p = profiles(containers_file)
    without = p.runtime_default(CAPS)
    assert [r["action"] for r in rule_for(without, "bpf")] == ["SCMP_ACT_ERRNO"]
    with_admin = p.runtime_default((*CAPS, "CAP_SYS_ADMIN"))
    assert [r["action"] for r in rule_for(with_admin, "bpf")] == ["SCMP_ACT_ALLOW"]
    assert "both_caps" not in names(with_admin)  # includes: every cap is needed
    assert "no_ptrace_or_admin" not in names(with_admin)  # excludes: any cap removes it
    both = p.runtime_default(("CAP_SYS_ADMIN", "net_admin"))  # names are normalised
    assert "both_caps" in names(both)
    assert "no_ptrace_or_admin" not in names(p.runtime_default(("SYS_PTRACE",)))
    assert "no_ptrace_or_admin" in names(p.runtime_default(()))


def test_arch_filtering_on_aarch64(containers_file: Path) -> None:
    got = profiles(containers_file, machine="aarch64").runtime_default(CAPS)
    assert got["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    assert "set_tls" in names(got)
    assert "arch_prctl" not in names(got)
    assert "not_on_arm" not in names(got)


def test_arch_without_archmap_entry(containers_file: Path) -> None:
    got = profiles(containers_file, machine="riscv64").runtime_default(CAPS)
    assert "architectures" not in got  # libseccomp uses the native one
    assert {"arch_prctl", "set_tls"}.isdisjoint(names(got))
    assert "not_on_arm" in names(got)


def test_min_kernel(containers_file: Path) -> None:
    new = profiles(containers_file, kernel_release="6.1.0").runtime_default(CAPS)
    assert "new_5_8" in names(new)  # includes.minKernel 5.8 <= 6.1
    assert "old_only" not in names(new)  # excludes.minKernel 4.14 <= 6.1
    old = profiles(containers_file, kernel_release="4.9.0").runtime_default(CAPS)
    assert "new_5_8" not in names(old)
    assert "old_only" in names(old)
    exact = profiles(containers_file, kernel_release="5.8.0-1").runtime_default(CAPS)
    assert "new_5_8" in names(exact)
    unknown = profiles(containers_file, kernel_release="weird").runtime_default(CAPS)
    assert "new_5_8" not in names(unknown)


def test_excludes_min_kernel() -> None:
    p = profiles(None)
    doc = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["x"], "action": "SCMP_ACT_ERRNO", "excludes": {"minKernel": "4.14"}}
        ],
    }
    assert names(p.convert(doc, ())) == set()  # kernel 6.1 >= 4.14: dropped
    p_old = profiles(None, kernel_release="4.9.0")
    assert names(p_old.convert(doc, ())) == {"x"}


def test_legacy_architectures_list_is_kept() -> None:
    doc = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        "syscalls": [{"names": ["x"], "action": "SCMP_ACT_ERRNO", "comment": "c"}],
    }
    assert profiles(None).convert(doc, ())["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"]


@needs_podman_profile
def test_podman_default_profile() -> None:
    p = SeccompProfiles()  # the real host: its machine and kernel
    start = time.perf_counter()
    got = p.runtime_default(CAPS)
    cold = time.perf_counter() - start
    assert got["defaultAction"] == "SCMP_ACT_ERRNO"
    assert got["defaultErrnoRet"] == 38
    if os.uname().machine == "x86_64":
        assert got["architectures"] == X86_ARCHES
        assert "arch_prctl" in names(got)
        assert "arm_fadvise64_64" not in names(got)
    allowed = names(got, "SCMP_ACT_ALLOW")
    assert {"read", "write", "execve", "clone", "mkdir", "mkdirat"} <= allowed
    assert "bpf" not in allowed
    assert "bpf" in names(got, "SCMP_ACT_ERRNO")
    admin = p.runtime_default((*CAPS, "CAP_SYS_ADMIN"))
    assert "bpf" in names(admin, "SCMP_ACT_ALLOW")
    assert "bpf" not in names(admin, "SCMP_ACT_ERRNO")
    assert len(names(got)) > 300
    start = time.perf_counter()
    p.runtime_default(CAPS)
    cached = time.perf_counter() - start
    assert cached < cold
    json.dumps(got)  # serialisable as is


# -- built-in default -----------------------------------------------------------------------


def test_builtin_default_when_the_file_is_missing(tmp_path: Path) -> None:
    p = profiles(tmp_path / "missing.json")
    got = p.runtime_default(CAPS)
    assert got == profiles(None).runtime_default(CAPS)
    assert got["defaultAction"] == "SCMP_ACT_ALLOW"
    assert got["architectures"] == X86_ARCHES
    denied = names(got, "SCMP_ACT_ERRNO")
    assert {
        "kexec_load",
        "open_by_handle_at",
        "init_module",
        "finit_module",
        "delete_module",
        "reboot",
        "swapon",
        "swapoff",
        "mount",
        "umount2",
        "bpf",
        "ptrace",
        "unshare",
        "clone",
        "clone3",
    } <= denied
    assert rule_for(got, "clone3")[0]["errnoRet"] == 38
    assert rule_for(got, "unshare")[0]["args"][0]["op"] == "SCMP_CMP_MASKED_EQ"
    admin = names(p.runtime_default((*CAPS, "CAP_SYS_ADMIN")))
    assert {"mount", "umount2", "swapon", "bpf", "unshare", "clone", "clone3"}.isdisjoint(admin)
    assert {"kexec_load", "ptrace", "init_module"} <= admin
    assert "bpf" not in names(p.runtime_default(("CAP_BPF",)))
    assert "ptrace" not in names(p.runtime_default(("CAP_SYS_PTRACE",)))
    arm = profiles(None, machine="aarch64").runtime_default(())
    assert arm["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    s390 = profiles(None, machine="s390x").runtime_default(())
    assert "clone" not in names(s390)  # its flags are not the first argument there
    assert BUILTIN_PROFILE["defaultAction"] == "SCMP_ACT_ALLOW"


def test_invalid_default_profile_is_a_node_error(tmp_path: Path) -> None:
    bad = tmp_path / "seccomp.json"
    bad.write_text("{not json")
    with pytest.raises(FailedPrecondition, match="default seccomp profile"):
        profiles(bad).resolve(CSC(), capabilities=CAPS, privileged=False)
    write_json(bad, {"defaultAction": "SCMP_ACT_NOPE"})
    with pytest.raises(FailedPrecondition, match="unknown action"):
        profiles(bad).runtime_default(CAPS)
    with pytest.raises(FailedPrecondition, match="regular file"):
        profiles(tmp_path).runtime_default(CAPS)


# -- Localhost ------------------------------------------------------------------------------


def test_localhost_oci_form(tmp_path: Path) -> None:
    doc = {**OCI_PROFILE, "listenerPath": "/run/agent.sock", "unknownKey": 1}
    path = write_json(tmp_path / "oci.json", doc)
    ctx = CSC(seccomp=profile(PT.Localhost, str(path)))
    got = profiles(None).resolve(ctx, capabilities=CAPS, privileged=False)
    assert got == {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "flags": ["SECCOMP_FILTER_FLAG_LOG"],
        "listenerPath": "/run/agent.sock",
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13, "args": []},
            {
                "names": ["clone"],
                "action": "SCMP_ACT_ERRNO",
                "args": [{"index": 0, "value": 1, "valueTwo": 1, "op": "SCMP_CMP_MASKED_EQ"}],
            },
        ],
    }


def test_localhost_containers_form(containers_file: Path) -> None:
    p = profiles(None)
    ctx = CSC(seccomp=profile(PT.Localhost, str(containers_file)))
    got = p.resolve(ctx, capabilities=CAPS, privileged=False)
    assert got == profiles(containers_file).runtime_default(CAPS)
    admin = p.resolve(ctx, capabilities=("CAP_SYS_ADMIN",), privileged=False)
    assert admin is not None
    assert [r["action"] for r in rule_for(admin, "bpf")] == ["SCMP_ACT_ALLOW"]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "No such file"),
        ("not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        ("{}", "no defaultAction"),
        ({"defaultAction": "ALLOW"}, "unknown action"),
        ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": {}}, "must be a list"),
        ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [1]}, "not an object"),
        ({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["x86_64"]}, "unknown architecture"),
        ({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["NOPE"]}, "unknown flag"),
        (
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "architectures": ["SCMP_ARCH_X86"],
                "archMap": [{}],
            },
            "both architectures and archMap",
        ),
        (
            {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["x"], "action": "KILL"}]},
            "unknown action",
        ),
        (
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": [1], "action": "SCMP_ACT_LOG"}],
            },
            "non-empty string",
        ),
        (
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"name": "x", "names": ["y"], "action": "SCMP_ACT_LOG"}],
            },
            "both name and names",
        ),
        (
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [
                    {
                        "names": ["x"],
                        "action": "SCMP_ACT_LOG",
                        "args": [{"index": 6, "op": "SCMP_CMP_EQ"}],
                    }
                ],
            },
            "index",
        ),
        (
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [
                    {"names": ["x"], "action": "SCMP_ACT_LOG", "args": [{"index": 0, "op": "EQ"}]}
                ],
            },
            "unknown operator",
        ),
        (
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [
                    {
                        "names": ["x"],
                        "action": "SCMP_ACT_LOG",
                        "args": [{"index": 0, "value": -1, "op": "SCMP_CMP_EQ"}],
                    }
                ],
            },
            "value",
        ),
        (
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [
                    {"names": ["x"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1, "errno": "EINVAL"}
                ],
            },
            "contradicts",
        ),
        (
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["x"], "action": "SCMP_ACT_ERRNO", "errno": "ENOTANERRNO"}],
            },
            "unknown errno",
        ),
        (
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [
                    {"names": ["x"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "new"}}
                ],
            },
            "not a kernel version",
        ),
        (
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["x"], "action": "SCMP_ACT_ALLOW", "excludes": []}],
            },
            "must be an object",
        ),
    ],
)
def test_bad_localhost_profile(tmp_path: Path, content: Any, match: str) -> None:
    path = tmp_path / "p.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content)
    elif content is not None:
        write_json(path, content)
    ctx = CSC(seccomp=profile(PT.Localhost, str(path)))
    with pytest.raises(InvalidArgument, match=match):
        profiles(None).resolve(ctx, capabilities=CAPS, privileged=False)


@pytest.mark.parametrize("ref", ["relative/p.json", "p.json", "localhost/p.json"])
def test_relative_localhost_path(ref: str) -> None:
    ctx = CSC(seccomp=profile(PT.Localhost, ref))
    with pytest.raises(InvalidArgument, match="absolute path"):
        profiles(None).resolve(ctx, capabilities=CAPS, privileged=False)


def test_deprecated_localhost_errors(tmp_path: Path) -> None:
    p = profiles(None)
    for value in ("localhost/", "localhost/rel.json", f"localhost/{tmp_path}/missing.json"):
        with pytest.raises(InvalidArgument):
            p.resolve(CSC(seccomp_profile_path=value), capabilities=CAPS, privileged=False)
    with pytest.raises(InvalidArgument, match="regular file"):
        p.resolve(
            CSC(seccomp_profile_path=f"localhost/{tmp_path}"), capabilities=CAPS, privileged=False
        )


def test_oversized_localhost_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_json(tmp_path / "big.json", OCI_PROFILE)
    monkeypatch.setattr(security, "MAX_PROFILE_SIZE", 10)
    with pytest.raises(InvalidArgument, match="larger than"):
        profiles(None).localhost(str(path), CAPS)


# -- kernel without seccomp -----------------------------------------------------------------


def test_kernel_without_seccomp(containers_file: Path) -> None:
    p = profiles(containers_file, supported=False)
    assert p.resolve(CSC(), capabilities=CAPS, privileged=False) is None
    assert (
        p.resolve(CSC(seccomp=profile(PT.Unconfined)), capabilities=CAPS, privileged=False) is None
    )
    with pytest.raises(FailedPrecondition, match="no seccomp"):
        p.resolve(CSC(seccomp=profile(PT.RuntimeDefault)), capabilities=CAPS, privileged=False)
    with pytest.raises(FailedPrecondition, match="/p.json"):
        p.resolve(
            CSC(seccomp_profile_path="localhost//p.json"), capabilities=CAPS, privileged=False
        )
    assert security.seccomp_supported() == ("Seccomp:" in Path("/proc/self/status").read_text())


# -- cache ----------------------------------------------------------------------------------


def test_cache(containers_file: Path) -> None:
    p = profiles(containers_file)
    first = p.runtime_default(CAPS)
    assert (p.hits, p.misses) == (0, 1)
    second = p.runtime_default(reversed(CAPS))  # same set of caps, another order
    assert (p.hits, p.misses) == (1, 1)
    assert second == first
    second["syscalls"][0]["names"].append("mutated")  # a copy: the cache is untouched
    second["architectures"].clear()
    assert p.runtime_default(CAPS) == first
    p.runtime_default(("CAP_SYS_ADMIN",))  # other caps: another entry
    assert p.misses == 2
    # a changed file is read again
    doc = json.loads(containers_file.read_text())
    doc["defaultAction"] = "SCMP_ACT_KILL"
    write_json(containers_file, doc)
    stat = containers_file.stat()
    os.utime(containers_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert p.runtime_default(CAPS)["defaultAction"] == "SCMP_ACT_KILL"


def test_cache_of_localhost_and_builtin(tmp_path: Path) -> None:
    path = write_json(tmp_path / "oci.json", OCI_PROFILE)
    p = profiles(None)
    a = p.localhost(str(path), CAPS)
    b = p.localhost(str(path), CAPS)
    assert a == b
    assert a is not b
    assert p.hits == 1
    p.runtime_default(CAPS)
    p.runtime_default(CAPS)
    assert p.hits == 2


def test_cache_is_bounded(tmp_path: Path) -> None:
    p = profiles(None, cache_size=2)
    paths = [write_json(tmp_path / f"p{i}.json", OCI_PROFILE) for i in range(3)]
    for path in paths:
        p.localhost(str(path), ())
    p.localhost(str(paths[0]), ())  # evicted: read again
    assert (p.hits, p.misses) == (0, 4)
    p.localhost(str(paths[2]), ())
    assert p.hits == 1
    p.clear_cache()
    p.localhost(str(paths[2]), ())
    assert p.misses == 5


# -- AppArmor -------------------------------------------------------------------------------

NO_APPARMOR = not Path("/sys/module/apparmor").exists()


@pytest.mark.skipif(not NO_APPARMOR, reason="this host has AppArmor")
def test_apparmor_is_disabled_here() -> None:
    assert apparmor_enabled() is False


@pytest.mark.skipif(not NO_APPARMOR, reason="this host has AppArmor")
def test_apparmor_on_this_host() -> None:
    for ctx in (
        None,
        CSC(),
        SSC(),
        CSC(apparmor=profile(PT.RuntimeDefault)),
        CSC(apparmor=profile(PT.Unconfined)),
        CSC(apparmor_profile="runtime/default"),
        CSC(apparmor_profile="unconfined"),
        CSC(apparmor=profile(PT.Unconfined), apparmor_profile="localhost/ignored"),
    ):
        assert check_apparmor(ctx) is None
    with pytest.raises(
        FailedPrecondition, match="AppArmor is not enabled on this host; profile 'k8s-nginx'"
    ):
        check_apparmor(CSC(apparmor=profile(PT.Localhost, "k8s-nginx")))
    with pytest.raises(FailedPrecondition, match="profile 'my-prof' requested"):
        check_apparmor(CSC(apparmor_profile="localhost/my-prof"))
    with pytest.raises(FailedPrecondition, match="AppArmor is not enabled"):
        check_apparmor(CSC(apparmor=profile(PT.Localhost, "p"), privileged=True))
    with pytest.raises(FailedPrecondition, match="AppArmor is not enabled"):
        check_apparmor(SSC(apparmor=profile(PT.Localhost, "p")))


def test_apparmor_invalid_strings() -> None:
    for value in ("localhost/", "default", "docker/default"):
        with pytest.raises(InvalidArgument, match="invalid AppArmor profile"):
            check_apparmor(CSC(apparmor_profile=value), enabled=False)


def test_apparmor_when_enabled() -> None:
    local = CSC(apparmor=profile(PT.Localhost, "k8s-nginx"))
    assert check_apparmor(local, enabled=True) == "k8s-nginx"
    prefixed = CSC(apparmor=profile(PT.Localhost, "localhost/k8s-nginx"))
    assert check_apparmor(prefixed, enabled=True) == "k8s-nginx"
    assert check_apparmor(CSC(apparmor_profile="localhost/p"), enabled=True) == "p"
    privileged_local = CSC(apparmor=profile(PT.Localhost, "p"), privileged=True)
    assert check_apparmor(privileged_local, enabled=True) == "p"
    assert check_apparmor(CSC(apparmor=profile(PT.Unconfined)), enabled=True) is None
    assert check_apparmor(CSC(), enabled=True) is None  # no default profile configured
    assert check_apparmor(CSC(), enabled=True, default_profile="crio-default") == "crio-default"
    default = CSC(apparmor=profile(PT.RuntimeDefault))
    assert check_apparmor(default, enabled=True, default_profile="d") == "d"
    privileged = CSC(apparmor=profile(PT.RuntimeDefault), privileged=True)
    assert check_apparmor(privileged, enabled=True, default_profile="d") is None
    assert (
        check_apparmor(CSC(apparmor=profile(PT.RuntimeDefault)), enabled=False, default_profile="d")
        is None
    )
    both = CSC(apparmor=profile(PT.RuntimeDefault), apparmor_profile="localhost/x")
    assert check_apparmor(both, enabled=True) is None


# -- runc -----------------------------------------------------------------------------------

RUNC = shutil.which("runc")
CGROUP_ROOT = Path("/sys/fs/cgroup")
runc_only = pytest.mark.skipif(
    os.geteuid() != 0 or RUNC is None or not Path("/bin/busybox").is_file(),
    reason="needs root, runc and busybox-static",
)
#: the capabilities of testing_bundles' config.json
BUNDLE_CAPS = ("CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE")


@pytest.fixture(scope="module")
def busybox_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_rootfs(
        tmp_path_factory.mktemp("seccomp") / "rootfs",
        applets=(*APPLETS, "mkdir", "grep", "unshare", "rmdir"),
    )


class Runner:
    """Runs busybox commands under runc with a given linux.seccomp; cleans up after itself."""

    def __init__(self, base: Path, rootfs: Path) -> None:
        self.base = base
        self.rootfs = rootfs
        self.state = base / "runc-state"
        self.parent = f"/criadapt-seccomp-test/{uuid.uuid4().hex[:12]}"

    def run(self, seccomp: dict[str, Any] | None, script: str) -> tuple[int, str, str]:
        assert RUNC is not None
        cid = f"seccomp-{uuid.uuid4().hex[:12]}"
        bundle = make_bundle(
            self.base / cid,
            self.rootfs,
            ["sh", "-c", script],
            cgroups_path=f"{self.parent}/{cid}",
        )
        config = json.loads((bundle / "config.json").read_text())
        if seccomp is not None:
            config["linux"]["seccomp"] = seccomp
        (bundle / "config.json").write_text(json.dumps(config))
        try:
            proc = subprocess.run(
                [RUNC, "--root", str(self.state), "run", "--bundle", str(bundle), cid],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        finally:
            subprocess.run(
                [RUNC, "--root", str(self.state), "delete", "--force", cid],
                capture_output=True,
                timeout=30,
                check=False,
            )
        return proc.returncode, proc.stdout, proc.stderr

    def cleanup(self) -> list[Path]:
        """Remove the test's cgroups (bottom-up); returns those that could not be removed."""
        left = []
        top = self.parent.strip("/").split("/")[0]
        for controller in CGROUP_ROOT.iterdir() if CGROUP_ROOT.is_dir() else []:
            for base in (controller / self.parent.strip("/"), controller / top):
                if not base.is_dir():
                    continue
                subdirs = sorted(
                    (p for p in base.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)
                )
                for path in [*subdirs, base]:
                    with contextlib.suppress(OSError):
                        path.rmdir()
            leftover = controller / self.parent.strip("/")
            if leftover.is_dir():
                left.append(leftover)
        return left


@pytest.fixture
def runner(tmp_path: Path, busybox_root: Path) -> Iterator[Runner]:
    r = Runner(tmp_path, busybox_root)
    yield r
    assert r.cleanup() == []


SECCOMP_MODE = "grep Seccomp: /proc/self/status"


@runc_only
@needs_podman_profile
def test_runc_runtime_default(runner: Runner) -> None:
    resolved = SeccompProfiles().resolve(
        CSC(seccomp=profile(PT.RuntimeDefault)), capabilities=BUNDLE_CAPS, privileged=False
    )
    assert resolved is not None
    rc, out, err = runner.run(resolved, SECCOMP_MODE)
    assert rc == 0, err
    assert out.split() == ["Seccomp:", "2"]


@runc_only
def test_runc_unset_means_runtime_default(runner: Runner) -> None:
    resolved = SeccompProfiles().resolve(CSC(), capabilities=BUNDLE_CAPS, privileged=False)
    rc, out, err = runner.run(resolved, SECCOMP_MODE)
    assert rc == 0, err
    assert out.split() == ["Seccomp:", "2"]


@runc_only
def test_runc_unconfined(runner: Runner) -> None:
    p = SeccompProfiles()
    for ctx in (CSC(seccomp=profile(PT.Unconfined)), CSC(seccomp_profile_path="unconfined")):
        resolved = p.resolve(ctx, capabilities=BUNDLE_CAPS, privileged=False)
        assert resolved is None
        rc, out, err = runner.run(resolved, SECCOMP_MODE)
        assert rc == 0, err
        assert out.split() == ["Seccomp:", "0"]
    privileged = p.resolve(CSC(), capabilities=BUNDLE_CAPS, privileged=True)
    assert privileged is None


@runc_only
def test_runc_localhost_denies_mkdir(runner: Runner, tmp_path: Path) -> None:
    deny_mkdir = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
    }
    path = write_json(tmp_path / "deny-mkdir.json", deny_mkdir)
    p = SeccompProfiles()
    script = "mkdir /tmp/x && echo made; " + SECCOMP_MODE
    resolved = p.resolve(
        CSC(seccomp=profile(PT.Localhost, str(path))), capabilities=BUNDLE_CAPS, privileged=False
    )
    rc, out, err = runner.run(resolved, script)
    assert "made" not in out
    assert "Operation not permitted" in err
    assert out.split() == ["Seccomp:", "2"]
    rc, out, err = runner.run(None, script)
    assert rc == 0, err
    assert out.split() == ["made", "Seccomp:", "0"]


@runc_only
def test_runc_localhost_containers_form_follows_caps(runner: Runner, tmp_path: Path) -> None:
    # the deny rule applies only without CAP_SYS_ADMIN (excludes.caps), like the default's
    doc = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]}],
        "syscalls": [
            {
                "names": ["mkdir", "mkdirat"],
                "action": "SCMP_ACT_ERRNO",
                "errno": "EACCES",
                "comment": "",
                "excludes": {"caps": ["CAP_SYS_ADMIN"]},
            }
        ],
    }
    path = write_json(tmp_path / "containers.json", doc)
    p = SeccompProfiles()
    ctx = CSC(seccomp_profile_path=f"localhost/{path}")
    script = "mkdir /tmp/y && echo made"
    resolved = p.resolve(ctx, capabilities=BUNDLE_CAPS, privileged=False)
    rc, out, err = runner.run(resolved, script)
    assert rc != 0
    assert "Permission denied" in err
    admin = p.resolve(ctx, capabilities=(*BUNDLE_CAPS, "CAP_SYS_ADMIN"), privileged=False)
    assert admin is not None
    assert admin["syscalls"] == []
    rc, out, err = runner.run(admin, script)
    assert (rc, out.strip()) == (0, "made"), err


@runc_only
def test_runc_builtin_default(runner: Runner, tmp_path: Path) -> None:
    p = SeccompProfiles(default_profile=tmp_path / "missing.json")
    resolved = p.resolve(CSC(), capabilities=BUNDLE_CAPS, privileged=False)
    script = "unshare -U true && echo userns-ok; mkdir /tmp/z && echo made; " + SECCOMP_MODE
    rc, out, err = runner.run(resolved, script)
    assert rc == 0, err
    assert "userns-ok" not in out
    assert "unshare(0x10000000): Operation not permitted" in err
    assert "made" in out
    assert out.split()[-2:] == ["Seccomp:", "2"]
    rc, out, err = runner.run(None, script)  # the user namespace is refused by the filter only
    assert rc == 0, err
    assert "userns-ok" in out
