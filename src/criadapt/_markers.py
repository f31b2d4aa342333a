"""pluggy markers: ``hookimpl`` is public (``criadapt.hookimpl``); the spec marker is ours."""

import pluggy

PROJECT = "criadapt"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)
