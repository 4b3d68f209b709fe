"""The OpenAPI document: valid, every error answer documented with its real body, inference paths included."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from openapi_spec_validator import validate

from control_plane.app import create_app
from control_plane.settings import Settings
from control_plane.timestamps import EXAMPLE
from tests.support.api import Api

INFERENCE = {
    ("post", "/v1/predict/{model}"),
    ("get", "/v2"),
    ("get", "/v2/health/live"),
    ("get", "/v2/health/ready"),
    ("get", "/metrics"),
    *(
        (method, prefix + suffix)
        for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}")
        for method, suffix in (("get", ""), ("get", "/ready"), ("get", "/config"), ("post", "/infer"))
    ),
}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    """The app's OpenAPI document (no lifespan needed to build it)."""
    return create_app(Settings(admin_token="x")).openapi()


def _operations(document: dict[str, Any], prefix: str) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in document["paths"].items()
        if path.startswith(prefix)
        for method, operation in item.items()
    ]


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """A response schema with the document's components, for jsonschema."""
    return {**schema, "components": document["components"]}


def test_the_document_is_valid_openapi(document: dict[str, Any]) -> None:
    validate(document)
    assert "HTTPValidationError" not in str(document)


def _date_times(schema: Any, where: str) -> list[tuple[str, Any]]:
    """Every (location, schema) of a `format: date-time` string inside a JSON schema."""
    found: list[tuple[str, Any]] = []
    if isinstance(schema, dict):
        if schema.get("format") == "date-time":
            found.append((where, schema))
        for key, value in schema.items():
            found += _date_times(value, f"{where}.{key}")
    elif isinstance(schema, list):
        for i, value in enumerate(schema):
            found += _date_times(value, f"{where}[{i}]")
    return found


def test_every_response_timestamp_is_the_utc_type(document: dict[str, Any]) -> None:
    """A response field typed plain `datetime` would come out naive on SQLite: use timestamps.UtcDateTime."""
    fields = _date_times(document["components"]["schemas"], "components")
    assert len(fields) >= 10
    plain = [where for where, schema in fields if schema.get("examples") != [EXAMPLE]]
    assert plain == [], f"declare these as control_plane.timestamps.UtcDateTime: {plain}"


def test_management_errors_are_documented_with_the_error_body(document: dict[str, Any]) -> None:
    management = [op for op in _operations(document, "/v1/") if op[1] != "/v1/predict/{model}"]
    assert len(management) >= 20
    for method, path, operation in management:
        responses = operation["responses"]
        expected = {"401", "403"} | ({"404"} if "{" in path else set())
        if "requestBody" in operation:
            expected |= {"413", "422"}
        if method != "get":
            expected |= {"409", "503"}
        assert expected <= set(responses), (method, path, sorted(responses))
        for status, response in responses.items():
            if int(status) >= 400:
                body = response["content"]["application/json"]
                assert body["schema"] == {"$ref": "#/components/schemas/Error"}, (method, path, status)
                jsonschema.validate(body["example"], _resolve(document, body["schema"]))
        if "503" in responses:
            assert "Retry-After" in responses["503"]["headers"]
        assert operation["security"] == [{"bearerAuth": []}]
    error = document["components"]["schemas"]["Error"]
    assert error["properties"]["detail"]["type"] == "string"
    assert set(error["required"]) == {"error", "detail"}


def test_inference_endpoints_are_documented_with_examples(document: dict[str, Any]) -> None:
    documented = {(m, p) for m, p, _ in _operations(document, "/")}
    assert documented >= INFERENCE
    schemas = document["components"]["schemas"]
    for name in ("PredictRequest", "PredictResponse", "InferRequest", "InferResponse", "ModelMetadata"):
        assert "example" in schemas[name], name
        jsonschema.validate(
            schemas[name]["example"], _resolve(document, {"$ref": f"#/components/schemas/{name}"})
        )
    for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
        config = document["paths"][prefix + "/config"]["get"]["responses"]["200"]["content"][
            "application/json"
        ]
        assert config["example"]["input"][0]["name"] == "x", prefix
    infer = document["paths"]["/v2/models/{model}/infer"]["post"]
    assert set(infer["requestBody"]["content"]) == {"application/json", "application/octet-stream"}
    assert "Inference-Header-Content-Length" in {p["name"] for p in infer["parameters"]}
    assert infer["responses"]["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/V2Error"
    }
    assert infer["responses"]["400"]["content"]["application/json"]["example"]["kind"] == "BadRequest"
    predict = document["paths"]["/v1/predict/{model}"]["post"]
    assert predict["responses"]["404"]["content"]["application/json"]["schema"]["$ref"].endswith("/Error")
    jsonschema.validate(
        schemas["InferRequest"]["example"], _resolve(document, {"$ref": "#/components/schemas/InferRequest"})
    )


def test_real_error_answers_match_the_documented_body(api: Api) -> None:
    document = api.client.get("/openapi.json").json()
    assert "/v2/models/{model}/infer" in document["paths"]
    error = _resolve(document, {"$ref": "#/components/schemas/Error"})
    v2_error = _resolve(document, {"$ref": "#/components/schemas/V2Error"})
    answers = {
        401: api.client.get("/v1/tenants"),
        404: api.client.get("/v1/tenants/nobody-here", headers=api.headers()),
        409: api.client.post("/v1/tenants", json={"name": api.tenant()}, headers=api.headers()),
        422: api.client.post("/v1/tenants", json={"name": "Not Valid", "x": 1}, headers=api.headers()),
    }
    for status, response in answers.items():
        assert response.status_code == status, response.text
        jsonschema.validate(response.json(), error)
    assert isinstance(answers[422].json()["detail"], str)
    missing = api.client.post("/v2/models/nothing/infer", json={"inputs": []}, headers=api.headers())
    assert missing.status_code in (401, 404), missing.text
    jsonschema.validate(missing.json(), v2_error)
