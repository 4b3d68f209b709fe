"""The model-repository interface: one directory per Triton model, `config.pbtxt` + `1/...`."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from control_plane.errors import InvalidRequest

_MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*(--[a-z0-9_-]+)*$")


@dataclass(frozen=True)
class RepositoryFile:
    """A file to place under the model's directory: from a local path or from bytes."""

    relative_path: str
    source: Path | None = None
    content: bytes | None = None


def check_model_name(name: str) -> str:
    """Reject anything that is not one safe directory name."""
    if not _MODEL_NAME.fullmatch(name) or len(name) > 200:
        raise InvalidRequest(f"unsafe Triton model name {name!r}")
    return name


def check_relative_path(relative: str) -> PurePosixPath:
    """A relative path inside the model directory; no absolute paths, no '..'."""
    parts = relative.split("/")
    if relative.startswith("/") or any(part in ("..", ".", "") for part in parts):
        raise InvalidRequest(f"unsafe path in model directory: {relative!r}")
    return PurePosixPath(*parts)


class ModelRepository(ABC):
    """Where Triton reads models from."""

    @property
    @abstractmethod
    def location(self) -> str:
        """The repository as Triton's `--model-repository` takes it."""

    @abstractmethod
    def write_model(self, name: str, *, config_text: str, files: list[RepositoryFile]) -> None:
        """Write `<name>/config.pbtxt` and the files so that the directory is complete when this returns."""

    @abstractmethod
    def remove_model(self, name: str) -> None:
        """Delete the model's directory (idempotent)."""

    @abstractmethod
    def has_model(self, name: str) -> bool:
        """Whether `<name>/config.pbtxt` exists."""

    @abstractmethod
    def list_models(self) -> list[str]:
        """Names of the model directories present."""
