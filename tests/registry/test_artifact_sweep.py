"""The artifact store's garbage sweep, served by a real uvicorn on a Postgres database of its own (the
session's holds other tests' versions, whose artifacts are in other buckets) with artifacts in the S3
server through the minio SDK: objects no live version uses go once older than the grace period, what a
live version uses stays and still loads on the session's Triton, objects that are not artifacts are not
touched, live versions whose artifact is gone are named, an upload of the same bytes under way keeps its
object, one sweep runs at a time, the replica holding the lease sweeps by itself, and only admins ask."""

from __future__ import annotations

import hashlib
import io
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from minio import Minio
from pydantic import ValidationError

from control_plane.artifacts.base import OWNER_KEY, ListedArtifact, content_key
from control_plane.artifacts.exceptions import ArtifactStoreUnavailable
from control_plane.db import hooks, migrate
from control_plane.registry import artifact_guard, artifact_sweep
from control_plane.settings import Settings
from control_plane.tenants import quota
from tests.support import model_files
from tests.support.api import Api

SWEEP = "/v1/artifacts/sweep"


@pytest.fixture(scope="module")
def sweep_database(create_database: Callable[[], str]) -> str:
    url = create_database()
    migrate.upgrade(url)
    return url


@pytest.fixture
def served(make_served: Callable[..., Api], sweep_database: str) -> Api:
    return make_served(database_url=sweep_database, artifact_sweep_interval_s=0)


def onnx(tmp_path: Path, seed: int) -> Path:
    """A small ONNX model of bytes of its own."""
    name = f"x_{uuid.uuid4().hex[:12]}"
    return model_files.onnx_mlp(tmp_path / f"m{seed}.onnx", seed=seed, input_name=name)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sweep(api: Api, key: str | None = None, **body: Any) -> httpx.Response:
    response: httpx.Response = api.client.post(SWEEP, json=body, headers=api.headers(key), timeout=60)
    return response


def keys(minio_client: Minio, bucket: str) -> set[str]:
    return {o.object_name or "" for o in minio_client.list_objects(bucket, recursive=True)}


def put_raw(minio_client: Minio, bucket: str, key: str, data: bytes) -> None:
    minio_client.put_object(bucket, key, io.BytesIO(data), len(data))


