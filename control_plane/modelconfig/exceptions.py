"""Errors raised while reading a model's signature or generating its Triton config."""

from __future__ import annotations

from control_plane.errors import InvalidRequest


class InvalidArtifact(InvalidRequest):
    """The uploaded file is not a usable model of its declared format (corrupt, unsupported, mismatched)."""

    kind = "InvalidArtifact"


class InvalidModelSpec(InvalidRequest):
    """The model's declared settings (signature, batching, instance groups) cannot be served as given."""

    kind = "InvalidModelSpec"
