"""Finding a Triton's Python-backend stubs under /proc, with real processes standing in for them
(this test process plays Triton: the stubs are its children, named as Triton names them)."""

from __future__ import annotations

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
    late = _stub("beta", after_s=0.5)
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
