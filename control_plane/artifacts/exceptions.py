"""Errors of the artifact store, each carrying its HTTP status."""

from __future__ import annotations

from control_plane.errors import AppError, NotFound, PayloadTooLarge, ServiceUnavailable


class ArtifactError(AppError):
    """Base of every artifact-store error."""


class ArtifactNotFound(ArtifactError, NotFound):
    """No artifact with this sha256 is stored."""


class ArtifactCorrupted(ArtifactError):
    """The stored bytes do not match their sha256 or size (the backend is at fault, not the client)."""

    status_code = 502
    kind = "ArtifactCorrupted"


class ArtifactTooLarge(ArtifactError, PayloadTooLarge):
    """The upload went past the allowed number of bytes."""


class ArtifactStoreUnavailable(ArtifactError, ServiceUnavailable):
    """The storage backend does not answer, or refuses to work."""
