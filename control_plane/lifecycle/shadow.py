"""Shadow traffic: after a live response is sent, replay a share of the requests to the alias' shadow
version and compare its outputs with the live ones."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry, Counter, Gauge

from control_plane.dataplane.decode import decode_infer_response
from control_plane.dataplane.upstream import Upstream
from control_plane.errors import AppError
from control_plane.routing.router import Resolved

log = logging.getLogger(__name__)
Outcome = Literal["match", "mismatch", "error", "skipped"]
Key = tuple[str, str, str]  # (tenant, model, alias)


@dataclass(frozen=True, slots=True)
class ShadowStats:
    """Comparison results for one alias' shadow version since it was set (or reset).

    `requests` counts requests sent to the shadow; `skipped` those drawn but not sent (too many
    pending). `max_abs_diff` is None until numeric outputs were compared; `match_rate` is
    matches / (matches + mismatches), None before any comparison.
    """

    shadow_version: int
    requests: int
    matches: int
    mismatches: int
    errors: int
    skipped: int
    max_abs_diff: float | None
    match_rate: float | None


@dataclass(slots=True)
class _Tally:
    shadow_version: int
    requests: int = 0
    matches: int = 0
    mismatches: int = 0
    errors: int = 0
    skipped: int = 0
    max_abs_diff: float | None = None

    def snapshot(self) -> ShadowStats:
        compared = self.matches + self.mismatches
        return ShadowStats(
            shadow_version=self.shadow_version,
            requests=self.requests,
            matches=self.matches,
            mismatches=self.mismatches,
            errors=self.errors,
            skipped=self.skipped,
            max_abs_diff=self.max_abs_diff,
            match_rate=self.matches / compared if compared else None,
        )


TENANT_SHARE = 2  # one tenant may hold at most half of the pending shadow requests


class ShadowMirror:
    """Mirrors a share of an alias' traffic to its shadow version in background tasks, and keeps score."""

    def __init__(
        self,
        *,
        upstream: Upstream,
        registry: CollectorRegistry,
        max_pending: int = 64,
        rtol: float = 1e-4,
        atol: float = 1e-5,
    ):
        self.upstream = upstream
        self.max_pending = max_pending
        # One tenant's share of the pending requests: a slow shadow version of one tenant held all 64, and
        # every other tenant's shadow requests were skipped while it did.
        self.max_pending_per_tenant = max(1, max_pending // TENANT_SHARE)
        self._pending_of: dict[str, int] = {}
        self.rtol, self.atol = rtol, atol
        self._tasks: set[asyncio.Task[None]] = set()
        self._tallies: dict[Key, _Tally] = {}
        self._closed = False
        self._warned = False
        labels = ["tenant", "model", "alias", "shadow_version"]
        self.requests = Counter(
            "cp_shadow_requests_total",
            "Shadow requests by outcome of the comparison with the live response",
            [*labels, "outcome"],
            registry=registry,
        )
        self.max_abs_diff = Gauge(
            "cp_shadow_max_abs_diff",
            "Largest |live - shadow| over numeric outputs since the shadow version was set",
            labels,
            registry=registry,
        )

    @property
    def pending(self) -> int:
        """Shadow requests started and not finished."""
        return sum(not task.done() for task in self._tasks)

    def mirror(
        self,
        *,
        resolved: Resolved,
        body: bytes,
        headers: Sequence[tuple[bytes, bytes]],
        live_body: bytes,
        live_header_length: int | None,
    ) -> None:
        """Maybe replay this request to the shadow version in the background; never blocks or raises."""
        if resolved.shadow is None or resolved.alias is None or self._closed:
            return
        triton_name, version, percent = resolved.shadow
        key = (resolved.tenant, resolved.model, resolved.alias)
        tally = self._tally(key, version)
        if random.random() * 100 >= percent:  # noqa: S311 - sampling, not security
            return
        tenant = resolved.tenant
        held = self._pending_of.get(tenant, 0)
        if len(self._tasks) >= self.max_pending or held >= self.max_pending_per_tenant:
            self._record(key, tally, "skipped")
            return
        try:
            task = asyncio.get_running_loop().create_task(
                self._shadow(key, tally, triton_name, body, list(headers), live_body, live_header_length)
            )
        except Exception:  # no running loop: a wiring bug, reported once, not per request
            self._warn_once("could not start a shadow request")
            self._record(key, tally, "error")
            return
        tally.requests += 1
        self._tasks.add(task)
        self._pending_of[tenant] = held + 1

        def finished(done: asyncio.Task[None]) -> None:
            self._tasks.discard(done)
            left = self._pending_of.get(tenant, 1) - 1
            if left > 0:
                self._pending_of[tenant] = left
            else:
                self._pending_of.pop(tenant, None)

        task.add_done_callback(finished)

    def stats(self, *, tenant: str, model: str, alias: str) -> ShadowStats | None:
        """The alias' shadow results, or None if it has not had shadow traffic."""
        tally = self._tallies.get((tenant, model, alias))
        return tally.snapshot() if tally is not None else None

    def reset(self, *, tenant: str, model: str, alias: str) -> None:
        """Start the alias' shadow results afresh (requests in flight no longer count)."""
        key = (tenant, model, alias)
        tally = self._tallies.get(key)
        if tally is not None:
            self._tallies[key] = _Tally(tally.shadow_version)
            self._remove_gauge(key, tally.shadow_version)

    async def drain(self, timeout_s: float) -> bool:
        """Wait until no shadow request is pending; False if some still are after `timeout_s`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while pending := [task for task in self._tasks if not task.done()]:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            await asyncio.wait(pending, timeout=remaining)
        return True

    async def close(self) -> None:
        """Cancel the pending shadow requests and wait for them; later mirror() calls do nothing."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    def _tally(self, key: Key, version: int) -> _Tally:
        tally = self._tallies.get(key)
        if tally is None or tally.shadow_version != version:
            if tally is not None:  # a new shadow version: the old one's gauge would only mislead
                self._remove_gauge(key, tally.shadow_version)
            tally = self._tallies[key] = _Tally(version)
        return tally

    def _remove_gauge(self, key: Key, version: int) -> None:
        with contextlib.suppress(KeyError):  # never set
            self.max_abs_diff.remove(*key, str(version))

    async def _shadow(
        self,
        key: Key,
        tally: _Tally,
        triton_name: str,
        body: bytes,
        headers: list[tuple[bytes, bytes]],
        live_body: bytes,
        live_header_length: int | None,
    ) -> None:
        diff: float | None = None
        try:
            response = await self.upstream.request(
                b"POST", f"/v2/models/{triton_name}/infer", body=body, headers=headers
            )
            if response.status != 200:
                outcome: Outcome = "error"
            else:
                length = response.headers.get(b"inference-header-content-length")
                shadow_length = int(length) if length is not None else None
                # Decoded and compared in a thread: a million BYTES elements took 0.44 s an answer, and
                # a thread yields the event loop its turn every few milliseconds
                same, diff = await asyncio.to_thread(
                    self._compare, live_body, live_header_length, response.body, shadow_length
                )
                outcome = "match" if same else "mismatch"
        except (AppError, ValueError):  # Triton unreachable or slow, or an undecodable response
            outcome = "error"
        except Exception:
            self._warn_once("a shadow request failed unexpectedly")
            outcome = "error"
        self._record(key, tally, outcome, diff)

    def _compare(
        self, live_body: bytes, live_length: int | None, shadow_body: bytes, shadow_length: int | None
    ) -> tuple[bool, float | None]:
        live = decode_infer_response(live_body, header_length=live_length)
        shadow = decode_infer_response(shadow_body, header_length=shadow_length)
        return compare_outputs(live, shadow, rtol=self.rtol, atol=self.atol)

    def _record(self, key: Key, tally: _Tally, outcome: Outcome, diff: float | None = None) -> None:
        labels = (*key, str(tally.shadow_version))
        self.requests.labels(*labels, outcome).inc()
        if outcome == "match":
            tally.matches += 1
        elif outcome == "mismatch":
            tally.mismatches += 1
        elif outcome == "error":
            tally.errors += 1
        else:
            tally.skipped += 1
        if diff is not None and (tally.max_abs_diff is None or diff > tally.max_abs_diff):
            tally.max_abs_diff = diff
            if self._tallies.get(key) is tally:  # not for a tally that was reset meanwhile
                self.max_abs_diff.labels(*labels).set(diff)

    def _warn_once(self, message: str) -> None:
        if not self._warned:
            self._warned = True
            log.exception("%s (further failures are only counted)", message)


def compare_outputs(
    live: dict[str, npt.NDArray[Any]], shadow: dict[str, npt.NDArray[Any]], *, rtol: float, atol: float
) -> tuple[bool, float | None]:
    """(whether the outputs agree, max |live - shadow| over numeric outputs of equal shape, if any).

    Same names and shapes are required; numbers are compared with `allclose` (NaN equals NaN),
    BYTES and BOOL exactly.
    """
    same = live.keys() == shadow.keys()
    worst: float | None = None
    for name in live.keys() & shadow.keys():
        a, b = live[name], shadow[name]
        if a.shape != b.shape:
            same = False
        elif _exact(a) or _exact(b):
            same = same and a.dtype.kind == b.dtype.kind and bool(np.array_equal(a, b))
        else:
            same = same and bool(np.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True))
            diff = _max_abs_diff(a, b)
            worst = diff if worst is None else max(worst, diff)
    return same, worst


def _exact(array: npt.NDArray[Any]) -> bool:
    return array.dtype.kind in "bOSU"


def _max_abs_diff(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> float:
    if a.size == 0:
        return 0.0
    x, y = a.astype(np.float64), b.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(x - y)
    diff[(x == y) | (np.isnan(x) & np.isnan(y))] = 0.0  # equal infinities and NaN against NaN agree
    diff[np.isnan(diff)] = math.inf  # NaN against a number
    return float(diff.max())
