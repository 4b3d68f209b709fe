"""Adapter around `tritonclient.http` for health and model-repository calls; SDK errors become ours."""

from __future__ import annotations

import contextlib
import functools
import http.client
import threading
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, TypeVar

import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from control_plane.tritonserver.exceptions import (
    TritonError,
    TritonLoadTimeout,
    TritonModelLoadError,
    TritonModelNotFound,
    TritonUnavailable,
)

T = TypeVar("T")
SdkClient = Any  # tritonclient.http.InferenceServerClient (untyped)

# What geventhttpclient raises when Triton is unreachable, hangs up or times out.
_TRANSPORT_ERRORS = (OSError, http.client.HTTPException)


# gRPC statuses that mean Triton could not be reached or did not answer in time.
_GRPC_UNAVAILABLE = ("StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED", "StatusCode.CANCELLED")


def _is_not_found(exc: InferenceServerException) -> bool:
    return exc.status() in ("404", "StatusCode.NOT_FOUND") or "unknown model" in (exc.message() or "")


def _timed_out(cause: BaseException | None) -> bool:
    """Whether a call failed for its timeout (HTTP: the socket's; gRPC: the deadline), not for Triton."""
    if isinstance(cause, InferenceServerException):
        return bool(cause.status() == "StatusCode.DEADLINE_EXCEEDED")
    return isinstance(cause, TimeoutError) or "timed out" in str(cause).lower()


