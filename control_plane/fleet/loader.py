"""Load and retire versions on the fleet: repository entry first, then Triton's repository API."""

from __future__ import annotations

import logging
import tempfile
import threading
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from control_plane.artifacts import ArtifactStore
from control_plane.db.models import Model, ModelVersion
from control_plane.db.session import transaction
from control_plane.errors import AppError
from control_plane.fleet import repository as fleet_repository
from control_plane.fleet.instances import TritonEndpoint
from control_plane.fleet.observed import Observed
from control_plane.modelconfig.config import artifact_filename, parse_config
from control_plane.modelconfig.formats import sniff
from control_plane.modelrepo import ModelRepository, RepositoryFile
from control_plane.registry.archives import layout, onnx_model_file, unpack
from control_plane.registry.staging import python_model_members
from control_plane.runners import RUNNER_FILENAME, runner_source

log = logging.getLogger(__name__)
NO_ROOM = "no_room"  # `load`'s outcome when no instance's memory budget can make room for the version
NO_ROOM_DETAIL = (
    "the model version does not fit in any instance's memory budget now: it is bigger than the budget, "
    "or every version that could make room is pinned or has requests in flight"
)


class VersionLoader:
    """Background loads and unloads, one at a time per Triton model name."""

    def __init__(
        self,
        *,
        session_factory: sessionmaker[Session],
        artifacts: ArtifactStore,
        repository: ModelRepository,
        tritons: list[TritonEndpoint],
        max_workers: int = 2,
    ):
        self.session_factory = session_factory
        self.artifacts = artifacts
        self.repository = repository
        self.tritons = tritons
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="cp-loader")
        self._locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        self._loading: dict[int, Future[str]] = {}
        self._loading_lock = threading.Lock()
        # Set by the reconcile loop: where a version goes (else every Triton), and its memory of what
        # it recorded (kept in step with what the loader records).
        self.placer: Callable[[int], list[TritonEndpoint]] | None = None
        self.observed: Observed | None = None
        # Set by the app: loads go through residency (placement, budget, the one leader), which
        # answers with the version's state once it is resident, failed, or the wait is over.
        self.residency_load: Callable[[int], str] | None = None

    def submit_load(self, version_id: int) -> Future[str]:
        """Load a version in the background (joining a load already under way); the future gives its state."""
        with self._loading_lock:
            pending = self._loading.get(version_id)
            if pending is not None and not pending.done():
                return pending
            future = self._executor.submit(self.load, version_id)
            self._loading[version_id] = future
        future.add_done_callback(lambda _: self._forget(version_id, future))
        return future

    def _forget(self, version_id: int, future: Future[str]) -> None:
        with self._loading_lock:
            if self._loading.get(version_id) is future:
                del self._loading[version_id]

    def submit_retire(self, version_id: int) -> Future[None]:
        """Unload a retired version and remove its repository entry in the background."""
        return self._executor.submit(self.retire, version_id)

    def shutdown(self) -> None:
        """Finish queued work and stop the workers."""
        self._executor.shutdown(wait=True, cancel_futures=True)

    def load(self, version_id: int) -> str:
        """Write the version's repository entry, load it where it is placed (every Triton without a
        placer), record ready (loaded on at least one) or failed. With residency, wait for the version to
        be resident (its state after, or NO_ROOM)."""
        if self.residency_load is not None:
            return self.residency_load(version_id)
        with transaction(self.session_factory) as session:
            # Locked, as in `_record`: a retire committed since an unlocked read would be undone.
            version = session.get(ModelVersion, version_id, with_for_update={"key_share": True})
            if version is None or version.state == "retired":
                return "retired"
            model = session.get_one(Model, version.model_id)
            version.state, version.state_message = "loading", None
            version.updated_at = datetime.now(UTC)
            name, model_format, sha256, config_text = (
                version.triton_name,
                model.format,
                version.sha256,
                version.config_text,
            )
        targets = self.placer(version_id) if self.placer is not None else list(self.tritons)
        with self._locks[name]:
            try:
                self._write_entry(
                    name, model_format=model_format, sha256=sha256, config_text=config_text or ""
                )
                errors = self._load_on(name, targets)
            except (AppError, OSError) as exc:
                errors = {"repository": getattr(exc, "message", str(exc))}
        state = "ready" if targets and len(errors) < len(targets) else "failed"
        message = "; ".join(f"{k}: {v}" for k, v in errors.items()) or (
            None if targets else "no Triton instance is ready to load it"
        )
        self._record(version_id, state=state, message=message, failed=errors, on=targets)
        log.info("version %s (%s) is %s%s", version_id, name, state, f": {message}" if message else "")
        return state

    def lock_for(self, name: str) -> threading.Lock:
        """The lock every load, unload or retire of Triton model `name` holds in this process."""
        return self._locks[name]

    def write_entry(self, version_id: int) -> None:
        """Write the version's repository entry from its artifact."""
        with self.session_factory() as session:
            version = session.get_one(ModelVersion, version_id)
            model = session.get_one(Model, version.model_id)
            name, model_format = version.triton_name, model.format
            sha256, config_text = version.sha256, version.config_text or ""
        self._write_entry(name, model_format=model_format, sha256=sha256, config_text=config_text)

    def retire(self, version_id: int) -> None:
        """Unload the version everywhere and delete its repository entry."""
        name = self._name_of(version_id)
        if name is None:
            return
        with self._locks[name]:
            self._unload_everywhere(name)
            self.repository.remove_model(name)
        self._record(version_id, state="retired", message=None, failed={}, placement_state="unloaded")

    def _name_of(self, version_id: int) -> str | None:
        with self.session_factory() as session:
            version = session.get(ModelVersion, version_id)
            return None if version is None else version.triton_name

    def _unload_everywhere(self, name: str) -> None:
        for triton in self.tritons:
            try:
                triton.client.unload_model(name)
            except AppError as exc:
                log.warning("unloading %s from %s failed: %s", name, triton.name, exc.message)

    def _write_entry(self, name: str, *, model_format: str, sha256: str, config_text: str) -> None:
        with tempfile.TemporaryDirectory(prefix="cp-load-") as tmp:
            artifact = Path(tmp) / artifact_filename(model_format)
            self.artifacts.download_to(sha256, artifact)
            if model_format == "python":
                files = [
                    RepositoryFile(f"1/{rel}", content=data) for rel, data in python_model_members(artifact)
                ]
            elif model_format == "onnx" and sniff(artifact) == "onnx_archive":
                # ONNX with external data: the .onnx as model.onnx, its data files beside it.
                unpack(artifact, Path(tmp) / "unpacked", max_bytes=1 << 62)  # checked at upload
                model_file = onnx_model_file(Path(tmp) / "unpacked")
                files = [RepositoryFile(f"1/{rel}", source=path) for rel, path in layout(model_file)]
            else:
                files = [RepositoryFile(f"1/{artifact.name}", source=artifact)]
            if model_format != "python" and parse_config(config_text).backend == "python":
                runner = runner_source("onnx" if model_format == "onnx" else "torchscript").encode()
                files.append(RepositoryFile(f"1/{RUNNER_FILENAME}", content=runner))
            self.repository.write_model(name, config_text=config_text, files=files)

    def _load_on(self, name: str, targets: list[TritonEndpoint]) -> dict[str, str]:
        errors: dict[str, str] = {}
        for triton in targets:
            try:
                triton.client.load_model(name)
            except AppError as exc:
                errors[triton.name] = exc.message
        return errors

    def _record(
        self,
        version_id: int,
        *,
        state: str,
        message: str | None,
        failed: dict[str, str],
        placement_state: str | None = None,
        on: list[TritonEndpoint] | None = None,
    ) -> None:
        """The version's state, and its placements on `on` (default every Triton): ready or failed
        there, or `placement_state` (then no longer desired anywhere)."""
        now = datetime.now(UTC)
        targets = list(self.tritons) if on is None else on
        with transaction(self.session_factory) as session:
            # Locked, so the state read is the one this overwrites: a retire (or a failure) committed
            # since an unlocked read would be undone, the version brought back from retirement.
            version = session.get(ModelVersion, version_id, with_for_update={"key_share": True})
            if version is None:
                return
            if version.state != "retired" or state == "retired":
                version.state, version.state_message, version.updated_at = state, message, now
            ids = fleet_repository.instance_ids(session, [triton.name for triton in targets])
            for triton in targets:
                if triton.name not in ids:
                    continue
                where = placement_state or ("failed" if triton.name in failed else "ready")
                if self.observed is not None:
                    self.observed.placement_changed((triton.name, version_id), where, failed.get(triton.name))
                fleet_repository.upsert_placement(
                    session,
                    instance_id=ids[triton.name],
                    version_id=version_id,
                    state=where,
                    message=failed.get(triton.name),
                    now=now,
                    desired="absent" if placement_state is not None else None,
                )
