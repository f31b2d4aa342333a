"""criadapt: a Kubernetes Container Runtime Interface (CRI) runtime in Python.

``import criadapt`` gives typed CRI models (:mod:`criadapt.models`), the cattrs converter
between them and the CRI protobuf messages (:mod:`criadapt.wire`), a typed client
(:mod:`criadapt.client`), and the ``hookimpl`` marker for backends.
"""

from criadapt._markers import hookimpl

__version__ = "0.1.0.dev0"

__all__ = ["__version__", "hookimpl"]
