"""The SDK's exceptions: one per error kind the API answers, built from its JSON error bodies."""

from __future__ import annotations

from typing import Any

import httpx


class ControlPlaneError(Exception):
    """Base of every error the SDK raises."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class ConnectionFailed(ControlPlaneError):
    """The control plane could not be reached (refused, DNS, TLS, timeout)."""


class ApiError(ControlPlaneError):
    """The API answered an error: `status_code`, `kind` (the body's error kind) and `detail`."""

    status_code = 0

    def __init__(
        self,
        detail: str,
        *,
        status_code: int,
        kind: str,
        retry_after: float | None = None,
        method: str = "",
        url: str = "",
    ):
        super().__init__(f"{status_code} {kind}: {detail}")
        self.detail = detail
        self.status_code = status_code
        self.kind = kind
        self.retry_after = retry_after
        self.method = method
        self.url = url


class BadRequest(ApiError):
    """400: the inference request does not fit the model (names, datatypes, shapes)."""


class Unauthorized(ApiError):
    """401: no key, or a key that is unknown or revoked."""


class Forbidden(ApiError):
    """403: the key's role may not do this."""


class QuotaExceeded(Forbidden):
    """403 `QuotaExceeded`: the tenant's quota has no room (the detail names it and what to do)."""


class NotFound(ApiError):
    """404: unknown (or another tenant's) tenant, model, version, alias or instance."""


class MethodNotAllowed(ApiError):
    """405: the path exists but not with this method."""


class RequestTimeout(ApiError):
    """408: the request's body came too slowly."""


class Conflict(ApiError):
    """409: the name exists, or the state does not allow it (e.g. promoting a failed version)."""


class PayloadTooLarge(ApiError):
    """413: the body or a tensor is over a limit."""


class UnsupportedMediaType(ApiError):
    """415: a content encoding the data plane does not take."""


class InvalidRequest(ApiError):
    """422: the request body is malformed or invalid (a model spec Triton would refuse, a bad name)."""


class RateLimited(ApiError):
    """429: over the tenant's rate or concurrency; `retry_after` says when to try again."""


class HeadersTooLarge(ApiError):
    """431: request line and headers over the limit."""


class InternalError(ApiError):
    """500: an unexpected server error."""


class BadGateway(ApiError):
    """502: Triton answered something that could not be read."""


class ServiceUnavailable(ApiError):
    """503: Triton unavailable or the model still loading; `retry_after` says when to try again."""


class UpstreamTimeout(ApiError):
    """504: Triton did not answer in time."""


class LoadFailed(ControlPlaneError):
    """A version ended `failed` (Triton could not load it; `state_message` says why) or was retired."""

    def __init__(self, *, model: str, version: int, state: str, state_message: str | None):
        reason = state_message or "no reason recorded"
        super().__init__(f"version {version} of model '{model}' is {state}: {reason}")
        self.model = model
        self.version = version
        self.state = state
        self.state_message = state_message


class WaitTimeout(ControlPlaneError):
    """A version was still not ready (nor failed) when the wait's timeout passed."""

    def __init__(self, *, model: str, version: int, state: str, timeout_s: float):
        super().__init__(f"version {version} of model '{model}' still {state} after {timeout_s:g} s")
        self.model = model
        self.version = version
        self.state = state


BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    408: RequestTimeout,
    409: Conflict,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: InvalidRequest,
    429: RateLimited,
    431: HeadersTooLarge,
    500: InternalError,
    502: BadGateway,
    503: ServiceUnavailable,
    504: UpstreamTimeout,
}


BY_KIND: dict[str, type[ApiError]] = {"QuotaExceeded": QuotaExceeded}  # finer than their status's class


def _kind_and_detail(response: httpx.Response) -> tuple[str | None, str]:
    """Read `{"error": Kind, "detail": msg}` (/v1) or `{"error": msg, "kind": Kind}` (/v2, KServe)."""
    try:
        body: Any = response.json()
    except ValueError:
        return None, response.text.strip()[:500] or response.reason_phrase
    if not isinstance(body, dict):
        return None, str(body)[:500]
    if "kind" in body:
        return str(body["kind"]), str(body.get("error", ""))
    if "detail" in body:
        kind = body.get("error")
        return (str(kind) if kind is not None else None), str(body["detail"])
    return None, str(body.get("error", body))


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def error_for(response: httpx.Response) -> ApiError:
    """The exception for an error response (its class chosen by status; the body's kind kept)."""
    kind, detail = _kind_and_detail(response)
    cls = BY_KIND.get(kind or "") or BY_STATUS.get(response.status_code, ApiError)
    return cls(
        detail,
        status_code=response.status_code,
        kind=kind or (cls.__name__ if cls is not ApiError else f"HTTP{response.status_code}"),
        retry_after=_retry_after(response),
        method=response.request.method,
        url=str(response.request.url),
    )
