"""Run the bundled tritonserver as a child process in its own process group."""

from __future__ import annotations

import atexit
import collections
import contextlib
import logging
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from control_plane.tritonserver.distribution import (
    TritonDistribution,
    locate_tritonserver,
    prepare_backend_dir,
)
from control_plane.tritonserver.exceptions import TritonStartError
from control_plane.tritonserver.guard import ProcessGuard

log = logging.getLogger(__name__)

SHM_DIR = Path("/dev/shm")  # noqa: S108 (POSIX shared memory, where Triton puts its regions)


_HANDED_OUT: collections.deque[int] = collections.deque(maxlen=4096)  # ports free_port gave, newest last
_HANDED_OUT_LOCK = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that nothing listens on right now, and that this process has not handed out
    lately: the kernel may give a port it just released to the next bind, so three Tritons started at
    once took the same port twice (one exited, "Socket already in use", while the other answered on it)."""
    with _HANDED_OUT_LOCK:
        for _ in range(64):
            with socket.socket() as sock:
                sock.bind((host, 0))
                port = int(sock.getsockname()[1])
            if port not in _HANDED_OUT:
                break
        _HANDED_OUT.append(port)
        return port


def listening_sockets(port: int) -> set[str]:
    """The `socket:[inode]` names of the TCP sockets listening on `port` here (Linux /proc; empty where
    it cannot tell), as a process's /proc/<pid>/fd links name them."""
    found: set[str] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()  # local_address is HEXIP:HEXPORT, st 0A is LISTEN, field 9 the inode
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                found.add(f"socket:[{fields[9]}]")
    return found


def listens_on(pid: int, port: int) -> bool | None:
    """Whether process `pid` holds a TCP socket listening on `port` (None where /proc cannot tell)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    wanted = listening_sockets(port)
    return any(_readlink(f"/proc/{pid}/fd/{fd}") in wanted for fd in fds)


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:  # the descriptor closed meanwhile
        return ""


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on `host:port` now (SO_REUSEADDR, as Triton binds)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def log_tail(path: Path, *, lines: int = 20) -> str:
    """Last lines of Triton's log, without the rows of its startup tables."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    kept = [line for line in text.splitlines() if line.strip() and not line.startswith(("|", "+-"))]
    return "\n".join(kept[-lines:])


