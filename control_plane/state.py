"""Everything the app builds at start-up and disposes at shutdown."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from control_plane.artifacts import ArtifactStore
from control_plane.audit.retention import AuditRetention
from control_plane.dataplane.auth import KeyUsage
from control_plane.dataplane.checks import RequestChecks
from control_plane.dataplane.limits import TenantLimits
from control_plane.dataplane.metrics import DataPlaneMetrics
from control_plane.dataplane.upstream import Upstream
from control_plane.fleet.instances import TritonEndpoint
from control_plane.fleet.loader import VersionLoader
from control_plane.fleet.reconciler import Reconciler
from control_plane.lifecycle.janitor import KeepWarmJanitor
from control_plane.lifecycle.shadow import ShadowMirror
from control_plane.modelrepo import ModelRepository
from control_plane.registry.artifact_sweep import ArtifactSweeper
from control_plane.residency.manager import Residency
from control_plane.routing.router import Router
from control_plane.routing.watcher import RegistryWatcher
from control_plane.settings import Settings
from control_plane.tritonserver import TritonProcess
from control_plane.tritonserver.supervisor import TritonSupervisor

if TYPE_CHECKING:  # the throttle's middleware reads the state: no import at run time
    from control_plane.tenants.throttle import ApiThrottle


@dataclass
class AppState:
    """Process-wide resources, reachable as `request.app.state.cp`."""

    settings: Settings
    engine: Engine  # the management API's requests
    session_factory: sessionmaker[Session]
    internal_engine: Engine  # the process's own work (routing, loads, loops): a pool of its own
    internal_session_factory: sessionmaker[Session]
    artifacts: ArtifactStore
    repository: ModelRepository
    loader: VersionLoader
    router: Router
    limits: TenantLimits
    api_throttle: ApiThrottle  # the management API's per-tenant limits
    metrics: DataPlaneMetrics
    key_usage: KeyUsage
    upstream: Upstream
    shadow: ShadowMirror
    checks: RequestChecks
    tritons: list[TritonEndpoint] = field(default_factory=list)
    inflight: Counter[str] = field(default_factory=Counter)  # requests at Triton, by Triton model name
    # On-demand loads and the resident set (issue 12); build_state gives it the registry and `inflight`.
    residency: Residency = field(default_factory=lambda: Residency(session_factory=None, inflight=Counter()))
    embedded_triton: TritonProcess | None = None  # the bundled Triton (restarted by `supervisor`)
    supervisor: TritonSupervisor | None = None
    reconciler: Reconciler | None = None  # its `observed` has each instance's health and loaded models
    watcher: RegistryWatcher | None = None
    janitor: KeepWarmJanitor | None = None
    artifact_sweeper: ArtifactSweeper | None = None
    audit_retention: AuditRetention | None = None
    _load_waits: anyio.CapacityLimiter | None = None

    def load_wait_limiter(self) -> anyio.CapacityLimiter:
        """The threads of management calls that wait for loads (made on first use: it needs the loop)."""
        if self._load_waits is None:
            self._load_waits = anyio.CapacityLimiter(self.settings.load_wait_threads)
        return self._load_waits

    def reconcile_soon(self) -> None:
        """The fleet's desired state changed: run a reconcile pass now (once the loop exists)."""
        if self.reconciler is not None:
            self.reconciler.trigger()
