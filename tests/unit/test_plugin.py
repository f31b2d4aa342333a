"""Backend discovery through entry points, with real (temporary) distributions on sys.path."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from criadapt.plugin import (
    BackendNotFound,
    answering_impls,
    check_backend,
    get_plugin_manager,
    installed_backends,
)


def make_distribution(root: Path, name: str, groups: dict[str, dict[str, str]]) -> None:
    info = root / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    lines = []
    for group, entries in groups.items():
        lines.append(f"[{group}]")
        lines.extend(f"{key} = {value}" for key, value in entries.items())
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "mine_backend.py").write_text(
        textwrap.dedent("""
        from criadapt import hookimpl
        from criadapt import models as m

        @hookimpl
        def criadapt_version(version):
            return m.VersionResponse(runtime_name="mine")
    """)
    )
    (tmp_path / "mine_wrapper.py").write_text(
        textwrap.dedent("""
        from criadapt import hookimpl

        CALLS = []

        @hookimpl(wrapper=True)
        def criadapt_version(version):
            CALLS.append(version)
            return (yield)
    """)
    )
    make_distribution(
        tmp_path,
        "criadapt_mine",
        {
            "criadapt.backends": {"mine": "mine_backend"},
            "criadapt.plugins": {"wrap": "mine_wrapper"},
        },
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_backend_loaded_by_name_with_extension_plugins(site: Path) -> None:
    pm = get_plugin_manager("mine")
    assert pm.hook.criadapt_version(version="v1", call=None).runtime_name == "mine"
    assert len(answering_impls(pm, "criadapt_version")) == 1  # the wrapper does not answer
    assert "ListContainers" in check_backend(pm)
    import mine_wrapper  # type: ignore[import-not-found]

    assert mine_wrapper.CALLS == ["v1"]


def test_extension_plugins_can_be_blocked(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRIADAPT_DISABLE_PLUGINS", "wrap")
    pm = get_plugin_manager("mine")
    assert pm.is_blocked("wrap")
    assert pm.get_plugin("wrap") is None


def test_only_the_named_backend_is_loaded(site: Path) -> None:
    pm = get_plugin_manager("fake")
    assert pm.get_plugin("mine") is None


def test_unknown_backend_names_it_and_the_installed_ones(site: Path) -> None:
    with pytest.raises(BackendNotFound) as exc:
        get_plugin_manager("nosuch")
    message = str(exc.value)
    assert "'nosuch'" in message and "criadapt-nosuch" in message
    assert "fake" in message and "mine" in message
    assert "\n" not in message


def test_installed_backends_does_not_import_them() -> None:
    code = (
        "import sys; from criadapt.plugin import installed_backends; "
        "b = installed_backends(); "
        "print(b['fake'], 'criadapt.testing.fake' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["criadapt.testing.fake", "False"]
    assert "fake" in installed_backends()
