"""The control plane's listening sockets, taken before anything else starts.

`control-plane serve` binds its HTTP and gRPC ports first, before the app starts the embedded Triton or
connects anywhere. A port already taken is then a clear error at once, before the minutes a start can
take; and the embedded Triton, which picks free ports for itself while the app starts, can never be
handed a port the control plane was about to bind (it once was: its metrics server then answered on the
control plane's port, 200 to any GET, and `scripts/serve` took that for the control plane being ready).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import tempfile
from collections.abc import Sequence
from pathlib import Path


class ListenError(RuntimeError):
    """A port the control plane was told to listen on cannot be had."""


def listening_sockets(host: str, port: int, *, setting: str) -> list[socket.socket]:
    """TCP sockets bound to `host:port` and listening: one per address the host stands for, as asyncio's
    `create_server` (and so uvicorn) binds them ("" is every interface, IPv4 and IPv6; an IPv6 socket is
    IPv6 only), with SO_REUSEADDR. `setting` (e.g. "CP_HTTP_PORT") names the port in the error when any
    of them cannot be had; then none is kept.

    They listen at once, so that nothing else can bind the port in the meantime (two sockets with
    SO_REUSEADDR may share a port until one of them listens). Connections made before the server serves
    wait in the backlog and are answered once it does."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        reason = exc.strerror or exc
        raise ListenError(f"{setting}: no address to listen on: host {host!r}: {reason}") from exc
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
                sock.listen(2048)
            except OSError as exc:
                hint = " (another process listens there)" if exc.errno == errno.EADDRINUSE else ""
                where = _address(family, str(address[0]), int(address[1]))
                raise ListenError(f"{setting}: cannot listen on {where}: {exc.strerror}{hint}") from exc
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def addresses(sockets: Sequence[socket.socket]) -> list[str]:
    """Where the sockets listen, as `host:port` (`[v6]:port`): the ports the system gave for port 0."""
    return [_address(sock.family, *sock.getsockname()[:2]) for sock in sockets]


def _address(family: int, host: str, port: int) -> str:
    return f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"


def announce(path: Path, text: str) -> None:
    """Write `text` to `path` all at once (a reader never sees half of it), replacing whatever `path` was
    (a link included: it is replaced, not followed)."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
