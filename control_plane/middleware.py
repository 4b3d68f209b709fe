"""Pure-ASGI middleware (cheaper than BaseHTTPMiddleware on the hot path)."""

from __future__ import annotations

import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from control_plane.auth.dependencies import NO_BEARER, bearer_of
from control_plane.errors import AppError, PayloadTooLarge, Unauthorized, URITooLong, error_response

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})
# The management API's query strings (filters, limits) are parsed before the key is checked: 64 KB of
# them took 21-25 ms of the event loop.
API_QUERY_BYTES = 4096


class RequestIdMiddleware:
    """Takes a sane `X-Request-ID` from the client or makes one; echoes it on the response."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = (header_of(scope, b"x-request-id") or b"").decode("latin-1")
        request_id = given if _SAFE_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        raw_id = request_id.encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", raw_id)]
            await send(message)

        await self.app(scope, receive, send_with_id)


class BodyLimitMiddleware:
    """413 for bodies over a limit: from Content-Length up front, or while a chunked body streams in.

    The management API's JSON bodies (`/v1`, uploads apart) and query strings have limits of their own
    (414 past API_QUERY_BYTES), and a request with a body but no `Authorization: Bearer` is refused (401)
    before the body is read: FastAPI parses a JSON body on the event loop before the dependency that
    checks the key runs (64 MB of it took 1.8 s of every tenant's event loop, from a client with no key).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        default_limit: int,
        api_limit: int,
        upload_limit: int,
        upload_path: re.Pattern[str],
    ):
        self.app = app
        self.default_limit = default_limit
        self.api_limit = api_limit
        self.upload_limit = upload_limit
        self.upload_path = upload_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        api = path.startswith("/v1/")
        limit = self.default_limit
        if self.upload_path.match(path):
            limit = self.upload_limit
        elif api:
            limit = self.api_limit
        refusal = _refusal(scope, api=api, limit=limit)
        if refusal is not None:
            await error_response(refusal)(scope, receive, send)
            return
        await _limited(self.app, scope, receive, send, limit=limit)


async def _limited(app: ASGIApp, scope: Scope, receive: Receive, send: Send, *, limit: int) -> None:
    """Run the app on a body that may not exceed `limit` bytes as it streams in (chunked, or longer than it
    said). Past it, the app is told the client went away and its answer is dropped, and the client gets 413:
    an exception raised from `receive` instead reached the client as whatever the app's body reader made
    of it (FastAPI's JSON reader: 400, as 422)."""
    received = 0
    refusal: PayloadTooLarge | None = None
    started = False

    async def counting_receive() -> Message:
        nonlocal received, refusal
        if refusal is not None:
            return {"type": "http.disconnect"}
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                refusal = PayloadTooLarge(f"request body over the limit of {limit} bytes")
                return {"type": "http.disconnect"}
        return message

    async def guarded_send(message: Message) -> None:
        nonlocal started
        if refusal is not None and not started:
            return  # the 413 goes out instead
        started = started or message["type"] == "http.response.start"
        await send(message)

    try:
        await app(scope, counting_receive, guarded_send)
    except Exception:
        if refusal is None or started:
            raise  # what the body's end made the app raise is answered below
    if refusal is not None and not started:
        await error_response(refusal)(scope, receive, send)


def _refusal(scope: Scope, *, api: bool, limit: int) -> AppError | None:
    """What refuses a request before its body is read (414, 401, 413), if anything."""
    if api and len(scope.get("query_string", b"")) > API_QUERY_BYTES:
        return URITooLong(f"the query string is over the limit of {API_QUERY_BYTES} bytes")
    if api and scope["method"] in _WITH_BODY and bearer_in(scope) is None:
        return Unauthorized(NO_BEARER)
    declared = header_of(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return PayloadTooLarge(f"request body over the limit of {limit} bytes")
    return None


def bearer_in(scope: Scope) -> str | None:
    """The key of the request's `Authorization: Bearer <key>` header, if it has one."""
    return bearer_of((header_of(scope, b"authorization") or b"").decode("latin-1"))


def header_of(scope: Scope, name: bytes) -> bytes | None:
    """A request header's value (its first), as ASGI hands them over (names lower-cased)."""
    return next((value for key, value in scope["headers"] if key == name), None)
