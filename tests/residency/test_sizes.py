"""Finding a Triton's Python-backend stubs under /proc, with real processes standing in for them
(this test process plays Triton: the stubs are its children, named as Triton names them)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from control_plane.residency import gpu, sizes

STUB = "/opt/tritonserver/backends/python/triton_python_backend_stub"


def _stub(model: str, *, after_s: float = 0.0) -> subprocess.Popen[bytes]:
    """A child of this process that runs as `model`'s stub, at once or after `after_s` (a fork that
    execs into the stub later, as Triton's launcher does)."""
    sleeper = "import time; time.sleep(60)"
    if after_s:
        code = (
            f"import os, sys, time; time.sleep({after_s}); "
            f"os.execv(sys.executable, [{STUB!r}, '-c', {sleeper!r}, '/tmp/m/1/model.py', "
            f"'{model}_0_0', 'CPU'])"
        )
        return subprocess.Popen([sys.executable, "-c", code])
    return subprocess.Popen(
        [STUB, "-c", sleeper, "/tmp/m/1/model.py", f"{model}_0_0", "CPU"], executable=sys.executable
    )


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        proc.kill()
        proc.wait()


def _until(check, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline
        time.sleep(0.02)


def _settled(pid: int) -> bool:
    """Whether a process's resident memory held still for 50 ms (a fresh interpreter grows for a while)."""
    before = sizes.rss(pid)
    time.sleep(0.05)
    return sizes.rss(pid) == before


def test_stubs_are_found_by_model_and_a_late_exec_is_not_missed(
    children: list[subprocess.Popen[bytes]],
) -> None:
    me = os.getpid()
    ready = _stub("alpha")
    late = _stub("beta", after_s=1.5)  # time enough to find the first on a busy machine
    children += [ready, late]
    _until(lambda: ready.pid in sizes.stubs(me))
    found = sizes.stubs(me)
    assert found[ready.pid] == "alpha"
    assert late.pid not in found  # not exec'd yet: Triton's child, not a stub
    _until(lambda: sizes.stubs(me).get(late.pid) == "beta")  # read again until it is one
    assert sizes.stub_bytes(me, "alpha") > 0
    assert sizes.stub_bytes(me, "gamma") == 0
    assert sizes.stubs(1) == {}  # another parent's children are not this Triton's stubs


def test_an_ended_stub_stops_counting(children: list[subprocess.Popen[bytes]]) -> None:
    me = os.getpid()
    victim, other = _stub("alpha"), _stub("beta")
    children += [victim, other]
    _until(lambda: {victim.pid, other.pid} <= sizes.stubs(me).keys())
    assert sizes.end_stubs(me, "alpha") == 1
    assert sizes.stub_bytes(me, "alpha") == 0, "exited when end_stubs returns (a zombie holds nothing)"
    victim.wait()
    assert victim.returncode == -9
    assert victim.pid not in sizes.stubs(me)
    assert sizes.stubs(me)[other.pid] == "beta" and other.poll() is None


def test_a_process_that_is_no_longer_the_stub_is_neither_ended_nor_waited_for(
    children: list[subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    me = os.getpid()
    other = _stub("alpha")
    children.append(other)
    _until(lambda: other.pid in sizes.stubs(me))
    monkeypatch.setattr(sizes, "_stub_under", lambda pid, triton_pid: (False, None))  # its PID reused
    started = time.monotonic()
    assert sizes.end_stubs(me, "alpha", wait_s=2.0) == 0
    assert time.monotonic() - started < 1.0, "no wait for a process it did not signal"
    assert other.poll() is None


def test_walks_of_a_triton_gone_are_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """A restarted Triton has a new PID: the old one's walk (a PID -> model map of every process on the
    machine) is dropped once it can no longer serve a walk, not kept for the life of the control plane."""
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(sizes, "_seen", {})
    sizes.stubs(1)  # the Triton before its restart (PID 1 here: no stubs of its own)
    assert 1 in sizes._seen
    clock[0] += sizes.SEEN_FOR_S / 2
    sizes.stubs(os.getpid())
    assert set(sizes._seen) == {1, os.getpid()}, "still within SEEN_FOR_S: kept"
    clock[0] += sizes.SEEN_FOR_S
    sizes.stubs(os.getpid())
    assert set(sizes._seen) == {os.getpid()}


def test_a_loads_own_stubs_are_told_from_an_earlier_loads_still_exiting(
    children: list[subprocess.Popen[bytes]],
) -> None:
    """Measuring a version right after its load counts only the stubs started since the load began: one
    of an earlier load of the same model (unloaded by someone else, exiting a second later) is not its."""
    me = os.getpid()
    old = _stub("alpha")
    children.append(old)
    _until(lambda: old.pid in sizes.stubs(me))
    time.sleep(0.1)
    since = sizes.boot_seconds() - 0.02  # start times count in ticks of 10 ms
    new = _stub("alpha")
    children.append(new)
    _until(lambda: new.pid in sizes.stubs(me))
    _until(lambda: _settled(old.pid) and _settled(new.pid))  # both past the interpreter's start-up
    assert sizes.started_at(old.pid) < since <= sizes.started_at(new.pid)
    assert sizes.stub_bytes(me, "alpha", started_since=since) == sizes.rss(new.pid)
    assert sizes.stub_bytes(me, "alpha") == sizes.rss(old.pid) + sizes.rss(new.pid)


def test_a_stubs_gpu_memory_counts_beside_its_host_memory(
    children: list[subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What NVML says a stub's PID holds on the GPUs adds to its resident memory; GPU memory of other
    processes (Triton itself, another model's stub, a process of someone else) is not the version's."""
    me = os.getpid()
    alpha, beta = _stub("alpha"), _stub("beta")
    children += [alpha, beta]
    _until(lambda: {alpha.pid, beta.pid} <= sizes.stubs(me).keys())
    _until(lambda: _settled(alpha.pid))
    on_gpus = {alpha.pid: 1636 * 1024**2, beta.pid: 866 * 1024**2, me: 500 * 1024**2, 1: 7}
    monkeypatch.setattr(gpu, "used_by_pid", lambda: on_gpus)
    host, gpu_bytes = sizes.stub_memory(me, "alpha")
    assert gpu_bytes == 1636 * 1024**2
    assert host == sizes.rss(alpha.pid)
    assert sizes.stub_bytes(me, "alpha") == host + gpu_bytes
    assert sizes.stub_memory(me, "gamma") == (0, 0)
    monkeypatch.setattr(gpu, "used_by_pid", dict)  # no GPU on this machine
    assert sizes.stub_memory(me, "alpha")[1] == 0


PYTHON = sys.executable


def _forking_stub(model: str, *, detach: bool = False) -> subprocess.Popen[bytes]:
    """A stub that starts a worker, which starts one of its own (a model forking in `initialize()`);
    with `detach`, the worker's parent is a go-between that exits after a second (the worker is
    re-parented then, after the walks saw it under the stub)."""
    sleeper = "import time; time.sleep(60)"
    worker = f"import subprocess, time; subprocess.Popen([{PYTHON!r}, '-c', {sleeper!r}]); time.sleep(60)"
    if detach:
        worker = f"import subprocess, time; subprocess.Popen([{PYTHON!r}, '-c', {worker!r}]); time.sleep(1)"
    code = f"import subprocess, time; subprocess.Popen([{PYTHON!r}, '-c', {worker!r}]); time.sleep(60)"
    return subprocess.Popen([STUB, "-c", code, "/tmp/m/1/model.py", f"{model}_0_0", "CPU"], executable=PYTHON)


def _family(stub: int, size: int) -> list[int]:
    """The stub's processes once all `size` of them run, oldest first (the stub, its child, ...)."""
    found: list[int] = []

    def complete() -> bool:
        found[:] = [pid for pid, m in sizes.processes(os.getpid()).items() if m.stub == stub]
        return len(found) == size and all(_settled(pid) for pid in found)

    _until(complete)
    return sorted(found, key=lambda pid: (sizes.started_at(pid), pid))


def _gone(pid: int) -> bool:
    try:
        return (sizes.PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_what_a_stub_starts_is_its_models_counted_and_ended_with_it(
    children: list[subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model that forks workers: they count in its memory and an eviction ends them with its stub;
    another model's processes are untouched."""
    me = os.getpid()
    monkeypatch.setattr(sizes, "_kin", {})
    forks, other = _forking_stub("alpha"), _stub("beta")
    children += [forks, other]
    stub, worker, grandchild = _family(forks.pid, 3)
    members = sizes.processes(me)
    assert {members[p].model for p in (stub, worker, grandchild)} == {"alpha"}
    assert members[other.pid] == sizes.Member("beta", other.pid)
    assert stub in sizes.stubs(me) and worker not in sizes.stubs(me)
    host = sum(sizes.pss(p) for p in (stub, worker, grandchild))  # forked: each one's share of pages
    assert abs(sizes.stub_memory(me, "alpha")[0] - host) < 2**20 and sizes.stub_memory(me, "alpha")[1] == 0
    assert sizes.end_stubs(me, "alpha") == 3
    assert all(_gone(p) for p in (worker, grandchild)), "exited when end_stubs returns"
    forks.wait()
    assert sizes.stub_memory(me, "alpha") == (0, 0)
    assert other.poll() is None


def test_what_outlives_its_stub_is_ended_and_nothing_else(
    children: list[subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Triton ends an unloaded model's stub, not what it started: those are re-parented and hold their
    memory for good unless ended. A detached worker of a stub that still runs is its model's, not an
    orphan."""
    me = os.getpid()
    monkeypatch.setattr(sizes, "_kin", {})
    unloaded, loaded = _forking_stub("alpha"), _forking_stub("beta", detach=True)
    children += [unloaded, loaded]
    _, worker, grandchild = _family(unloaded.pid, 3)
    _, _, detached, its_child = _family(loaded.pid, 4)  # the stub, the go-between, the worker, its child
    assert sizes.end_orphans() == 0, "every stub still runs"
    unloaded.kill()  # as Triton ends the stub of a model it unloads
    unloaded.wait()
    _until(lambda: worker not in sizes.processes(me))  # re-parented: no longer under a stub
    assert not _gone(worker) and not _gone(grandchild)
    assert sizes.end_orphans() == 2
    assert _gone(worker) and _gone(grandchild)
    assert sizes.end_orphans() == 0
    _until(lambda: detached not in sizes.processes(me))  # its go-between exited: re-parented
    assert sizes.end_orphans() == 0
    assert loaded.poll() is None and not _gone(detached), "its stub still runs: the model's own business"
    for pid in (detached, its_child):
        os.kill(pid, 9)


def test_an_orphans_pid_taken_by_another_process_is_left_alone(
    children: list[subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sizes, "_kin", {})
    forks = _forking_stub("alpha")
    children.append(forks)
    _, worker, grandchild = _family(forks.pid, 3)
    forks.kill()
    forks.wait()
    kin = sizes._kin
    for pid in (worker, grandchild):  # as if each had exited and a new process started under its PID
        kin[pid] = sizes._Kin(kin[pid].model, kin[pid].stub, kin[pid].stub_started, kin[pid].started - 1)
    assert sizes.end_orphans() == 0
    assert not _gone(worker) and not _gone(grandchild)
    assert worker not in kin and grandchild not in kin
    for pid in (worker, grandchild):
        os.kill(pid, 9)


def _marked(marker: str) -> list[int]:
    """Live processes whose command line holds `marker`."""
    found = []
    for entry in os.listdir(sizes.PROC):
        try:
            cmdline = (sizes.PROC / entry / "cmdline").read_bytes() if entry.isdigit() else b""
            if marker.encode() in cmdline and not _gone(int(entry)):
                found.append(int(entry))
        except OSError:
            continue
    return found


def test_workers_sharing_their_stubs_pages_count_them_once(
    children: list[subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stub that fills 100 MiB and then forks four workers that only sleep: they share its pages copy
    on write, and were counted once per process by resident memory (about 5x)."""
    monkeypatch.setattr(sizes, "_kin", {})
    code = (
        "import os, time; held = b'x' * (100 * 2**20)\n"
        "for _ in range(4):\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(60); os._exit(0)\n"
        "time.sleep(60)"
    )
    cow = subprocess.Popen([STUB, "-c", code, "/tmp/m/1/model.py", "cow_0_0", "CPU"], executable=PYTHON)
    children.append(cow)
    family = _family(cow.pid, 5)
    by_rss = sum(sizes.rss(p) for p in family)
    host, _ = sizes.stub_memory(os.getpid(), "cow")
    assert by_rss > 450 * 2**20, "each worker's RSS holds the stub's 100 MiB"
    assert 100 * 2**20 < host < 160 * 2**20, f"{host / 2**20:.0f} MiB for one 100 MiB buffer"
    assert sizes.end_stubs(os.getpid(), "cow") == 5


def test_a_worker_forking_in_a_loop_leaves_no_process_behind(
    children: list[subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its processes are stopped and walked again before any is killed: children forked between a walk and
    the kill were re-parented to init, unseen (1-2 of ~40 survived each eviction)."""
    monkeypatch.setattr(sizes, "_kin", {})
    marker = f"forks-in-a-loop-{os.getpid()}"
    worker = (
        f"import os, time  # {marker}\n"
        "while True:\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(60); os._exit(0)\n"
        "    time.sleep(0.003)"
    )
    code = f"import subprocess, time; subprocess.Popen([{PYTHON!r}, '-c', {worker!r}]); time.sleep(60)"
    stub = subprocess.Popen([STUB, "-c", code, "/tmp/m/1/model.py", "loop_0_0", "CPU"], executable=PYTHON)
    children.append(stub)
    _until(lambda: len(_marked(marker)) > 30)
    assert sizes.end_stubs(os.getpid(), "loop") > 30
    time.sleep(0.3)
    left = _marked(marker)
    for pid in left:
        os.kill(pid, 9)
    assert left == [], f"{len(left)} left running"


def test_orphans_that_cannot_be_signalled_now_are_ended_later(
    children: list[subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Out of file descriptors, a process could not be opened and was taken for gone: forgotten, it ran on
    for good. Now it stays known and the next call ends it."""
    monkeypatch.setattr(sizes, "_kin", {})
    monkeypatch.setattr(sizes, "SIGNAL_BATCH", 8)
    code = (
        "import os, time\n"
        "for _ in range(20):\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(60); os._exit(0)\n"
        "time.sleep(60)"
    )
    stub = subprocess.Popen([STUB, "-c", code, "/tmp/m/1/model.py", "many_0_0", "CPU"], executable=PYTHON)
    children.append(stub)
    workers = _family(stub.pid, 21)[1:]
    stub.kill()
    stub.wait()
    _until(lambda: not set(workers) & set(sizes.processes(os.getpid())))
    real, calls = os.pidfd_open, [0]

    def short_of_fds(pid: int, flags: int = 0) -> int:  # as with the fds nearly used up: a few open
        calls[0] += 1
        if calls[0] > 5:
            raise OSError(errno.EMFILE, "Too many open files")
        return real(pid, flags)

    monkeypatch.setattr(os, "pidfd_open", short_of_fds)
    first = sizes.end_orphans()
    monkeypatch.setattr(os, "pidfd_open", real)
    assert first == 5
    assert sizes.end_orphans() == 20 - first
    assert all(_gone(pid) for pid in workers)


def test_orphans_of_a_triton_gone_are_ended(
    children: list[subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Triton that died (its stubs with it) leaves the workers they forked running under init: they were
    forgotten with the Triton."""
    monkeypatch.setattr(sizes, "_kin", {})
    start = "import subprocess, time; subprocess.Popen("
    worker = f"{start}[{PYTHON!r}, '-c', 'import time; time.sleep(60)']); time.sleep(60)"
    stub = f"{start}[{PYTHON!r}, '-c', {worker!r}]); time.sleep(60)"
    args = [STUB, "-c", stub, "/tmp/m/1/model.py", "gone_0_0", "CPU"]
    triton = f"{start}{args!r}, executable={PYTHON!r}); time.sleep(60)"
    fake = subprocess.Popen([PYTHON, "-c", triton])
    children.append(fake)
    found: dict[int, sizes.Member] = {}

    def walked() -> bool:
        found.update(sizes.processes(fake.pid))
        return len(found) == 3

    _until(walked)
    stub_pid = next(pid for pid, m in found.items() if pid == m.stub)
    workers = [pid for pid in found if pid != stub_pid]
    os.kill(stub_pid, 9)  # the Triton and its stubs die (a crash)
    fake.kill()
    fake.wait()
    _until(lambda: _gone(stub_pid))
    assert not any(_gone(pid) for pid in workers)
    assert sizes.end_orphans() == 2
    assert all(_gone(pid) for pid in workers)
