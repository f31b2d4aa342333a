"""``Version``: runtime name, semver runtime version, the API version spoken."""

from __future__ import annotations

import re

from criadapt import models as m
from criadapt.client import Client

SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$"
)


def test_version_names_the_runtime(cri: Client) -> None:
    response = cri.version(version="v1")
    assert response.version, "VersionResponse.version (the kubelet runtime API) is empty"
    assert response.runtime_name, "VersionResponse.runtime_name is empty"


def test_runtime_version_is_semver(cri: Client) -> None:
    response = cri.version(version="v1")
    assert SEMVER.match(response.runtime_version), (
        f"runtime_version {response.runtime_version!r} must be semver-compatible"
    )


def test_runtime_api_version_is_v1_over_v1(cri: Client) -> None:
    assert cri.version(version="v1").runtime_api_version == "v1"


def test_version_without_a_requested_version(cri: Client) -> None:
    assert cri.version().runtime_api_version == "v1"


def test_version_matches_backend_info(cri: Client, backend_info: m.BackendInfo) -> None:
    response = cri.version()
    if backend_info.runtime_name:
        assert response.runtime_name == backend_info.runtime_name
    if backend_info.runtime_version:
        assert response.runtime_version == backend_info.runtime_version
