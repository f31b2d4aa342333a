"""Typed CRI domain models.

One frozen attrs class per CRI ``runtime.v1`` message (the superset of v1alpha2), with the
proto's field names and proto3 defaults: strings ``""``, numbers ``0``, messages ``None``,
repeated fields ``()``, maps ``{}``, enums their zero value. Validation rules live in
:mod:`criadapt.validators`; constructing an invalid model raises
:class:`criadapt.validators.ValidationError`.

Extra, non-proto models used by hooks live in :mod:`criadapt.models.extra`.
"""

from criadapt.models._generated import *  # noqa: F403
from criadapt.models._generated import ENUMS, MODELS
from criadapt.models._generated import __all__ as _generated_all
from criadapt.models.extra import BackendInfo

__all__ = [*_generated_all, "ENUMS", "MODELS", "BackendInfo"]  # noqa: PLE0604
