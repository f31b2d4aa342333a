"""``ReopenContainerLog``: succeeds for a running container."""

from __future__ import annotations

import pytest

from criadapt import models as m
from criadapt.client import Client
from criadapt.errors import NotFound, Unimplemented
from criadapt.testing.contract.helpers import capable_call, random_id
from criadapt.testing.plugin import ContainerFactory


def test_reopen_the_log_of_a_running_container(
    cri: Client, container_factory: ContainerFactory, backend_info: m.BackendInfo
) -> None:
    container = container_factory(start=True)
    capable_call(
        backend_info,
        "reopen_container_log",
        lambda: cri.reopen_container_log(container_id=container.id),
    )


def test_reopen_the_log_of_an_unknown_container(cri: Client) -> None:
    with pytest.raises((NotFound, Unimplemented)):
        cri.reopen_container_log(container_id=random_id())
