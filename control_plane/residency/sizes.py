"""How much memory a version takes on an instance, and how much an instance's processes hold.

In order of preference: Triton's own `memory_usage` statistics (backends that report it: host and GPU
memory); the memory of the version's Python-backend stub processes when Triton runs on this machine
(found under the Triton process listening on the instance's port, via /proc): resident host memory plus
what they hold on GPUs (`gpu`, NVML); otherwise an estimate from the artifact, corrected by the first
measurement.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import select
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from control_plane.residency import gpu
from control_plane.tritonserver.process import listening_sockets

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
    wanted = listening_sockets(parts.port)
    if not wanted:
        return None
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


def alive(pid: int) -> bool:
    """Whether a process with this PID still exists."""
    return (PROC / str(pid)).exists()


def stubs(triton_pid: int) -> dict[int, str]:
    """Stub PID -> the Triton model it runs, for the Python-backend stubs under a Triton process."""
    return {
        pid: seen.model
        for pid, seen in _walk(triton_pid).items()
        if seen.ppid == triton_pid and seen.model is not None
    }


@dataclass(frozen=True, slots=True)
class Member:
    """A process of a model's: one of its stubs (`stub` is its own PID) or a process a stub started."""

    model: str
    stub: int


def processes(triton_pid: int) -> dict[int, Member]:
    """Every process of the models under a Triton process: each stub and the processes it started
    (a model that forks workers in `initialize()` or `execute()`, and their children), so that what they
    hold counts in the model's memory and they end with it. Those a stub started are also remembered, so
    that the ones left running after the stub exited (Triton ends an unloaded model's stub, and its
    children are re-parented to init) can be ended (`end_orphans`). A process that detaches at once (a
    double fork) is never seen under its stub: its memory is the model's own business, not counted."""
    walk = _walk(triton_pid)
    children: dict[int, list[int]] = {}
    for pid, seen in walk.items():
        children.setdefault(seen.ppid, []).append(pid)
    found: dict[int, Member] = {}
    for stub, seen in walk.items():
        if seen.ppid != triton_pid or seen.model is None:
            continue
        member = Member(seen.model, stub)
        below = [stub]
        while below:
            pid = below.pop()
            if pid not in found:  # a tree, but a stale look must not loop
                found[pid] = member
                below.extend(children.get(pid, ()))
    _remember(found)
    return found


@dataclass(frozen=True, slots=True)
class _Seen:
    ppid: int
    model: str | None  # the model it runs, for a stub (a child of Triton's running the stub)


def _walk(triton_pid: int) -> dict[int, _Seen]:
    """Every process on this machine: its parent, and for Triton's children the model each runs as a
    stub. Called many times a second under a burst of cold loads (each pass, load, eviction and the
    check that an evicted stub exited), so a walk reads the processes it has not seen since the last
    full read, and all of them once that is `SEEN_FOR_S` old: a process that is not Triton's child never
    becomes one, a stub stays that model's stub while its PID lives, and a PID is not reused that fast
    (the kernel hands them out in increasing order up to `pid_max`); a process's parent changes when
    its parent exits (it is re-parented to init, never to a stub), seen by the next full read. Triton's
    other children are read every time (a fork not yet exec'd into a stub)."""
    now = time.monotonic()
    when, known = _seen.get(triton_pid, (0.0, {}))
    if now - when > SEEN_FOR_S:
        when, known = now, {}
    found: dict[int, _Seen] = {}
    settled: dict[int, _Seen] = {}
    for entry in os.listdir(PROC):
        if not entry.isdigit():
            continue
        pid = int(entry)
        seen = known.get(pid)
        if seen is None:
            seen = _read(pid, triton_pid)
            if seen is None:
                continue  # gone
        found[pid] = seen
        if seen.ppid != triton_pid or seen.model is not None:
            settled[pid] = seen  # else Triton's child, not (yet) a stub: read again next time
    _seen[triton_pid] = (when, settled)
    for other in [p for p, (at, _) in list(_seen.items()) if now - at > SEEN_FOR_S]:
        _seen.pop(other, None)  # no longer serves a walk (a Triton that was restarted leaves one)
    return found


SEEN_FOR_S = 2.0  # how long one full read of the processes serves the walks after it
_seen: dict[int, tuple[float, dict[int, _Seen]]] = {}  # Triton PID -> (full read, PID -> what it is)


def _read(pid: int, triton_pid: int) -> _Seen | None:
    try:
        ppid = _ppid(pid)
        args = (PROC / str(pid) / "cmdline").read_bytes().split(b"\0") if ppid == triton_pid else []
    except (OSError, ValueError, IndexError):
        return None
    return _Seen(ppid, _stub_model(args) if args else None)


def _ppid(pid: int) -> int:
    return int((PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])


