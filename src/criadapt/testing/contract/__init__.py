"""The CRI contract suite: backend-agnostic tests every criadapt backend must pass.

Run it against a backend with the plugin of :mod:`criadapt.testing.plugin`::

    pytest -p criadapt.testing.plugin --criadapt-backend=NAME --pyargs criadapt.testing.contract

One module per RPC (``test_run_pod_sandbox.py`` for ``RunPodSandbox``), plus
``test_images.py`` (the ImageService), ``test_stats.py``, ``test_streaming.py``,
``test_errors.py`` (requests that break the contract are ``INVALID_ARGUMENT``, naming the
field) and ``test_api_versions.py`` (the same calls over CRI v1alpha2). They follow the
MUSTs of ``api.proto`` and the semantics critest checks (``cri-tools pkg/validate``):
idempotent Stop/Remove, ``NOT_FOUND`` from the Status calls, ``ImageStatus`` of a missing
image answering ``image=None``, sandbox and container state machines, labels and annotations
returned as given, list filters. Optional features are marked
``@pytest.mark.requires("<capability>")``; :mod:`criadapt.testing.contract.helpers` has the
builders and assertions they share.
"""
