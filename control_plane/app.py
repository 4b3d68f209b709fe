"""App factory: builds engines and clients in the lifespan and mounts the routers."""

from __future__ import annotations

import functools
import logging
import re
import socket
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp

from control_plane import __version__
from control_plane.artifacts import build_artifact_store
from control_plane.audit.denials import install as install_denial_audit
from control_plane.audit.endpoints import router as audit_router
from control_plane.audit.retention import AuditRetention
from control_plane.console import install as install_console
from control_plane.dataplane.auth import KeyUsage
from control_plane.dataplane.checks import RequestChecks
from control_plane.dataplane.grpc_proxy import GrpcProxy
from control_plane.dataplane.heavy import HeavyWork
from control_plane.dataplane.http import HttpDataPlane
from control_plane.dataplane.limits import TenantLimits
from control_plane.dataplane.metrics import DataPlaneMetrics
from control_plane.dataplane.upstream import Upstream
from control_plane.db.session import make_engine, make_session_factory, transaction
from control_plane.errors import register_error_handlers
from control_plane.fleet.embedded import (
    EMBEDDED,
    AfterRestart,
    embedded_endpoint,
    embedded_loads,
    supervise_embedded,
)
from control_plane.fleet.endpoints import router as fleet_router
from control_plane.fleet.instances import endpoint_for_row, endpoints_from_urls, register_instances
from control_plane.fleet.loader import VersionLoader
from control_plane.fleet.metrics import register as register_fleet_metrics
from control_plane.fleet.reconciler import Reconciler
from control_plane.fleet.wiring import wire_data_plane
from control_plane.keys.endpoints import admin_router as admin_keys_router
from control_plane.keys.endpoints import router as keys_router
from control_plane.lifecycle.endpoints import router as lifecycle_router
from control_plane.lifecycle.janitor import KeepWarmJanitor
from control_plane.lifecycle.shadow import ShadowMirror
from control_plane.middleware import BodyLimitMiddleware, RequestIdMiddleware
from control_plane.modelrepo import build_model_repository
from control_plane.openapi import install_openapi
from control_plane.registry.artifact_sweep import ArtifactSweeper
from control_plane.registry.endpoints import router as registry_router
from control_plane.registry.sweep_endpoints import router as artifacts_router
from control_plane.residency.budget import Budgets
from control_plane.residency.manager import Residency
from control_plane.residency.metrics import register as register_residency_metrics
from control_plane.routing.changes import install as install_change_hooks
from control_plane.routing.router import Router
from control_plane.routing.watcher import RegistryWatcher
from control_plane.settings import Settings, get_settings
from control_plane.state import AppState
from control_plane.status.endpoints import router as status_router
from control_plane.tenants.endpoints import router as tenants_router
from control_plane.tenants.throttle import ApiThrottle, ApiThrottleMiddleware

log = logging.getLogger(__name__)
UPLOAD_PATH = re.compile(r"^/v1/tenants/[^/]+/models/[^/]+/versions/?$")


def _engines(settings: Settings) -> tuple[Engine, Engine]:
    """The engine of the management API's requests, and the engine of the process's own work: routing,
    on-demand loads, the reconcile loop, keep-warm releases, key usage. Each has its own pool, so management
    requests holding every connection of theirs (a burst of them queued on one model's row lock, say) hold
    up neither inference nor self-healing, and get a 503 after `database_pool_timeout_s`. SQLite (one
    process, for development) has one engine for both."""
    requests = make_engine(
        settings.database_url,
        pool_size=settings.database_pool_size,
        pool_timeout_s=settings.database_pool_timeout_s,
    )
    if requests.dialect.name == "sqlite":
        return requests, requests
    return requests, make_engine(settings.database_url, pool_size=settings.database_internal_pool_size)


