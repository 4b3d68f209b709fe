"""The supervisor restarts a real bundled Triton that dies, cleans up after it, and gives up loudly."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from control_plane.tritonserver import TritonClient, TritonProcess
from control_plane.tritonserver.process import SHM_DIR
from control_plane.tritonserver.supervisor import SupervisorState, TritonSupervisor
from tests.support.triton_models import infer, write_python_model
from tests.tritonserver.procfs import group_members, stubs_of

MakeSupervisor = Callable[..., TritonSupervisor]


def _eventually(check: Callable[[], bool], *, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


@pytest.fixture
def make_supervisor(tmp_path: Path, triton_backend_dir: Path) -> Iterator[MakeSupervisor]:
    """Supervisors of Tritons reading `tmp_path/repository` (with model `m`); all stopped after."""
    made: list[TritonSupervisor] = []
    write_python_model(tmp_path / "repository", "m", scale=3.0)

    def make(**options: float) -> TritonSupervisor:
        process = TritonProcess(
            repository=str(tmp_path / "repository"),
            workdir=tmp_path / f"work-{len(made)}",
            backend_dir=triton_backend_dir,
        )
        supervisor = TritonSupervisor(process, startup_timeout_s=60, **options)  # type: ignore[arg-type]
        made.append(supervisor)
        return supervisor

    yield make
    for supervisor in made:
        supervisor.stop()


def test_a_killed_triton_is_cleaned_up_and_restarted_on_the_same_ports(
    make_supervisor: MakeSupervisor,
) -> None:
    supervisor = make_supervisor(stable_s=2.0)  # the checks of the restart read its failure count first
    restarted: list[TritonProcess] = []
    supervisor.on_restart.append(restarted.append)
    supervisor.start()
    process = supervisor.process
    client = TritonClient.from_url(process.http_url, timeout_s=30)
    client.load_model("m")
    old_pid, port = process.pid, process.http_port
    assert old_pid is not None and stubs_of(old_pid)
    regions = list(SHM_DIR.glob(f"{process.shm_prefix}*"))
    assert regions

    os.kill(old_pid, signal.SIGKILL)
    killed_at = time.monotonic()
    assert _eventually(lambda: restarted != [] and client.is_ready())
    print(f"Triton restarted and ready {time.monotonic() - killed_at:.2f} s after SIGKILL")

    assert restarted == [process] and process.pid != old_pid and process.http_port == port
    assert group_members(old_pid) == [] and not stubs_of(old_pid), "the old group is killed"
    assert not [r for r in regions if r.exists()], "its shared memory is removed"
    status = supervisor.status()
    assert (status.state, status.restarts, status.last_exit_code) == (SupervisorState.RUNNING, 1, -9)
    assert status.pid == process.pid and status.failures_in_a_row == 1
    assert not client.is_model_ready("m"), "a restarted Triton is empty (the reconciler reloads)"
    client.load_model("m")
    assert list(infer(process.http_url, "m", [1.0, 2.0])) == [3.0, 6.0]
    assert _eventually(lambda: supervisor.status().failures_in_a_row == 0, timeout_s=6), "reset once stable"
    assert (process.log_path.parent / "tritonserver.log.1").is_file(), "the crashed run's log is kept"
    client.close()


def test_it_gives_up_after_max_restarts_and_says_why(make_supervisor: MakeSupervisor, tmp_path: Path) -> None:
    supervisor = make_supervisor(max_restarts=2, backoff_s=0.05)
    supervisor.start()
    pid = supervisor.process.pid
    assert pid is not None
    shutil.rmtree(tmp_path / "repository")  # every restart now fails: Triton cannot read its repository

    os.kill(pid, signal.SIGKILL)
    assert _eventually(lambda: supervisor.status().state == SupervisorState.FAILED)
    status = supervisor.status()
    assert status.restarts == 0 and status.failures_in_a_row == 2 and status.pid is None
    assert status.message is not None and "failed 2 restarts in a row; giving up" in status.message
    assert not supervisor.process.is_running()
    started = time.monotonic()
    supervisor.stop()
    assert time.monotonic() - started < 5


def test_it_moves_to_new_ports_when_the_old_ones_were_taken(make_supervisor: MakeSupervisor) -> None:
    supervisor = make_supervisor(poll_s=1.0)
    restarted: list[TritonProcess] = []
    supervisor.on_restart.append(restarted.append)
    supervisor.start()
    process = supervisor.process
    old_port, pid = process.http_port, process.pid
    assert pid is not None

    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Triton: TIME_WAIT is no obstacle
    try:
        os.kill(pid, signal.SIGKILL)
        assert _eventually(lambda: _bind(squatter, old_port), timeout_s=5), "the port frees up on its death"
        squatter.listen()
        assert _eventually(lambda: restarted != [])
    finally:
        squatter.close()
    assert process.http_port != old_port and process.is_running()
    with TritonClient.from_url(process.http_url, timeout_s=10) as client:
        assert client.is_ready()


def _bind(sock: socket.socket, port: int) -> bool:
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        return False
    return True


def test_stop_during_a_restart_backoff_returns_at_once_and_leaves_nothing(
    make_supervisor: MakeSupervisor, tmp_path: Path
) -> None:
    supervisor = make_supervisor(max_restarts=5, backoff_s=30.0)
    supervisor.start()
    pid = supervisor.process.pid
    assert pid is not None
    shutil.rmtree(tmp_path / "repository")
    os.kill(pid, signal.SIGKILL)
    assert _eventually(lambda: supervisor.status().failures_in_a_row == 2)  # waiting 30 s before the next
    started = time.monotonic()
    supervisor.stop()
    assert time.monotonic() - started < 5
    assert supervisor.status().state == SupervisorState.STOPPED
    assert group_members(pid) == []
