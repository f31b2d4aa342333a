"""Models that are not CRI messages but are part of criadapt's hook API."""

from __future__ import annotations

from collections.abc import Mapping

import attrs


@attrs.frozen(kw_only=True)
class BackendInfo:
    """What a backend says about itself (``criadapt_backend_info``)."""

    #: the entry-point name, e.g. ``runc``
    name: str
    #: the backend distribution's version
    version: str
    #: runtime name reported by ``Version`` (e.g. ``criadapt-runc``)
    runtime_name: str = ""
    #: version of what the backend drives (runc, dockerd, podman), reported by ``Version``
    runtime_version: str = ""
    #: capabilities the contract suite may require (``exec_sync``, ``streaming``, ``stats``, ...)
    capabilities: frozenset[str] = frozenset()
    #: free-form details shown by ``criadapt backends`` and ``Status(verbose)``
    details: Mapping[str, str] = attrs.Factory(dict)
