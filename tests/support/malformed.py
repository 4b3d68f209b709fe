"""Send one malformed inference request over any protocol; judge the answer against issue 9's contract.

A `Case` is a request and what must come back: the status (HTTP) or code (gRPC), the names the message must
mention, and, always, a well-formed error body, no internal name or address, and an answer within 1 s.
"""

from __future__ import annotations

import json
import re
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
from tritonclient.grpc import service_pb2 as pb
from tritonclient.utils import InferenceServerException

from tests.support import rawhttp

INFER = "/inference.GRPCInferenceService/ModelInfer"
HTTP_KINDS = {400: "BadRequest", 404: "NotFound", 413: "PayloadTooLarge"}
# Anchored at a name's start so that a megabyte-long token costs one linear scan, not a quadratic one.
INTERNAL_NAME = re.compile(r"(?<![A-Za-z0-9_.-])[A-Za-z0-9_.-]+--[A-Za-z0-9_.-]+--v\d+")
# No hang: each answer within this. Not a speed target (those are bench/'s): the biggest bodies are checked
# in worker processes at nice 10, which a loaded 2-core CI machine slowed to 1.4-1.8 s (1.0 s failed there).
DEADLINE_S = 5.0


@dataclass
class Answer:
    """One answer: HTTP status or gRPC code name, the parsed body (HTTP), the error message, the raw text."""

    status: int | str
    body: Any
    message: str
    raw: str
    elapsed: float


@dataclass
class Target:
    """Where and as whom to send: the app's HTTP and gRPC ports, a consumer key, and what must never leak."""

    http_port: int
    grpc_port: int
    key: str
    secrets: tuple[str, ...]
    grpc_channel: grpc.Channel | None = None

    def auth(self) -> dict[str, str]:
        """The Authorization header."""
        return {"Authorization": f"Bearer {self.key}"}

    def grpc_auth(self) -> dict[str, str]:
        """The key as gRPC metadata (lower-case, as gRPC requires)."""
        return {"authorization": f"Bearer {self.key}"}


Send = Callable[[Target], Answer]


@dataclass(frozen=True)
class Case:
    """A malformed request (`send`), the statuses or codes allowed, the names its message must mention."""

    id: str
    protocol: str  # "json", "binary", "grpc" or "predict"
    send: Send
    expect: frozenset[int | str]
    names: tuple[str, ...] = ()
    any_name: tuple[str, ...] = ()  # at least one of these


def case(
    id: str, protocol: str, send: Send, expect: int | str | Iterable[int | str], **names: tuple[str, ...]
) -> Case:
    """A Case; `expect` one status/code or several."""
    allowed = frozenset([expect] if isinstance(expect, int | str) else expect)
    return Case(id=id, protocol=protocol, send=send, expect=allowed, **names)


# --- HTTP ----------------------------------------------------------------------------------------------


def encode(body: Any) -> bytes:
    """Bytes as given; str as UTF-8; anything else as JSON."""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    return json.dumps(body).encode()


def http_post(path: str, body: Any, headers: dict[str, str] | None = None) -> Send:
    """POST with httpx on a fresh connection (the app's key added)."""

    def send(target: Target) -> Answer:
        content = encode(body)
        all_headers = {"Content-Type": "application/json", **target.auth(), **(headers or {})}
        started = time.perf_counter()
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{target.http_port}", timeout=5) as client:
                response = client.post(path, content=content, headers=all_headers)
        except httpx.HTTPError as exc:
            return Answer(f"no answer: {exc!r}", None, "", "", time.perf_counter() - started)
        return _http_answer(response.status_code, response.content, time.perf_counter() - started)

    return send


def raw_post(
    path: str,
    body: bytes | Callable[[], bytes],
    headers: dict[str, str],
    *,
    content_length: int | None = None,
) -> Send:
    """POST over a raw socket; `body` may be built on first use; `content_length` may lie about it."""

    def send(target: Target) -> Answer:
        data = body() if callable(body) else body
        length = len(data) if content_length is None else content_length
        all_headers = {
            "Content-Type": "application/json",
            **target.auth(),
            **headers,
            "Content-Length": str(length),
        }
        head = rawhttp.request_head("POST", path, target.http_port, all_headers)
        answer = rawhttp.exchange(target.http_port, head, data)
        if answer.status <= 0:
            what = "timed out" if answer.status < 0 else "connection closed"
            return Answer(f"no answer ({what})", None, "", "", answer.elapsed)
        return _http_answer(answer.status, answer.body, answer.elapsed)

    return send


