"""Issue 9: no tenant can see or touch another's things, over every route the app serves.

The cases are generated (see routes.py): every method of every route in the app's route table, the data
plane's HTTP paths and every gRPC method of the KServe v2 service, each called with tenant B's publisher
key, B's consumer key, a revoked key of tenant A (publisher and consumer) and no key. Path and query
parameters, and on the data plane the X-Tenant and X-Model-Alias headers (X-Tenant is for admins only; every
gRPC call by a key also carries A's name in x-tenant), name A's existing resources and, one at a time,
missing ones; A's internal model name (`<tenant>--<model>--v<N>`, which Triton knows) is tried as a model
name too. A control test checks, as admin, that A's values exist and the others do not.

Expected, by route kind:
- every route, no key or a revoked key: 401 (gRPC: UNAUTHENTICATED; UNIMPLEMENTED for a method the
  proxy does not serve at all), except `private` routes (/metrics), which may also be 403 or 404;
- `tenant` routes (A's name in the path) with B's keys: 404 as if A did not exist, or 403 where the key's
  role is too weak for the route whatever the tenant (consumer keys on management routes, admin-only
  routes such as key management);
- `inference` routes with B's keys: 404 (the tenant comes from the key, so A's model is unknown), or 403;
- `global` routes (no tenant in the path) with B's keys: 403 for anything that changes state; a GET may
  answer 2xx only with nothing of A's in it (e.g. the tenant listing, filtered to B);
- `private` routes with B's keys: never 2xx;
- gRPC with B's keys: an error status, or OK only with nothing of A's in it (ModelReady's ready=false,
  ServerMetadata);
- always: no 5xx, and the same status and body (modulo the names the caller sent) for A's existing and the
  missing resources, so nothing can be learnt by probing; nothing of A's that the caller did not name.

Afterwards A's and B's state (read as admin: tenants, keys, models, versions, aliases, history, traffic, and
what Triton has loaded) is what it was before. The audit trail is not compared: denied calls are audited.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import service_pb2 as pb

from control_plane.app import create_app
from control_plane.settings import Settings
from tests.fixtures_triton import RunningTriton
from tests.security.routes import (
    DATA_PLANE_ROUTES,
    MUTATING,
    RESOURCE_HEADERS,
    GrpcMethod,
    HttpRoute,
    app_routes,
    grpc_methods,
)
from tests.security.snapshot import tenant_state, tenants_named, triton_models
from tests.support.api import Api
from tests.support.deploy import deploy_onnx
from tests.support.served import serve, stack_settings

RUN = uuid.uuid4().hex[:8]
TENANT_A, TENANT_B, MODEL_A = f"iso-a-{RUN}", f"iso-b-{RUN}", f"secret-{RUN}"
X4 = [0.5, -1.0, 2.0, 0.25]
CREDENTIALS = ("b_publisher", "b_consumer", "a_revoked_publisher", "a_revoked_consumer", "no_key")
B_KEYS = frozenset({"b_publisher", "b_consumer"})

MANAGEMENT = app_routes(create_app(Settings(admin_token="route-table-only")))
HTTP_ROUTES = [*MANAGEMENT, *DATA_PLANE_ROUTES]
GRPC_METHODS = grpc_methods()
HTTP_CASES = [(route, credential) for route in HTTP_ROUTES for credential in CREDENTIALS]
GRPC_CASES = [(method, credential) for method in GRPC_METHODS for credential in CREDENTIALS]

# A valid request body per route name, so that a refusal is about who asks, not about the body.
BODIES: dict[str, Any] = {
    "create_tenant": {"json": {"name": f"iso-new-{RUN}"}},
    "update_tenant": {"json": {"quota": {"max_models": 1}}},
    "create_key": {"json": {"role": "publisher"}},
    "create_admin_key": {"json": {"description": "isolation"}},
    "create_model": {"json": {"name": f"new-{RUN}", "format": "onnx"}},
    "promote": {"json": {"version": 2}},
    "update_model": {"json": {"instance_group": {"count": 1}}},
    "redeploy_version": {},
    "load_version": {},
    "rollback": {"json": {}},
    "set_traffic": {"json": {"routes": [{"version": 1, "weight": 50}, {"version": 2, "weight": 50}]}},
    "create_instance": {"json": {"name": f"iso-{RUN}", "http_url": "http://127.0.0.1:9"}},
    "update_instance": {"json": {"http_url": "http://127.0.0.1:9"}},
    "set_placement": {"json": {"replicas": 2}},
    "sweep_artifacts": {"json": {"dry_run": True}},
    "infer": {"json": {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": X4}]}},
}
PREDICT_BODY = {"json": {"inputs": {"x": [X4]}}}
# Every gRPC call by a tenant key also claims tenant A and A's alias in its metadata (only admins may).
SMUGGLED = (("x-tenant", TENANT_A), ("x-model-alias", "production"))


@dataclass
class World:
    """Tenants A (a model with two versions, aliases, traffic, keys) and B (keys), and who calls."""

    api: Api
    triton_url: str
    artifact: bytes
    existing: dict[str, Any]
    missing: dict[str, Any]
    keys: dict[str, str | None]
    a_identifiers: tuple[str, ...]
    internal_model: str
    channel: grpc.Channel
    before: dict[str, Any] = field(default_factory=dict)
    unimplemented: dict[str, bool] = field(default_factory=dict)

    def state(self) -> dict[str, Any]:
        """Both tenants' state, the run's tenant names, and A's models as Triton has them."""
        return {
            "a": tenant_state(self.api, TENANT_A),
            "b": tenant_state(self.api, TENANT_B, key_usage=False),  # B's keys are used by the test
            "tenants": tenants_named(self.api, RUN),
            "triton": triton_models(self.triton_url, TENANT_A),
        }


