"""The wire layer: the only code that touches ``*_pb2`` objects.

- :mod:`.converter`: one cattrs converter between CRI protobuf messages (both API versions)
  and the attrs models;
- :mod:`.pb`: the generated protobuf modules, by API version.
"""

from criadapt.wire.converter import decode, encode, make_converter, to_pb

__all__ = ["decode", "encode", "make_converter", "to_pb"]
