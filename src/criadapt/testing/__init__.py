"""Helpers for testing CRI clients and criadapt backends.

- :mod:`criadapt.testing.fake`: an in-memory reference backend (entry point ``fake`` in the
  ``criadapt.backends`` group) with CRI semantics and no root, processes or files.
"""