def test_the_sweep_deletes_what_no_live_version_uses_and_names_live_versions_whose_artifact_is_gone(
    served: Api, tmp_path: Path, minio_client: Minio
) -> None:
    bucket = served.settings.s3_bucket
    tenant, other = served.tenant(), served.tenant()
    for owner in (tenant, other):
        assert served.create_model(owner, name="m", format="onnx").status_code == 201
    own, shared, lost = onnx(tmp_path, 1), onnx(tmp_path, 2), onnx(tmp_path, 3)
    for owner, artifact in ((tenant, own), (tenant, shared), (other, shared), (other, lost)):
        assert served.upload(owner, "m", artifact).status_code == 201
    # Garbage as the store holds it after versions deleted before deletes gave artifacts back, or a clean-up
    # the store refused: artifacts nobody registered.
    orphans = [onnx(tmp_path, 10 + i).read_bytes() for i in range(3)]
    for data in orphans:
        served.state.artifacts.put(io.BytesIO(data))
    # An upload's temp object: its upload may be under way, so it stays until a day old, whatever the grace
    # (the store-contract tests remove old ones; moto cannot date an object back).
    leftover = f"uploads/{uuid.uuid4().hex}"
    put_raw(minio_client, bucket, leftover, b"half an upload")
    strangers = {
        "backups/registry.dump": b"another tool's",
        "sha256/zz/readme": b"not an artifact",
        "uploads/2026/invoices.csv": b"another tool's, under a name like ours",
    }
    for key, data in strangers.items():
        put_raw(minio_client, bucket, key, data)
    minio_client.remove_object(bucket, content_key(digest(lost)))  # lost behind the registry's back
    everything = keys(minio_client, bucket)
    orphan_keys = {content_key(hashlib.sha256(d).hexdigest()) for d in orphans}
    live_keys = {content_key(digest(p)) for p in (own, shared)}
    assert orphan_keys | live_keys | {leftover} | set(strangers) == everything

    dry = sweep(served, dry_run=True, grace_s=0)
    assert dry.status_code == 200, dry.text
    report = dry.json()
    assert report["dry_run"] is True
    assert (report["listed"], report["in_use"], report["unused"], report["deleted"]) == (5, 2, 3, 0)
    assert report["unused_bytes"] == sum(len(d) for d in orphans)
    assert report["missing"] == 1
    assert report["missing_versions"] == [
        {"tenant": other, "model": "m", "version": 2, "sha256": digest(lost)}
    ]
    assert keys(minio_client, bucket) == everything  # a dry run writes nothing, not even the marker

    recent = sweep(served).json()  # the default grace period (an hour) keeps what was just stored
    assert (recent["unused"], recent["recent"], recent["deleted"], recent["leftovers_removed"]) == (
        3,
        3,
        0,
        0,
    )
    assert keys(minio_client, bucket) == everything | {OWNER_KEY}  # the store is this registry's now

    done = sweep(served, grace_s=0)
    assert done.status_code == 200, done.text
    report = done.json()
    assert (report["deleted"], report["deleted_bytes"]) == (3, sum(len(d) for d in orphans))
    assert (report["taken"], report["leftovers_removed"], report["missing"]) == (0, 0, 1)
    assert keys(minio_client, bucket) == live_keys | {leftover, OWNER_KEY} | set(strangers)

    # What live versions use still loads, from the store, on the real Triton.
    for owner, number in ((tenant, 1), (tenant, 2), (other, 1)):
        assert served.load(owner, "m", number)["state"] == "ready"
    audit = served.client.get("/v1/audit", params={"action": "artifacts.sweep"}, headers=served.headers())
    assert audit.status_code == 200, audit.text
    events = audit.json()
    assert {(e["after"]["dry_run"], e["after"]["deleted"], e["outcome"]) for e in events} >= {
        (True, 0, "success"),
        (False, 3, "success"),
    }
    deleted = next(e["after"]["deleted_digests"] for e in events if e["after"]["deleted"] == 3)
    assert sorted(deleted) == sorted(hashlib.sha256(d).hexdigest() for d in orphans)
    assert {e["actor"] for e in events} == {"admin-token"}
    again = sweep(served, grace_s=0).json()
    assert (again["unused"], again["deleted"], again["listed"]) == (0, 0, 2)


