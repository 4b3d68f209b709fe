"""Errors of the Triton process manager and of the Triton client adapter."""

from __future__ import annotations

from control_plane.errors import AppError, NotFound, ServiceUnavailable


class TritonNotInstalled(AppError):
    """The bundled Triton (nvidia-pytriton) or its stub for this Python is missing."""

    status_code = 500
    kind = "TritonNotInstalled"


class TritonStartError(ServiceUnavailable):
    """The Triton process exited or did not become ready in time."""

    kind = "TritonStartError"

    def __init__(self, message: str, *, port_taken: bool = False):
        super().__init__(message)
        self.port_taken = port_taken  # it exited because one of its ports was in use


class TritonUnavailable(ServiceUnavailable):
    """Triton cannot be reached (connection refused, timeout, broken connection)."""

    kind = "TritonUnavailable"


class TritonLoadTimeout(TritonUnavailable):
    """A model's load did not finish within the client's timeout (Triton may still be loading it)."""

    kind = "TritonLoadTimeout"


class TritonModelNotFound(NotFound):
    """Triton does not know the model (not in its repository, or not loaded)."""

    kind = "ModelNotFound"


class TritonModelLoadError(AppError):
    """Triton refused to load a model; the message is Triton's own, shown to publishers.

    400, not 422: the design keeps 422 for malformed request bodies, and retrying the
    same artifact will fail the same way (bad config.pbtxt, model code raising, ...).
    """

    status_code = 400
    kind = "ModelLoadFailed"


class TritonError(AppError):
    """Triton answered with an error we have no finer class for."""

    status_code = 502
    kind = "TritonError"
