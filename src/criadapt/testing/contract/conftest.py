"""Fail early, with the command to use, when the suite is run without its pytest plugin."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if items and config.getoption("criadapt_backend", None) is None:
        raise pytest.UsageError(
            "the criadapt contract suite needs its plugin: run "
            "pytest -p criadapt.testing.plugin --criadapt-backend=NAME "
            "--pyargs criadapt.testing.contract"
        )
