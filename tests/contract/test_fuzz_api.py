"""Property-based fuzzing of the whole OpenAPI, inference paths included, against a served app.

schemathesis generates requests from `/openapi.json` (valid and invalid ones) for every operation and
sends them to a real uvicorn with the fast path, a real database, S3 server and Triton, with a deployed
ONNX model so the inference paths have something to hit. Each answer must: not be a 5xx; conform to
its documented status, content type and schema; carry an error body of the documented shape
(`{"error", "detail"}` on /v1 and /metrics, KServe's `{"error", "kind"}` on /v2). Every distinct failure
is collected and reported at the end, as a curl command and the answer.

Bounded for CI: `CP_FUZZ_EXAMPLES` examples per operation (default 25); the
examples are derandomized, so a run is reproducible.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import FailureGroup

from tests.support.api import Api
from tests.support.deploy import Deployed, deploy_onnx

EXAMPLES = int(os.environ.get("CP_FUZZ_EXAMPLES", "25"))
DERANDOMIZE = os.environ.get("CP_FUZZ_RANDOM") != "1"  # CP_FUZZ_RANDOM=1 explores new examples each run
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
BUDGET_S = 110.0  # the whole test, deployment included, must fit in CI's 2 minutes


@dataclass(frozen=True)
class Finding:
    """One distinct failure: what was sent, what came back, and why it breaks the contract."""

    operation: str
    problem: str
    request: str
    status: int
    body: str


def error_shape_problem(path: str, status: int, body: bytes) -> str | None:
    """Why an error answer's body is not of the documented shape (None when it is, or no error)."""
    if status < 400:
        return None
    if path == "/v2/health/ready" and status == 503 and not body:
        return None  # documented: readiness failures have no body
    expected = ("error", "kind") if path.startswith("/v2") else ("error", "detail")
    try:
        document = json.loads(body)
    except ValueError:
        return f"error body is not JSON: {body[:200]!r}"
    if not isinstance(document, dict) or sorted(document) != sorted(expected):
        return f"error body {document!r} does not have exactly the keys {expected}"
    if not all(isinstance(document[key], str) for key in expected):
        return f"error body {document!r}: {expected} must be strings"
    return None


def _order(operation: Any) -> tuple[int, str]:
    """Reads and inference first, then writes, deletes last (they may revoke keys or retire versions)."""
    method = operation.method.upper()
    rank = {"GET": 0, "POST": 1, "PUT": 1, "DELETE": 2}.get(method, 1)
    return rank, operation.label


class Fuzzer:
    """Runs the examples of one operation and collects findings."""

    def __init__(self, api: Api, deployed: Deployed):
        self.base_url = str(api.client.base_url).rstrip("/")
        self.deployed = deployed
        self.tokens: dict[str, str | None] = {
            "admin": api.admin_token,
            "publisher": deployed.publisher_key,
            "consumer": deployed.consumer_key,
            "none": None,
        }
        self.known: dict[str, Any] = {
            "tenant": deployed.tenant,
            "model": deployed.model,
            "alias": "production",
            "version": deployed.version,
            "number": deployed.version,
        }
        self.findings: dict[tuple[str, str], Finding] = {}
        self.statuses: Counter[tuple[str, int]] = Counter()

    def fuzz(self, operation: Any) -> None:
        """Positive and negative examples of one operation, by various callers, on known or random names."""
        inference = operation.path.startswith(("/v2", "/v1/predict"))
        callers = ["consumer", "consumer", "publisher", "admin", "none"] if inference else ["admin"] * 3
        callers += [] if inference else ["publisher", "consumer", "none"]
        strategies = [operation.as_strategy(mode) for mode in schemathesis.GenerationMode]

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=DERANDOMIZE,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(
            case=st.one_of(strategies),
            caller=st.sampled_from(callers),
            known=st.sampled_from([True, True, False]),
        )
        def run(case: schemathesis.Case, caller: str, known: bool) -> None:
            self.send(operation, case, caller=caller, known=known)

        run()

    def aim(self, case: schemathesis.Case) -> None:
        """Point a generated request at the deployed model: its path names, alias and input name."""
        for name in case.path_parameters or {}:
            if name in self.known:
                case.path_parameters[name] = self.known[name]  # type: ignore[index]
        if case.headers:
            case.headers.pop("X-Model-Alias", None)
        body: Any = case.body
        inputs = body.get("inputs") if isinstance(body, dict) else None
        if isinstance(inputs, list) and inputs and isinstance(inputs[0], dict):  # KServe v2: name it "x"
            inputs[0]["name"] = "x"
        elif isinstance(inputs, dict) and inputs:  # /v1/predict: the generated value under "x"
            body["inputs"] = {"x": next(iter(inputs.values()))}

    def send(self, operation: Any, case: schemathesis.Case, *, caller: str, known: bool) -> None:
        """Send one example and record what breaks the contract."""
        if known:
            self.aim(case)
        token = self.tokens[caller]
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        if caller == "admin" and known:
            headers["X-Tenant"] = self.deployed.tenant
        response = case.call(base_url=self.base_url, headers=headers, timeout=30)
        self.statuses[operation.label, response.status_code] += 1
        problems: list[str] = []
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except FailureGroup as group:
            problems += [f"{failure.title}: {failure.message}".strip() for failure in group.exceptions]
        except AssertionError as exc:
            problems.append(str(exc))
        shape = error_shape_problem(case.path, response.status_code, response.content)
        if shape is not None:
            problems.append(shape)
        for problem in problems:
            key = (operation.label, problem.split(":", 1)[0] + f" {response.status_code}")
            self.findings.setdefault(
                key,
                Finding(
                    operation=operation.label,
                    problem=problem[:600],
                    request=case.as_curl_command(headers=headers, base_url=self.base_url),
                    status=response.status_code,
                    body=response.content[:400].decode("utf-8", "replace"),
                ),
            )


def _report(findings: list[Finding]) -> str:
    return "\n\n".join(
        f"{f.operation}: {f.problem}\n  request: {f.request}\n  answer: {f.status} {f.body}" for f in findings
    )


def test_fuzz_the_whole_api(make_served: Callable[..., Api], tmp_path: Path) -> None:
    started = time.monotonic()
    api = make_served()
    deployed = deploy_onnx(api, tmp_path)
    document = api.client.get("/openapi.json").json()
    schema = schemathesis.openapi.from_dict(document)
    operations = sorted((result.ok() for result in schema.get_all_operations()), key=_order)  # type: ignore[union-attr]
    assert len(operations) >= 34, [op.label for op in operations]
    fuzzer = Fuzzer(api, deployed)
    for operation in operations:
        fuzzer.fuzz(operation)
    elapsed = time.monotonic() - started
    print(f"fuzzed {len(operations)} operations, {fuzzer.statuses.total()} requests in {elapsed:.1f} s")
    for (label, status), n in sorted(fuzzer.statuses.items()):
        print(f"  {label}: {status} x{n}")
    assert not fuzzer.findings, _report(list(fuzzer.findings.values()))
    assert elapsed < BUDGET_S, f"the fuzz run took {elapsed:.0f} s, over its CI budget of {BUDGET_S:.0f} s"
