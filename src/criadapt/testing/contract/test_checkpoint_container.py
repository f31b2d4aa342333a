"""``CheckpointContainer`` (v1 only): succeeds for a running container when supported."""

from __future__ import annotations

from pathlib import Path

import pytest

from criadapt import models as m
from criadapt.client import Client
from criadapt.errors import NotFound, Unimplemented
from criadapt.testing.contract.helpers import capable_call, random_id
from criadapt.testing.plugin import ContainerFactory


def test_checkpoint_a_running_container(
    cri: Client,
    container_factory: ContainerFactory,
    backend_info: m.BackendInfo,
    tmp_path: Path,
) -> None:
    container = container_factory(start=True)
    location = str(tmp_path / "checkpoint.tar")
    capable_call(
        backend_info,
        "checkpoint",
        lambda: cri.checkpoint_container(container_id=container.id, location=location),
    )


def test_checkpoint_an_unknown_container(cri: Client, tmp_path: Path) -> None:
    with pytest.raises((NotFound, Unimplemented)):
        cri.checkpoint_container(
            container_id=random_id(), location=str(tmp_path / "checkpoint.tar")
        )
