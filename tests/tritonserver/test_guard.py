"""The guard: a Triton started by a process that is SIGKILLed does not outlive it (nor do its stubs)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from control_plane.tritonserver import TritonProcess
from control_plane.tritonserver.process import SHM_DIR
from tests.tritonserver.procfs import group_is_gone, group_members, live_processes, stubs_of

ROOT = Path(__file__).resolve().parents[2]

# A parent that starts Triton with a loaded Python model, prints its pid and shm prefix, then waits.
PARENT = """
import sys, time
from pathlib import Path
from control_plane.tritonserver import TritonClient, TritonProcess
from tests.support.triton_models import write_python_model

tmp = Path(sys.argv[1])
write_python_model(tmp / "repository", "guarded")
repository, backends = str(tmp / "repository"), Path(sys.argv[2])
process = TritonProcess(repository=repository, workdir=tmp / "work", backend_dir=backends)
process.start(timeout_s=60)
TritonClient.from_url(process.http_url, timeout_s=60).load_model("guarded")
print(process.pid, process.shm_prefix, flush=True)
time.sleep(600)
"""


def _guards(shm_prefix: str) -> list[int]:
    """Guard processes watching the Triton with this shared-memory prefix."""
    return [
        p.pid for p in live_processes() if p.argv[-1:] == (shm_prefix,) and p.argv[-3].endswith("guard.py")
    ]


def test_sigkill_of_the_parent_leaves_no_triton_stub_or_shared_memory(
    tmp_path: Path, triton_backend_dir: Path
) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(tmp_path), str(triton_backend_dir)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    triton_pid = None
    try:
        assert parent.stdout is not None
        pid_text, prefix = parent.stdout.readline().split()
        triton_pid = int(pid_text)
        assert stubs_of(triton_pid), "the loaded model runs a stub"
        assert list(SHM_DIR.glob(f"{prefix}*")), "the stub has its shared memory"
        assert _guards(prefix), "a guard watches the parent"

        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        killed_at = time.monotonic()
        while time.monotonic() - killed_at < 5 and group_members(triton_pid):
            time.sleep(0.01)
        gone_after = time.monotonic() - killed_at
        print(f"Triton's process group dead {gone_after * 1000:.0f} ms after SIGKILL of its parent")
        assert group_members(triton_pid) == [], "nothing of the group runs 5 s later"
        assert not stubs_of(triton_pid)
        # The guard kills the group, then removes the regions, then exits: wait for those too.
        while time.monotonic() - killed_at < 5 and (list(SHM_DIR.glob(f"{prefix}*")) or _guards(prefix)):
            time.sleep(0.01)
        assert not list(SHM_DIR.glob(f"{prefix}*"))
        assert not _guards(prefix), "the guard exits once it has done its job"
        # The dead are reaped by init (which here does it every second or so).
        deadline = time.monotonic() + 10
        while not group_is_gone(triton_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert group_is_gone(triton_pid)
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)
            parent.wait()
        if triton_pid is not None and not group_is_gone(triton_pid):
            os.killpg(triton_pid, signal.SIGKILL)


def test_a_normal_stop_releases_the_guard_and_the_triton_keeps_running_until_then(
    tmp_path: Path, triton_backend_dir: Path
) -> None:
    (tmp_path / "repository").mkdir()
    process = TritonProcess(
        repository=str(tmp_path / "repository"), workdir=tmp_path, backend_dir=triton_backend_dir
    )
    process.start(timeout_s=60)
    [guard] = _guards(process.shm_prefix)
    assert next(p for p in live_processes() if p.pid == guard).ppid == os.getpid()
    time.sleep(0.5)
    assert process.is_running(), "a guard that is not told to act does nothing"
    process.stop()
    assert not _guards(process.shm_prefix), "the guard exits with a normal stop"
