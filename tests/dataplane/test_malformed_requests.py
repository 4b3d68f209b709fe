# ruff: noqa: E501  (the case tables keep one case per line)
"""Issue 9: malformed inference requests over HTTP JSON, HTTP binary, gRPC and /v1/predict.

Every case must be refused with a 4xx (gRPC: INVALID_ARGUMENT, NOT_FOUND or RESOURCE_EXHAUSTED), a
well-formed error body whose message names the client's input / model, no internal name or address, within
1 s, and without hurting the shared Triton. These requests crashed Triton when this suite was written, so
the module runs its own Triton (never the session's): a case after which Triton is dead fails, and the next
case gets a restarted one, so that one crasher does not hide what the others do. At the end Triton's PID
must be the one it started with and a normal request must succeed over every protocol.
"""

from __future__ import annotations

import functools
import gzip
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http

from control_plane.tritonserver import TritonClient, TritonDistribution, TritonProcess
from tests.support.api import Api
from tests.support.deploy import Deployed, deploy_onnx
from tests.support.malformed import (
    Case,
    Target,
    binary_post,
    bomb,
    case,
    compressed,
    describe,
    encode,
    grpc_raw,
    grpc_stock,
    http_post,
    infer_request,
    judge,
    raw_post,
)
from tests.support.served import serve, stack_settings
from tests.support.signature_models import deploy_artifact, onnx_fixed, onnx_multi_input

LIMIT = 8 * 1024 * 1024  # the app's max_request_bytes in this module
OVER = LIMIT + (1 << 20)
BOMB_SIZE = 256 * 1024 * 1024  # decompressed; ~250 KB on the wire
MLP = "/v2/models/mlp/infer"
MULTI = "/v2/models/multi/infer"
FIXED = "/v2/models/fixed/infer"
X4 = [0.5, -1.0, 2.0, 0.25]
X4_BYTES = np.asarray(X4, dtype=np.float32).tobytes()
DROP = object()


# --- the stack: a private Triton, an app on it, three models ---------------------------------------------


@dataclass
class Stack:
    """The module's Triton, app, models, and the cases after which Triton was found dead."""

    api: Api
    process: TritonProcess
    client: TritonClient
    models: dict[str, Deployed]
    target: Target
    pid: int
    killed_by: list[str] = field(default_factory=list)

    def triton_answers(self) -> bool:
        """Triton's process is alive and answers its liveness probe."""
        if not self.process.is_running():
            return False
        try:
            return httpx.get(f"{self.process.http_url}/v2/health/live", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def died_during(self, case_id: str) -> bool:
        """Whether Triton is dead (or dying, or hung) after a case; noted against the case."""
        if self.triton_answers():
            return False
        self.killed_by.append(case_id)
        return True

    def ensure_triton(self) -> None:
        """Restart Triton on the same ports and reload the models if an earlier case killed it."""
        if self.triton_answers():
            return
        self.process.stop()
        self.process.start(timeout_s=120)
        for deployed in self.models.values():
            self.client.load_model(deployed.triton_name)


@pytest.fixture(scope="module")
def stack(
    database_url: str,
    s3_endpoint: str,
    triton_distribution: TritonDistribution,
    triton_backend_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """A Triton private to this module, an app (HTTP fast path + gRPC) on it, and three models."""
    root = tmp_path_factory.mktemp("malformed")
    repository = root / "repository"
    repository.mkdir()
    process = TritonProcess(
        repository=str(repository),
        workdir=root / "triton",
        backend_dir=triton_backend_dir,
        distribution=triton_distribution,
    )
    process.start(timeout_s=120)
    client = TritonClient.from_url(process.http_url, timeout_s=120, connect_timeout_s=5)
    settings = stack_settings(
        database_url=database_url,
        s3_endpoint=s3_endpoint,
        triton_http_url=process.http_url,
        triton_grpc_url=process.grpc_url,
        repository=repository,
        max_request_bytes=LIMIT,
    )
    channel = grpc.insecure_channel(
        f"127.0.0.1:{settings.grpc_port}",
        options=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)],
    )
    try:
        with serve(settings) as api:
            models = _deploy(api, root)
            secrets = (
                *(d.triton_name for d in models.values()),
                *(f"{host}:{port}" for host in ("127.0.0.1", "localhost")
                  for port in (process.http_port, process.grpc_port, process.metrics_port)),
            )  # fmt: skip
            target = Target(
                http_port=int(api.client.base_url.port or 0),
                grpc_port=settings.grpc_port,
                key=models["mlp"].consumer_key,
                secrets=secrets,
                grpc_channel=channel,
            )
            assert process.pid is not None
            yield Stack(api, process, client, models, target, pid=process.pid)
    finally:
        channel.close()
        client.close()
        process.stop()


