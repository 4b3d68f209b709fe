"""The reconcile loop: every Triton instance serves what the registry says should be served.

The registry is the desired state (a version in state `ready` should be loaded everywhere: aliases,
canary and shadow routes, keep-warm and fresh uploads all leave their versions `ready`); Triton's
repository index is the observed state. Each pass probes every instance (short timeouts), loads
what is missing (repository entry first; single-flight per version and instance; failures back
off), unloads what is ours and no longer wanted, and records instance health and placements.

Passes run at start-up, when triggered (after a supervised restart), and every `interval_s`. With
several replicas only the holder of a Postgres advisory lock reconciles the shared fleet; instances
private to this process (the embedded Triton) are always reconciled by it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime

from sqlalchemy.orm import Session, sessionmaker

from control_plane.db.session import transaction
from control_plane.errors import AppError
from control_plane.fleet import repository
from control_plane.fleet.backoff import Backoff
from control_plane.fleet.instances import TritonEndpoint
from control_plane.fleet.leader import LeaderLease
from control_plane.fleet.loader import VersionLoader
from control_plane.fleet.observed import InstanceObservation, Observed, PlacementFailure

log = logging.getLogger(__name__)
RECONCILE_LOCK = 0x63705F726563  # "cp_rec"
SERVING = ("ready",)  # version states that should be loaded
RELEASED = ("unloaded", "retired")  # version states that should not be: unloaded if still loaded
Key = tuple[str, int]  # (instance name, version id)


class Reconciler:
    """One loop that makes each Triton match the registry (see the module docstring)."""

    def __init__(
        self,
        *,
        session_factory: sessionmaker[Session],
        loader: VersionLoader,
        tritons: list[TritonEndpoint],
        database_url: str,
        interval_s: float,
        local: Collection[str] = (),
        backoff_s: float = 1.0,
        backoff_max_s: float = 60.0,
        loads_per_instance: int = 2,
    ) -> None:
        self.session_factory = session_factory
        self.loader = loader
        self.tritons = tritons  # shared with the data plane; an entry may be replaced (new ports)
        self.interval_s = interval_s
        self.local = frozenset(local)
        self.observed = Observed()
        self._lease = LeaderLease(database_url, RECONCILE_LOCK)
        self._backoff = Backoff(initial_s=backoff_s, max_s=backoff_max_s)
        self._loads_per_instance = loads_per_instance
        self._probes = ThreadPoolExecutor(max_workers=8, thread_name_prefix="cp-reconcile")
        self._workers: dict[str, ThreadPoolExecutor] = {}
        self._inflight: dict[Key, Future[None]] = {}
        self._lock = threading.Lock()
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name="cp-reconciler", daemon=True)

    def start(self, *, wait_s: float) -> None:
        """Reconcile once now (waiting up to `wait_s` for its loads), then every `interval_s`."""
        self.run_pass(wait_s=wait_s)
        self._thread.start()

    def stop(self) -> None:
        """Stop the loop and drop queued loads, give up leadership; running loads are not waited for
        (stopping the embedded Triton next ends them; a remote one's end within its load timeout)."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        self._probes.shutdown(wait=True, cancel_futures=True)
        for workers in list(self._workers.values()):
            workers.shutdown(wait=False, cancel_futures=True)
        self._lease.release()

    def trigger(self) -> None:
        """Run a pass now (e.g. after a Triton restarted) instead of at the next period."""
        self._wake.set()

    def run_pass(self, *, wait_s: float = 0.0) -> dict[str, InstanceObservation]:
        """One pass over the instances this process reconciles now (all when leader, else its own)."""
        self.observed.leader = self._lease.acquire()
        endpoints = [t for t in list(self.tritons) if self.observed.leader or t.name in self.local]
        return self.reconcile(endpoints, wait_s=wait_s)

    def reconcile(
        self, endpoints: Sequence[TritonEndpoint], *, wait_s: float = 0.0
    ) -> dict[str, InstanceObservation]:
        """Probe the instances in parallel and start what they lack; wait up to `wait_s` for the loads."""
        with self.session_factory() as session:
            wanted = repository.versions_in_states(session, SERVING)
        probes = {e.name: self._probes.submit(self._reconcile_instance, e, wanted) for e in endpoints}
        seen = {name: probe.result() for name, probe in probes.items()}
        if wait_s > 0:
            self.wait_idle(wait_s)
        self.observed.passed(datetime.now(UTC))
        return seen

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no load or unload started by this loop is running; False on timeout."""
        with self._lock:
            pending = list(self._inflight.values())
        return not wait(pending, timeout=timeout_s).not_done

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.run_pass()
            except Exception:
                log.exception("reconcile pass failed; next one in %ss", self.interval_s)

    def _reconcile_instance(self, endpoint: TritonEndpoint, wanted: dict[str, int]) -> InstanceObservation:
        now = datetime.now(UTC)
        message: str | None = None
        try:
            ready = endpoint.health.is_ready()
            index = _index(endpoint) if ready else {}
        except AppError as exc:
            ready, index, message = False, {}, exc.message
        if not ready:
            message = message or "not ready"
        observation = InstanceObservation(
            endpoint.name, ready=ready, checked_at=now, models=index, message=message
        )
        self.observed.instances[endpoint.name] = observation
        with transaction(self.session_factory) as session:
            repository.mark_instance(session, name=endpoint.name, ready=ready, now=now)
        if not ready:
            return observation
        for name, version_id in wanted.items():
            if index.get(name) == "READY":
                self._note(endpoint.name, version_id, "ready")
            elif index.get(name) != "LOADING":
                self._schedule(endpoint, name, version_id, load=True)
        self._unload_released(
            endpoint, [n for n, state in index.items() if state == "READY" and n not in wanted]
        )
        return observation

    def _unload_released(self, endpoint: TritonEndpoint, loaded: list[str]) -> None:
        """Unload what Triton has loaded that is ours (a version of this registry) and released."""
        if not loaded:
            return
        with self.session_factory() as session:
            released = repository.versions_in_states(session, RELEASED, names=loaded)
        for name, version_id in released.items():
            self._schedule(endpoint, name, version_id, load=False)

    def _schedule(self, endpoint: TritonEndpoint, name: str, version_id: int, *, load: bool) -> None:
        key = (endpoint.name, version_id)
        with self._lock:
            if key in self._inflight or (load and not self._backoff.due(key)) or self._stop.is_set():
                return
            workers = self._workers.get(endpoint.name)
            if workers is None:
                workers = self._workers[endpoint.name] = ThreadPoolExecutor(
                    max_workers=self._loads_per_instance, thread_name_prefix=f"cp-reconcile-{endpoint.name}"
                )
            task = workers.submit(self._load if load else self._unload, endpoint, name, version_id)
            self._inflight[key] = task
        task.add_done_callback(lambda _: self._forget(key, task))

    def _forget(self, key: Key, task: Future[None]) -> None:
        with self._lock:
            if self._inflight.get(key) is task:
                del self._inflight[key]

    def _load(self, endpoint: TritonEndpoint, name: str, version_id: int) -> None:
        key = (endpoint.name, version_id)
        with self.loader.lock_for(name):
            if self._state(version_id) not in SERVING:
                return
            self._note(endpoint.name, version_id, "loading")
            try:
                # A first attempt trusts an entry already in the repository; a retry rewrites it.
                self.loader.write_entry(version_id, only_if_missing=self._backoff.failures(key) == 0)
                endpoint.client.load_model(name)
            except Exception as exc:  # any failure backs off; the loop must not die
                self._failed(endpoint.name, name, version_id, getattr(exc, "message", None) or repr(exc))
                return
        self._backoff.succeeded(key)
        self._note(endpoint.name, version_id, "ready")
        log.info("reconciler loaded %s on %s", name, endpoint.name)

    def _unload(self, endpoint: TritonEndpoint, name: str, version_id: int) -> None:
        with self.loader.lock_for(name):
            if self._state(version_id) not in RELEASED:
                return
            try:
                endpoint.client.unload_model(name)
            except AppError as exc:
                log.warning("reconciler could not unload %s from %s: %s", name, endpoint.name, exc.message)
                return
        self._note(endpoint.name, version_id, "unloaded")
        log.info("reconciler unloaded %s from %s (released in the registry)", name, endpoint.name)

    def _failed(self, instance: str, name: str, version_id: int, message: str) -> None:
        delay = self._backoff.failed((instance, version_id))
        self.observed.failures[(instance, version_id)] = PlacementFailure(
            instance=instance, triton_name=name, message=message[:2000], retry_in_s=delay
        )
        self._note(instance, version_id, "failed", message[:2000])
        log.warning("loading %s on %s failed (next try in %.0fs): %s", name, instance, delay, message)

    def _state(self, version_id: int) -> str | None:
        with self.session_factory() as session:
            return repository.version_state(session, version_id)

    def _note(self, instance: str, version_id: int, state: str, message: str | None = None) -> None:
        """Record a placement's observed state (only when it changed since this process last wrote it)."""
        if state != "failed":
            self.observed.failures.pop((instance, version_id), None)
        if not self.observed.placement_changed((instance, version_id), state, message):
            return
        now = datetime.now(UTC)
        with transaction(self.session_factory) as session:
            ids = repository.instance_ids(session, [instance])
            if instance in ids:
                repository.upsert_placement(
                    session,
                    instance_id=ids[instance],
                    version_id=version_id,
                    state=state,
                    message=message,
                    now=now,
                )


def _index(endpoint: TritonEndpoint) -> dict[str, str]:
    """Triton model name -> state, from the instance's repository index."""
    return {str(m["name"]): str(m.get("state") or "") for m in endpoint.health.repository_index()}
