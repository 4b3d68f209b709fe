"""The app's OpenAPI document: FastAPI's, plus every route's error answers and the inference endpoints."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from control_plane.openapi.errors import document_management_errors
from control_plane.openapi.inference import add_inference_paths

API_DESCRIPTION = """\
Management API (`/v1`, JSON; errors `{"error": "<Kind>", "detail": "<message>"}`) and inference:
`/v1/predict/{model}` (errors as the management API), KServe v2 HTTP under `/v2` (errors as KServe:
`{"error": "<message>", "kind": "<Kind>"}`) and Prometheus `/metrics`. Timestamps are ISO 8601 in UTC
with an explicit offset (`2026-11-21T10:04:05.123456+00:00`). 429 and 503 carry `Retry-After`.
"""


def install_openapi(app: FastAPI) -> None:
    """Make `app.openapi()` return the completed document (built once, then cached like FastAPI's)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            schema["info"]["description"] = API_DESCRIPTION
            document_management_errors(schema)
            add_inference_paths(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
