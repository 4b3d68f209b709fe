"""OpenAPI paths of the inference endpoints, which the data plane serves in front of FastAPI.

`/v1/predict`, `/v2/...` and `/metrics` are answered by `dataplane/http.py` and the fast path, so they
are no FastAPI routes; this static description is merged into the generated document instead.
"""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from control_plane.openapi.errors import (
    BEARER,
    ERROR_REF,
    EXAMPLES,
    RETRY_AFTER,
    error_response,
    management_error,
)
from control_plane.openapi.models import MODELS

V2_ERROR_REF = {"$ref": "#/components/schemas/V2Error"}
INFER_ERRORS = (400, 401, 404, 408, 413, 415, 429, 431, 502, 503, 504)
METADATA_ERRORS = (401, 404, 502, 503, 504)
AUTH: list[dict[str, list[str]]] = [{BEARER: []}]

MODEL = {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}, "example": "mlp"}
VERSION = {
    "name": "version",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 1},
    "example": 3,
}
ROUTING_HEADERS = [
    {
        "name": "X-Model-Alias",
        "in": "header",
        "schema": {"type": "string"},
        "description": "the alias to call (default `production`)",
    },
    {
        "name": "X-Routing-Key",
        "in": "header",
        "schema": {"type": "string"},
        "description": "makes a canary split sticky for this key",
    },
    {
        "name": "X-Tenant",
        "in": "header",
        "schema": {"type": "string"},
        "description": "the tenant an admin key infers for",
    },
]
# Triton's model configuration as JSON (what `config.pbtxt` says), under the client's model name.
CONFIG_EXAMPLE = {
    "name": "mlp",
    "platform": "onnxruntime_onnx",
    "max_batch_size": 8,
    "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [4]}],
    "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [3]}],
    "dynamic_batching": {"max_queue_delay_microseconds": 100},
    "instance_group": [{"count": 1, "kind": "KIND_CPU"}],
}
BINARY_HEADER = {
    "name": "Inference-Header-Content-Length",
    "in": "header",
    "schema": {"type": "integer", "minimum": 0},
    "description": "binary-tensor extension: length of the JSON header; raw tensor bytes follow it",
}


def _json(ref: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}


def _ok(description: str, content: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, **({"content": content} if content is not None else {})}


def _v2_errors(statuses: tuple[int, ...]) -> dict[str, Any]:
    return {
        str(s): error_response(s, V2_ERROR_REF, {"error": EXAMPLES[s][2], "kind": EXAMPLES[s][1]})
        for s in statuses
    }


def _operation(summary: str, ok: dict[str, Any], errors: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"tags": ["inference"], "summary": summary, "responses": {"200": ok, **errors}, **extra}


def _model_paths(prefix: str, parameters: list[dict[str, Any]]) -> dict[str, Any]:
    """Metadata, ready, config and infer under one model (or model version) path."""
    common = {"parameters": [*parameters, *ROUTING_HEADERS], "security": AUTH}
    metadata_errors = _v2_errors(METADATA_ERRORS)
    config = {"application/json": {"schema": {"type": "object"}, "example": CONFIG_EXAMPLE}}
    infer_body = {
        "required": True,
        "content": {
            **_json("InferRequest"),
            # binary-tensor extension: the JSON header, then the tensors' raw bytes
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
    infer_ok = _ok(
        "the outputs (JSON, or a JSON header and raw bytes when binary outputs were asked for)",
        {**_json("InferResponse"), "application/octet-stream": {"schema": {"type": "string"}}},
    )
    infer = _operation(
        "KServe v2 inference (JSON or binary-tensor extension)",
        infer_ok,
        _v2_errors(INFER_ERRORS),
        requestBody=infer_body,
        parameters=[*common["parameters"], BINARY_HEADER],
        security=AUTH,
    )
    return {
        prefix: {
            "get": _operation(
                "Model metadata", _ok("metadata", _json("ModelMetadata")), metadata_errors, **common
            )
        },
        f"{prefix}/ready": {
            "get": _operation("Model readiness", _ok("ready (empty body)"), metadata_errors, **common)
        },
        f"{prefix}/config": {
            "get": _operation(
                "Model configuration", _ok("Triton's configuration", config), metadata_errors, **common
            )
        },
        f"{prefix}/infer": {"post": infer},
    }


def _other_paths() -> dict[str, Any]:
    not_ready = {"description": "not ready (empty body)", "headers": RETRY_AFTER}
    metrics = {"text/plain": {"schema": {"type": "string"}}}
    return {
        "/v1/predict/{model}": {
            "post": _operation(
                "Simple JSON inference: inputs by name as nested lists",
                _ok("outputs by name", _json("PredictResponse")),
                {str(s): management_error(s) for s in INFER_ERRORS},
                parameters=[MODEL, *ROUTING_HEADERS],
                security=AUTH,
                requestBody={"required": True, "content": _json("PredictRequest")},
            )
        },
        "/v2": {
            "get": _operation(
                "Server metadata (any valid key)",
                _ok("metadata", _json("ServerMetadata")),
                _v2_errors((401, 503)),
                security=AUTH,
            )
        },
        "/v2/health/live": {"get": _operation("Liveness", _ok("the process serves requests"), {})},
        "/v2/health/ready": {
            "get": _operation("Readiness: database and a Triton answer", _ok("ready"), {"503": not_ready})
        },
        "/metrics": {
            "get": _operation(
                "Prometheus metrics",
                _ok("Prometheus text exposition format", metrics),
                {str(s): management_error(s) for s in (401, 403)},
                security=AUTH,
            )
        },
    }


def inference_paths() -> dict[str, Any]:
    """Every inference path item, keyed by path."""
    return {
        **_other_paths(),
        **_model_paths("/v2/models/{model}", [MODEL]),
        **_model_paths("/v2/models/{model}/versions/{version}", [MODEL, VERSION]),
    }


def add_inference_paths(schema: dict[str, Any]) -> None:
    """Merge the inference paths and their body schemas into a generated OpenAPI document."""
    _, defs = models_json_schema(
        [(model, "serialization") for model in MODELS], ref_template="#/components/schemas/{model}"
    )
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    clashes = set(defs["$defs"]) & set(schemas)
    if clashes:
        raise RuntimeError(f"inference schema names clash with the API's: {sorted(clashes)}")
    schemas.update(defs["$defs"])
    schema["paths"].update(inference_paths())
    assert ERROR_REF["$ref"].rsplit("/", 1)[1] in schemas
