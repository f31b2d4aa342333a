"""``Exec``, ``Attach``, ``PortForward``: a streaming URL, or UNIMPLEMENTED and nothing else."""

from __future__ import annotations

import urllib.parse

import pytest

from criadapt import models as m
from criadapt.client import Client
from criadapt.errors import NotFound, Unimplemented
from criadapt.testing.contract.helpers import capable_call, random_id
from criadapt.testing.plugin import ContainerFactory, SandboxFactory


def assert_url(url: str) -> None:
    parts = urllib.parse.urlsplit(url)
    assert parts.scheme in ("http", "https") and parts.netloc, f"not a streaming URL: {url!r}"


def test_exec(
    cri: Client, container_factory: ContainerFactory, backend_info: m.BackendInfo
) -> None:
    container = container_factory(start=True)
    response = capable_call(
        backend_info,
        "streaming",
        lambda: cri.exec(container_id=container.id, cmd=["sh"], stdin=True, stdout=True),
    )
    if response is not None:
        assert_url(response.url)


def test_attach(
    cri: Client, container_factory: ContainerFactory, backend_info: m.BackendInfo
) -> None:
    container = container_factory(start=True)
    response = capable_call(
        backend_info,
        "streaming",
        lambda: cri.attach(container_id=container.id, stdout=True, stderr=True),
    )
    if response is not None:
        assert_url(response.url)


def test_port_forward(
    cri: Client, sandbox_factory: SandboxFactory, backend_info: m.BackendInfo
) -> None:
    sandbox = sandbox_factory()
    response = capable_call(
        backend_info,
        "streaming",
        lambda: cri.port_forward(pod_sandbox_id=sandbox.id, port=[8080]),
    )
    if response is not None:
        assert_url(response.url)


def test_exec_in_an_unknown_container(cri: Client) -> None:
    with pytest.raises((NotFound, Unimplemented)):
        cri.exec(container_id=random_id(), cmd=["sh"], stdout=True)


def test_attach_to_an_unknown_container(cri: Client) -> None:
    with pytest.raises((NotFound, Unimplemented)):
        cri.attach(container_id=random_id(), stdout=True)


def test_port_forward_to_an_unknown_sandbox(cri: Client) -> None:
    with pytest.raises((NotFound, Unimplemented)):
        cri.port_forward(pod_sandbox_id=random_id(), port=[80])
