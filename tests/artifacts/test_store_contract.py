"""Behaviour every ArtifactStore must have, run against S3 (moto_server) and a local directory."""

from __future__ import annotations

import hashlib
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from control_plane.artifacts import (
    ArtifactCorrupted,
    ArtifactNotFound,
    ArtifactTooLarge,
    LocalArtifactStore,
    StoredArtifact,
)
from control_plane.artifacts.base import content_key
from tests.artifacts.conftest import Backend
from tests.artifacts.streams import GeneratedStream, MiB, digest_of

MISSING = "0" * 64


def _read_all(backend: Backend, sha256: str, *, chunk: int = 64 * 1024) -> bytes:
    with backend.store.open(sha256) as reader:
        return b"".join(iter(lambda: reader.read(chunk), b""))


def test_round_trip_reports_sha256_size_and_uri(backend: Backend) -> None:
    data = b"hello artifact\n" * 1000
    sha = hashlib.sha256(data).hexdigest()

    stored = backend.store.put(io.BytesIO(data))

    assert stored == StoredArtifact(uri=backend.store.uri_for(sha), sha256=sha, size_bytes=len(data))
    assert stored.uri.endswith(f"sha256/{sha[:2]}/{sha}")
    assert backend.store.exists(sha)
    assert backend.store.stat(sha) == stored
    assert _read_all(backend, sha) == data
    assert backend.keys() == [content_key(sha)]


def test_multipart_sized_round_trip(backend: Backend) -> None:
    size = 12 * MiB + 123  # three 5 MiB parts on S3, the last one short
    stored = backend.store.put(GeneratedStream(size))  # type: ignore[arg-type]

    assert stored.sha256 == digest_of(size)
    assert stored.size_bytes == size
    with backend.store.open(stored.sha256) as reader:
        got = hashlib.sha256()
        while chunk := reader.read(MiB):
            got.update(chunk)
    assert got.hexdigest() == stored.sha256


def test_empty_artifact(backend: Backend) -> None:
    stored = backend.store.put(io.BytesIO(b""))
    assert stored.sha256 == hashlib.sha256(b"").hexdigest()
    assert stored.size_bytes == 0
    assert _read_all(backend, stored.sha256) == b""


def test_reput_of_same_content_is_idempotent(backend: Backend) -> None:
    data = b"same bytes" * 500
    first = backend.store.put(io.BytesIO(data))
    second = backend.store.put(io.BytesIO(data))

    assert second == first
    assert backend.keys() == [content_key(first.sha256)]
    assert backend.incomplete_uploads() == []


def test_read_all_at_once(backend: Backend) -> None:
    data = b"x" * 3000
    stored = backend.store.put(io.BytesIO(data))
    with backend.store.open(stored.sha256) as reader:
        assert reader.read() == data
        assert reader.read(10) == b""


def test_corrupted_object_is_detected_on_read(backend: Backend) -> None:
    data = b"0123456789" * 10_000
    stored = backend.store.put(io.BytesIO(data))
    backend.overwrite(stored.sha256, b"X" + data[1:])  # same length, one byte differs

    with pytest.raises(ArtifactCorrupted) as info:
        _read_all(backend, stored.sha256)
    assert info.value.status_code == 502
    assert info.value.kind == "ArtifactCorrupted"


