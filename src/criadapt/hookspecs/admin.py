"""Hooks behind the ``criadapt images`` commands (no server involved).

They work on a backend's store directly, whether or not ``criadapt serve`` runs, like
``ctr images import`` on an air-gapped node. Backends implement them at module level: they are
called without ``criadapt_configure``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from criadapt._markers import hookspec

if TYPE_CHECKING:
    from criadapt.config import Config
    from criadapt.models import Image


@hookspec(firstresult=True)
def criadapt_import_images(config: Config, archive: Path) -> Sequence[Image]:
    """Import every image of an OCI image layout archive or a ``docker save`` archive.

    Imported images behave exactly like pulled ones. Returns them as CRI ``Image`` models.
    """


@hookspec(firstresult=True)
def criadapt_local_images(config: Config) -> Sequence[Image]:
    """The images in the backend's store, as ``ListImages`` would return them."""