def build_state(settings: Settings) -> AppState:
    """Create the engine, stores, Triton clients and loader (and the embedded Triton if asked)."""
    engine, internal_engine = _engines(settings)
    session_factory = make_session_factory(engine)
    internal = make_session_factory(internal_engine)
    artifacts = build_artifact_store(settings)
    repository = build_model_repository(settings)
    tritons = endpoints_from_urls(
        settings.triton_urls,
        settings.triton_grpc_urls,
        timeout_s=settings.triton_timeout_s,
        load_timeout_s=settings.triton_load_timeout_s,
        health_timeout_s=settings.triton_health_timeout_s,
        names=settings.triton_names,
    )
    router = Router(internal)
    metrics = DataPlaneMetrics()
    upstream = Upstream(tritons, timeout_s=settings.upstream_timeout_s)
    router.listeners.append(lambda table: upstream.route(table.placements))
    limits = TenantLimits(
        rate_per_s=settings.tenant_rate_limit,
        burst=settings.tenant_burst,
        max_concurrency=settings.tenant_max_concurrency,
    )
    router.listeners.append(lambda table: limits.use(table.tenant_limits))
    inflight: Counter[str] = Counter()
    residency = Residency(
        session_factory=internal,
        inflight=inflight,
        wait_s=settings.cold_start_wait_s,
        load_timeout_s=settings.triton_load_timeout_s,
        eviction_grace_s=settings.eviction_grace_s,
        end_stubs=settings.residency_end_stubs,
    )
    router.listeners.append(residency.on_table)  # after the upstream's: routes first, then waiters
    register_residency_metrics(metrics.registry, residency.stats)
    state = AppState(
        settings=settings,
        engine=engine,
        session_factory=session_factory,
        internal_engine=internal_engine,
        internal_session_factory=internal,
        artifacts=artifacts,
        repository=repository,
        loader=VersionLoader(
            session_factory=internal, artifacts=artifacts, repository=repository, tritons=tritons
        ),
        router=router,
        limits=limits,
        api_throttle=ApiThrottle(settings, metrics.registry),
        metrics=metrics,
        key_usage=KeyUsage(internal),
        upstream=upstream,
        shadow=ShadowMirror(upstream=upstream, registry=metrics.registry),
        checks=RequestChecks(
            HeavyWork(
                workers=settings.check_workers,
                per_tenant=settings.check_per_tenant,
                queue_limit=settings.check_queue,
            ),
            limit=settings.max_request_bytes,
            inline_bytes=settings.inline_check_bytes,
        ),
        tritons=tritons,
        inflight=inflight,
        residency=residency,
    )
    state.loader.residency_load = residency.load_now
    if settings.triton_embedded:
        state.supervisor = supervise_embedded(settings, repository)
        state.supervisor.start()  # raises, with Triton's log tail, if it does not come up
        state.embedded_triton = state.supervisor.process
        log.info(
            "embedded Triton ready at %s (gRPC %s)",
            state.embedded_triton.http_url,
            state.embedded_triton.grpc_url,
        )
        tritons.append(embedded_endpoint(settings, state.embedded_triton))
    with transaction(internal) as session:
        register_instances(session, [t for t in tritons if t.name != EMBEDDED])
        register_instances(session, [t for t in tritons if t.name == EMBEDDED], origin="embedded")
    origin = install_change_hooks(
        session_factory,
        internal,
        on_change=router.reload,
        on_desired=state.reconcile_soon,
        on_placements=router.refresh_placements,
    )
    router.reload()
    _start_reconciler(state)
    state.watcher = RegistryWatcher(
        router=router,
        database_url=settings.database_url,
        refresh_s=settings.routing_refresh_s,
        poll_s=settings.routing_poll_s,
        on_desired=state.reconcile_soon,
        origin=origin,
    )
    state.watcher.start()
    state.key_usage.start()
    state.janitor = KeepWarmJanitor(
        session_factory=internal,
        inflight=state.inflight,
        keep_warm_s=settings.keep_warm_s,
        interval_s=settings.janitor_interval_s,
        database_url=settings.database_url,
        lock_timeout_s=settings.leader_lock_timeout_s,
    )
    state.janitor.start()
    state.artifact_sweeper = ArtifactSweeper(
        state,
        interval_s=settings.artifact_sweep_interval_s,
        grace_s=settings.artifact_sweep_grace_s,
        lock_timeout_s=settings.leader_lock_timeout_s,
    )
    state.artifact_sweeper.start()
    state.audit_retention = AuditRetention(
        internal,
        database_url=settings.database_url,
        retention_days=settings.audit_retention_days,
        interval_s=settings.audit_retention_interval_s,
        registry=metrics.registry,
        lock_timeout_s=settings.leader_lock_timeout_s,
    )
    state.audit_retention.start()
    return state


