"""A stand-in for Triton's health and model-repository API, for measuring the reconcile loop at scale.

    python -m bench.fake_triton PORT

Answers what the reconciler asks, over HTTP/1.1 keep-alive like Triton: `GET /v2/health/ready`,
`POST /v2/repository/index` (every model loaded here, READY), `POST /v2/repository/models/<m>/load`
and `.../unload` (instant), `GET /v2/models/<m>/ready`. Loading a Python-backend model in a real
Triton costs a stub process (~100 MB): 500 of them do not fit on a small machine, this does.
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOADED: set[str] = set()


class Handler(BaseHTTPRequestHandler):
    """Triton's answers, in the JSON shapes tritonclient.http reads."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""

    def _reply(self, status: int, body: object = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        """Health and model readiness."""
        path = self.path.split("?", 1)[0]
        if path in ("/v2/health/ready", "/v2/health/live"):
            self._reply(200)
        elif path.startswith("/v2/models/") and path.endswith("/ready"):
            name = path.removeprefix("/v2/models/").split("/", 1)[0]
            self._reply(200 if name in LOADED else 400)
        else:
            self._reply(404, {"error": "not found"})

    def do_POST(self) -> None:
        """Repository index, load and unload."""
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        path = self.path.split("?", 1)[0]
        if path == "/v2/repository/index":
            self._reply(200, [{"name": n, "version": "1", "state": "READY"} for n in sorted(LOADED)])
            return
        name, _, action = path.removeprefix("/v2/repository/models/").partition("/")
        if action == "load":
            LOADED.add(name)
            self._reply(200)
        elif action == "unload":
            LOADED.discard(name)
            self._reply(200)
        else:
            self._reply(404, {"error": "not found"})


def main() -> None:
    """Serve on 127.0.0.1:PORT until killed."""
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()


if __name__ == "__main__":
    main()
