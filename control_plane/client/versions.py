"""Versions: streamed upload with progress, and waiting until Triton has loaded one (or failed to)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from control_plane.client.connection import Connection, path
from control_plane.client.errors import ConnectionFailed, LoadFailed, WaitTimeout
from control_plane.client.types import Version
from control_plane.client.upload import FilePart, MultipartBody, Progress

SETTLED_BAD = ("failed", "retired")  # states a version never leaves for `ready` by itself
NOT_LOADING = ("registered", "unloaded")  # nothing loads it unless asked (or a request needs it)
LOAD_GRACE_S = 0.5  # a server that loads on upload moves it to `loading` within this


class Versions:
    """`/v1/tenants/{t}/models/{m}/versions`."""

    def __init__(self, conn: Connection, *, upload_timeout: float = 3600.0):
        self._conn = conn
        self._upload_timeout = upload_timeout

    def _url(self, tenant: str, model: str, *rest: str | int) -> str:
        return path("v1", "tenants", tenant, "models", model, "versions", *rest)

    def upload(
        self,
        tenant: str,
        model: str,
        file: str | Path,
        *,
        example: str | Path | None = None,
        progress: Progress | None = None,
    ) -> Version:
        """Upload an artifact as the model's next version, streamed from disk.

        `progress(sent, total)` is called as the file's bytes go out. The version then loads in the
        background: see `wait_ready`. `example` (TorchScript): .npz or JSON example inputs.
        """
        parts = [FilePart("file", Path(file))]
        if example is not None:
            parts.append(FilePart("example", Path(example)))
        body = MultipartBody(parts, progress=progress)
        answer = self._conn.json(
            "POST",
            self._url(tenant, model),
            content=iter(body),
            headers=body.headers,
            timeout=self._upload_timeout,
        )
        return Version.model_validate(answer)

    def list(self, tenant: str, model: str) -> list[Version]:
        """The model's versions, oldest first."""
        return [Version.model_validate(v) for v in self._conn.listing(self._url(tenant, model))]

    def get(self, tenant: str, model: str, number: int) -> Version:
        """One version: state and Triton's message, sha256, size, signature, config.pbtxt."""
        return Version.model_validate(self._conn.json("GET", self._url(tenant, model, number)))

    def delete(self, tenant: str, model: str, number: int) -> Version:
        """Retire a version no alias uses."""
        return Version.model_validate(self._conn.json("DELETE", self._url(tenant, model, number)))

    def redeploy(self, tenant: str, model: str, number: int) -> Version:
        """Admins: the version's artifact again as a new version with the model's current settings."""
        return Version.model_validate(self._conn.json("POST", self._url(tenant, model, number, "redeploy")))

    def load(self, tenant: str, model: str, number: int, *, timeout: float | None = None) -> Version:
        """Load the version now; answers once Triton has it `ready` (or it `failed`, with the reason)."""
        url = self._url(tenant, model, number, "load")
        return Version.model_validate(self._conn.json("POST", url, timeout=timeout))

    def wait_ready(
        self,
        tenant: str,
        model: str,
        number: int,
        *,
        timeout: float = 300.0,
        poll_s: float = 0.2,
        on_state: Callable[[Version], None] | None = None,
    ) -> Version:
        """Wait until the version is `ready`, asking for its load when nothing else loads it (versions
        load on demand); raise LoadFailed (with Triton's message) when it failed, WaitTimeout past
        `timeout` seconds. `on_state` sees every answer."""
        started = time.monotonic()
        deadline = started + timeout
        delay = poll_s
        while True:
            version = self.get(tenant, model, number)
            if version.state in NOT_LOADING and time.monotonic() - started >= min(LOAD_GRACE_S, timeout):
                if on_state is not None:
                    on_state(version)
                version = self._load_within(tenant, model, number, deadline=deadline, timeout=timeout)
            if on_state is not None:
                on_state(version)
            if version.state == "ready":
                return version
            if version.state in SETTLED_BAD:
                raise LoadFailed(
                    model=model, version=number, state=version.state, state_message=version.state_message
                )
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout(model=model, version=number, state=version.state, timeout_s=timeout)
            time.sleep(min(delay, left))
            delay = min(delay * 1.5, 2.0)

    def _load_within(
        self, tenant: str, model: str, number: int, *, deadline: float, timeout: float
    ) -> Version:
        try:
            return self.load(tenant, model, number, timeout=max(deadline - time.monotonic(), 1.0))
        except ConnectionFailed as exc:
            if time.monotonic() < deadline:
                raise
            raise WaitTimeout(model=model, version=number, state="loading", timeout_s=timeout) from exc