def _start_reconciler(state: AppState) -> None:
    """Reconcile every instance once (loading what the registry serves) before serving, then keep at it."""
    settings = state.settings
    state.reconciler = reconciler = Reconciler(
        session_factory=state.internal_session_factory,
        loader=state.loader,
        tritons=state.tritons,
        database_url=settings.database_url,
        interval_s=settings.reconcile_interval_s,
        local={EMBEDDED} if state.supervisor is not None else (),
        backoff_max_s=settings.reconcile_backoff_max_s,
        loads_per_instance=settings.reconcile_loads_per_instance,
        load_limits={EMBEDDED: embedded_loads(settings)} if state.supervisor is not None else None,
        default_replicas=settings.default_replicas,
        move_after_s=settings.placement_move_after_s,
        unload_grace_s=settings.unload_grace_s,
        lock_timeout_s=settings.leader_lock_timeout_s,
        connect=functools.partial(
            endpoint_for_row,
            timeout_s=settings.triton_timeout_s,
            load_timeout_s=settings.triton_load_timeout_s,
            health_timeout_s=settings.triton_health_timeout_s,
        ),
    )
    wire_data_plane(reconciler, state.upstream)
    residency = state.residency
    residency.reconciler = reconciler
    reconciler.after_pass.append(residency.after_pass)
    reconciler.actions.residency = residency
    reconciler.actions.stall_s = settings.triton_load_stall_s
    reconciler.budgets = Budgets(
        default_budget=settings.instance_memory_budget_bytes,
        tenant_share=settings.tenant_memory_share,
        share_idle_s=settings.tenant_share_idle_s,
        headroom=settings.residency_headroom_bytes,
        live_sizes=residency.live_sizes,
        fresh_sizes=residency.fresh_sizes,
        stats=residency.stats,
        busy=residency.busy,
        local_uses=residency.local_uses,
        load_slots=reconciler.actions.load_slots,
        stalled=reconciler.actions.stalled_on,
        waiting=residency.waiting,
        may_load=reconciler.actions.may_load,
    )
    register_fleet_metrics(state.metrics.registry, reconciler.observed.stats, state.upstream.retry_counts)
    if state.supervisor is not None:
        state.supervisor.on_restart.append(
            AfterRestart(
                settings=settings,
                tritons=state.tritons,
                session_factory=state.internal_session_factory,
                reconciler=state.reconciler,
            )
        )
    state.reconciler.start(wait_s=settings.triton_load_timeout_s)
    residency.start()


def close_state(state: AppState) -> None:
    """Stop what build_state started."""
    if state.reconciler is not None:
        state.reconciler.stop()
    state.residency.stop()
    if state.janitor is not None:
        state.janitor.stop()
    if state.artifact_sweeper is not None:
        state.artifact_sweeper.stop()
    if state.audit_retention is not None:
        state.audit_retention.stop()
    if state.watcher is not None:
        state.watcher.stop()
    state.key_usage.stop()
    state.loader.shutdown()
    for triton in state.tritons:
        triton.close()
    if state.supervisor is not None:
        state.supervisor.stop()
    state.engine.dispose()
    if state.internal_engine is not state.engine:
        state.internal_engine.dispose()


class ControlPlaneApp(FastAPI):
    """FastAPI with the inference data plane in front of its whole middleware stack (the hot path)."""

    def build_middleware_stack(self) -> ASGIApp:
        """The app's usual stack, wrapped by the data plane."""
        return HttpDataPlane(super().build_middleware_stack())


def create_app(settings: Settings | None = None, *, grpc_sockets: Sequence[socket.socket] = ()) -> FastAPI:
    """The control-plane ASGI app; its gRPC data plane serves on `grpc_sockets` where they were bound
    already (`control-plane serve`), otherwise it binds CP_GRPC_PORT (when set) as it starts."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = await run_in_threadpool(build_state, settings)
        app.state.cp = state
        grpc = GrpcProxy(state) if settings.grpc_port or grpc_sockets else None
        try:
            if grpc is not None:
                await grpc.start(settings.http_host, settings.grpc_port, sockets=grpc_sockets)
            state.checks.start()
            yield
        finally:
            if grpc is not None:
                await grpc.stop(grace_s=5.0)
            await state.shadow.close()
            state.checks.close()
            await state.upstream.close()
            await run_in_threadpool(close_state, state)

    # /docs and /redoc come from the console package, with bundled assets instead of FastAPI's CDN.
    app = ControlPlaneApp(
        title="Triton control plane", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None
    )
    register_error_handlers(app)
    install_denial_audit(app)
    for router in (
        status_router,
        tenants_router,
        keys_router,
        admin_keys_router,
        registry_router,
        lifecycle_router,
        audit_router,
        fleet_router,
        artifacts_router,
    ):
        app.include_router(router)
    install_openapi(app)
    install_console(app, settings)
    app.add_middleware(
        BodyLimitMiddleware,
        default_limit=settings.max_request_bytes,
        api_limit=settings.max_api_body_bytes,
        upload_limit=settings.max_upload_bytes,
        upload_path=UPLOAD_PATH,
    )
    app.add_middleware(ApiThrottleMiddleware)  # after the request id, before any body is read
    app.add_middleware(RequestIdMiddleware)
    return app
