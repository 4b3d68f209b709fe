"""Domain errors that carry their HTTP status, and the one handler that renders them."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class AppError(Exception):
    """Base of every foreseeable error; rendered as `{"error", "detail"}`."""

    status_code = 500
    kind = "InternalError"

    def __init__(self, message: str, *, status_code: int | None = None, retry_after: int | None = None):
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code
        self.retry_after = retry_after


class BadRequest(AppError):
    status_code = 400
    kind = "BadRequest"


class Unauthorized(AppError):
    status_code = 401
    kind = "Unauthorized"


class Forbidden(AppError):
    status_code = 403
    kind = "Forbidden"


class NotFound(AppError):
    status_code = 404
    kind = "NotFound"


class Conflict(AppError):
    status_code = 409
    kind = "Conflict"


class PayloadTooLarge(AppError):
    status_code = 413
    kind = "PayloadTooLarge"


class URITooLong(AppError):
    status_code = 414
    kind = "URITooLong"


class InvalidRequest(AppError):
    status_code = 422
    kind = "InvalidRequest"


class ClientClosed(AppError):
    """The client went away (closed the connection, reset or cancelled the call) before its answer: nobody
    reads this; it is what the request's metrics record (499, as nginx logs it)."""

    status_code = 499
    kind = "ClientClosedRequest"


class ServiceUnavailable(AppError):
    status_code = 503
    kind = "ServiceUnavailable"

    def __init__(self, message: str, *, retry_after: int = 1):
        super().__init__(message, retry_after=retry_after)


class UpstreamTimeout(AppError):
    status_code = 504
    kind = "UpstreamTimeout"


def error_response(exc: AppError) -> JSONResponse:
    """The JSON response for one domain error."""
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
    return JSONResponse(
        {"error": exc.kind, "detail": exc.message}, status_code=exc.status_code, headers=headers
    )


async def _app_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    return error_response(exc)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
    return JSONResponse({"error": "InvalidRequest", "detail": problems}, status_code=422)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:  # Starlette's form parser (malformed multipart): an invalid request body
        return JSONResponse({"error": "InvalidRequest", "detail": str(exc.detail)}, status_code=422)
    kinds = {404: "NotFound", 405: "MethodNotAllowed", 401: "Unauthorized", 403: "Forbidden"}
    return JSONResponse(
        {"error": kinds.get(exc.status_code, "HTTPError"), "detail": str(exc.detail)},
        status_code=exc.status_code,
        headers=getattr(exc, "headers", None),
    )


async def _unstorable(_: Request, exc: Exception) -> JSONResponse:
    """A value the database refuses (a NUL character in a string, say) that no schema caught: the
    request's fault, not a 500 (whose connection uvicorn then closes)."""
    log.warning("the database refused a value of a request: %s", str(exc).splitlines()[0][:300])
    detail = "a value in the request cannot be stored (a NUL character or a number out of range)"
    return JSONResponse({"error": "InvalidRequest", "detail": detail}, status_code=422)


def _unique_violation(exc: IntegrityError) -> bool:
    """Whether the database refused a row because another one already holds its unique key (Postgres
    SQLSTATE 23505, SQLite's UNIQUE constraint message)."""
    return getattr(exc.orig, "sqlstate", None) == "23505" or "UNIQUE constraint failed" in str(exc.orig)


async def _conflict(_: Request, exc: Exception) -> JSONResponse:
    """A concurrent request created the same thing first (both passed the existence check; the unique
    key caught the second): a 409, as when it comes second. Other integrity errors are our own bugs."""
    assert isinstance(exc, IntegrityError)
    if not _unique_violation(exc):
        return await _unexpected(_, exc)
    log.info("a concurrent request created the same thing first: %s", str(exc.orig).splitlines()[0][:300])
    detail = "another request created or changed the same thing at the same time; read it again and retry"
    return JSONResponse({"error": "Conflict", "detail": detail}, status_code=409)


async def _pool_exhausted(_: Request, exc: Exception) -> JSONResponse:
    """Every database connection stayed busy past the pool's timeout: the registry is overloaded, not
    broken; a 503 the client may retry."""
    log.warning("no database connection within the pool timeout: %s", str(exc).splitlines()[0][:300])
    detail = "the registry is busy: no database connection was free in time; retry shortly"
    return JSONResponse(
        {"error": "ServiceUnavailable", "detail": detail}, status_code=503, headers={"Retry-After": "2"}
    )


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return JSONResponse({"error": "InternalError", "detail": "internal error"}, status_code=500)


def register_error_handlers(app: FastAPI) -> None:
    """Map domain errors, validation errors and anything unexpected to JSON bodies."""
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(DataError, _unstorable)
    app.add_exception_handler(IntegrityError, _conflict)
    app.add_exception_handler(SQLAlchemyTimeout, _pool_exhausted)
    app.add_exception_handler(Exception, _unexpected)
