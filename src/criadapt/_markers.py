"""pluggy markers: ``hookimpl`` is public (re-exported as ``criadapt.hookimpl``), the spec is ours."""

import pluggy

PROJECT = "criadapt"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)