def _stub_under(pid: int, triton_pid: int) -> tuple[bool, str | None]:
    """Whether process `pid` is a child of `triton_pid`, and the Triton model it runs as a stub if so."""
    seen = _read(pid, triton_pid)
    if seen is None or seen.ppid != triton_pid:
        return False, None
    return True, seen.model


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
    """End the stub processes of Triton model `name` and the processes they started, right before the
    caller unloads it (no request in flight, routes no longer send to it). Triton's Python backend
    finalizes an unloaded instance after a fixed one-second health check (`StubLauncher::UpdateHealth`),
    so its memory would come back a second or more later; a stub already gone fails that check and Triton
    reaps it and removes its shared memory at once. Ending it after the unload instead can race that
    check (the stub reported healthy, then died before answering the finalize request) and leave Triton
    waiting forever. The model's processes are first stopped (SIGSTOP), and walked again until no new
    one appears (a stopped process forks no more: a worker forking in a loop leaves none behind), then
    killed. Each is opened as a pidfd and checked to still be what it was (that model's stub under that
    Triton, or the child of one of its processes) before it is signalled, so a PID reused meanwhile is
    never hit. Returns once they have exited (their memory is back: a process frees it before it is
    reported exited), or `wait_s` passed: how many were ended."""
    stopped: dict[int, float] = {}  # PID -> its start time

    def still_stopped() -> dict[int, Callable[[int], bool]]:
        return {pid: _as_started(when) for pid, when in stopped.items()}

    try:
        for _ in range(STOP_ROUNDS):
            mine = {pid for pid, member in processes(triton_pid).items() if member.model == name}
            new = mine - stopped.keys()
            if not new:
                break
            check = _in_tree(triton_pid, name, mine | stopped.keys())
            stopped.update(_signal(dict.fromkeys(new, check), signal.SIGSTOP))
        return len(_signal(still_stopped(), signal.SIGKILL, wait_s=wait_s))
    except BaseException:
        _signal(still_stopped(), signal.SIGCONT)  # never left stopped
        raise


def _in_tree(triton_pid: int, name: str, tree: set[int]) -> Callable[[int], bool]:
    """A check that a process is still model `name`'s stub under that Triton, or the child of one of the
    model's processes (`tree`: those stopped hold still)."""

    def check(pid: int) -> bool:
        if _stub_under(pid, triton_pid)[1] == name:
            return True
        try:
            return _ppid(pid) in tree
        except (OSError, ValueError, IndexError):
            return False

    return check


STOP_ROUNDS = 20  # walks of a model's processes while stopping them: a tree deeper than this is rare


def end_orphans(*, wait_s: float = 1.0) -> int:
    """End the processes that models' stubs started (seen by `processes`) and that outlived their stub:
    Triton ended it (an unload, a stub it restarted, Triton itself gone) and they were re-parented.
    Processes of a stub that still runs are its model's business, even detached from it. One that cannot
    be signalled now (the control plane out of file descriptors) stays known, for the next call. How
    many were ended."""
    orphans: dict[int, Callable[[int], bool]] = {}
    stubs_live: dict[tuple[int, float], bool] = {}  # each stub read once, however many it started
    with _kin_lock:
        for pid, known in list(_kin.items()):
            if not _lives(pid, known.started):
                del _kin[pid]  # exited (a zombie holds nothing)
                continue
            stub = (known.stub, known.stub_started)
            if stub not in stubs_live:
                stubs_live[stub] = _lives(*stub)
            if not stubs_live[stub]:  # its stub exited (or is a zombie)
                orphans[pid] = _as_started(known.started)
    ended = _signal(orphans, signal.SIGKILL, wait_s=wait_s)
    with _kin_lock:
        models = sorted({_kin.pop(pid).model for pid in ended if pid in _kin})
    if ended:
        log.warning("ended %d process(es) the stubs of %s started and left running", len(ended), models)
    return len(ended)


def _lives(pid: int, started: float) -> bool:
    """Whether the process that started at `started` still runs as `pid` (not exited, not a zombie)."""
    try:
        fields = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z" and int(fields[19]) / _CLK_TCK == started


def _as_started(started: float) -> Callable[[int], bool]:
    return functools.partial(_lives, started=started)


@dataclass(frozen=True, slots=True)
class _Kin:
    """A process a stub started, with start times that tell it (and its stub) from a PID reused."""

    model: str
    stub: int
    stub_started: float
    started: float


_kin: dict[int, _Kin] = {}  # PID -> a process a stub started (under any Triton here)
_kin_lock = threading.Lock()  # the loop, load workers and the recount timer all walk


