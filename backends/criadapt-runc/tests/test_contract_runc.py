"""The core CRI contract suite, run against the runc backend (real runc, real registry)."""

from __future__ import annotations

import subprocess
import sys

from criadapt.testing.images import busybox_image
from criadapt.testing.registry import Registry


def test_contract_suite_passes_on_runc(registry: Registry) -> None:
    ref = registry.push(busybox_image(), "contract/busybox", "latest")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "criadapt.testing.plugin",
            "--criadapt-backend=runc",
            f"--criadapt-image={ref}",
            "--pyargs",
            "criadapt.testing.contract",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-4000:]
    assert " passed" in result.stdout