def _deploy(api: Api, root: Path) -> dict[str, Deployed]:
    mlp = deploy_onnx(api, root, model="mlp")  # x: FP32 [-1, 4] -> y: FP32 [-1, 3], max_batch_size 8
    keys = {"tenant": mlp.tenant, "consumer": mlp.consumer_key, "publisher": mlp.publisher_key}
    multi = deploy_artifact(
        api, model="multi", artifact=onnx_multi_input(root / "multi.onnx"), max_batch_size=4, **keys
    )
    fixed = deploy_artifact(api, model="fixed", artifact=onnx_fixed(root / "fixed.onnx"), **keys)
    return {"mlp": mlp, "multi": multi, "fixed": fixed}


# --- request builders --------------------------------------------------------------------------------------


def x_in(**over: Any) -> dict[str, Any]:
    """The mlp's input as a valid JSON tensor, with fields replaced (or removed with DROP)."""
    tensor = {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": X4, **over}
    return {k: v for k, v in tensor.items() if v is not DROP}


def multi_in(drop: str = "", **over: dict[str, Any]) -> list[dict[str, Any]]:
    """The multi model's three inputs (batch 1), minus `drop`, each updated from `over[name]`."""
    tensors = {
        "token_ids": {"name": "token_ids", "shape": [1, 2], "datatype": "INT32", "data": [1, 2]},
        "weights_in": {"name": "weights_in", "shape": [1, 3], "datatype": "FP64", "data": [0.5, 1.5, 2.5]},
        "mask_u8": {"name": "mask_u8", "shape": [1, 1], "datatype": "UINT8", "data": [1]},
    }
    return [{**t, **over.get(n, {})} for n, t in tensors.items() if n != drop]


def v2(*inputs: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A KServe v2 JSON infer request."""
    return {"inputs": list(inputs), **extra}


def nested(depth: int, leaf: bytes = b"1") -> bytes:
    """A JSON array nested `depth` levels deep."""
    return b"[" * depth + leaf + b"]" * depth


def bin_x(**over: Any) -> dict[str, Any]:
    """The mlp's input as a binary-extension tensor of 16 bytes."""
    tensor = {
        "name": "x",
        "shape": [1, 4],
        "datatype": "FP32",
        "parameters": {"binary_data_size": 16},
        **over,
    }
    return {k: v for k, v in tensor.items() if v is not DROP}


def gx(**over: Any) -> dict[str, Any]:
    """The mlp's input as gRPC InferInputTensor fields."""
    return {"name": "x", "datatype": "FP32", "shape": [1, 4], **over}


def j(id: str, body: Any, expect: Any = 400, *, path: str = MLP, headers: Any = None, **names: Any) -> Case:
    return case(id, "json", http_post(path, body, headers), expect, **names)


def b(
    id: str, header: Any, *blobs: bytes, expect: Any = 400, path: str = MLP, hlen: Any = None, **names: Any
) -> Case:
    return case(id, "binary", binary_post(path, header, *blobs, header_length=hlen), expect, **names)


def g(id: str, payload: Any, expect: Any = "INVALID_ARGUMENT", **names: Any) -> Case:
    return case(id, "grpc", grpc_raw(payload), expect, **names)


def p(
    id: str, body: Any, expect: Any = 400, *, model: str = "mlp", headers: Any = None, **names: Any
) -> Case:
    return case(id, "predict", http_post(f"/v1/predict/{model}", body, headers), expect, **names)


def stock(
    model: str, inputs: list[tuple[str, list[int], str, Any]], outputs: Any = None
) -> Callable[[Target], Any]:
    """A stock tritonclient.grpc infer call; inputs are (name, shape, datatype, numpy array or shm size)."""

    def call(target: Target) -> Any:
        tensors = []
        for name, shape, datatype, value in inputs:
            tensor = triton_grpc.InferInput(name, shape, datatype)
            if isinstance(value, int):
                tensor.set_shared_memory("region0", value)
            else:
                tensor.set_data_from_numpy(value)
            tensors.append(tensor)
        requested = outputs() if callable(outputs) else outputs
        with triton_grpc.InferenceServerClient(f"127.0.0.1:{target.grpc_port}") as client:
            return client.infer(
                model, tensors, outputs=requested, headers=target.grpc_auth(), client_timeout=5
            )

    return call


def gs(id: str, call: Callable[[Target], Any], expect: Any = "INVALID_ARGUMENT", **names: Any) -> Case:
    return case(id, "grpc", grpc_stock(call), expect, **names)


def shm_output() -> list[Any]:
    out = triton_grpc.InferRequestedOutput("y")
    out.set_shared_memory("region1", 12)
    return [out]


@functools.cache
def bomb_body(encoding: str, kind: str) -> bytes:
    """A valid-looking request padded to BOMB_SIZE bytes once decompressed."""
    prefix = (
        b'{"inputs": {"x": [[1, 2, 3, 4]]}, "pad": "'
        if kind == "predict"
        else encode(v2(x_in()))[:-1] + b', "pad": "'
    )
    return bomb(encoding, prefix=prefix, size=BOMB_SIZE, suffix=b'"}')


def _oversized_binary() -> tuple[Callable[[], bytes], dict[str, str]]:
    """A binary-extension body just over the limit whose header is consistent with it."""
    rows = OVER // 16
    header = encode(v2(bin_x(shape=[rows, 4], parameters={"binary_data_size": rows * 16})))
    headers = {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(header)),
    }
    return (lambda: header + bytes(rows * 16)), headers


F32 = np.asarray([X4], dtype=np.float32)
CRASHER_SHAPE = {
    "inputs": [{"name": "x", "shape": [1000000000000, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]
}
DEEP_V2 = b'{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":' + nested(100_000) + b"}]}"
DEEP_PREDICT = b'{"inputs":{"x":' + nested(100_000) + b"}}"
INT32_NAMES: dict[str, Any] = {"names": ("token_ids",)}
XN: dict[str, Any] = {"names": ("x",)}

# --- HTTP JSON ---------------------------------------------------------------------------------------------

JSON_CASES = [
    j("crasher-huge-shape", CRASHER_SHAPE, {400, 413}, **XN),
    j("crasher-deep-nesting", DEEP_V2),
    j("not-json", b"{"),
    j("empty-body", b""),
    j("trailing-garbage", encode(v2(x_in())) + b"xyz"),
    j("not-utf8", b'{"inputs": [{"name": "\xff\xfe", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}'),
    j("top-level-array", b"[]"),
    j("top-level-string", b'"inputs"'),
    j("top-level-null", b"null"),
    j("top-level-number", b"42"),
    j("inputs-missing", {}),
    j("inputs-null", {"inputs": None}),
    j("inputs-object", {"inputs": {"x": X4}}),
    j("inputs-string", {"inputs": "x"}),
    j("inputs-empty-list", v2(), **XN),
    j("input-not-object", {"inputs": [1]}),
    j("input-null", {"inputs": [None]}),
    j("input-name-missing", v2(x_in(name=DROP))),
    j("input-name-not-string", v2(x_in(name=5))),
    j("unknown-input-besides-x", v2(x_in(), x_in(name="zeta_extra")), names=("zeta_extra",)),
    j("unknown-input-instead-of-x", v2(x_in(name="zeta_extra")), any_name=("x", "zeta_extra")),
    j("duplicate-input", v2(x_in(), x_in()), **XN),
    j("datatype-fp64", v2(x_in(datatype="FP64")), **XN),
    j("datatype-unknown", v2(x_in(datatype="FLOAT32")), **XN),
    j("datatype-lowercase", v2(x_in(datatype="fp32")), **XN),
    j("datatype-missing", v2(x_in(datatype=DROP)), **XN),
    j("datatype-bytes", v2(x_in(datatype="BYTES", data=["a", "b", "c", "d"])), **XN),
    j("shape-missing", v2(x_in(shape=DROP)), **XN),
    j("shape-string", v2(x_in(shape="1,4")), **XN),
    j("shape-null", v2(x_in(shape=None)), **XN),
    j("shape-rank-1", v2(x_in(shape=[4])), **XN),
    j("shape-rank-3", v2(x_in(shape=[1, 4, 1])), **XN),
    j("shape-scalar", v2(x_in(shape=[], data=[1])), **XN),
    j("shape-rank-10000", v2(x_in(shape=[1] * 10_000)), **XN),
    j("shape-fixed-dim-wrong", v2(x_in(shape=[1, 5], data=[*X4, 1.0])), **XN),
    j("shape-negative-batch", v2(x_in(shape=[-1, 4])), **XN),
    j("shape-negative-dim", v2(x_in(shape=[1, -4])), **XN),
    j("shape-float-dim", v2(x_in(shape=[1.5, 4])), **XN),
    j("shape-string-dim", v2(x_in(shape=["1", 4])), **XN),
    j("shape-bool-dim", v2(x_in(shape=[True, 4])), **XN),
    j("shape-null-dim", v2(x_in(shape=[None, 4])), **XN),
    j("shape-beyond-int64", v2(x_in(shape=[2**64, 4])), {400, 413}, **XN),
    j("shape-product-overflows-int64", v2(x_in(shape=[2**62, 4])), {400, 413}, **XN),
    j("batch-over-max-batch-size", v2(x_in(shape=[9, 4], data=X4 * 9)), **XN),
    j("fewer-values-than-shape", v2(x_in(shape=[2, 4])), **XN),
    j("more-values-than-shape", v2(x_in(data=X4 * 2)), **XN),
    j("no-values", v2(x_in(data=[])), **XN),
    j("data-strings", v2(x_in(data=["a", "b", "c", "d"])), **XN),
    j("data-numeric-strings", v2(x_in(data=["1", "2", "3", "4"])), **XN),
    j("data-mixed-kinds", v2(x_in(data=[1, "2", 3, 4])), **XN),
    j("data-objects", v2(x_in(data=[{"v": 1}] * 4)), **XN),
    j("data-object", v2(x_in(data={"v": X4})), **XN),
    j("data-null", v2(x_in(data=None)), **XN),
    j("data-null-element", v2(x_in(data=[1, None, 3, 4])), **XN),
    j("data-string", v2(x_in(data="1,2,3,4")), **XN),
    j("data-missing", v2(x_in(data=DROP)), **XN),
    j("data-ragged-wrong-count", v2(x_in(data=[[1, 2], [3]])), **XN),
    j("data-nested-1000", encode(v2(x_in(data=DROP)))[:-3] + b', "data": ' + nested(1000) + b"}]}"),
    j("int32-data-float", v2(*multi_in(token_ids={"data": [1.5, 2]})), path=MULTI, **INT32_NAMES),
    j("multi-missing-input", v2(*multi_in(drop="weights_in")), path=MULTI, names=("weights_in",)),
    j("multi-wrong-datatype", v2(*multi_in(token_ids={"datatype": "INT64"})), path=MULTI, **INT32_NAMES),
    j("multi-fp64-count", v2(*multi_in(weights_in={"data": [0.5, 1.5]})), path=MULTI, names=("weights_in",)),
    j(
        "multi-batch-sizes-differ",
        v2(*multi_in(token_ids={"shape": [2, 2], "data": [1, 2, 3, 4]})),
        path=MULTI,
        any_name=("token_ids", "weights_in", "mask_u8"),
    ),
    j("multi-uint8-datatype-int8", v2(*multi_in(mask_u8={"datatype": "INT8"})), path=MULTI, names=("mask_u8",)),
    j("fixed-shape-wrong", v2(x_in(name="frame")), path=FIXED, names=("frame",)),
    j("fixed-rank-1", v2(x_in(name="frame", shape=[8], data=X4 * 2)), path=FIXED, names=("frame",)),
    j("fixed-batched", v2(x_in(name="frame", shape=[1, 2, 4], data=X4 * 2)), path=FIXED, names=("frame",)),
    j("fixed-negative", v2(x_in(name="frame", shape=[-2, 4], data=X4 * 2)), path=FIXED, names=("frame",)),
    j("shm-region-on-input", v2(x_in(data=DROP, parameters={"shared_memory_region": "r0", "shared_memory_byte_size": 16})), **XN),
    j("shm-byte-size-on-input", v2(x_in(parameters={"shared_memory_byte_size": 16})), **XN),
    j("shm-offset-on-input", v2(x_in(parameters={"shared_memory_offset": 0})), **XN),
    j("shm-region-on-output", v2(x_in(), outputs=[{"name": "y", "parameters": {"shared_memory_region": "r1", "shared_memory_byte_size": 12}}])),
    j("unknown-output", v2(x_in(), outputs=[{"name": "nope_out"}]), names=("nope_out",)),
    j("outputs-not-list", v2(x_in(), outputs={"name": "y"})),
    j("output-name-missing", v2(x_in(), outputs=[{}])),
    j("input-parameters-not-object", v2(x_in(parameters=[1])), **XN),
    j("parameters-nested-300", b'{"parameters": {"deep": ' + nested(300) + b'}, "inputs": [' + encode(x_in()) + b"]}", names=("deep",)),
    j("parameters-list", v2(x_in(), parameters={"deep": [1]}), names=("deep",)),
    j("parameters-object", v2(x_in(), parameters={"deep": {"a": 1}}), names=("deep",)),
    j("parameters-null", v2(x_in(), parameters={"deep": None}), names=("deep",)),
    j("output-parameters-nested-300", encode(v2(x_in()))[:-1] + b', "outputs": [{"name": "y", "parameters": {"deep": ' + nested(300) + b"}}]}", names=("y",)),
    j("input-parameters-nested-300", encode(v2(x_in()))[:-3] + b', "parameters": {"deep": ' + nested(300) + b"}}]}", **XN),
    j("data-100k-nested-rows", v2(x_in(shape=[1, 4], data=[[[[1]]]] * 100_000)), **XN),
    j("id-not-string", v2(x_in(), id=5)),
    j("5000-unknown-inputs", v2(*[x_in(name=f"in{i}") for i in range(5000)])),
    j("megabyte-input-name", v2(x_in(name="n" * 1_000_000))),
    j("unknown-model", v2(x_in()), 404, path="/v2/models/no-such-model/infer", names=("no-such-model",)),
    j("unknown-version", v2(x_in()), 404, path="/v2/models/mlp/versions/987654/infer"),
    j("version-not-a-number", v2(x_in()), {400, 404}, path="/v2/models/mlp/versions/abc/infer"),
    case("over-size-limit", "json", raw_post(MLP, lambda: encode(v2(x_in(), pad="a" * OVER)), {}), 413),
    case("content-length-over-limit-no-body", "json", raw_post(MLP, b"", {}, content_length=OVER), 413),
    case("gzip-bomb", "json", raw_post(MLP, lambda: bomb_body("gzip", "v2"), {"Content-Encoding": "gzip"}), 413),
    case("deflate-bomb", "json", raw_post(MLP, lambda: bomb_body("deflate", "v2"), {"Content-Encoding": "deflate"}), 413),
    j("gzip-header-plain-body", v2(x_in()), headers={"Content-Encoding": "gzip"}),
    j("gzip-crasher-huge-shape", compressed(encode(CRASHER_SHAPE), "gzip"), {400, 413}, headers={"Content-Encoding": "gzip"}, **XN),
    j("gzip-crasher-deep-nesting", compressed(DEEP_V2, "gzip"), headers={"Content-Encoding": "gzip"}),
    j("deflate-unknown-input", compressed(encode(v2(x_in(name="zeta_extra"))), "deflate"), headers={"Content-Encoding": "deflate"}, any_name=("x", "zeta_extra")),
    j("encoding-br", v2(x_in()), 415, headers={"Content-Encoding": "br"}),
    j("encoding-unknown", v2(x_in()), 415, headers={"Content-Encoding": "chunky"}),
]  # fmt: skip

# --- HTTP binary-tensor extension --------------------------------------------------------------------------

BIN_OUT = {"outputs": [{"name": "y", "parameters": {"binary_data": True}}]}
B_MULTI = [
    {"name": "token_ids", "shape": [1, 2], "datatype": "INT32", "parameters": {"binary_data_size": 8}},
    {"name": "weights_in", "shape": [1, 3], "datatype": "FP64", "parameters": {"binary_data_size": 24}},
    {"name": "mask_u8", "shape": [1, 1], "datatype": "UINT8", "parameters": {"binary_data_size": 1}},
]
MULTI_BYTES = np.asarray([[1, 2]], np.int32).tobytes() + np.asarray([[0.5, 1.5, 2.5]]).tobytes() + b"\x01"


def b_multi(name: str, size: Any) -> list[dict[str, Any]]:
    return [{**t, "parameters": {"binary_data_size": size}} if t["name"] == name else t for t in B_MULTI]


BINARY_CASES = [
    b("crasher-huge-shape", v2(bin_x(shape=[1000000000000, 4]), **BIN_OUT), X4_BYTES, expect={400, 413}, **XN),
    b("size-negative", v2(bin_x(parameters={"binary_data_size": -16})), X4_BYTES, **XN),
    b("size-string", v2(bin_x(parameters={"binary_data_size": "16"})), X4_BYTES, **XN),
    b("size-float", v2(bin_x(parameters={"binary_data_size": 16.5})), X4_BYTES, **XN),
    b("size-bool", v2(bin_x(parameters={"binary_data_size": True})), X4_BYTES, **XN),
    b("size-null", v2(bin_x(parameters={"binary_data_size": None})), X4_BYTES, **XN),
    b("size-not-shape-times-dtype", v2(bin_x(parameters={"binary_data_size": 12})), X4_BYTES[:12], **XN),
    b("size-huge", v2(bin_x(parameters={"binary_data_size": 2**62})), X4_BYTES, expect={400, 413}, **XN),
    b("sizes-sum-overflows", v2(*b_multi("token_ids", 2**63 - 1)), MULTI_BYTES, expect={400, 413}, path=MULTI, names=("token_ids",)),
    b("fp64-size-wrong", v2(*b_multi("weights_in", 12)), MULTI_BYTES[:8] + MULTI_BYTES[8:20] + b"\x01", path=MULTI, names=("weights_in",)),
    b("body-shorter-than-sizes", v2(bin_x()), X4_BYTES[:8]),
    b("body-longer-than-sizes", v2(bin_x()), X4_BYTES + b"\x00" * 8),
    b("body-without-tensor-bytes", v2(bin_x())),
    b("header-length-not-a-number", v2(bin_x()), X4_BYTES, hlen="abc"),
    b("header-length-negative", v2(bin_x()), X4_BYTES, hlen="-5"),
    b("header-length-zero", v2(bin_x()), X4_BYTES, hlen="0"),
    b("header-length-beyond-body", v2(bin_x()), X4_BYTES, hlen="100000"),
    b("header-length-huge", v2(bin_x()), X4_BYTES, hlen="99999999999999999999"),
    b("header-length-mid-json", v2(bin_x()), X4_BYTES, hlen="20"),
    b("header-not-json", b"\x00\x01garbage!", X4_BYTES),
    b("header-json-array", b"[]", X4_BYTES),
    b("header-inputs-null", {"inputs": None}, X4_BYTES),
    b("header-deep-nesting", b'{"inputs":' + nested(100_000) + b"}", X4_BYTES),
    b("shm-region-with-binary", v2(bin_x(parameters={"binary_data_size": 16, "shared_memory_region": "r0"})), X4_BYTES, **XN),
    b("data-and-binary-size", v2(bin_x(data=X4)), X4_BYTES, **XN),
    b("unknown-output-binary", v2(bin_x(), outputs=[{"name": "nope_out", "parameters": {"binary_data": True}}]), X4_BYTES, names=("nope_out",)),
    b("datatype-fp16-for-fp32", v2(bin_x(datatype="FP16", parameters={"binary_data_size": 8})), X4_BYTES[:8], **XN),
    b("unknown-input-binary", v2(bin_x(name="zeta_extra")), X4_BYTES, any_name=("x", "zeta_extra")),
    b("fixed-shape-binary", v2(bin_x(name="frame")), X4_BYTES, path=FIXED, names=("frame",)),
    case("over-size-limit", "binary", raw_post(MLP, *_oversized_binary()), 413),
]  # fmt: skip

# --- gRPC ----------------------------------------------------------------------------------------------------

G_MULTI = [
    {"name": "token_ids", "datatype": "INT32", "shape": [1, 2]},
    {"name": "weights_in", "datatype": "FP64", "shape": [1, 3]},
    {"name": "mask_u8", "datatype": "UINT8", "shape": [1, 1]},
]
G_MULTI_RAW = [np.asarray([[1, 2]], np.int32).tobytes(), np.asarray([[0.5, 1.5, 2.5]]).tobytes(), b"\x01"]
VALID_G = infer_request("mlp", [gx()], raw=[X4_BYTES])

GRPC_CASES = [
    g("crasher-huge-shape", infer_request("mlp", [gx(shape=[1000000000000, 4])], raw=[X4_BYTES]), {"INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"}, **XN),
    gs("unknown-input-besides-x", stock("mlp", [("x", [1, 4], "FP32", F32), ("zeta_extra", [1, 4], "FP32", F32)]), names=("zeta_extra",)),
    gs("unknown-input-instead-of-x", stock("mlp", [("zeta_extra", [1, 4], "FP32", F32)]), any_name=("x", "zeta_extra")),
    gs("multi-missing-input", stock("multi", [("token_ids", [1, 2], "INT32", np.asarray([[1, 2]], np.int32))]), any_name=("weights_in", "mask_u8")),
    g("duplicate-input", infer_request("mlp", [gx(), gx()], raw=[X4_BYTES, X4_BYTES]), **XN),
    gs("datatype-fp64", stock("mlp", [("x", [1, 4], "FP64", np.asarray([X4]))]), **XN),
    g("datatype-unknown", infer_request("mlp", [gx(datatype="FLOAT")], raw=[X4_BYTES]), **XN),
    g("datatype-empty", infer_request("mlp", [gx(datatype="")], raw=[X4_BYTES]), **XN),
    gs("shape-rank-1", stock("mlp", [("x", [4], "FP32", np.asarray(X4, np.float32))]), **XN),
    gs("shape-rank-3", stock("mlp", [("x", [1, 4, 1], "FP32", np.asarray([X4], np.float32).reshape(1, 4, 1))]), **XN),
    gs("shape-fixed-dim-wrong", stock("mlp", [("x", [1, 5], "FP32", np.zeros((1, 5), np.float32))]), **XN),
    g("shape-negative", infer_request("mlp", [gx(shape=[-1, 4])], raw=[X4_BYTES]), **XN),
    g("shape-scalar", infer_request("mlp", [gx(shape=[])], raw=[X4_BYTES[:4]]), **XN),
    g("shape-product-overflows-int64", infer_request("mlp", [gx(shape=[2**62, 4])], raw=[X4_BYTES]), {"INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"}, **XN),
    g("shape-rank-64", infer_request("mlp", [gx(shape=[1] * 64)], raw=[X4_BYTES[:4]]), **XN),
    gs("batch-over-max-batch-size", stock("mlp", [("x", [9, 4], "FP32", np.zeros((9, 4), np.float32))]), **XN),
    g("raw-shorter-than-shape", infer_request("mlp", [gx()], raw=[X4_BYTES[:12]]), **XN),
    g("raw-longer-than-shape", infer_request("mlp", [gx()], raw=[X4_BYTES + b"\x00" * 4]), **XN),
    g("more-raw-contents-than-inputs", infer_request("mlp", [gx()], raw=[X4_BYTES, X4_BYTES])),
    g("no-tensor-data", infer_request("mlp", [gx()]), **XN),
    g("contents-and-raw", infer_request("mlp", [gx(contents={"fp32_contents": X4})], raw=[X4_BYTES]), **XN),
    g("contents-count-wrong", infer_request("mlp", [gx(contents={"fp32_contents": X4[:3]})]), **XN),
    g("contents-wrong-kind", infer_request("mlp", [gx(contents={"int_contents": [1, 2, 3, 4]})]), **XN),
    gs("shm-on-input", stock("mlp", [("x", [1, 4], "FP32", 16)]), **XN),
    gs("shm-on-output", stock("mlp", [("x", [1, 4], "FP32", F32)], outputs=shm_output)),
    g("shm-offset-parameter", infer_request("mlp", [gx(parameters={"shared_memory_offset": 0})], raw=[X4_BYTES]), **XN),
    gs("unknown-output", stock("mlp", [("x", [1, 4], "FP32", F32)], outputs=lambda: [triton_grpc.InferRequestedOutput("nope_out")]), names=("nope_out",)),
    g("protobuf-garbage", b"\xff\xff\xff\xff\x0f garbage \x00\x01"),
    g("protobuf-truncated", VALID_G[: len(VALID_G) - 7]),
    # (A known field with another wire type is not malformed: protobuf keeps it as an unknown field.)
    g("protobuf-invalid-wire-type", b"\x0f\x00" + VALID_G),
    g("protobuf-unmatched-end-group", b"\x0c" + VALID_G),
    g("protobuf-length-beyond-end", b"\x0a\xff\xff\x03mlp"),
    gs("unknown-model", stock("no-such-model", [("x", [1, 4], "FP32", F32)]), "NOT_FOUND", names=("no-such-model",)),
    g("over-size-limit", lambda: infer_request("mlp", [gx(shape=[OVER // 16, 4])], raw=[b"\x00" * (OVER // 16 * 16)]), "RESOURCE_EXHAUSTED"),
    g("fp64-raw-size-wrong", infer_request("multi", G_MULTI, raw=[G_MULTI_RAW[0], G_MULTI_RAW[1][:12], G_MULTI_RAW[2]]), names=("weights_in",)),
    g("batch-sizes-differ", infer_request("multi", [{**G_MULTI[0], "shape": [2, 2]}, *G_MULTI[1:]], raw=[G_MULTI_RAW[0] * 2, *G_MULTI_RAW[1:]]), any_name=("token_ids", "weights_in", "mask_u8")),
    g("fixed-shape-wrong", infer_request("fixed", [gx(name="frame")], raw=[X4_BYTES]), names=("frame",)),
    g("no-inputs", infer_request("mlp", []), **XN),
    g("input-name-empty", infer_request("mlp", [gx(name="")], raw=[X4_BYTES])),
]  # fmt: skip

# --- /v1/predict ---------------------------------------------------------------------------------------------


def pm(drop: str = "", **over: Any) -> dict[str, Any]:
    """A /v1/predict body for the multi model, minus `drop`, values replaced from `over`."""
    values = {"token_ids": [[1, 2]], "weights_in": [[0.5, 1.5, 2.5]], "mask_u8": [[1]], **over}
    return {"inputs": {k: v for k, v in values.items() if k != drop}}


PREDICT_CASES = [
    p("not-json", b"{"),
    p("empty-body", b""),
    p("top-level-array", b"[]"),
    p("inputs-missing", {}),
    p("inputs-null", {"inputs": None}),
    p("inputs-list", {"inputs": [[X4]]}),
    p("inputs-empty", {"inputs": {}}, **XN),
    p("extra-input", {"inputs": {"x": [X4], "zeta_extra": [[1]]}}, names=("zeta_extra",)),
    p("missing-input", pm(drop="weights_in"), model="multi", names=("weights_in",)),
    p("ragged", {"inputs": {"x": [X4, [1, 2]]}}, **XN),
    p("strings", {"inputs": {"x": [["a", "b", "c", "d"]]}}, **XN),
    p("numeric-strings", {"inputs": {"x": [["1", "2", "3", "4"]]}}, **XN),
    p("null-element", {"inputs": {"x": [[1, None, 3, 4]]}}, **XN),
    p("objects", {"inputs": {"x": [[{"v": 1}] * 4]}}, **XN),
    p("scalar", {"inputs": {"x": 5}}, **XN),
    p("bools-into-fp32", {"inputs": {"x": [[True, False, True, False]]}}, **XN),
    p("rank-1", {"inputs": {"x": X4}}, **XN),
    p("inner-dim-wrong", {"inputs": {"x": [[1, 2, 3]]}}, **XN),
    p("batch-over-max-batch-size", {"inputs": {"x": [X4] * 9}}, **XN),
    p("fp32-out-of-range", {"inputs": {"x": [[1e300, 0, 0, 0]]}}, **XN),
    p("int32-overflow-2-pow-40", pm(token_ids=[[2**40, 1]]), model="multi", **INT32_NAMES),
    p("int32-underflow", pm(token_ids=[[-(2**31) - 1, 1]]), model="multi", **INT32_NAMES),
    p("int32-non-integer", pm(token_ids=[[1.5, 2]]), model="multi", **INT32_NAMES),
    p("int32-bool", pm(token_ids=[[True, 2]]), model="multi", **INT32_NAMES),
    p("int32-string", pm(token_ids=[["1", 2]]), model="multi", **INT32_NAMES),
    p("int32-beyond-64-bits", b'{"inputs": {"token_ids": [[100000000000000000000000000000, 1]], "weights_in": [[0.5, 1.5, 2.5]], "mask_u8": [[1]]}}', model="multi"),
    p("uint8-negative", pm(mask_u8=[[-1]]), model="multi", names=("mask_u8",)),
    p("uint8-256", pm(mask_u8=[[256]]), model="multi", names=("mask_u8",)),
    p("fixed-shape-wrong", {"inputs": {"frame": [X4]}}, model="fixed", names=("frame",)),
    p("deep-nesting-100000", DEEP_PREDICT),
    p("deep-nesting-1000", b'{"inputs":{"x":' + nested(1000) + b"}}"),
    p("unknown-model", {"inputs": {"x": [X4]}}, 404, model="no-such-model", names=("no-such-model",)),
    case("over-size-limit", "predict", raw_post("/v1/predict/mlp", lambda: encode({"inputs": {"x": [X4]}, "pad": "a" * OVER}), {}), 413),
    case("content-length-over-limit-no-body", "predict", raw_post("/v1/predict/mlp", b"", {}, content_length=OVER), 413),
    # /v1/predict may decompress (then 413 past the limit) or refuse compressed bodies (415); never parse them raw.
    case("gzip-bomb", "predict", raw_post("/v1/predict/mlp", lambda: bomb_body("gzip", "predict"), {"Content-Encoding": "gzip"}), {413, 415}),
    p("encoding-br", {"inputs": {"x": [X4]}}, 415, headers={"Content-Encoding": "br"}),
    p("gzip-int32-overflow", compressed(encode(pm(token_ids=[[2**40, 1]])), "gzip"), {400, 415}, model="multi", headers={"Content-Encoding": "gzip"}),
]  # fmt: skip

CASES = [*JSON_CASES, *BINARY_CASES, *GRPC_CASES, *PREDICT_CASES]


def test_the_suite_is_big_enough_and_covers_every_protocol() -> None:
    ids = [f"{c.protocol}:{c.id}" for c in CASES]
    assert len(ids) == len(set(ids))
    assert len(CASES) >= 80
    assert {c.protocol for c in CASES} == {"json", "binary", "grpc", "predict"}
    assert {"json:crasher-huge-shape", "json:crasher-deep-nesting"} <= set(ids)


@pytest.mark.parametrize("malformed", CASES, ids=lambda c: f"{c.protocol}:{c.id}")
def test_malformed_request_is_refused_cleanly(stack: Stack, malformed: Case) -> None:
    stack.ensure_triton()
    answer = malformed.send(stack.target)
    verdict = judge(malformed, answer, stack.target)
    if stack.died_during(f"{malformed.protocol}:{malformed.id}"):
        verdict.problems.insert(0, f"Triton (pid {stack.process.pid}) died or stopped answering")
    assert not verdict.problems, f"{'; '.join(verdict.problems)} -- {describe(answer)}"


# --- afterwards: the same Triton, and normal requests work --------------------------------------------------


def test_triton_survived_every_case(stack: Stack) -> None:
    assert stack.killed_by == [], f"Triton died during {stack.killed_by}"
    assert stack.process.pid == stack.pid
    assert stack.triton_answers()


def _json_infer(stack: Stack) -> np.ndarray:
    response = stack.api.client.post(MLP, json=v2(x_in()), headers=stack.target.auth())
    assert response.status_code == 200, response.text
    return np.asarray(response.json()["outputs"][0]["data"])


def _binary_infer(stack: Stack) -> np.ndarray:
    with triton_http.InferenceServerClient(
        f"127.0.0.1:{stack.target.http_port}", network_timeout=10
    ) as client:
        tensor = triton_http.InferInput("x", [1, 4], "FP32")
        tensor.set_data_from_numpy(F32, binary_data=True)
        out = triton_http.InferRequestedOutput("y", binary_data=True)
        return (
            client.infer("mlp", [tensor], outputs=[out], headers=stack.target.auth())
            .as_numpy("y")
            .reshape(-1)
        )


def _grpc_infer(stack: Stack) -> np.ndarray:
    with triton_grpc.InferenceServerClient(f"127.0.0.1:{stack.target.grpc_port}") as client:
        tensor = triton_grpc.InferInput("x", [1, 4], "FP32")
        tensor.set_data_from_numpy(F32)
        return (
            client.infer("mlp", [tensor], headers=stack.target.grpc_auth(), client_timeout=10)
            .as_numpy("y")
            .reshape(-1)
        )


def _predict(stack: Stack) -> np.ndarray:
    response = stack.api.client.post(
        "/v1/predict/mlp", json={"inputs": {"x": [X4]}}, headers=stack.target.auth()
    )
    assert response.status_code == 200, response.text
    return np.asarray(response.json()["outputs"]["y"]).reshape(-1)


def _gzip_infer(stack: Stack) -> np.ndarray:
    body = gzip.compress(json.dumps(v2(x_in())).encode())
    headers = {**stack.target.auth(), "Content-Type": "application/json", "Content-Encoding": "gzip"}
    response = stack.api.client.post(MLP, content=body, headers=headers)
    assert response.status_code == 200, response.text
    return np.asarray(response.json()["outputs"][0]["data"])


@pytest.mark.parametrize(
    "call",
    [_json_infer, _binary_infer, _grpc_infer, _predict, _gzip_infer],
    ids=lambda f: f.__name__.strip("_"),
)
def test_a_normal_request_succeeds_afterwards(stack: Stack, call: Callable[[Stack], np.ndarray]) -> None:
    expected = np.asarray(  # what the same MLP computes, via Triton directly
        httpx.post(
            f"{stack.process.http_url}/v2/models/{stack.models['mlp'].triton_name}/infer",
            json=v2(x_in()),
            timeout=10,
        ).json()["outputs"][0]["data"]
    )
    assert np.allclose(call(stack), expected)
