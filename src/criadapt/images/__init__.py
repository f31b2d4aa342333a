"""Image machinery shared by backends: reference parsing and normalisation."""

from criadapt.images.reference import Reference, is_image_id, parse_reference

__all__ = ["Reference", "is_image_id", "parse_reference"]
