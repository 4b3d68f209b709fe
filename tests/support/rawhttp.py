"""One HTTP/1.1 exchange over a raw socket, for requests a well-behaved client library will not send.

The body is written from a thread while the answer is read, so a server that answers early (413 on the
Content-Length) and stops reading is observed as it would be by a real client, not as a write error.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass, field

import httptools


@dataclass
class RawAnswer:
    """What came back: status (0 if the connection closed first, -1 on timeout), headers, body, seconds."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    elapsed: float = 0.0


class _Parser:
    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.body = b""
        self.complete = False
        self.parser = httptools.HttpResponseParser(self)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.complete = True


def request_head(method: str, path: str, port: int, headers: dict[str, str]) -> bytes:
    """The request line and headers (Host added), ending with the blank line."""
    lines = [
        f"{method} {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def exchange(port: int, head: bytes, body: bytes = b"", *, timeout: float = 5.0) -> RawAnswer:
    """Send `head` then `body` on a fresh connection to 127.0.0.1:port and read one response."""
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head)
        writer = threading.Thread(target=_send_quietly, args=(sock, body), daemon=True)
        writer.start()
        answer = read_answer(sock, timeout=timeout, started=started)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        writer.join(timeout=5)
    return answer


def read_answer(sock: socket.socket, *, timeout: float = 5.0, started: float | None = None) -> RawAnswer:
    """One response read from `sock` (the connection stays usable when the answer keeps it)."""
    started = time.perf_counter() if started is None else started
    parsed = _Parser()
    deadline = started + timeout
    try:
        while not parsed.complete:
            sock.settimeout(max(deadline - time.perf_counter(), 0.001))
            data = sock.recv(65536)
            if not data:
                break
            parsed.parser.feed_data(data)
    except TimeoutError:
        return RawAnswer(-1, parsed.headers, parsed.body, time.perf_counter() - started)
    except (ConnectionError, httptools.HttpParserError):
        pass
    elapsed = time.perf_counter() - started
    status = parsed.parser.get_status_code() if parsed.headers or parsed.complete else 0
    return RawAnswer(status, parsed.headers, parsed.body, elapsed)


def _send_quietly(sock: socket.socket, body: bytes) -> None:
    view = memoryview(body)
    with contextlib.suppress(OSError):
        while view:
            sent = sock.send(view[: 1 << 20])
            view = view[sent:]