def test_an_upload_of_the_same_bytes_under_way_keeps_its_object(
    served: Api, tmp_path: Path, minio_client: Minio, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Garbage until the upload registers its version: the upload found the object stored and did not
    store it again, so a sweep deleting it meanwhile would leave the new version without its bytes."""
    tenant = served.tenant()
    assert served.create_model(tenant, name="m", format="onnx").status_code == 201
    artifact = onnx(tmp_path, 1)
    served.state.artifacts.put(io.BytesIO(artifact.read_bytes()))  # garbage: nobody registered it
    registering = threading.Event()
    check_version = quota.check_version

    def slow_check(*args: Any, **kwargs: Any) -> None:
        if kwargs.get("lock", True):  # the check as the version is registered, the object stored
            registering.set()
            time.sleep(1.5)
        check_version(*args, **kwargs)

    monkeypatch.setattr(quota, "check_version", slow_check)
    answers: list[httpx.Response] = []
    upload = threading.Thread(target=lambda: answers.append(served.upload(tenant, "m", artifact)))
    upload.start()
    assert registering.wait(timeout=60)

    report = sweep(served, grace_s=0)
    upload.join(timeout=60)

    assert report.status_code == 200, report.text
    assert answers and answers[0].status_code == 201, answers and answers[0].text
    assert (report.json()["unused"], report.json()["taken"], report.json()["deleted"]) == (1, 1, 0)
    minio_client.stat_object(served.settings.s3_bucket, content_key(digest(artifact)))
    assert served.load(tenant, "m", 1)["state"] == "ready"


def test_one_sweep_runs_at_a_time_across_replicas(served: Api, sweep_database: str) -> None:
    conninfo = "postgresql://" + sweep_database.split("://", 1)[1]
    with psycopg.connect(conninfo, autocommit=True) as other_replica:
        other_replica.execute("SELECT pg_advisory_lock(%s)", (artifact_sweep.SWEEP_LOCK,))
        busy = sweep(served, grace_s=0)
        assert busy.status_code == 409, busy.text
        assert "under way" in busy.json()["detail"]
    assert sweep(served, dry_run=True).status_code == 200


def test_the_replica_holding_the_lease_sweeps_by_itself(
    make_served: Callable[..., Api], sweep_database: str, minio_client: Minio
) -> None:
    api = make_served(database_url=sweep_database, artifact_sweep_interval_s=0.3, artifact_sweep_grace_s=0)
    stored = api.state.artifacts.put(io.BytesIO(uuid.uuid4().bytes * 100))
    deadline = time.monotonic() + 30
    while api.state.artifacts.exists(stored.sha256) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not api.state.artifacts.exists(stored.sha256)

    def figure(metrics: str, name: str) -> float:
        found = [line.split()[1] for line in metrics.splitlines() if line.startswith(f"{name} ")]
        return float(found[0]) if found else 0.0

    # The sweep counts each delete as it goes, and its success once it is over: wait for both.
    swept = last = 0.0
    while time.monotonic() < deadline:
        metrics = api.client.get("/metrics", headers=api.headers()).text
        swept = figure(metrics, "cp_artifacts_swept_total")
        last = figure(metrics, "cp_artifact_sweep_last_success_timestamp_seconds")
        if swept >= 1 and last > 0:
            break
        time.sleep(0.2)
    assert swept >= 1 and last > 0, (swept, last)
    while time.monotonic() < deadline:  # and audits itself, as the system, once it is over
        audit = api.client.get("/v1/audit", params={"action": "artifacts.sweep"}, headers=api.headers())
        if any(e["actor"] == "system:artifact-sweep" for e in audit.json()):
            break
        time.sleep(0.2)
    assert any(e["actor"] == "system:artifact-sweep" and e["outcome"] == "success" for e in audit.json())


BAD_BODIES = [
    '{"dry_run": "yes"}',
    '{"grace_s": -1}',
    '{"grace_s": 1e400}',
    '{"grace_s": NaN}',
    '{"grace_s": "5"}',
    '{"grace_s": true}',
    '{"x": 1}',
    "[",
]


def test_bad_bodies_are_422(served: Api) -> None:
    headers = {**served.headers(), "content-type": "application/json"}
    for body in BAD_BODIES:
        answer = served.client.post(SWEEP, content=body, headers=headers)
        assert answer.status_code == 422, (body, answer.text)
        assert sorted(answer.json()) == ["detail", "error"], (body, answer.text)


def test_only_admins_sweep(served: Api) -> None:
    tenant = served.tenant()
    for role in ("admin", "publisher", "consumer"):
        key = served.key(tenant, role) if role != "admin" else None
        answer = sweep(served, key, dry_run=True)
        assert answer.status_code == (200 if role == "admin" else 403), (role, answer.text)
    assert served.client.post(SWEEP, json={}).status_code == 401


def test_the_store_down_is_a_503(served: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    from control_plane.artifacts.exceptions import ArtifactStoreUnavailable

    def down() -> Iterator[ListedArtifact]:
        raise ArtifactStoreUnavailable("S3 does not answer for listing of bucket b: connection refused")

    monkeypatch.setattr(served.state.artifacts, "listing", down)
    answer = sweep(served, grace_s=0)
    assert answer.status_code == 503, answer.text
    assert sweep(served, dry_run=True).status_code == 503  # and the failed one let go of its lock


def test_a_store_another_registry_marked_is_never_swept_by_this_one(
    make_served: Callable[..., Api],
    served: Api,
    create_database: Callable[[], str],
    tmp_path: Path,
    minio_client: Minio,
) -> None:
    """Two registries on one bucket (or a process pointed at the wrong database): each would take the
    other's artifacts for garbage. The first to sweep marks the store; the other deletes nothing there."""
    tenant = served.tenant()
    assert served.create_model(tenant, name="m", format="onnx").status_code == 201
    artifact = onnx(tmp_path, 1)
    assert served.upload(tenant, "m", artifact).status_code == 201
    assert sweep(served, grace_s=0).status_code == 200  # marks the store as this registry's
    other_database = create_database()
    migrate.upgrade(other_database)
    intruder = make_served(database_url=other_database, s3_bucket=served.settings.s3_bucket)
    bucket = served.settings.s3_bucket

    refused = sweep(intruder, grace_s=0)
    assert refused.status_code == 409, refused.text
    assert "belongs to another registry" in refused.json()["detail"]
    minio_client.stat_object(bucket, content_key(digest(artifact)))
    # Nor does its clean-up of a deleted version: it uploads the same bytes, then deletes its version.
    theirs = intruder.tenant()
    assert intruder.create_model(theirs, name="m", format="onnx").status_code == 201
    assert intruder.upload(theirs, "m", artifact).status_code == 201
    assert intruder.client.delete(
        f"/v1/tenants/{theirs}/models/m/versions/1", headers=intruder.headers()
    ).is_success
    minio_client.stat_object(bucket, content_key(digest(artifact)))
    assert served.load(tenant, "m", 1)["state"] == "ready"
    audit = intruder.client.get("/v1/audit", params={"action": "artifacts.sweep"}, headers=intruder.headers())
    assert [e["outcome"] for e in audit.json()] == ["failure"]


def test_a_version_registered_while_the_store_is_listed_is_not_missing(
    served: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its upload stored the object after the listing had passed its place: looked up again, it is there."""
    tenant = served.tenant()
    assert served.create_model(tenant, name="m", format="onnx").status_code == 201
    # (This module's database names other tests' versions, whose artifacts are in other buckets.)
    before = sweep(served, dry_run=True).json()["missing"]
    listing = served.state.artifacts.listing

    def listed_before_the_upload() -> Iterator[ListedArtifact]:
        before = list(listing())  # the listing as it stood, then the upload lands
        assert served.upload(tenant, "m", onnx(tmp_path, 1)).status_code == 201
        yield from before

    monkeypatch.setattr(served.state.artifacts, "listing", listed_before_the_upload)
    report = sweep(served, dry_run=True)
    assert report.status_code == 200, report.text
    assert report.json()["missing"] == before
    assert tenant not in {v["tenant"] for v in report.json()["missing_versions"]}


def test_a_sweep_that_fails_midway_is_audited_with_what_it_deleted(
    served: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(3):
        served.state.artifacts.put(io.BytesIO(onnx(tmp_path, 20 + i).read_bytes()))
    delete, calls = served.state.artifacts.delete, []

    def failing_delete(sha256: str) -> None:
        calls.append(sha256)
        if len(calls) > 1:
            raise ArtifactStoreUnavailable("S3 does not answer for artifact: connection refused")
        delete(sha256)

    monkeypatch.setattr(served.state.artifacts, "delete", failing_delete)
    answer = sweep(served, grace_s=0)
    assert answer.status_code == 503, answer.text
    audit = served.client.get("/v1/audit", params={"action": "artifacts.sweep"}, headers=served.headers())
    failed = [e for e in audit.json() if e["outcome"] == "failure"]
    assert (
        failed and failed[0]["after"]["deleted"] == 1 and failed[0]["after"]["deleted_digests"] == calls[:1]
    )
    assert "S3 does not answer" in failed[0]["after"]["error"]
    metrics = served.client.get("/metrics", headers=served.headers()).text
    assert 'cp_artifact_sweeps_total{result="failed"} 1.0' in metrics
    assert 'cp_artifact_sweeps_total{result="ok"} 0.0' in metrics  # exported before any sweep succeeds


def test_a_sweep_that_loses_its_lock_stops_before_its_next_delete(
    served: Api, tmp_path: Path, sweep_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its connection cut (a proxy's idle timeout, a failover): another replica may sweep now."""
    orphans = [served.state.artifacts.put(io.BytesIO(onnx(tmp_path, 30 + i).read_bytes())) for i in range(3)]
    conninfo = "postgresql://" + sweep_database.split("://", 1)[1]
    delete = served.state.artifacts.delete

    def delete_then_cut(sha256: str) -> None:
        delete(sha256)
        high, low = artifact_sweep.SWEEP_LOCK >> 32, artifact_sweep.SWEEP_LOCK & 0xFFFFFFFF
        with psycopg.connect(conninfo, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'"
                " AND classid = %s::oid AND objid = %s::oid",
                (high, low),
            )

    monkeypatch.setattr(served.state.artifacts, "delete", delete_then_cut)
    answer = sweep(served, grace_s=0)
    assert answer.status_code == 503 and "lost its lock" in answer.json()["detail"], answer.text
    assert sum(served.state.artifacts.exists(o.sha256) for o in orphans) == 2
    monkeypatch.setattr(served.state.artifacts, "delete", delete)
    assert sweep(served, grace_s=0).json()["deleted"] == 2  # the lock went with its connection


def test_a_sweep_under_way_as_the_process_stops_ends_with_a_503(served: Api, tmp_path: Path) -> None:
    served.state.artifacts.put(io.BytesIO(onnx(tmp_path, 40).read_bytes()))
    sweeper = served.state.artifact_sweeper
    assert sweeper is not None
    sweeper.loop.stopping.set()
    try:
        answer = sweep(served, grace_s=0)
    finally:
        sweeper.loop.stopping.clear()
    assert answer.status_code == 503 and "stopping" in answer.json()["detail"], answer.text


@pytest.mark.parametrize("setting", ["artifact_sweep_interval_s", "artifact_sweep_grace_s"])
def test_an_endless_period_or_grace_is_refused_at_start_up(setting: str) -> None:
    with pytest.raises(ValidationError):
        Settings.model_validate({setting: float("inf")})


def _listed(digests: set[str]) -> Iterator[ListedArtifact]:
    for sha256 in sorted(digests):
        yield ListedArtifact(sha256=sha256, size_bytes=1, modified=datetime.now(UTC))


HEX = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)


@given(stored=st.sets(HEX, max_size=30), live=st.sets(HEX, max_size=30), shared=st.sets(HEX, max_size=10))
def test_the_merge_pairs_each_digest_once(stored: set[str], live: set[str], shared: set[str]) -> None:
    stored, live = stored | shared, live | shared
    merged = list(artifact_sweep._merged(_listed(stored), iter(sorted(live))))
    assert {s.sha256 for s, d in merged if s is not None and d is None} == stored - live
    assert {d for s, d in merged if s is None} == live - stored
    assert {d for s, d in merged if s is not None and d is not None} == stored & live
    assert all(s is None or d is None or s.sha256 == d for s, d in merged)
    assert len(merged) == len(stored | live)


def test_a_listing_out_of_order_stops_the_sweep() -> None:
    listing = iter(
        [ListedArtifact("b" * 64, 1, datetime.now(UTC)), ListedArtifact("a" * 64, 1, datetime.now(UTC))]
    )
    with pytest.raises(artifact_sweep.SweepFailed):
        list(artifact_sweep._merged(listing, iter([])))


def test_on_sqlite_an_upload_waits_for_a_delete_of_its_bytes_under_way(
    make_api: Callable[..., Api], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One process, no advisory locks: an upload of bytes whose object is being deleted waits for the
    delete, then finds the object gone and stores it again (instead of finding it, and losing it)."""
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    migrate.upgrade(url)
    api = make_api(database_url=url, artifact_store="local", artifact_dir=str(tmp_path / "artifacts"))
    state = api.state
    stored = state.artifacts.put(io.BytesIO(b"garbage " + uuid.uuid4().bytes))
    deleting, delete = threading.Event(), state.artifacts.delete

    def slow_delete(sha256: str) -> None:
        deleting.set()
        time.sleep(1.0)
        delete(sha256)

    monkeypatch.setattr(state.artifacts, "delete", slow_delete)
    dropped: list[bool] = []
    sweeper = threading.Thread(
        target=lambda: dropped.append(artifact_guard.drop_if_unused(state, stored.sha256))
    )
    sweeper.start()
    assert deleting.wait(timeout=10)
    with state.session_factory() as uploading:
        started = time.monotonic()
        artifact_guard.hold(uploading, stored.sha256)
        waited = time.monotonic() - started
        found = state.artifacts.exists(stored.sha256)
        uploading.rollback()
        hooks.rolled_back(uploading)
    sweeper.join(timeout=10)

    assert dropped == [True]
    assert waited > 0.5, waited
    assert not found  # so the upload stores its bytes again
