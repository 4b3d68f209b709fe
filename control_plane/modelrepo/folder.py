"""A model repository in a local folder: staged in a temp directory, then renamed into place."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from control_plane.modelrepo.base import (
    ModelRepository,
    RepositoryFile,
    check_model_name,
    check_relative_path,
)


class FolderModelRepository(ModelRepository):
    """`<root>/<name>/config.pbtxt`, `<root>/<name>/1/...`."""

    def __init__(self, root: Path):
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    @property
    def location(self) -> str:
        """The folder path."""
        return str(self.root)

    def write_model(self, name: str, *, config_text: str, files: list[RepositoryFile]) -> None:
        """Stage everything in a hidden sibling directory, then swap it in with one rename."""
        target = self.root / check_model_name(name)
        staging = self.root / f".staging-{name}-{uuid.uuid4().hex[:8]}"
        try:
            staging.mkdir()
            for item in files:
                dest = staging / check_relative_path(item.relative_path)
                dest.parent.mkdir(parents=True, exist_ok=True)
                if item.source is not None:
                    shutil.copyfile(item.source, dest)
                else:
                    dest.write_bytes(item.content or b"")
            (staging / "config.pbtxt").write_text(config_text)
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def remove_model(self, name: str) -> None:
        """Delete the model's directory."""
        shutil.rmtree(self.root / check_model_name(name), ignore_errors=True)

    def has_model(self, name: str) -> bool:
        """Whether the model's config exists."""
        return (self.root / check_model_name(name) / "config.pbtxt").is_file()

    def list_models(self) -> list[str]:
        """Model directories (hidden staging directories excluded)."""
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