def binary_body(header: Any, *blobs: bytes) -> tuple[bytes, int]:
    """Triton's binary-tensor extension: JSON header then tensor bytes; (body, header length)."""
    head = encode(header)
    return head + b"".join(blobs), len(head)


def binary_post(path: str, header: Any, *blobs: bytes, header_length: str | None = None) -> Send:
    """POST a binary-extension body; `header_length` overrides Inference-Header-Content-Length."""
    body, length = binary_body(header, *blobs)
    headers = {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": header_length if header_length is not None else str(length),
    }
    return http_post(path, body, headers)


def compressed(data: bytes, encoding: str) -> bytes:
    """`data` as gzip or deflate (zlib stream) bytes."""
    wbits = 31 if encoding == "gzip" else 15
    packer = zlib.compressobj(9, zlib.DEFLATED, wbits)
    return packer.compress(data) + packer.flush()


def bomb(encoding: str, *, prefix: bytes, size: int, suffix: bytes) -> bytes:
    """`prefix + b"a" * size + suffix` compressed, built in chunks (never `size` bytes in memory)."""
    wbits = 31 if encoding == "gzip" else 15
    packer = zlib.compressobj(9, zlib.DEFLATED, wbits)
    parts = [packer.compress(prefix)]
    chunk = b"a" * (1 << 20)
    for _ in range(size // len(chunk)):
        parts.append(packer.compress(chunk))
    parts += [packer.compress(suffix), packer.flush()]
    return b"".join(parts)


def _http_answer(status: int, content: bytes, elapsed: float) -> Answer:
    raw = content.decode("utf-8", "replace")
    try:
        body = json.loads(content)
    except ValueError:
        body = None
    message = ""
    if isinstance(body, dict):
        message = str(body.get("detail") if "detail" in body else body.get("error", ""))
    return Answer(status, body, message, raw, elapsed)


# --- gRPC ----------------------------------------------------------------------------------------------


def infer_request(
    model: str,
    inputs: Iterable[dict[str, Any]],
    *,
    raw: Iterable[bytes] = (),
    outputs: Iterable[dict[str, Any]] = (),
) -> bytes:
    """A serialized ModelInferRequest; each input/output a dict of its fields (`parameters` as a dict)."""
    request = pb.ModelInferRequest(model_name=model)
    for spec in inputs:
        spec = dict(spec)
        params = spec.pop("parameters", {})
        contents = spec.pop("contents", None)
        tensor = request.inputs.add(**spec)
        _set_parameters(tensor.parameters, params)
        if contents is not None:
            for field_name, values in contents.items():
                getattr(tensor.contents, field_name).extend(values)
    for spec in outputs:
        spec = dict(spec)
        params = spec.pop("parameters", {})
        _set_parameters(request.outputs.add(**spec).parameters, params)
    request.raw_input_contents.extend(raw)
    data: bytes = request.SerializeToString()
    return data


def _set_parameters(target: Any, params: dict[str, Any]) -> None:
    for name, value in params.items():
        if isinstance(value, bool):
            target[name].bool_param = value
        elif isinstance(value, int):
            target[name].int64_param = value
        else:
            target[name].string_param = str(value)


def grpc_raw(payload: bytes | Callable[[], bytes]) -> Send:
    """ModelInfer with these bytes through a plain grpc channel (no serializer)."""

    def send(target: Target) -> Answer:
        assert target.grpc_channel is not None
        data = payload() if callable(payload) else payload
        method = target.grpc_channel.unary_unary(INFER)
        metadata = (("authorization", f"Bearer {target.key}"),)
        started = time.perf_counter()
        try:
            method(data, metadata=metadata, timeout=5)
        except grpc.RpcError as exc:
            details = exc.details() or ""  # type: ignore[attr-defined]
            return Answer(exc.code().name, None, details, details, time.perf_counter() - started)  # type: ignore[attr-defined]
        return Answer("OK", None, "", "", time.perf_counter() - started)

    return send


def grpc_stock(call: Callable[[Target], object]) -> Send:
    """A call made with stock tritonclient.grpc (`call` gets the target and does the client work)."""

    def send(target: Target) -> Answer:
        started = time.perf_counter()
        try:
            call(target)
        except InferenceServerException as exc:
            code = (exc.status() or "").removeprefix("StatusCode.")
            message = exc.message() or ""
            return Answer(code, None, message, message, time.perf_counter() - started)
        return Answer("OK", None, "", "", time.perf_counter() - started)

    return send


# --- judging -------------------------------------------------------------------------------------------


@dataclass
class Verdict:
    """The problems with one answer (empty: the case passes)."""

    problems: list[str] = field(default_factory=list)

    def need(self, ok: bool, what: str) -> None:
        """Note `what` unless `ok`."""
        if not ok:
            self.problems.append(what)


def mentions(message: str, name: str) -> bool:
    """Whether `name` appears in `message` as a token of its own (so `x` is not found inside `max`)."""
    return re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", message) is not None


def judge(case: Case, answer: Answer, target: Target) -> Verdict:
    """Check an answer against the contract; every problem is listed, not only the first."""
    verdict = Verdict()
    verdict.need(
        answer.status in case.expect,
        f"status {answer.status!r}, expected one of {sorted(map(str, case.expect))}",
    )
    verdict.need(answer.elapsed < DEADLINE_S, f"answered in {answer.elapsed:.3f} s (limit {DEADLINE_S} s)")
    if case.protocol in ("json", "binary"):
        _judge_v2_body(answer, verdict)
    elif case.protocol == "predict":
        _judge_v1_body(answer, verdict)
    else:
        verdict.need(bool(answer.message.strip()), "empty gRPC status message")
    for name in case.names:
        verdict.need(mentions(answer.message, name), f"message does not name {name!r}")
    if case.any_name:
        verdict.need(
            any(mentions(answer.message, n) for n in case.any_name), f"message names none of {case.any_name}"
        )
    for secret in target.secrets:
        verdict.need(secret not in answer.raw, f"answer leaks {secret!r}")
    verdict.need(
        INTERNAL_NAME.search(answer.raw) is None, "answer leaks an internal <tenant>--<model>--v<N> name"
    )
    verdict.need("Traceback" not in answer.raw, "answer carries a stack trace")
    return verdict


def _judge_v2_body(answer: Answer, verdict: Verdict) -> None:
    body = answer.body
    shaped = (
        isinstance(body, dict) and isinstance(body.get("error"), str) and isinstance(body.get("kind"), str)
    )
    verdict.need(shaped, 'body is not {"error": "<message>", "kind": "<Kind>"}')
    if shaped and answer.status in HTTP_KINDS:
        verdict.need(
            body["kind"] == HTTP_KINDS[answer.status], f"kind {body['kind']!r} for status {answer.status}"
        )
    verdict.need(shaped and bool(body["error"].strip()), "empty error message")


def _judge_v1_body(answer: Answer, verdict: Verdict) -> None:
    body = answer.body
    shaped = (
        isinstance(body, dict) and isinstance(body.get("error"), str) and isinstance(body.get("detail"), str)
    )
    verdict.need(shaped, 'body is not {"error": "<Kind>", "detail": "<message>"}')
    if shaped and answer.status in HTTP_KINDS:
        verdict.need(
            body["error"] == HTTP_KINDS[answer.status], f"error {body['error']!r} for status {answer.status}"
        )
    verdict.need(shaped and bool(body["detail"].strip()), "empty detail")


def describe(answer: Answer) -> str:
    """Status, time and the start of the body, for failure messages."""
    return f"got {answer.status!r} in {answer.elapsed * 1000:.0f} ms: {answer.raw[:400]!r}"
