"""CPU-heavy request work (big JSON bodies, decompression, /v1/predict conversions) in worker processes.

Parsing a 30 MB JSON body holds the interpreter for a noticeable fraction of a second, which would
stall every other tenant's requests on the event loop; threads would not help (orjson and numpy hold
the GIL). Small bodies are checked inline; big or compressed ones go to a few low-priority worker
processes, with a cap per tenant and on the whole queue.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import select
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from control_plane.dataplane.callbacks import wait_for
from control_plane.dataplane.limits import RateLimited
from control_plane.errors import ServiceUnavailable

log = logging.getLogger(__name__)
Outcome = Callable[[Any], None]  # gets the result, or the exception the work raised


def _init_worker(owner: int) -> None:
    """Workers yield the CPU to the event loop and to Triton, and never outlive the control plane.

    Their parent is multiprocessing's fork server, not the control plane, and they hold the pipes that
    would tell the fork server (and the resource tracker) that it died: so each watches it.
    """
    os.nice(10)
    threading.Thread(target=_exit_with, args=(owner,), name="cp-owner-watch", daemon=True).start()


def _exit_with(owner: int) -> None:
    try:
        fd = os.pidfd_open(owner)
    except (AttributeError, OSError):  # before Linux 5.3: poll
        while _alive(owner):
            time.sleep(0.5)
    else:
        select.select([fd], [], [])
    os._exit(0)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class HeavyWork:
    """A small process pool; `submit` calls back on the event loop with the result or the exception."""

    def __init__(self, *, workers: int, per_tenant: int, queue_limit: int):
        self.workers = workers
        self.per_tenant = per_tenant
        self.queue_limit = queue_limit
        self._pool: ProcessPoolExecutor | None = None
        self._by_tenant: Counter[int] = Counter()
        self._pending = 0

    def start(self) -> None:
        """Start the pool and one worker now, so the first big request does not wait for them."""
        self._executor().submit(os.getpid)

    def admit(self, tenant_id: int) -> None:
        """429 past the tenant's share, 503 when the queue is full; asked before a big body is read too."""
        if self._by_tenant[tenant_id] >= self.per_tenant:
            raise RateLimited(
                f"the tenant already has {self.per_tenant} large requests being prepared", retry_after=1
            )
        if self._pending >= self.queue_limit:
            raise ServiceUnavailable("too many large requests are being prepared; retry shortly")

    def submit(self, tenant_id: int, fn: Callable[..., Any], *args: Any, done: Outcome) -> None:
        """Run `fn(*args)` in a worker, if `admit` lets it."""
        self.admit(tenant_id)
        loop = asyncio.get_running_loop()
        try:
            future = self._executor().submit(fn, *args)
        except BrokenProcessPool:  # a worker died while idle (the OOM killer, say): the pool is spent
            self._broken()
            try:
                future = self._executor().submit(fn, *args)
            except BrokenProcessPool:
                raise self._broken() from None
        self._pending += 1
        self._by_tenant[tenant_id] += 1

        def finished(f: Future[Any]) -> None:
            loop.call_soon_threadsafe(self._settle, tenant_id, f, done)

        future.add_done_callback(finished)

    async def run(self, tenant_id: int, fn: Callable[..., Any], *args: Any) -> Any:
        """`submit`, awaited: the result, or the work's exception raised."""
        return await wait_for(lambda done: self.submit(tenant_id, fn, *args, done=done))

    def _settle(self, tenant_id: int, future: Future[Any], done: Outcome) -> None:
        self._pending -= 1
        self._by_tenant[tenant_id] -= 1
        if self._by_tenant[tenant_id] <= 0:
            del self._by_tenant[tenant_id]
        try:
            outcome = future.result()
        except BrokenProcessPool:
            outcome = self._broken()
        except BaseException as exc:  # the work's own error, passed on as is
            outcome = exc
        done(outcome)

    def _broken(self) -> ServiceUnavailable:
        """A worker died: new ones are started for the next request; this one's error."""
        log.error("a request-preparation worker died; starting new ones")
        self._reset()
        return ServiceUnavailable("the request could not be prepared; retry", retry_after=1)

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("forkserver"),
                initializer=_init_worker,
                initargs=(os.getpid(),),
            )
        return self._pool

    def _reset(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Stop the workers (work still queued is dropped)."""
        self._reset()
