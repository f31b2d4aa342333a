"""The shipped contract suite (``criadapt.testing.contract``) against the ``fake`` backend.

It runs in its own pytest process, exactly as a backend runs it::

    pytest -p criadapt.testing.plugin --criadapt-backend=fake --pyargs criadapt.testing.contract

so the plugin's options, fixtures and session-scoped server stay out of this test run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_contract_suite_passes_against_fake() -> None:
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "criadapt.testing.plugin",
        "--criadapt-backend=fake",
        "--pyargs",
        "criadapt.testing.contract",
        "-q",
        "-p",
        "no:cacheprovider",
    ]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTEST_ADDOPTS", None)
    result = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(command[2:])} failed:\n{output}"
