"""Keep the bundled Triton running: restart it when it exits, with bounded attempts and backoff."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum

from control_plane.errors import AppError
from control_plane.tritonserver.process import TritonProcess, log_tail

log = logging.getLogger(__name__)

RestartHook = Callable[[TritonProcess], None]


class SupervisorState(StrEnum):
    """Where the supervised Triton stands."""

    STARTING = "starting"
    RUNNING = "running"
    RESTARTING = "restarting"
    FAILED = "failed"  # gave up after too many restarts in a row
    STOPPED = "stopped"


@dataclass(frozen=True)
class SupervisorStatus:
    """What /v1/status shows about the supervised Triton."""

    state: SupervisorState
    pid: int | None
    restarts: int  # successful restarts since start-up
    failures_in_a_row: int  # exits or failed starts since it last ran `stable_s`
    last_exit_code: int | None = None
    last_exit_at: datetime | None = None
    message: str | None = None


class TritonSupervisor:
    """Watches one TritonProcess from its own thread and restarts it when it exits unexpectedly.

    Restarts reuse the same ports when they are free (pooled clients just reconnect) and fresh
    ones otherwise. After `max_restarts` failures without `stable_s` of uptime in between, it gives
    up and reports FAILED. `on_restart` hooks run after each successful restart (e.g. reconcile).
    """

    def __init__(
        self,
        process: TritonProcess,
        *,
        startup_timeout_s: float,
        max_restarts: int = 5,
        backoff_s: float = 0.5,
        backoff_max_s: float = 30.0,
        stable_s: float = 60.0,
        poll_s: float = 0.1,
    ) -> None:
        self.process = process
        self.startup_timeout_s = startup_timeout_s
        self.max_restarts = max_restarts
        self.backoff_s, self.backoff_max_s = backoff_s, backoff_max_s
        self.stable_s, self.poll_s = stable_s, poll_s
        self.on_restart: list[RestartHook] = []
        self._status = SupervisorStatus(SupervisorState.STARTING, pid=None, restarts=0, failures_in_a_row=0)
        self._lock = threading.Lock()  # one of start/restart/stop at a time on the process
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="cp-triton-supervisor", daemon=True)
        self._started_at = 0.0

    def start(self) -> None:
        """Start Triton (raising if it does not come up), then watch it."""
        with self._lock:
            self.process.start(timeout_s=self.startup_timeout_s)
            self._running()
        self._thread.start()

    def stop(self) -> None:
        """Stop watching, then stop Triton and its whole process group."""
        self._stopping.set()
        with self._lock:
            self.process.stop()
            self._set(state=SupervisorState.STOPPED, pid=None)
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def status(self) -> SupervisorStatus:
        """A snapshot of the supervisor's state."""
        return self._status

    def _set(self, **changes: object) -> None:
        self._status = replace(self._status, **changes)  # type: ignore[arg-type]

    def _running(self) -> None:
        self._started_at = time.monotonic()
        self._set(state=SupervisorState.RUNNING, pid=self.process.pid, message=None)

    def _watch(self) -> None:
        while not self._stopping.wait(self.poll_s):
            if self.process.has_exited():
                self._recover()
            elif self._status.failures_in_a_row and time.monotonic() - self._started_at >= self.stable_s:
                self._set(failures_in_a_row=0)

    def _recover(self) -> None:
        """Reap the dead Triton, then restart it with backoff until it runs or we give up."""
        with self._lock:
            if self._stopping.is_set() or not self.process.has_exited():
                return
            self.process.stop()  # kills what is left of its group, removes its shared memory
            code = self.process.exit_code
            log.error(
                "tritonserver exited unexpectedly with %s; log tail:\n%s",
                code,
                log_tail(self.process.log_path),
            )
            self._set(last_exit_code=code, last_exit_at=datetime.now(UTC), pid=None)
        while not self._stopping.is_set():
            failures = self._status.failures_in_a_row + 1
            if failures > self.max_restarts:
                self._give_up()
                return
            self._set(state=SupervisorState.RESTARTING, failures_in_a_row=failures)
            delay = 0.0 if failures == 1 else min(self.backoff_s * 2 ** (failures - 2), self.backoff_max_s)
            if self._stopping.wait(delay):
                return
            if self._restart():
                return

    def _restart(self) -> bool:
        with self._lock:
            if self._stopping.is_set():
                return True
            if not self.process.ports_are_free():
                log.warning("tritonserver's ports are taken; restarting it on new ports")
                self.process.choose_new_ports()
            try:
                self.process.start(timeout_s=self.startup_timeout_s)
            except (AppError, OSError) as exc:
                message = getattr(exc, "message", str(exc))
                log.error("restarting tritonserver failed: %s", message)
                self._set(message=message[:2000])
                return False
            self._running()
            self._set(restarts=self._status.restarts + 1)
        log.warning("tritonserver restarted (pid %s, %s)", self.process.pid, self.process.http_url)
        for hook in list(self.on_restart):
            try:
                hook(self.process)
            except Exception:
                log.exception("a restart hook of the supervised Triton failed")
        return True

    def _give_up(self) -> None:
        message = (
            f"tritonserver failed {self.max_restarts} restarts in a row; giving up "
            f"(last exit code {self._status.last_exit_code}); see {self.process.log_path}"
        )
        log.critical(message)
        self._set(state=SupervisorState.FAILED, message=message)
