"""List filters with CRI semantics, shared by backends."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def matches_labels(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    """Whether ``labels`` has every key of ``selector`` with the same value (AND semantics)."""
    return all(labels.get(key) == value for key, value in selector.items())


def resolve_id(wanted: str, ids: Sequence[str]) -> list[str]:
    """The ids an id filter selects: the exact id, else the one id it is a unique prefix of
    (containerd's truncindex behaviour); nothing when the prefix is ambiguous or unknown."""
    if wanted in ids:
        return [wanted]
    matches = [i for i in ids if i.startswith(wanted)]
    return matches if len(matches) == 1 else []
