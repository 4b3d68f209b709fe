"""How much memory a version takes on an instance, and how much an instance's processes hold.

In order of preference: Triton's own `memory_usage` statistics (backends that report it: host and GPU
memory); the memory of the version's Python-backend stub processes when Triton runs on this machine
(found under the Triton process listening on the instance's port, via /proc): resident host memory plus
what they hold on GPUs (`gpu`, NVML); otherwise an estimate from the artifact, corrected by the first
measurement.
"""

from __future__ import annotations

import logging
import os
import re
import select
import signal
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from control_plane.residency import gpu

log = logging.getLogger(__name__)
PROC = Path("/proc")
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "0.0.0.0")  # noqa: S104 - a name, not a bind
STUB_MARGIN = 1.05  # a stub measured right after its load grows by a few percent once it serves
DEFAULT_ESTIMATE = 128 * 1024**2  # a Python-backend stub with numpy and a framework, before any measurement


@dataclass(frozen=True, slots=True)
class Measured:
    """A version's memory and where the figure comes from (`triton`, `stub`, `stub+gpu` when its stubs
    hold GPU memory too, or `estimate`)."""

    bytes: int
    source: str


def from_statistics(stats: Iterable[Mapping[str, Any]]) -> int:
    """Bytes Triton reports in `memory_usage` of a model's statistics (0 when the backend reports none)."""
    total = 0
    for model in stats:
        for usage in model.get("memory_usage") or ():
            total += int(usage.get("byte_size") or 0)
    return total


