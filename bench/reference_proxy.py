"""A plain native reverse proxy in front of the benchmark's Triton: what one more hop costs on this machine.

nginx (Debian `nginx-light`, installed with apt-get when missing) forwards HTTP/1.1 over keep-alive
connections (`proxy_pass`) and gRPC over a pool of HTTP/2 connections, one call at a time on each
(`grpc_pass`; 128 kept idle, so concurrency 64 churns none), to Triton, and does nothing else: no key,
no routing, no request check, no limits, no metrics, no access log. It is the floor under any proxy's
cost, not a design we could ship: `bench.proxy_overhead --reference nginx`
measures it beside the control plane, alternated with direct Triton like the control plane's runs, so the
README can say how much of the gap to direct Triton any extra process on the path costs here. One worker
process by default, the shape of the control plane's data plane (one event loop); `--reference-workers 2`
gives it both cores. (On a machine booted with systemd, installing `nginx-light` also starts Debian's own
nginx service on port 80; the benchmark neither uses nor stops it.)
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.generators import ensure
from bench.stack import SetupError, group_members
from tests.support import procs

_CONF = """\
worker_processes %(workers)d;
daemon off;
pid %(root)s/nginx.pid;
error_log %(root)s/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path %(root)s/body;
    proxy_temp_path %(root)s/proxy;
    fastcgi_temp_path %(root)s/fastcgi;
    uwsgi_temp_path %(root)s/uwsgi;
    scgi_temp_path %(root)s/scgi;
    keepalive_requests 1000000;
    http2_max_requests 1000000;
    upstream triton_http { server 127.0.0.1:%(triton_http)d; keepalive 128; keepalive_requests 1000000; }
    upstream triton_grpc { server 127.0.0.1:%(triton_grpc)d; keepalive 128; keepalive_requests 1000000; }
    server {
        listen 127.0.0.1:%(http)d;
        location / {
            proxy_pass http://triton_http;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
    server {
        listen 127.0.0.1:%(grpc)d http2;
        location / { grpc_pass grpc://triton_grpc; }
    }
}
"""


@dataclass(frozen=True)
class Reference:
    """A running reference proxy: its ports and its process group."""

    name: str
    http_port: int
    grpc_port: int
    pgid: int

    def pids(self) -> list[int]:
        """The master and its workers."""
        return group_members(self.pgid)


@contextmanager
def nginx(tmp: Path, triton_http: int, triton_grpc: int, *, workers: int = 1) -> Iterator[Reference]:
    """nginx in front of Triton's HTTP and gRPC ports, in its own process group; stopped by its PID."""
    binary = ensure("nginx")
    root = tmp / "nginx"
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    http, grpc = procs.free_port(), procs.free_port()
    conf = root / "nginx.conf"
    fields = {"workers": workers, "root": root, "http": http, "grpc": grpc}
    conf.write_text(_CONF % {**fields, "triton_http": triton_http, "triton_grpc": triton_grpc})
    argv = [binary, "-p", str(root), "-c", str(conf), "-e", str(root / "error.log")]
    check = subprocess.run([*argv, "-t"], capture_output=True, text=True)
    if check.returncode != 0:
        raise SetupError(f"nginx rejected its configuration:\n{check.stderr}")
    proc = procs.start(argv, log=root / "stdout.log")
    try:
        for port in (http, grpc):
            procs.wait_for_port(port, timeout=30, proc=proc)
        yield Reference("nginx", http, grpc, proc.pid)
    finally:
        procs.stop(proc)  # SIGTERM to its group (nginx's fast shutdown), SIGKILL for any left