def test_truncated_object_is_detected_on_read(backend: Backend) -> None:
    data = b"0123456789" * 10_000
    stored = backend.store.put(io.BytesIO(data))
    backend.overwrite(stored.sha256, data[: len(data) // 2])

    with pytest.raises(ArtifactCorrupted):
        _read_all(backend, stored.sha256)


def test_reput_repairs_a_truncated_object(backend: Backend) -> None:
    data = b"0123456789" * 10_000
    stored = backend.store.put(io.BytesIO(data))
    backend.overwrite(stored.sha256, data[:100])

    assert backend.store.put(io.BytesIO(data)) == stored
    assert _read_all(backend, stored.sha256) == data


def test_missing_artifact(backend: Backend) -> None:
    assert not backend.store.exists(MISSING)
    with pytest.raises(ArtifactNotFound) as info:
        backend.store.stat(MISSING)
    assert info.value.status_code == 404
    with pytest.raises(ArtifactNotFound), backend.store.open(MISSING):
        pass
    with pytest.raises(ArtifactNotFound):
        backend.store.download_to(MISSING, Path("/nonexistent-dir/never-written"))


def test_delete_is_idempotent(backend: Backend) -> None:
    stored = backend.store.put(io.BytesIO(b"to be deleted"))
    backend.store.delete(stored.sha256)
    backend.store.delete(stored.sha256)
    assert not backend.store.exists(stored.sha256)
    assert backend.keys() == []


def test_stream_failing_midway_leaves_nothing(backend: Backend) -> None:
    stream = GeneratedStream(40 * MiB, fail_after=12 * MiB)  # two full 5 MiB parts already sent on S3

    with pytest.raises(OSError, match="client went away"):
        backend.store.put(stream)  # type: ignore[arg-type]

    assert stream.pos == 12 * MiB
    assert backend.leftovers() == []


def test_too_large_upload_leaves_nothing(backend: Backend) -> None:
    with pytest.raises(ArtifactTooLarge) as info:
        backend.store.put(GeneratedStream(20 * MiB), max_bytes=11 * MiB)  # type: ignore[arg-type]
    assert info.value.status_code == 413
    assert backend.leftovers() == []


def test_upload_of_exactly_max_bytes_is_accepted(backend: Backend) -> None:
    stored = backend.store.put(io.BytesIO(b"a" * 1000), max_bytes=1000)
    assert stored.size_bytes == 1000


def test_download_to_writes_the_verified_file(backend: Backend, tmp_path: Path) -> None:
    stored = backend.store.put(GeneratedStream(3 * MiB + 7))  # type: ignore[arg-type]
    target = tmp_path / "out" / "model.onnx"
    target.parent.mkdir()

    backend.store.download_to(stored.sha256, target)

    assert hashlib.sha256(target.read_bytes()).hexdigest() == stored.sha256
    assert sorted(p.name for p in target.parent.iterdir()) == ["model.onnx"]


def test_download_of_corrupted_artifact_leaves_no_file(backend: Backend, tmp_path: Path) -> None:
    data = b"abc" * 100_000
    stored = backend.store.put(io.BytesIO(data))
    backend.overwrite(stored.sha256, data[:-1] + b"!")
    target_dir = tmp_path / "out"
    target_dir.mkdir()

    with pytest.raises(ArtifactCorrupted):
        backend.store.download_to(stored.sha256, target_dir / "model.onnx")

    assert list(target_dir.iterdir()) == []


@pytest.mark.parametrize("bad", ["../etc", "../" * 21 + "x", "A" * 64, "a" * 63, "a" * 65, "g" * 64, ""])
def test_invalid_sha256_is_rejected(backend: Backend, bad: str, tmp_path: Path) -> None:
    store = backend.store
    for call in (store.exists, store.stat, store.delete, store.uri_for):
        with pytest.raises(ValueError):
            call(bad)
    with pytest.raises(ValueError), store.open(bad):
        pass
    with pytest.raises(ValueError):
        store.download_to(bad, tmp_path / "x")
    assert list(tmp_path.glob("*x*")) == []


def test_check_passes_on_a_healthy_store(backend: Backend) -> None:
    backend.store.check()


def test_the_listing_gives_every_artifact_in_digest_order_and_nothing_else(backend: Backend) -> None:
    """Across prefixes (`sha256/ab/`), in ascending sha256 order, with sizes and times; keys that are no
    artifact's (another tool's objects in the bucket, a malformed name, a temp upload) are not listed."""
    contents = [f"artifact {i}\n".encode() * (i + 1) for i in range(40)]
    for data in contents:
        backend.store.put(io.BytesIO(data))
    stray = {
        "backups/readme.txt": b"not ours",
        "sha256/zz/not-a-digest": b"x",
        f"sha256/00/{hashlib.sha256(b'misplaced').hexdigest()}": b"misplaced",  # not under its own prefix
        f"sha256/{'A' * 64}": b"upper case",
    }
    for key, data in stray.items():
        _put_raw(backend, key, data)
    before = datetime.now(UTC) - timedelta(minutes=5)

    listed = list(backend.store.listing())

    expected = sorted((hashlib.sha256(d).hexdigest(), len(d)) for d in contents)
    assert [(a.sha256, a.size_bytes) for a in listed] == expected
    assert len({a.sha256[:2] for a in listed}) > 10  # many prefixes, so the order across them is tested
    assert all(before < a.modified <= datetime.now(UTC) + timedelta(minutes=5) for a in listed)


def test_an_empty_store_lists_nothing(backend: Backend) -> None:
    assert list(backend.store.listing()) == []


def test_leftovers_of_uploads_older_than_asked_are_removed_and_artifacts_never(backend: Backend) -> None:
    stored = backend.store.put(io.BytesIO(b"an artifact"))
    leftover = f"uploads/{'0123abcd' * 4}" if backend.client is not None else "tmp/upload-0123abcd"
    _put_raw(backend, leftover, b"half an upload")
    # Not an upload's: another tool's object under `uploads/`, a file in `tmp/` not named as ours.
    strangers = (
        ["uploads/2026/invoices.csv", "uploads/0123abcd"] if backend.client is not None else ["tmp/notes"]
    )
    for key in strangers:
        _put_raw(backend, key, b"not ours")

    assert backend.store.remove_leftovers(datetime.now(UTC) - timedelta(hours=1)) == 0  # too recent
    assert leftover in set(backend.keys())
    abandoned = 0
    if backend.client is not None:  # a multipart upload its process never completed nor aborted (moto
        # dates every one 2010-11-10, so its "too recent" case cannot be tried here)
        backend.client._create_multipart_upload(backend.bucket, f"uploads/{'fe' * 16}", {})
        abandoned = 1
        assert len(backend.incomplete_uploads()) == 1
    assert backend.store.remove_leftovers(datetime.now(UTC) + timedelta(seconds=5)) == 1 + abandoned

    assert backend.keys() == sorted([content_key(stored.sha256), *strangers])
    assert backend.incomplete_uploads() == []


def test_the_owner_marker_round_trips_and_is_no_artifact(backend: Backend) -> None:
    assert backend.store.read_owner() is None
    backend.store.write_owner("0f" * 16)
    backend.store.write_owner("ab" * 16)  # written over
    assert backend.store.read_owner() == "ab" * 16
    assert list(backend.store.listing()) == []


def test_a_linked_prefix_folder_of_the_local_store_is_listed(tmp_path: Path) -> None:
    """`open` and `exists` follow links (a prefix folder moved to another disk and linked back), so the
    listing does too: otherwise its artifacts would be reported missing and never swept."""
    store = LocalArtifactStore(tmp_path / "store")
    data = b"an artifact on another disk"
    sha = hashlib.sha256(data).hexdigest()
    elsewhere = tmp_path / "other-disk" / sha[:2]
    elsewhere.mkdir(parents=True)
    (elsewhere / sha).write_bytes(data)
    (tmp_path / "store" / "sha256" / sha[:2]).symlink_to(elsewhere, target_is_directory=True)
    (tmp_path / "store" / "sha256" / "not-a-prefix").mkdir()

    assert store.exists(sha)
    assert [a.sha256 for a in store.listing()] == [sha]


def _put_raw(backend: Backend, key: str, data: bytes) -> None:
    """Write an object or file under `key`, behind the store's back."""
    if backend.client is not None:
        backend.client.put_object(backend.bucket, key, io.BytesIO(data), len(data))
    else:
        assert backend.root is not None
        path = backend.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