class TritonClient:
    """Health and repository API of one Triton server, with our own errors.

    The gevent-based SDK client deadlocks when one instance is used from several threads
    at once. With only `client`, calls are serialized by a lock; with `client_factory`
    (what `from_url` sets up), each thread gets its own SDK client, so a long model load
    does not hold up health checks or loads running in other threads.
    """

    def __init__(
        self,
        client: SdkClient,
        *,
        url: str = "",
        client_factory: Callable[[], SdkClient] | None = None,
        grpc_client: SdkClient | None = None,
        timeout_s: float | None = None,
    ) -> None:
        self.url = url
        self._client = client
        self._factory = client_factory
        self._grpc = grpc_client  # thread-safe (one channel)
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._local = threading.local()
        self._local.client = client
        self._all: list[SdkClient] = [client]

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        timeout_s: float,
        connect_timeout_s: float | None = None,
        grpc_url: str | None = None,
    ) -> TritonClient:
        """Build SDK clients for `url` (with or without http://) with explicit timeouts; loads and
        unloads over gRPC at `grpc_url` (host:port) when given."""
        factory = functools.partial(
            triton_http.InferenceServerClient,
            url.split("://", 1)[-1].rstrip("/"),
            connection_timeout=connect_timeout_s if connect_timeout_s is not None else timeout_s,
            network_timeout=timeout_s,
            ssl=url.startswith("https://"),
        )
        grpc_client = triton_grpc.InferenceServerClient(grpc_url) if grpc_url else None
        return cls(factory(), url=url, client_factory=factory, grpc_client=grpc_client, timeout_s=timeout_s)

    @contextlib.contextmanager
    def _sdk(self) -> Iterator[SdkClient]:
        if self._factory is None:
            with self._lock:
                yield self._client
            return
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._factory()
            with self._lock:
                self._all.append(client)
        yield client

    def _run(self, what: str, call: Callable[[SdkClient], T]) -> T:
        """Run one SDK call; transport failures and 503 answers become TritonUnavailable."""
        try:
            with self._sdk() as client:
                return call(client)
        except _TRANSPORT_ERRORS as exc:
            raise TritonUnavailable(f"Triton at {self.url or 'server'} unavailable ({what}): {exc}") from exc
        except InferenceServerException as exc:
            if exc.status() == "503":
                raise TritonUnavailable(f"Triton {what}: {exc.message()}") from exc
            raise

    def is_live(self) -> bool:
        """Whether Triton answers live; False when it cannot be reached."""
        try:
            return bool(self._run("live", lambda c: c.is_server_live()))
        except TritonUnavailable:
            return False

    def is_ready(self) -> bool:
        """Whether Triton answers ready; False when it cannot be reached."""
        try:
            return bool(self._run("ready", lambda c: c.is_server_ready()))
        except TritonUnavailable:
            return False

    def is_model_ready(self, name: str) -> bool:
        """Whether the model is loaded and ready (False for an unknown model)."""
        return bool(self._run(f"ready {name}", lambda c: c.is_model_ready(name)))

    def load_model(self, name: str, *, config: str | None = None) -> None:
        """Load (or reload) a model from the repository; `config` is an optional JSON override."""
        try:
            if self._grpc is not None:
                self._run_grpc(
                    f"load {name}",
                    lambda c: c.load_model(name, config=config, client_timeout=self._timeout_s),
                )
            else:
                self._run(f"load {name}", lambda c: c.load_model(name, config=config))
        except InferenceServerException as exc:
            raise TritonModelLoadError(f"Triton could not load {name!r}: {exc.message()}") from exc
        except TritonUnavailable as exc:
            if _timed_out(exc.__cause__):  # said in the model's terms, without Triton's address
                raise TritonLoadTimeout(f"the load did not finish within {self._timeout_s:g} s") from exc
            raise

    def unload_model(self, name: str, *, unload_dependents: bool = False) -> None:
        """Unload a model (Triton treats unloading an unknown model as success)."""
        try:
            if self._grpc is not None:
                self._run_grpc(
                    f"unload {name}",
                    lambda c: c.unload_model(
                        name, unload_dependents=unload_dependents, client_timeout=self._timeout_s
                    ),
                )
            else:
                self._run(
                    f"unload {name}", lambda c: c.unload_model(name, unload_dependents=unload_dependents)
                )
        except InferenceServerException as exc:
            raise self._model_error(name, exc) from exc

    def _run_grpc(self, what: str, call: Callable[[SdkClient], T]) -> T:
        """Run one gRPC SDK call; unreachable or timed out becomes TritonUnavailable."""
        try:
            return call(self._grpc)
        except InferenceServerException as exc:
            if exc.status() in _GRPC_UNAVAILABLE:
                raise TritonUnavailable(
                    f"Triton at {self.url or 'server'} unavailable ({what}): {exc.message()}"
                ) from exc
            raise

    def repository_index(self) -> list[dict[str, Any]]:
        """Models in the repository with their state (`name`, `version`, `state`, `reason`)."""
        try:
            return list(self._run("repository index", lambda c: c.get_model_repository_index()))
        except InferenceServerException as exc:
            raise TritonError(f"Triton repository index failed: {exc.message()}") from exc

    def statistics(self, name: str = "") -> list[dict[str, Any]]:
        """Triton's model statistics (last_inference, memory_usage, ...); all models without a name."""
        try:
            found = self._run(f"statistics {name}", lambda c: c.get_inference_statistics(model_name=name))
        except InferenceServerException as exc:
            raise self._model_error(name, exc) from exc
        return list(dict(found).get("model_stats") or [])

    def model_config(self, name: str) -> dict[str, Any]:
        """The configuration Triton uses for a loaded model, as JSON."""
        try:
            return dict(self._run(f"config {name}", lambda c: c.get_model_config(name)))
        except InferenceServerException as exc:
            raise self._model_error(name, exc) from exc

    @staticmethod
    def _model_error(name: str, exc: InferenceServerException) -> TritonModelNotFound | TritonError:
        if _is_not_found(exc):
            return TritonModelNotFound(f"Triton has no model {name!r}: {exc.message()}")
        return TritonError(f"Triton failed for model {name!r}: {exc.message()}")

    def close(self) -> None:
        """Close the SDK clients' connections."""
        with self._lock:
            clients, self._all = self._all, []
            grpc_client, self._grpc = self._grpc, None
        for client in [*clients, grpc_client] if grpc_client is not None else clients:
            with contextlib.suppress(Exception):
                client.close()

    def __enter__(self) -> TritonClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
