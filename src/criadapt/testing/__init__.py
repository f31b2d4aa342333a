"""Helpers for testing CRI clients and criadapt backends.

- :mod:`criadapt.testing.fake`: an in-memory reference backend (entry point ``fake`` in the
  ``criadapt.backends`` group) with CRI semantics and no root, processes or files.
- :mod:`criadapt.testing.plugin`: a pytest plugin that serves a backend in-process on a
  temporary unix socket and gives tests a client (``cri``, ``cri_alpha`` for v1alpha2), the
  backend's ``backend_info``, a pulled ``test_image``, ``sandbox_factory`` /
  ``container_factory`` that remove what they create, and the ``requires(capability)``
  marker. It is not registered under ``pytest11``: load it with ``-p``.
- :mod:`criadapt.testing.contract`: the CRI contract suite every backend must pass (the MUSTs
  of ``api.proto`` and critest's semantics), with its builders and assertions in
  :mod:`criadapt.testing.contract.helpers`.

Run the contract suite against an installed backend (``fake`` by default)::

    pytest -p criadapt.testing.plugin --criadapt-backend=NAME --pyargs criadapt.testing.contract

with ``--criadapt-config FILE`` for the backend's settings and ``--criadapt-image REF`` for an
image it can pull (default ``busybox:latest``). criadapt's own ``pytest`` runs it against
``fake`` on every commit (``tests/contract/test_contract_fake.py``).
"""
