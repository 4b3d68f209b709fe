"""The embedded Triton: a supervised child process, the fleet instance named `embedded`."""

from __future__ import annotations

import logging
import os

from sqlalchemy.orm import Session, sessionmaker

from control_plane.db.session import transaction
from control_plane.fleet.instances import TritonEndpoint, register_instances
from control_plane.fleet.reconciler import Reconciler
from control_plane.modelrepo import ModelRepository
from control_plane.settings import Settings
from control_plane.tritonserver import TritonProcess
from control_plane.tritonserver.supervisor import TritonSupervisor

log = logging.getLogger(__name__)
EMBEDDED = "embedded"  # the stable instance name of the bundled Triton


def supervise_embedded(settings: Settings, repository: ModelRepository) -> TritonSupervisor:
    """A supervisor of the bundled Triton against the configured repository (not started yet)."""
    env = {
        "AWS_ACCESS_KEY_ID": settings.s3_access_key.get_secret_value(),
        "AWS_SECRET_ACCESS_KEY": settings.s3_secret_key.get_secret_value(),
        "AWS_DEFAULT_REGION": settings.s3_region,
    }
    if settings.triton_stub_blas_threads and "OPENBLAS_NUM_THREADS" not in os.environ:
        env["OPENBLAS_NUM_THREADS"] = str(settings.triton_stub_blas_threads)
    process = TritonProcess(repository=repository.location, workdir=settings.triton_workdir, env=env)
    return TritonSupervisor(
        process,
        startup_timeout_s=settings.triton_load_timeout_s,
        max_restarts=settings.triton_max_restarts,
        backoff_s=settings.triton_restart_backoff_s,
    )


def embedded_loads(settings: Settings) -> int:
    """Loads at once on the embedded Triton: `CP_TRITON_EMBEDDED_LOADS`, else the fleet's setting capped
    by this machine's CPUs (a Python-backend stub's start is CPU work: on 2 cores, 2 loads at once took
    0.18-0.20 s each against 0.41-0.51 s with 4, and the loop served more requests)."""
    if settings.triton_embedded_loads:
        return settings.triton_embedded_loads
    return max(1, min(settings.reconcile_loads_per_instance, os.cpu_count() or 1))


def embedded_endpoint(settings: Settings, process: TritonProcess) -> TritonEndpoint:
    """The fleet endpoint of the embedded Triton at its current ports."""
    return TritonEndpoint.connect(
        name=EMBEDDED,
        http_url=process.http_url,
        grpc_url=process.grpc_url,
        timeout_s=settings.triton_timeout_s,
        load_timeout_s=settings.triton_load_timeout_s,
        health_timeout_s=settings.triton_health_timeout_s,
        load_over_grpc=True,
    )


class AfterRestart:
    """Supervisor hook: follow the embedded Triton to new ports if it had to move, then reconcile it."""

    def __init__(
        self,
        *,
        settings: Settings,
        tritons: list[TritonEndpoint],
        session_factory: sessionmaker[Session],
        reconciler: Reconciler,
    ) -> None:
        self.settings = settings
        self.tritons = tritons
        self.session_factory = session_factory
        self.reconciler = reconciler

    def __call__(self, process: TritonProcess) -> None:
        """Swap in an endpoint for new URLs (same list object the data plane reads), then trigger."""
        for index, endpoint in enumerate(self.tritons):
            if endpoint.name == EMBEDDED and endpoint.http_url != process.http_url:
                fresh = embedded_endpoint(self.settings, process)
                self.tritons[index] = fresh
                with transaction(self.session_factory) as session:
                    register_instances(session, [fresh], origin="embedded")
                self.reconciler.members.publish()  # the data plane follows it now, not at the next pass
                endpoint.close()
                log.warning("embedded Triton moved to %s (gRPC %s)", fresh.http_url, fresh.grpc_url)
        self.reconciler.trigger()
