"""The control plane's listening sockets, taken before anything else starts.

`control-plane serve` binds its HTTP and gRPC ports first, before the app starts the embedded Triton or
connects anywhere. A port already taken is then a clear error at once, before the minutes a start can
take; and the embedded Triton, which picks free ports for itself while the app starts, can never be
handed a port the control plane was about to bind (it once was: its metrics server then answered on the
control plane's port, 200 to any GET, and `scripts/serve` took that for the control plane being ready).
"""

from __future__ import annotations

import errno
import socket


class ListenError(RuntimeError):
    """A port the control plane was told to listen on cannot be had."""


def listening_socket(host: str, port: int, *, setting: str) -> socket.socket:
    """A TCP socket bound to `host:port` and listening, with SO_REUSEADDR as uvicorn and asyncio bind;
    `setting` (e.g. "CP_HTTP_PORT") names the port in the error when it cannot be had.

    It listens at once, so that nothing else can bind the port in the meantime (two sockets with
    SO_REUSEADDR may share a port until one of them listens). Connections made before the server
    serves wait in the backlog and are answered once it does."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except OSError as exc:
        raise ListenError(f"{setting}: cannot listen on {host}:{port}: {exc}") from exc
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:  # IPv6 only, as asyncio binds an IPv6 host
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        taken = exc.errno == errno.EADDRINUSE
        hint = " (another process listens there: choose another port)" if taken else ""
        raise ListenError(f"{setting}: cannot listen on {host}:{port}: {exc.strerror}{hint}") from exc
    return sock