def _remember(found: Mapping[int, Member]) -> None:
    """Record the processes stubs started, each checked afresh to be the child of one of the models'
    processes (a walk's parents may be up to `SEEN_FOR_S` old: a PID reused meanwhile is not theirs)."""
    with _kin_lock:
        fresh = [(pid, member) for pid, member in found.items() if pid != member.stub and pid not in _kin]
    for pid, member in fresh:
        try:
            if _ppid(pid) not in found:
                continue
        except (OSError, ValueError, IndexError):
            continue
        known = _Kin(member.model, member.stub, started_at(member.stub), started_at(pid))
        with _kin_lock:
            _kin.setdefault(pid, known)


SIGNAL_BATCH = 256  # pidfds open at once: a model with thousands of processes does not exhaust the fds


def _signal(
    targets: Mapping[int, Callable[[int], bool]], sig: signal.Signals, *, wait_s: float = 0.0
) -> dict[int, float]:
    """Send `sig` to the processes whose check still holds once each is opened as a pidfd, in batches;
    with `wait_s`, wait (all batches together) up to that long for them to exit. PID -> start time of
    each signalled. A process that cannot be opened for want of file descriptors is not signalled."""
    sent: dict[int, float] = {}
    deadline = time.monotonic() + wait_s
    pids = list(targets)
    for at in range(0, len(pids), SIGNAL_BATCH):
        opened: dict[int, int] = {}
        poller = select.poll()
        try:
            for pid in pids[at : at + SIGNAL_BATCH]:
                try:
                    opened[pid] = os.pidfd_open(pid)
                except ProcessLookupError:
                    continue  # gone already
                except OSError as exc:
                    log.warning("cannot open process %d to signal it: %s", pid, exc)
            for pid, fd in opened.items():
                if not targets[pid](pid):
                    continue
                when = started_at(pid)  # the pidfd holds it: this is the process checked
                try:
                    signal.pidfd_send_signal(fd, sig)
                except OSError:
                    continue  # exited meanwhile
                sent[pid] = when
                if wait_s:
                    poller.register(fd, select.POLLIN)  # a pidfd reads as ready once its process exited
            waiting = sum(1 for pid in opened if pid in sent) if wait_s else 0
            while waiting and (left := deadline - time.monotonic()) > 0:
                for fd, _ in poller.poll(left * 1000):
                    poller.unregister(fd)
                    waiting -= 1
        finally:
            for fd in opened.values():
                os.close(fd)
    return sent


def rss(pid: int) -> int:
    """Resident bytes of one process (0 once it is gone)."""
    try:
        return int((PROC / str(pid) / "statm").read_text().split()[1]) * PAGE
    except (OSError, ValueError, IndexError):
        return 0


def stub_bytes(triton_pid: int, name: str, *, started_since: float | None = None) -> int:
    """Bytes the processes of Triton model `name` hold (0 if none), host and GPU memory (`stub_memory`)."""
    host, on_gpus = stub_memory(triton_pid, name, started_since=started_since)
    return host + on_gpus


def stub_memory(triton_pid: int, name: str, *, started_since: float | None = None) -> tuple[int, int]:
    """Resident host bytes and GPU bytes of the stub processes that run Triton model `name` and of the
    processes they started (`processes`); with `started_since` (a `boot_seconds()` moment), only those of
    stubs started since: a load's own stubs, not those of an earlier load of the model still exiting
    (Triton ends an unloaded model's stub a second or more after its unload, e.g. one unloaded by
    someone else and asked for again at once)."""
    members = {
        pid: member
        for pid, member in processes(triton_pid).items()
        if member.model == name and (started_since is None or started_at(member.stub) >= started_since)
    }
    each = held(members).values()
    return sum(host for host, _ in each), sum(on_gpus for _, on_gpus in each)


def held(members: Mapping[int, Member]) -> dict[int, tuple[int, int]]:
    """PID -> (host bytes, GPU bytes) of each of these models' processes. Host memory is a process's
    resident memory, or for a model whose stubs forked processes (they share pages copy-on-write with
    their parent) its proportional share of it (PSS: a page shared by n processes counts 1/n), so that
    shared pages count once, not once per process (a stub of 200 MiB with four sleeping workers read
    1051 MiB by RSS, 212 MiB by PSS); PSS costs the kernel a walk of the process's mappings, so only
    those models pay it. GPU memory is what NVML says each PID holds (one read for them all)."""
    if not members:
        return {}
    on_gpus = gpu.used_by_pid()
    shared = {member.model for pid, member in members.items() if pid != member.stub}
    return {
        pid: (pss(pid) if member.model in shared else rss(pid), on_gpus.get(pid, 0))
        for pid, member in members.items()
    }


def pss(pid: int) -> int:
    """Proportional resident bytes of one process (its RSS where the kernel has no smaps_rollup)."""
    try:
        for line in (PROC / str(pid) / "smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return rss(pid)


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
