"""Error answers of the management routes, derived once from each operation rather than written per endpoint.

Rules (what `control_plane.errors` and the middleware really answer):
- every `/v1` route authenticates: 401 (no, malformed, unknown or revoked key), 403 (role too weak);
- a path parameter: 404 (unknown, or another tenant's, thing);
- a request body: 413 (over the size limit) and 422 (malformed body); any parameter: 422;
- a write (POST, PUT, DELETE): 409 (conflicts with the registry's state) and 503 with Retry-After
  (Triton, the artifact store or the model repository unavailable).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

ERROR_REF = {"$ref": "#/components/schemas/Error"}
BEARER = "bearerAuth"
RETRY_AFTER = {
    "Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}
}
EXAMPLES: dict[int, tuple[str, str, str]] = {
    400: ("bad request", "BadRequest", "input 'x' has shape [2, 5]; the model expects [-1, 4]"),
    401: ("no, malformed, unknown or revoked key", "Unauthorized", "invalid or revoked API key"),
    403: ("the key's role may not do this", "Forbidden", "admin role required"),
    404: ("unknown (or another tenant's) resource", "NotFound", "model 'mlp' not found in tenant 'acme'"),
    409: ("conflicts with the registry's current state", "Conflict", "tenant 'acme' already exists"),
    413: ("request body over the size limit", "PayloadTooLarge", "request body over the limit of 64 bytes"),
    422: ("malformed request", "InvalidRequest", "body.name: String should match pattern"),
    429: ("tenant rate or concurrency limit", "RateLimited", "rate limit of 100 requests/s exceeded"),
    408: ("headers or body did not arrive in time", "RequestTimeout", "the request body stalled"),
    415: ("unsupported Content-Encoding", "UnsupportedMediaType", "Content-Encoding 'br' is not supported"),
    431: ("headers too large", "RequestHeaderFieldsTooLarge", "request headers are over the limit"),
    502: ("the model failed, or its answer was unreadable", "BadGateway", "the model failed: ..."),
    503: ("Triton or storage unavailable, or the model is loading", "ServiceUnavailable", "model loading"),
    504: ("Triton did not answer in time", "UpstreamTimeout", "Triton did not answer within 60 s"),
}
WRITES = {"POST", "PUT", "PATCH", "DELETE"}


class Error(BaseModel):
    """The error body of the management API and /v1/predict."""

    model_config = ConfigDict(json_schema_extra={"additionalProperties": False})

    error: str = Field(description="the kind of error", examples=["NotFound"])
    detail: str = Field(description="what went wrong, for a person", examples=["model 'mlp' not found"])


def error_response(status: int, ref: dict[str, str], example: dict[str, str]) -> dict[str, Any]:
    """An OpenAPI response object for one error status with the given body schema and example."""
    response: dict[str, Any] = {
        "description": EXAMPLES[status][0],
        "content": {"application/json": {"schema": ref, "example": example}},
    }
    if status in (429, 503):
        response["headers"] = RETRY_AFTER
    return response


def management_error(status: int) -> dict[str, Any]:
    """The response object of one error status on a management route."""
    _, kind, detail = EXAMPLES[status]
    return error_response(status, ERROR_REF, {"error": kind, "detail": detail})


def operation_errors(path: str, method: str, operation: dict[str, Any]) -> list[int]:
    """The error statuses one management operation can answer."""
    statuses = {401, 403}
    if "{" in path:
        statuses.add(404)
    if "requestBody" in operation:
        statuses |= {413, 422}
    if operation.get("parameters"):
        statuses.add(422)
    if method.upper() in WRITES:
        statuses |= {409, 503}
    return sorted(statuses)


def document_management_errors(schema: dict[str, Any]) -> None:
    """Add each /v1 operation's error answers (replacing FastAPI's 422 array body) and its bearer auth."""
    for path, path_item in schema["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, operation in path_item.items():
            for status in operation_errors(path, method, operation):
                operation["responses"][str(status)] = management_error(status)
            operation["security"] = [{BEARER: []}]
    components = schema.setdefault("components", {})
    components.setdefault("securitySchemes", {})[BEARER] = {
        "type": "http",
        "scheme": "bearer",
        "description": "an API key, or the bootstrap admin token (CP_ADMIN_TOKEN)",
    }
    schemas = components.setdefault("schemas", {})
    schemas["Error"] = Error.model_json_schema(ref_template="#/components/schemas/{model}")
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
