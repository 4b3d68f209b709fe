"""A tiny guard process that kills a Triton process group when its parent dies, even by SIGKILL.

The parent holds the write end of a pipe to the guard's stdin and writes the group id it guards.
When the parent exits in any way the kernel closes that end; the guard reads EOF, kills the group
(tritonserver and its Python-backend stubs) and removes the group's shared-memory regions. A
normal stop writes `release` first, so the guard exits without killing anything.

This file runs as a script (`python -I -S guard.py ...`) and must import only the standard library.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

RELEASE = b"release"


class ProcessGuard:
    """Parent side: starts the guard and tells it which process group to kill if we die."""

    def __init__(self, *, shm_dir: Path, shm_prefix: str) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-I", "-S", __file__, str(shm_dir), shm_prefix],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # no terminal signals: Ctrl-C must leave the graceful stop to us
        )

    @property
    def pid(self) -> int:
        """PID of the guard process."""
        return self._proc.pid

    def guard(self, pgid: int) -> None:
        """Kill process group `pgid` if this process dies before `release`."""
        self._send(str(pgid).encode())

    def release(self, *, timeout_s: float = 5.0) -> None:
        """Stand the guard down (the group was stopped normally) and wait for it to exit."""
        self._send(RELEASE)
        self._close(timeout_s)

    def kill_now(self, *, timeout_s: float = 5.0) -> None:
        """Close the pipe without releasing: the guard kills the group, as if we had died."""
        self._close(timeout_s)

    def _send(self, line: bytes) -> None:
        stdin = self._proc.stdin
        if stdin is not None and not stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                stdin.write(line + b"\n")
                stdin.flush()

    def _close(self, timeout_s: float) -> None:
        if self._proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                self._proc.stdin.close()
        try:
            self._proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def _watch(shm_dir: Path, shm_prefix: str) -> None:
    """Guard side: remember the last group id until EOF; then kill it unless released."""
    pgid: int | None = None
    for raw in sys.stdin.buffer:
        line = raw.strip()
        if line == RELEASE:
            return
        if line.isdigit():
            pgid = int(line)
    if pgid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    for region in shm_dir.glob(f"{shm_prefix}*") if shm_prefix else ():
        with contextlib.suppress(OSError):
            region.unlink()


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _watch(Path(sys.argv[1]), sys.argv[2])
