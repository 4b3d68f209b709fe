"""The bundled Triton server: locating it, running it as a child process, and talking to it."""

from control_plane.tritonserver.client import TritonClient
from control_plane.tritonserver.distribution import (
    TritonDistribution,
    locate_tritonserver,
    prepare_backend_dir,
)
from control_plane.tritonserver.exceptions import (
    TritonError,
    TritonLoadTimeout,
    TritonModelLoadError,
    TritonModelNotFound,
    TritonNotInstalled,
    TritonStartError,
    TritonUnavailable,
)
from control_plane.tritonserver.process import TritonProcess, free_port

__all__ = [
    "TritonClient",
    "TritonDistribution",
    "TritonError",
    "TritonLoadTimeout",
    "TritonModelLoadError",
    "TritonModelNotFound",
    "TritonNotInstalled",
    "TritonProcess",
    "TritonStartError",
    "TritonUnavailable",
    "free_port",
    "locate_tritonserver",
    "prepare_backend_dir",
]
