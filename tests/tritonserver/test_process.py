"""TritonProcess against the real bundled Triton: folder and S3 repositories, startup and shutdown."""

from __future__ import annotations

import http.server
import io
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from minio import Minio

from control_plane.tritonserver import TritonProcess, TritonStartError
from control_plane.tritonserver.process import SHM_DIR, free_port, listens_on
from tests.fixtures_triton import S3_ENV, RunningTriton, StartTriton
from tests.support.triton_models import infer, python_model_files, write_python_model
from tests.tritonserver.procfs import group_is_gone, group_members, stubs_of


def _eventually(check: Callable[[], bool], *, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


def _state(running: RunningTriton, name: str) -> str | None:
    return {m["name"]: m.get("state") for m in running.client.repository_index()}.get(name)


def _serve_and_stop(running: RunningTriton, name: str) -> None:
    """Load, infer, unload through the repository API, then stop and check nothing is left."""
    pgid = running.process.pid
    assert pgid is not None and os.getpgid(pgid) == pgid  # its own process group
    client = running.client
    assert client.is_ready()
    assert not client.is_model_ready(name)

    client.load_model(name)
    assert client.is_model_ready(name)
    np.testing.assert_allclose(infer(running.http_url, name, [1.0, 2.0, -3.5]), [3.0, 5.0, -6.0])
    assert stubs_of(pgid), "the Python backend should run a stub in Triton's group"

    client.unload_model(name)  # asynchronous: UNLOADING, then UNAVAILABLE
    assert not client.is_model_ready(name)
    assert _eventually(lambda: _state(running, name) == "UNAVAILABLE")
    assert _eventually(lambda: not stubs_of(pgid)), "unloading should end the model's stub"

    client.close()  # Triton's shutdown waits (up to its exit timeout) for open HTTP connections
    started = time.monotonic()
    running.process.stop()
    assert time.monotonic() - started < running.process.exit_timeout_s, "graceful stop, no SIGKILL"
    assert running.process.pid is None
    assert group_is_gone(pgid), f"left in the group: {group_members(pgid)}"
    assert not stubs_of(pgid)


def test_folder_repository_load_infer_unload_stop(start_triton: StartTriton, tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    write_python_model(repository, "affine", scale=2.0, offset=1.0)
    _serve_and_stop(start_triton(repository=repository), "affine")


def test_s3_repository_load_infer_unload_stop(
    start_triton: StartTriton, minio_client: Minio, bucket: str, s3_endpoint: str
) -> None:
    minio_client.make_bucket(bucket)
    for relative, content in python_model_files("affine-s3", scale=2.0, offset=1.0).items():
        minio_client.put_object(
            bucket, f"repo/prefix/affine-s3/{relative}", io.BytesIO(content), len(content)
        )

    running = start_triton(repository=f"s3://{s3_endpoint}/{bucket}/repo/prefix", env=S3_ENV)
    _serve_and_stop(running, "affine-s3")


def test_start_fails_fast_with_the_log_tail(tmp_path: Path) -> None:
    process = TritonProcess(repository=str(tmp_path / "missing"), workdir=tmp_path / "work")
    started = time.monotonic()
    with pytest.raises(TritonStartError, match=r"(?s)exited with 1 during startup.*failed to stat file"):
        process.start(timeout_s=60)
    assert time.monotonic() - started < 20
    assert process.pid is None
    assert (tmp_path / "work" / "tritonserver.log").is_file()
    assert (tmp_path / "work" / "backends" / "python" / "triton_python_backend_stub").is_file()


def test_a_port_another_server_took_is_not_taken_for_tritons_and_new_ports_are_chosen(
    tmp_path: Path, triton_backend_dir: Path
) -> None:
    """A full-suite run: three Tritons started at once drew the same free port twice; the one that lost
    exited ("Socket already in use") while the other answered ready on that port, so the dead one was
    called ready and every load sent to it failed. Here another server answering 200 holds the HTTP port
    this process chose."""
    repository = tmp_path / "repository"
    repository.mkdir()
    process = TritonProcess(
        repository=str(repository), workdir=tmp_path / "work", backend_dir=triton_backend_dir
    )
    taken = process.http_port

    class Ready(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    other = http.server.ThreadingHTTPServer(("127.0.0.1", taken), Ready)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        process.start(timeout_s=60)
        assert process.http_port != taken and process.is_running()
        assert listens_on(process.pid or 0, process.http_port) is True
        assert listens_on(process.pid or 0, taken) is False
        assert "already in use" in (tmp_path / "work" / "tritonserver.log.1").read_text()
    finally:
        process.stop()
        other.shutdown()
        other.server_close()


def test_free_ports_are_not_handed_out_twice_by_one_process() -> None:
    """The kernel may give a port it just released to the next bind(0): 600 draws from three threads
    (as three Tritons starting at once draw theirs) are all different."""
    with ThreadPoolExecutor(3) as pool:
        ports = [
            port
            for batch in pool.map(lambda _: [free_port() for _ in range(200)], range(3))
            for port in batch
        ]
    assert len(set(ports)) == len(ports)


def test_context_manager_and_idempotent_stop(tmp_path: Path, triton_backend_dir: Path) -> None:
    repository = tmp_path / "repository"
    repository.mkdir()
    with TritonProcess(
        repository=str(repository), workdir=tmp_path, backend_dir=triton_backend_dir
    ) as process:
        pgid = process.pid
        assert pgid is not None and process.is_running()
        assert process.http_url.startswith("http://127.0.0.1:")
        assert process.grpc_url == f"127.0.0.1:{process.grpc_port}"
    assert group_is_gone(pgid)
    process.stop()  # again: nothing to do, no error
    assert process.pid is None and not process.is_running()


def test_stop_after_a_crash_kills_orphaned_stubs_and_frees_shared_memory(
    start_triton: StartTriton, tmp_path: Path
) -> None:
    repository = tmp_path / "repository"
    write_python_model(repository, "crashy")
    running = start_triton(repository=repository)
    running.client.load_model("crashy")
    pgid = running.process.pid
    assert pgid is not None
    regions = [SHM_DIR / stub.argv[2] for stub in stubs_of(pgid)]
    assert regions and all(r.name.startswith(running.process.shm_prefix) and r.exists() for r in regions)

    os.kill(pgid, signal.SIGKILL)  # tritonserver dies; its stubs and shared memory stay behind
    assert _eventually(lambda: not running.process.is_running())
    running.process.stop()
    assert group_members(pgid) == []
    # The killed orphans were adopted by init; gone once it has reaped them.
    assert _eventually(lambda: group_is_gone(pgid), timeout_s=10)
    assert not [r for r in regions if r.exists()]
