"""The runc column of docs/support.md matches what the configured runc backend answers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from criadapt import errors
from criadapt.plugin import check_backend
from criadapt.rpcs import RPCS
from criadapt_runc.testing import RuncServer

DOC = Path(__file__).resolve().parents[3] / "docs" / "support.md"


def runc_column() -> dict[str, str]:
    table = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 6 and cells[0] in {r.name for r in RPCS}:
            table[cells[0]] = cells[4]
    return table


def test_runc_column_matches_the_backend(runc_server: Callable[..., RuncServer]) -> None:
    server = runc_server()
    missing = set(check_backend(server.pm))
    column = runc_column()
    assert set(column) == {r.name for r in RPCS}
    for rpc in RPCS:
        expected = "✗" if rpc.name in missing else "✔"
        assert column[rpc.name] == expected, rpc.name
    cri = server.client
    assert cri is not None
    with pytest.raises(errors.Unimplemented):
        cri.checkpoint_container(container_id="x" * 64)
