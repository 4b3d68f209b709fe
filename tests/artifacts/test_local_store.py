"""Local-directory specifics: layout, temp files, permissions, health check."""

from __future__ import annotations

import io
import stat
from pathlib import Path

import pytest

from control_plane.artifacts import ArtifactStoreUnavailable, ArtifactTooLarge, LocalArtifactStore
from tests.artifacts.streams import GeneratedStream, MiB


def test_layout_and_uri(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "a")
    stored = store.put(io.BytesIO(b"layout"))

    path = tmp_path / "a" / "sha256" / stored.sha256[:2] / stored.sha256
    assert path.read_bytes() == b"layout"
    assert stored.uri == path.as_uri()
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert list((tmp_path / "a" / "tmp").iterdir()) == []


def test_relative_root_gives_absolute_uris(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = LocalArtifactStore(Path("rel"))
    assert store.uri_for("b" * 64) == (tmp_path / "rel" / "sha256" / "bb" / ("b" * 64)).as_uri()


@pytest.mark.parametrize("error", [OSError, ArtifactTooLarge])
def test_temp_file_is_removed_on_failure(tmp_path: Path, error: type[Exception]) -> None:
    store = LocalArtifactStore(tmp_path / "a")
    stream = GeneratedStream(8 * MiB, fail_after=3 * MiB if error is OSError else None)

    with pytest.raises(error):
        store.put(stream, max_bytes=2 * MiB if error is ArtifactTooLarge else None)  # type: ignore[arg-type]

    assert stream.pos > 0
    assert list((tmp_path / "a" / "tmp").iterdir()) == []
    assert [p for p in (tmp_path / "a").rglob("*") if p.is_file()] == []


def test_check_fails_when_the_directory_is_gone(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "a")
    store.check()
    (tmp_path / "a" / "tmp").rmdir()
    with pytest.raises(ArtifactStoreUnavailable):
        store.check()
