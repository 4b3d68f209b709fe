"""Service settings, read from `CP_*` environment variables."""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class ArtifactBackend(StrEnum):
    """Where artifacts are stored."""

    LOCAL = "local"
    S3 = "s3"


class Runtime(StrEnum):
    """How ONNX/TorchScript versions run in Triton."""

    NATIVE = "native"  # onnxruntime / pytorch_libtorch backends (NGC image)
    PYTHON = "python"  # our Python-backend runners (bundled Triton)


class Device(StrEnum):
    """Instance-group kind for generated configs."""

    CPU = "cpu"
    GPU = "gpu"


MIN_RATE = 0.001  # the least request rate a limit may set, but for 0 (unlimited): one every 1000 s


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """All settings of one control-plane process."""

    model_config = SettingsConfigDict(env_prefix="CP_", env_file=None, extra="ignore")

    database_url: str = "sqlite:///var/control-plane.db"
    database_pool_size: int = 10
    database_pool_timeout_s: float = Field(default=10.0, gt=0)
    database_internal_pool_size: int = Field(default=5, ge=1)

    artifact_store: ArtifactBackend = ArtifactBackend.LOCAL
    artifact_dir: Path = Path("var/artifacts")
    s3_endpoint: str = "http://127.0.0.1:9000"
    s3_access_key: SecretStr = SecretStr("minioadmin")
    s3_secret_key: SecretStr = SecretStr("minioadmin")
    s3_region: str = "us-east-1"
    s3_bucket: str = "artifacts"
    s3_timeout_s: float = 30.0

    model_repository: str = "model_repository"

    triton_urls: Annotated[list[str], NoDecode] = Field(default_factory=list)
    triton_names: Annotated[list[str], NoDecode] = Field(default_factory=list)  # stable names, same order
    triton_grpc_urls: Annotated[list[str], NoDecode] = Field(default_factory=list)
    triton_embedded: bool = False
    triton_workdir: Path = Path("var/triton")
    triton_timeout_s: float = 30.0
    triton_load_timeout_s: float = 300.0
    triton_runtime: Runtime = Runtime.PYTHON
    triton_device: Device = Device.CPU
    triton_gpus: Annotated[list[int], NoDecode] = Field(default_factory=list)
    triton_health_timeout_s: float = 2.0  # health and repository-index probes (ready, status, reconcile)
    # Embedded Triton: restarted at once, then after 0.5 s, 1 s, ... (max 30 s); given up after this
    # many restarts in a row without a minute of uptime in between.
    triton_max_restarts: int = 5
    triton_restart_backoff_s: float = 0.5
    # BLAS threads of each Python-backend stub of the embedded Triton (OPENBLAS_NUM_THREADS, unless the
    # environment sets it; 0: the library's own default, one per core): a stub runs per model instance,
    # and with one thread pool per core in each, many models on shared cores oversubscribe them.
    triton_stub_blas_threads: int = Field(1, ge=0, le=1024)

    reconcile_interval_s: float = 5.0  # period of the reconcile loop (also run at start, after restarts)
    reconcile_backoff_max_s: float = 60.0  # a failing load is retried after 1 s, doubling up to this
    # Loads the loop runs at once on one instance (Triton's own --model-load-thread-count is 4).
    reconcile_loads_per_instance: int = Field(4, ge=1, le=64)
    # Loads at once on the embedded Triton (0: the above, at most this machine's CPUs: its Python-backend
    # stubs start on the CPU, so more at once only slow each other down).
    triton_embedded_loads: int = Field(0, ge=0, le=64)
    # A load calling Triton longer than this is stalled: it holds no load worker, so another version's
    # load starts beside it (at most as many more as there are workers), e.g. beside `initialize()`s that
    # hang until CP_TRITON_LOAD_TIMEOUT_S.
    triton_load_stall_s: float = Field(30.0, gt=0)
    # Fleet: instances per model by default; how long an unavailable instance keeps its placements
    # before they move elsewhere; how long a moved version stays loaded after routes stopped using it;
    # how soon a lost leader's lock passes to another replica (besides a dead process, at once).
    default_replicas: int = Field(1, ge=1, le=64)
    placement_move_after_s: float = 30.0
    unload_grace_s: float = 1.0
    leader_lock_timeout_s: float = 10.0

    routing_refresh_s: float = 30.0
    routing_poll_s: float = 1.0

    # Inference limits of every tenant without its own (PATCH /v1/tenants/{t} `limits`): requests/s per
    # tenant (0 = unlimited), the token bucket's burst, in-flight requests per tenant (0 = unlimited).
    tenant_rate_limit: float = Field(0.0, ge=0, allow_inf_nan=False)
    tenant_burst: int = Field(100, ge=0)
    tenant_max_concurrency: int = Field(0, ge=0)
    # The management API's own per-tenant limits (tenants/throttle.py; admins are not limited): requests/s
    # (0 = unlimited) with a burst, and requests in flight (0 = unlimited), held for a request's whole life,
    # body included. The default keeps one tenant's slow uploads or load waits from holding the threads
    # and pooled connections every tenant's management requests share (pool: 10 and as many again).
    api_tenant_rate_limit: float = Field(0.0, ge=0, allow_inf_nan=False)
    api_tenant_burst: int = Field(20, ge=1)
    api_tenant_max_concurrency: int = Field(8, ge=0)
    # Threads of management calls that wait for a version's load (`/load`, promote, rollback), apart from
    # the 40 every other management request runs on; past them, such calls queue without a thread.
    load_wait_threads: int = Field(32, ge=1, le=1000)
    # Quotas of every tenant without its own (PATCH /v1/tenants/{t}); 0 = unlimited. Live models, live
    # versions, the bytes of the distinct artifacts its live versions use, the aliases of its live models,
    # and its live API keys (neither revoked nor expired).
    tenant_max_models: int = Field(default=0, ge=0)
    tenant_max_versions: int = Field(default=0, ge=0)
    tenant_max_artifact_bytes: int = Field(default=0, ge=0)
    tenant_max_aliases: int = Field(default=0, ge=0)
    tenant_max_keys: int = Field(default=0, ge=0)
    # Audit events older than this many days are deleted, hourly, by one replica (0: kept for ever); at
    # least a day when set (audit/retention.py).
    audit_retention_days: float = Field(0.0, ge=0, le=36500, allow_inf_nan=False)
    audit_retention_interval_s: float = Field(3600.0, ge=60, le=7 * 86400, allow_inf_nan=False)
    # The longest an API key may live (0: no limit); a key created without `expires_at` gets it.
    key_max_ttl_s: float = Field(0.0, ge=0, le=100 * 365 * 86400, allow_inf_nan=False)
    upstream_timeout_s: float = 60.0

    # Residency (issue 12): memory budget per Triton instance (0: none; the instances API sets one
    # per instance), a tenant's share of it before its versions are evicted first, how long a request
    # for a version that is not loaded waits for its load, how long routes drain before an eviction,
    # and whether an upload loads the new version right away (else on its first request or promote).
    instance_memory_budget_bytes: int = Field(0, ge=0)
    tenant_memory_share: float = Field(0.5, gt=0, le=1)
    # A version nobody used for this long is evicted first whatever its tenant's share (0: never): a
    # tenant's idle memory does not make another tenant's active models evict each other.
    tenant_share_idle_s: float = Field(120.0, ge=0)
    cold_start_wait_s: float = Field(30.0, gt=0)
    eviction_grace_s: float = Field(0.2, ge=0)
    residency_headroom_bytes: int = Field(0, ge=0)  # kept free ahead of the next load (if < budget / 2)
    # An evicted Python-backend version's stubs (local Tritons) are ended right before Triton unloads it,
    # rather than a second after the unload by Triton's fixed health-check sleep: memory returns at once.
    residency_end_stubs: bool = True
    load_on_upload: bool = False
    keep_warm_s: float = 600.0  # how long a replaced version stays loaded (instant rollback)
    janitor_interval_s: float = 10.0
    # The artifact store's garbage sweep, on one replica every this many seconds (0: only when an admin
    # asks, POST /v1/artifacts/sweep): objects no live version uses, older than the grace period, go.
    artifact_sweep_interval_s: float = Field(3600.0, ge=0, le=30 * 86400, allow_inf_nan=False)
    artifact_sweep_grace_s: float = Field(3600.0, ge=0, le=365 * 86400, allow_inf_nan=False)

    protected_aliases: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["production"])

    admin_token: SecretStr | None = None
    # Encrypts the web console's session cookie; replicas must share it. Unset: derived from admin_token
    # (random per process when that is unset too, so sessions then end with the process).
    console_secret: SecretStr | None = None
    console_session_s: int = Field(8 * 3600, ge=60)
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    grpc_port: int = 8081
    max_upload_bytes: int = 2 * 1024**3
    max_request_bytes: int = 64 * 1024**2
    # JSON bodies of the management API (/v1, uploads apart): parsed on the event loop, before the key is
    # checked (FastAPI); a model's spec of 1000 inputs is ~50 KB
    max_api_body_bytes: int = 1024**2

    # Data-plane protection (see README "Limits"): who may read /metrics, connection-level limits,
    # and the worker processes that check big or compressed inference bodies off the event loop.
    metrics_token: SecretStr | None = None
    # An idle keep-alive HTTP connection is closed after this. Behind an L7 load balancer or proxy that
    # reuses idle connections, keep it above that proxy's idle timeout, or a request sent as we close
    # fails there with a 502 (AWS ALB 60 s, ingress-nginx upstream 60 s, GCP asks for 620 s).
    http_keep_alive_s: int = Field(5, ge=1, le=3600)
    header_timeout_s: float = 10.0  # from a request's first byte to the end of its headers
    body_timeout_s: float = 30.0  # longest pause while a request body is arriving
    max_header_bytes: int = 64 * 1024
    max_header_count: int = 100
    inline_check_bytes: int = 256 * 1024  # bigger bodies (compressed or inflated) are checked in a worker
    check_workers: int = 2
    check_per_tenant: int = 2  # large bodies of one tenant being checked at once
    check_queue: int = 16

    @field_validator(
        "triton_urls", "triton_names", "triton_grpc_urls", "triton_gpus", "protected_aliases", mode="before"
    )
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("tenant_rate_limit", "api_tenant_rate_limit")
    @classmethod
    def _rate(cls, value: float) -> float:
        if 0 < value < MIN_RATE:
            raise ValueError(f"0 (unlimited) or at least {MIN_RATE:g} requests a second")
        return value

    @field_validator("audit_retention_days")
    @classmethod
    def _retention(cls, value: float) -> float:
        if 0 < value < 1:
            raise ValueError("an audit retention shorter than a day is a mistake; 0 keeps events for ever")
        return value


@lru_cache
def get_settings() -> Settings:
    """Settings of this process, read once from the environment."""
    return Settings()
