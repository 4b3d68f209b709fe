"""`control-plane serve` takes its ports before it starts anything (control_plane/listeners.py): every
address its host stands for, as uvicorn's own binding did, or a clear error and none of them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from control_plane.db import migrate
from control_plane.listeners import ListenError, addresses, announce, listening_sockets
from tests.support.procs import free_port


def _ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_an_empty_host_is_every_interface_ipv4_and_ipv6() -> None:
    sockets = listening_sockets("", 0, setting="CP_HTTP_PORT")
    try:
        families = {s.family for s in sockets}
        assert socket.AF_INET in families
        assert (socket.AF_INET6 in families) == _ipv6()
        for sock in sockets:
            host = "127.0.0.1" if sock.family == socket.AF_INET else "::1"
            with socket.create_connection((host, sock.getsockname()[1]), timeout=5):
                pass  # it listens at once: the connection waits in the backlog
    finally:
        for sock in sockets:
            sock.close()


def test_a_port_taken_on_one_of_the_hosts_addresses_is_an_error_and_keeps_none() -> None:
    """Held by another process on one of the host's addresses (the one after the first, which the
    first version of this bound alone), the port must not be taken on the others silently: clients of
    that address would reach the other process."""
    infos = socket.getaddrinfo(None, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    assert len(infos) == 2 or not _ipv6(), infos  # 0.0.0.0 and ::, where IPv6 is on
    family, *_, address = infos[-1]
    with socket.socket(family) as other:
        if family == socket.AF_INET6:
            other.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        other.bind(address)
        other.listen()
        port = other.getsockname()[1]
        where = f"[::]:{port}" if family == socket.AF_INET6 else f"0.0.0.0:{port}"
        with pytest.raises(ListenError) as refused:
            listening_sockets("", port, setting="CP_GRPC_PORT")
        assert str(refused.value) == (
            f"CP_GRPC_PORT: cannot listen on {where}: Address already in use (another process listens there)"
        )
        with socket.socket() as probe:  # the sockets bound before the refusal were given back
            probe.bind(("0.0.0.0", port))


def test_a_host_that_does_not_resolve_is_named_in_the_error() -> None:
    with pytest.raises(ListenError, match=r"^CP_HTTP_PORT: no address to listen on: host 'nohost\.invalid'"):
        listening_sockets("nohost.invalid", 8080, setting="CP_HTTP_PORT")


def test_addresses_name_the_ports_the_system_gave() -> None:
    sockets = listening_sockets("127.0.0.1", 0, setting="CP_HTTP_PORT")
    try:
        assert addresses(sockets) == [f"127.0.0.1:{sockets[0].getsockname()[1]}"]
    finally:
        sockets[0].close()


def test_announce_replaces_a_link_instead_of_writing_through_it(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("precious\n")
    link = tmp_path / "listening"
    link.symlink_to(target)
    announce(link, "127.0.0.1:8080\n")
    assert target.read_text() == "precious\n"
    assert not link.is_symlink() and link.read_text() == "127.0.0.1:8080\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "listening"]  # no temporary left


def _serve(tmp_path: Path, port: int, listening: Path) -> tuple[list[str], dict[str, str]]:
    """argv and environment of `control-plane serve` on `port` with its --listening-file, SQLite and local
    folders in `tmp_path`, no gRPC."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CP_")}
    env.update(
        CP_DATABASE_URL=f"sqlite:///{tmp_path / 'registry.db'}",
        CP_ARTIFACT_DIR=str(tmp_path / "artifacts"),
        CP_MODEL_REPOSITORY=str(tmp_path / "repository"),
        CP_GRPC_PORT="0",
    )
    argv = ["serve", "--port", str(port), "--listening-file", str(listening)]
    return [sys.executable, "-m", "control_plane.cli", *argv], env


def test_serve_with_a_port_taken_exits_at_once_and_leaves_no_listening_file(tmp_path: Path) -> None:
    """A file left by an earlier server must not say this one holds its port."""
    listening = tmp_path / "listening"
    listening.write_text("127.0.0.1:1\n")  # a stale one
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        argv, env = _serve(tmp_path, port, listening)
        done = subprocess.run(
            argv,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 1, done.stderr
    assert f"--port: cannot listen on 127.0.0.1:{port}: Address already in use" in done.stderr
    assert "Traceback" not in done.stderr
    assert not listening.exists()


def test_grpc_listens_on_the_host_given_to_serve_too(tmp_path: Path) -> None:
    """`--host` binds gRPC as well as HTTP (gRPC took CP_HTTP_HOST whatever `--host` said): with the gRPC
    port held on the host given, serve is refused there instead of opening gRPC on another interface."""
    with socket.socket() as other:
        other.bind(("127.0.0.2", 0))
        other.listen()
        grpc_port = other.getsockname()[1]
        argv, env = _serve(tmp_path, free_port(), tmp_path / "listening")
        env.update(CP_GRPC_PORT=str(grpc_port), CP_HTTP_HOST="127.0.0.1")
        done = subprocess.run(
            [*argv, "--host", "127.0.0.2"], env=env, capture_output=True, text=True, timeout=60, check=False
        )
    assert done.returncode == 1, done.stderr
    assert f"CP_GRPC_PORT: cannot listen on 127.0.0.2:{grpc_port}: Address already in use" in done.stderr


def test_the_listening_file_says_where_it_listens_and_goes_when_sigterm_ends_the_server(
    tmp_path: Path,
) -> None:
    listening, port = tmp_path / "listening", free_port()
    argv, env = _serve(tmp_path, port, listening)
    migrate.upgrade(env["CP_DATABASE_URL"])
    with (tmp_path / "serve.log").open("wb") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 60
        while not listening.exists():
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.05)
        assert listening.read_text() == f"127.0.0.1:{port}\n"
        assert httpx.get(f"http://127.0.0.1:{port}/v2/health/live", timeout=60).status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == -signal.SIGTERM  # ended by the signal, as uvicorn.run ended
        assert not listening.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