def last_inference_s(stats: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Triton model name -> its last inference (wall-clock seconds), for models that served one."""
    found: dict[str, float] = {}
    for model in stats:
        millis = int(model.get("last_inference") or 0)
        if millis > 0:
            name = str(model.get("name"))
            found[name] = max(found.get(name, 0.0), millis / 1000.0)
    return found


def estimate(size_bytes: int, measured: Iterable[tuple[int, int]] = ()) -> int:
    """A version's memory before it is measured: like the measured versions (artifact size beyond
    theirs added), else a stub's usual footprint plus twice the artifact."""
    pairs = list(measured)
    if pairs:
        pairs.sort(key=lambda pair: pair[0] - pair[1])
        memory, artifact = pairs[len(pairs) // 2]
        return max(memory - artifact, 0) + size_bytes
    return DEFAULT_ESTIMATE + 2 * size_bytes


def local_pid(http_url: str) -> int | None:
    """The PID of the process listening on this URL's port, when it runs on this machine (Linux)."""
    parts = urlsplit(http_url if "://" in http_url else f"http://{http_url}")
    if parts.hostname not in LOCAL_HOSTS or parts.port is None or not PROC.exists():
        return None
    inodes = _listening_inodes(parts.port)
    if not inodes:
        return None
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in wanted:
                    return int(entry.name)
        except OSError:
            continue
    return None


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("net/tcp", "net/tcp6"):
        try:
            lines = (PROC / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def alive(pid: int) -> bool:
    """Whether a process with this PID still exists."""
    return (PROC / str(pid)).exists()


def stubs(triton_pid: int) -> dict[int, str]:
    """Stub PID -> the Triton model it runs, for the Python-backend stubs under a Triton process.

    Called many times a second under a burst of cold loads (each pass, load, eviction and the check
    that an evicted stub exited), so a walk only reads the processes it has not seen in the previous
    walk of the last `SEEN_FOR_S`: a process that is not Triton's child never becomes one, a stub
    stays that model's stub while its PID lives, and a PID is not reused that fast (the kernel hands
    them out in increasing order up to `pid_max`). Triton's other children are read every time (a
    fork not yet exec'd into a stub)."""
    now = time.monotonic()
    when, known = _seen.get(triton_pid, (0.0, {}))
    if now - when > SEEN_FOR_S:
        known = {}
    found: dict[int, str] = {}
    settled: dict[int, str | None] = {}
    for entry in os.listdir(PROC):
        if not entry.isdigit():
            continue
        pid = int(entry)
        if pid in known:
            name = known[pid]
        else:
            child, name = _stub_under(pid, triton_pid)
            if child and name is None:
                continue  # Triton's child, not (yet) a stub: read again next time
        settled[pid] = name
        if name is not None:
            found[pid] = name
    _seen[triton_pid] = (now, settled)
    for other in [p for p, (at, _) in list(_seen.items()) if now - at > SEEN_FOR_S]:
        _seen.pop(other, None)  # no longer serves a walk (a Triton that was restarted leaves one)
    return found


SEEN_FOR_S = 2.0  # how long one walk's findings serve the next walk
_seen: dict[int, tuple[float, dict[int, str | None]]] = {}  # Triton PID -> (when, PID -> its model or None)


def _stub_under(pid: int, triton_pid: int) -> tuple[bool, str | None]:
    """Whether process `pid` is a child of `triton_pid`, and the Triton model it runs as a stub if so."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
        if int(stat.rsplit(")", 1)[1].split()[1]) != triton_pid:
            return False, None
        args = (PROC / str(pid) / "cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError, IndexError):
        return False, None
    return True, _stub_model(args)


_INSTANCE = re.compile(rb"^(?P<name>.+)_\d+_\d+$")


def _stub_model(args: list[bytes]) -> str | None:
    """The model of a stub command line (`... <model instance name> <device>`)."""
    if not args or not args[0].endswith(b"triton_python_backend_stub"):
        return None
    for arg in reversed(args):
        match = _INSTANCE.match(arg)
        if match is not None:
            return match.group("name").decode(errors="replace")
    return None


def end_stubs(triton_pid: int, name: str, *, wait_s: float = 1.0) -> int:
    """End the stub processes of Triton model `name`, right before the caller unloads it (no request in
    flight, routes no longer send to it). Triton's Python backend finalizes an unloaded instance after a
    fixed one-second health check (`StubLauncher::UpdateHealth`), so its memory would come back a
    second or more later; a stub already gone fails that check and Triton reaps it and removes its shared
    memory at once. Ending it after the unload instead can race that check (the stub reported healthy,
    then died before answering the finalize request) and leave Triton waiting forever. Each stub is
    opened as a pidfd and checked to still be that model's stub under that Triton before it is
    signalled, so a PID reused meanwhile is never hit. Returns once they have exited (their memory is
    back: a process frees it before it is reported exited), or `wait_s` passed: how many were ended."""
    ended = 0
    opened: list[int] = []
    poller = select.poll()
    try:
        for pid, model in stubs(triton_pid).items():
            if model != name:
                continue
            try:
                fd = os.pidfd_open(pid)
            except OSError:
                continue  # gone already
            opened.append(fd)
            try:
                if _stub_under(pid, triton_pid)[1] == name:
                    signal.pidfd_send_signal(fd, signal.SIGKILL)
                    poller.register(fd, select.POLLIN)  # a pidfd reads as ready once its process exited
                    ended += 1
            except OSError:
                pass  # exited meanwhile
        deadline = time.monotonic() + wait_s
        waiting = ended  # only the processes signalled here: never another that took a PID meanwhile
        while waiting and (left := deadline - time.monotonic()) > 0:
            for fd, _ in poller.poll(left * 1000):
                poller.unregister(fd)
                waiting -= 1
    finally:
        for fd in opened:
            os.close(fd)
    return ended


def rss(pid: int) -> int:
    """Resident bytes of one process (0 once it is gone)."""
    try:
        return int((PROC / str(pid) / "statm").read_text().split()[1]) * PAGE
    except (OSError, ValueError, IndexError):
        return 0


def stub_bytes(triton_pid: int, name: str, *, started_since: float | None = None) -> int:
    """Bytes the stub processes that run Triton model `name` hold (0 if none), host and GPU memory
    (`stub_memory`)."""
    host, on_gpus = stub_memory(triton_pid, name, started_since=started_since)
    return host + on_gpus


def stub_memory(triton_pid: int, name: str, *, started_since: float | None = None) -> tuple[int, int]:
    """Resident host bytes and GPU bytes of the stub processes that run Triton model `name`; with
    `started_since` (a `boot_seconds()` moment), only those started since: a load's own stubs, not those
    of an earlier load of the model still exiting (Triton ends an unloaded model's stub a second or more
    after its unload, e.g. one unloaded by someone else and asked for again at once)."""
    pids = [
        pid
        for pid, model in stubs(triton_pid).items()
        if model == name and (started_since is None or started_at(pid) >= started_since)
    ]
    if not pids:
        return 0, 0
    on_gpus = gpu.used_by_pid()
    return sum(rss(pid) for pid in pids), sum(on_gpus.get(pid, 0) for pid in pids)


def boot_seconds() -> float:
    """Now, in seconds since boot (the clock of a process's start time in /proc)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def started_at(pid: int) -> float:
    """When a process started, in seconds since boot (infinity once it is gone: never counted as old)."""
    try:
        ticks = int((PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return float("inf")
    return ticks / _CLK_TCK


_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