@pytest.fixture(scope="module")
def world(
    database_url: str, s3_endpoint: str, triton: RunningTriton, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    """An app on the session's Triton with tenants A and B set up as the module docstring says."""
    root = tmp_path_factory.mktemp("isolation")
    assert triton.repository is not None
    settings = stack_settings(
        database_url=database_url,
        s3_endpoint=s3_endpoint,
        triton_http_url=triton.http_url,
        triton_grpc_url=triton.process.grpc_url,
        repository=triton.repository,
    )
    with serve(settings) as api, grpc.insecure_channel(f"127.0.0.1:{settings.grpc_port}") as channel:
        built = _build_world(api, root, triton.http_url, channel)
        built.before = built.state()
        yield built


def _build_world(api: Api, root: Path, triton_url: str, channel: grpc.Channel) -> World:
    api.tenant(TENANT_A)
    api.tenant(TENANT_B)
    v1 = deploy_onnx(api, root, tenant=TENANT_A, model=MODEL_A, seed=1)
    v2 = deploy_onnx(api, root, tenant=TENANT_A, model=MODEL_A, seed=2, alias="staging")
    traffic = {"routes": [{"version": 1, "weight": 90}, {"version": 2, "weight": 10}]}
    moved = api.client.put(
        f"/v1/tenants/{TENANT_A}/models/{MODEL_A}/aliases/staging/traffic",
        json=traffic,
        headers=api.headers(),
    )
    assert moved.status_code == 200, moved.text
    inferred = api.client.post(  # A has traffic, so that its model shows up wherever traffic is counted
        f"/v2/models/{MODEL_A}/infer", json=BODIES["infer"]["json"], headers=api.headers(v1.consumer_key)
    )
    assert inferred.status_code == 200, inferred.text
    revoked = {role: api.key(TENANT_A, role) for role in ("publisher", "consumer")}
    keys = api.client.get(f"/v1/tenants/{TENANT_A}/keys", headers=api.headers()).json()
    by_prefix = {k["prefix"]: k["id"] for k in keys}
    for secret in revoked.values():
        key_id = by_prefix[secret.split("_")[1]]
        gone = api.client.delete(f"/v1/tenants/{TENANT_A}/keys/{key_id}", headers=api.headers())
        assert gone.status_code == 200, gone.text
    return World(
        api=api,
        triton_url=triton_url,
        artifact=v1.artifact.read_bytes(),
        existing={
            "tenant": TENANT_A,
            "model": MODEL_A,
            "number": 1,
            "alias": "production",
            "key_id": by_prefix[v1.consumer_key.split("_")[1]],
            "version": 1,
            "instance": triton_url.split("://", 1)[1],
        },
        missing={
            "tenant": f"iso-ghost-{RUN}",
            "model": f"ghost-{RUN}",
            "number": 987654,
            "alias": f"ghost-{RUN}",
            "key_id": 987654321,
            "version": 987654,
            "instance": f"ghost-{RUN}",
        },
        keys={
            "b_publisher": api.key(TENANT_B, "publisher"),
            "b_consumer": api.key(TENANT_B, "consumer"),
            "a_revoked_publisher": revoked["publisher"],
            "a_revoked_consumer": revoked["consumer"],
            "no_key": None,
        },
        a_identifiers=(TENANT_A, MODEL_A, v1.triton_name, v2.triton_name, *by_prefix),
        internal_model=v1.triton_name,
        channel=channel,
    )


# --- calling and judging --------------------------------------------------------------------------


def variants(world: World, names: tuple[str, ...]) -> list[tuple[str, dict[str, Any]]]:
    """A's existing resources, then each parameter in turn replaced by a missing one; A's internal
    (Triton) model name is tried too, as it must be as unknown as a missing one."""
    found = [("existing", dict(world.existing))]
    found += [(f"missing {name}", {**world.existing, name: world.missing[name]}) for name in names]
    if "model" in names:
        found.append(("internal model name", {**world.existing, "model": world.internal_model}))
    return found


def normalized(world: World, text: str, names: tuple[str, ...]) -> str:
    """`text` with the values the caller sent (A's, missing, internal) replaced by `<param>`."""
    pairs = [(str(v), name) for name in names for v in (world.existing[name], world.missing[name])]
    if "model" in names:
        pairs.append((world.internal_model, "model"))
    for value, name in sorted(pairs, key=lambda pair: -len(pair[0])):
        text = re.sub(rf"(?<![\w.-]){re.escape(value)}(?![\w.-])", f"<{name}>", text)
    return text


def leaked(world: World, text: str) -> list[str]:
    """A's identifiers in an answer (after the caller's own names were normalized away)."""
    return [name for name in world.a_identifiers if name in text]


def http_body(world: World, route: HttpRoute) -> dict[str, Any]:
    """Keyword arguments for httpx carrying a valid body for the route (none for GET/DELETE)."""
    if route.method not in MUTATING - {"DELETE"}:
        return {}
    if route.name == "upload_version":
        return {"files": {"file": ("model.onnx", world.artifact, "application/octet-stream")}}
    if route.path.startswith("/v1/predict/"):
        return PREDICT_BODY
    assert route.name in BODIES, f"no example body for {route.id} ({route.name}): add one to BODIES"
    body: dict[str, Any] = BODIES[route.name]
    return body


def call_http(world: World, route: HttpRoute, values: dict[str, Any], credential: str) -> tuple[int, str]:
    """One HTTP call as `credential`; (status, body normalized)."""
    path = route.path.format(**{name: values[name] for name in route.params})
    key = world.keys[credential]
    headers = {RESOURCE_HEADERS[name]: str(values[name]) for name in route.headers}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    response = world.api.client.request(
        route.method,
        path,
        params={name: values[name] for name in route.query},
        headers=headers,
        **http_body(world, route),
    )
    return response.status_code, normalized(world, response.text, route.resources)


def expected_http(route: HttpRoute, credential: str, status: int, text: str, world: World) -> str | None:
    """Why this answer breaks the contract of the module docstring (None: it does not)."""
    if status >= 500:
        return f"{status} (server error)"
    if credential not in B_KEYS:
        allowed = {401, 403, 404} if route.kind == "private" else {401}
        return None if status in allowed else f"{status}, expected {sorted(allowed)}"
    if route.kind in ("tenant", "inference"):
        return None if status in (403, 404) else f"{status}, expected 403 or 404"
    if route.kind == "private":
        return None if status in (401, 403, 404) else f"{status}: B may not read it"
    if route.method in MUTATING:
        return None if status == 403 else f"{status}, expected 403"
    return None if status == 403 or 200 <= status < 300 else f"{status}, expected 403 or 2xx"


@pytest.mark.parametrize(("route", "credential"), HTTP_CASES, ids=[f"{r.id} as {c}" for r, c in HTTP_CASES])
def test_http_route_refuses_other_tenants_and_revoked_keys(
    world: World, route: HttpRoute, credential: str
) -> None:
    answers = {
        label: call_http(world, route, values, credential)
        for label, values in variants(world, route.resources)
    }
    _judge(world, answers, lambda status, text: expected_http(route, credential, status, text, world))


def _judge(
    world: World, answers: dict[str, tuple[Any, str]], why_of: Callable[[Any, str], str | None]
) -> None:
    """Every answer as expected, none revealing A's things, and all alike (existing or not)."""
    problems = []
    for label, (status, text) in answers.items():
        why = why_of(status, text)
        if why:
            problems.append(f"{label}: {why}: {text[:300]}")
        if leaked(world, text):
            problems.append(f"{label}: answer reveals {leaked(world, text)}: {text[:300]}")
    if len(set(answers.values())) > 1:
        problems.append(f"answers differ between A's and missing resources: {answers}")
    assert not problems, "\n".join(problems)


# --- gRPC -----------------------------------------------------------------------------------------


def grpc_request(method: GrpcMethod, values: dict[str, Any], version: str) -> bytes:
    """The method's request naming `values["model"]` (and `version`) where it has such fields."""
    if method.request is pb.ModelInferRequest:
        request = pb.ModelInferRequest(model_name=values["model"], model_version=version)
        request.inputs.add(name="x", datatype="FP32", shape=[1, 4])
        request.raw_input_contents.append(np.asarray([X4], np.float32).tobytes())
        data: bytes = request.SerializeToString()
        return data
    message = method.request()
    if method.model_field:
        setattr(message, method.model_field, values["model"])
    if method.version_field:
        setattr(message, method.version_field, version)
    data = message.SerializeToString()
    return data


def grpc_variants(world: World, method: GrpcMethod) -> list[tuple[str, dict[str, Any], str]]:
    """(label, values, version) to try: A's model, a missing model, and A's / a missing version."""
    if method.model_field is None:
        return [("no model", dict(world.existing), "")]
    found = [(label, values, "") for label, values in variants(world, ("model",))]
    if method.version_field:
        found += [
            ("version 1", dict(world.existing), "1"),
            ("missing version", dict(world.existing), "987654"),
        ]
    return found


def call_grpc(
    world: World, method: GrpcMethod, data: bytes, key: str | None, extra: tuple = ()
) -> tuple[str, str]:
    """(code name, details or the response as text) of one raw call."""
    metadata = ((("authorization", f"Bearer {key}"),) if key else ()) + (extra or SMUGGLED)
    try:
        if method.streaming:
            stream = world.channel.stream_stream(method.path)(iter([data]), metadata=metadata, timeout=10)
            responses = [method.response.FromString(r) for r in stream]
            return "OK", " | ".join(text_format.MessageToString(r, as_one_line=True) for r in responses)
        response = world.channel.unary_unary(method.path)(data, metadata=metadata, timeout=10)
    except grpc.RpcError as exc:
        return exc.code().name, exc.details() or ""  # type: ignore[attr-defined]
    return "OK", text_format.MessageToString(method.response.FromString(response), as_one_line=True)


def unimplemented(world: World, method: GrpcMethod) -> bool:
    """Whether the proxy serves the method at all (asked as admin, about a missing model)."""
    if method.name not in world.unimplemented:
        data = grpc_request(method, world.missing, "")
        admin = world.api.admin_token
        code, _ = call_grpc(world, method, data, admin, (("x-tenant", TENANT_B),))
        world.unimplemented[method.name] = code == "UNIMPLEMENTED"
    return world.unimplemented[method.name]


def expected_grpc(world: World, method: GrpcMethod, credential: str, code: str, text: str) -> str | None:
    """Why this gRPC answer breaks the contract (None: it does not)."""
    if code in ("INTERNAL", "UNKNOWN", "DEADLINE_EXCEEDED"):
        return f"{code} (server error or hang)"
    if credential not in B_KEYS:
        allowed = (
            {"UNAUTHENTICATED", "UNIMPLEMENTED"} if unimplemented(world, method) else {"UNAUTHENTICATED"}
        )
        return None if code in allowed else f"{code}, expected {sorted(allowed)}"
    return None  # B: any refusal, or OK without A's data (checked by the caller)


@pytest.mark.parametrize(
    ("method", "credential"), GRPC_CASES, ids=[f"{m.name} as {c}" for m, c in GRPC_CASES]
)
def test_grpc_method_refuses_other_tenants_and_revoked_keys(
    world: World, method: GrpcMethod, credential: str
) -> None:
    answers = {}
    for label, values, version in grpc_variants(world, method):
        code, text = call_grpc(world, method, grpc_request(method, values, version), world.keys[credential])
        answers[label] = (code, normalized(world, text, ("model", "version")))
    _judge(world, answers, lambda code, text: expected_grpc(world, method, credential, code, text))


# --- the generated surface, and what must not have changed ----------------------------------------


def test_the_generated_surface_covers_the_whole_app() -> None:
    names = {route.name for route in MANAGEMENT}
    assert len(MANAGEMENT) >= 20, MANAGEMENT
    assert {"create_tenant", "create_key", "revoke_key", "upload_version", "promote", "set_traffic"} <= names
    assert {route.kind for route in HTTP_ROUTES} == {"tenant", "global", "inference", "private"}
    assert {"ModelInfer", "ModelMetadata", "ModelReady", "ModelConfig"} <= {m.name for m in GRPC_METHODS}
    assert len(HTTP_CASES) + len(GRPC_CASES) >= 200
    missing_bodies = [
        route.id
        for route in MANAGEMENT
        if route.method in MUTATING - {"DELETE"}
        and route.name not in BODIES
        and route.name != "upload_version"
    ]
    assert not missing_bodies, f"add an example body to BODIES for {missing_bodies}"


READABLE = [r for r in HTTP_ROUTES if r.method == "GET" and r.kind in ("tenant", "inference")]


@pytest.mark.parametrize("route", READABLE, ids=[r.id for r in READABLE])
def test_the_probed_resources_exist_for_an_admin(world: World, route: HttpRoute) -> None:
    """Control: A's values name real things (admin: 200), the missing and internal ones do not (404)."""
    for label, values in variants(world, route.resources):
        path = route.path.format(**{name: values[name] for name in route.params})
        headers = {**world.api.headers(), "X-Tenant": TENANT_A}
        headers |= {RESOURCE_HEADERS[name]: str(values[name]) for name in route.headers}
        response = world.api.client.get(path, params={n: values[n] for n in route.query}, headers=headers)
        expected = 200 if label == "existing" else 404
        assert response.status_code == expected, (label, path, response.text)


def test_nothing_changed_for_either_tenant(world: World) -> None:
    after = world.state()
    for part in ("tenants", "triton", "b", "a"):
        assert after[part] == world.before[part], part