class TritonProcess:
    """One tritonserver child: started in its own session, stopped with its whole process group.

    A guard process (see `guard.py`) kills the group if this process dies without stopping it.
    """

    def __init__(
        self,
        *,
        repository: str,
        workdir: Path,
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        address: str = "127.0.0.1",
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
        backend_dir: Path | None = None,
        extra_args: Sequence[str] = (),
        exit_timeout_s: int = 10,
        distribution: TritonDistribution | None = None,
    ) -> None:
        # Triton runs in `workdir`, so a relative folder repository must be made absolute.
        self.repository = repository if "://" in repository else str(Path(repository).resolve())
        self.workdir = workdir.resolve()
        self.address = address
        self.http_port = http_port or free_port(address)
        self.grpc_port = grpc_port or free_port(address)
        self.metrics_port = metrics_port or free_port(address)
        self._ports_chosen = not (http_port or grpc_port or metrics_port)  # ours to choose again
        self.env_overrides = dict(env or {})
        self.log_path = log_path or self.workdir / "tritonserver.log"
        self.backend_dir = backend_dir
        self.extra_args = list(extra_args)
        self.exit_timeout_s = exit_timeout_s
        # Our own prefix for the Python backend's shared-memory regions, so that the ones a
        # killed Triton could not unlink can be found and removed.
        self.shm_prefix = f"triton_python_backend_shm_region_cp{uuid.uuid4().hex[:12]}_"
        self._dist = distribution
        self._proc: subprocess.Popen[bytes] | None = None
        self._guard: ProcessGuard | None = None
        self.exit_code: int | None = None  # of the last tritonserver that exited

    @property
    def pid(self) -> int | None:
        """PID of tritonserver (also its process group id), None before start."""
        return self._proc.pid if self._proc is not None else None

    @property
    def http_url(self) -> str:
        """Base URL of Triton's HTTP (KServe v2) endpoint."""
        return f"http://{self._client_host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        """host:port of Triton's gRPC endpoint, as tritonclient.grpc wants it."""
        return f"{self._client_host}:{self.grpc_port}"

    @property
    def _client_host(self) -> str:
        return "127.0.0.1" if self.address in ("0.0.0.0", "") else self.address  # noqa: S104

    def is_running(self) -> bool:
        """Whether the tritonserver process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def has_exited(self) -> bool:
        """Whether a started tritonserver exited without being stopped (it crashed or was killed)."""
        return self._proc is not None and self._proc.poll() is not None

    def ports_are_free(self) -> bool:
        """Whether nothing listens on this process's ports (so a restart can take them again)."""
        ports = (self.http_port, self.grpc_port, self.metrics_port)
        return all(port_is_free(port, self._client_host) for port in ports)

    def choose_new_ports(self) -> None:
        """Pick fresh free ports for the next start (when the old ones were taken meanwhile)."""
        if self.is_running():
            raise RuntimeError("cannot change the ports of a running tritonserver")
        self.http_port = free_port(self.address)
        self.grpc_port = free_port(self.address)
        self.metrics_port = free_port(self.address)

    def command(self, backend_dir: Path) -> list[str]:
        """The tritonserver command line."""
        dist = self._distribution()
        return [
            str(dist.binary),
            f"--model-repository={self.repository}",
            f"--backend-directory={backend_dir}",
            f"--cache-directory={dist.caches_dir}",
            "--model-control-mode=explicit",
            # A model that failed to load would otherwise make /v2/health/ready fail for good.
            "--strict-readiness=false",
            # Our configs are complete; auto-complete only costs the Python backend a second stub process
            # per load (an ONNX model loads in 0.25 s instead of 1.5 s).
            "--disable-auto-complete-config",
            "--exit-on-error=true",
            "--log-verbose=0",
            f"--exit-timeout-secs={self.exit_timeout_s}",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            f"--http-address={self.address}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.address}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.address}",
            f"--metrics-port={self.metrics_port}",
            *self.extra_args,
        ]

    def environment(self) -> dict[str, str]:
        """Environment of the child: bundled libs, this interpreter first on PATH, then overrides."""
        dist = self._distribution()
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (str(dist.libs_dir), env.get("LD_LIBRARY_PATH", "")) if p
        )
        env["PATH"] = os.pathsep.join(p for p in (str(dist.python_bin_dir), env.get("PATH", "")) if p)
        env.update(self.env_overrides)
        return env

    def start(self, *, timeout_s: float = 60.0, retries: int = 2) -> None:
        """Launch tritonserver and wait until it answers ready; on failure raise with its log tail. Ports
        this object chose are chosen again (up to `retries` times) when one was taken meanwhile."""
        if self.is_running():
            return
        self.stop()  # reap a tritonserver that exited by itself: its stubs, shared memory and guard
        self.workdir.mkdir(parents=True, exist_ok=True)
        backend_dir = self.backend_dir or prepare_backend_dir(self._distribution(), self.workdir / "backends")
        argv = self.command(backend_dir)
        log.info("starting tritonserver: %s", " ".join(argv))
        self._rotate_log()
        # The guard exists before tritonserver does, so at no point can our death orphan it.
        guard = ProcessGuard(shm_dir=SHM_DIR, shm_prefix=self.shm_prefix)
        try:
            self._proc = self._spawn(argv)
        except BaseException:
            guard.release()
            raise
        guard.guard(self._proc.pid)
        self._guard, self.exit_code = guard, None
        atexit.register(self.stop)
        try:
            self._wait_ready(timeout_s)
        except TritonStartError as exc:
            self.stop()
            if not (self._ports_chosen and exc.port_taken and retries):
                raise
            log.warning("tritonserver found one of its ports taken; starting it again on new ports")
            self.choose_new_ports()
            self.start(timeout_s=timeout_s, retries=retries - 1)
        except BaseException:
            self.stop()
            raise

    def _spawn(self, argv: list[str]) -> subprocess.Popen[bytes]:
        with self.log_path.open("wb") as out:
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=self.environment(),
                start_new_session=True,
            )

    def _rotate_log(self) -> None:
        """Keep the previous run's log (a crash's last words) as `<log>.1`."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self.log_path.exists():
            os.replace(self.log_path, self.log_path.with_name(self.log_path.name + ".1"))

    def _wait_ready(self, timeout_s: float) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + timeout_s
        url = f"{self.http_url}/v2/health/ready"
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                tail = log_tail(self.log_path)
                raise TritonStartError(
                    f"tritonserver exited with {code} during startup; log tail:\n{tail}",
                    port_taken="already in use" in tail,
                )
            # Ready, and from this tritonserver: another server may answer on a port taken meanwhile.
            if _answers_ok(url) and listens_on(self._proc.pid, self.http_port) is not False:
                log.info("tritonserver ready at %s (pid %s)", self.http_url, self._proc.pid)
                return
            time.sleep(0.1)
        raise TritonStartError(
            f"tritonserver not ready after {timeout_s}s; log tail:\n{log_tail(self.log_path)}"
        )

    def stop(self, *, timeout_s: float = 30.0) -> None:
        """Stop tritonserver and everything in its process group (Python-backend stubs); idempotent."""
        proc = self._proc
        if proc is None:
            return
        atexit.unregister(self.stop)
        if proc.poll() is None:
            # Triton shuts its stubs down itself on SIGTERM; the group kill catches any left over.
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("tritonserver %s ignored SIGTERM for %ss; killing its group", proc.pid, timeout_s)
        _signal_group(proc.pid, signal.SIGKILL)
        self.exit_code = proc.wait()
        self._proc = None
        self._remove_leftover_shm()
        if self._guard is not None:
            self._guard.release()
            self._guard = None

    def _remove_leftover_shm(self) -> None:
        for region in SHM_DIR.glob(f"{self.shm_prefix}*"):
            log.warning("removing shared memory left by tritonserver: %s", region)
            region.unlink(missing_ok=True)

    def __enter__(self) -> TritonProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _distribution(self) -> TritonDistribution:
        if self._dist is None:
            self._dist = locate_tritonserver()
        return self._dist


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


# No proxies: the health check goes to our own child, whatever HTTP(S)_PROXY says.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _answers_ok(url: str) -> bool:
    try:
        with _OPENER.open(url, timeout=1.0) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError):
        return False
