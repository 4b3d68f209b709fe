"""The request checks on their own: what they accept, what they refuse and how, and that arbitrary
input only ever ends in a Rejected (property-based, with hypothesis)."""

from __future__ import annotations

import asyncio
import gzip
import math
import os
import pickle
import signal
import struct
import zlib
from types import SimpleNamespace
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as pb

from control_plane.dataplane import predict_codec, protowire
from control_plane.dataplane.checks import RequestChecks, as_app_error
from control_plane.dataplane.contract import CheckLater, Contract, Rejected, TensorRule
from control_plane.dataplane.decode import decode_infer_response
from control_plane.dataplane.exchange import Exchange
from control_plane.dataplane.grpc_check import REQUEST_FIELDS, check_infer_request, check_walked, inline_sized
from control_plane.dataplane.heavy import HeavyWork
from control_plane.dataplane.protowire import WireError
from control_plane.dataplane.v2request import decompress, header_length_of, prepare, prepare_http
from control_plane.errors import BadRequest
from control_plane.routing.contracts import contract_from_config

MLP = Contract(inputs={"x": TensorRule("x", "FP32", (-1, 4))}, outputs=frozenset({"y"}), max_batch_size=8)
MIXED = Contract(
    inputs={
        "ids": TensorRule("ids", "INT32", (-1, 3)),
        "mask": TensorRule("mask", "BOOL", (-1, 3), optional=True),
        "text": TensorRule("text", "BYTES", (-1,)),
    },
    outputs=frozenset({"out", "probs"}),
    max_batch_size=4,
)


def _json(*inputs: dict[str, Any], **extra: Any) -> bytes:
    return orjson.dumps({"inputs": list(inputs), **extra})


def _x(shape: list[Any], data: Any, **extra: Any) -> dict[str, Any]:
    return {"name": "x", "shape": shape, "datatype": "FP32", "data": data, **extra}


def test_a_valid_json_request_is_forwarded_as_parsed() -> None:
    body = _json(_x([2, 4], [[1, 2, 3, 4], [5, 6, 7, 8.5]]), outputs=[{"name": "y"}], id="r1")
    forwarded, length = prepare(body, header_length=None, contract=MLP)
    assert length is None
    assert orjson.loads(forwarded) == orjson.loads(body)


def test_duplicated_keys_cannot_smuggle_another_request_past_the_check() -> None:
    good = orjson.dumps([_x([1, 4], [1, 2, 3, 4])]).decode()
    crasher = orjson.dumps([_x([10**12, 4], [1, 2, 3, 4])]).decode()
    with pytest.raises(Rejected, match="max_batch_size"):  # we read the last, like orjson
        prepare(f'{{"inputs":{good},"inputs":{crasher}}}'.encode(), header_length=None, contract=MLP)
    body = f'{{"inputs":{crasher},"inputs":{good}}}'.encode()  # Triton would read the first
    forwarded, _ = prepare(body, header_length=None, contract=MLP)
    assert forwarded.count(b'"inputs"') == 1
    assert orjson.loads(forwarded)["inputs"][0]["shape"] == [1, 4]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{", "not valid JSON"),
        (b"[]", "JSON object"),
        (_json(), "the model takes 'x' (FP32 [-1, 4])"),
        (orjson.dumps({"inputs": None}), "a list of tensors"),
        (_json(_x([10**12, 4], [1, 2, 3, 4])), "over the model's max_batch_size 8"),
        (_json(_x([1, 4], [1, 2, 3])), "needs 4 values; it has 3"),
        (_json(_x([1, 5], [1, 2, 3, 4, 5])), "the model expects [-1, 4]"),
        (_json(_x([4], [1, 2, 3, 4])), "rank 1"),
        (_json(_x([1, -4], [1, 2, 3, 4])), "invalid dimension -4"),
        (_json(_x([1, 4.0], [1, 2, 3, 4])), "invalid dimension 4.0"),
        (_json(_x([1, True], [1])), "invalid dimension True"),
        (_json(_x([1, 4], ["a", 2, 3, 4])), "str values"),
        (_json(_x([1, 4], [True, 2, 3, 4])), "bool values"),
        (_json(_x([1, 4], [[[1, 2, 3, 4]]])), "nested deeper"),
        (_json(_x([1, 4], [None, 1, 2, 3])), "NoneType values"),
        (_json(_x([1, 4], {"a": 1})), "needs 'data'"),
        (_json({**_x([1, 4], [1, 2, 3, 4]), "datatype": "FP8"}), "unknown datatype"),
        (_json({**_x([1, 4], [1, 2, 3, 4]), "datatype": "INT32"}), "expects FP32"),
        (_json({**_x([1, 4], [1, 2, 3, 4]), "name": "q"}), "unknown input 'q'"),
        (_json(_x([1, 4], [1, 2, 3, 4]), _x([1, 4], [1, 2, 3, 4])), "more than once"),
        (_json(_x([1, 4], None, parameters={"shared_memory_region": "r"})), "shared memory"),
        (_json(_x([1, 4], [1, 2, 3, 4]), outputs=[{"name": "z"}]), "unknown output 'z'"),
        (_json(_x([1, 4], [1, 2, 3, 4]), outputs=[{"name": "y", "parameters": {"shared_memory_region": 1}}]),
         "shared memory"),
        (_json(_x([1, 4], [1, 2, 3, 4]), parameters={"shared_memory_offset": 0}), "shared memory"),
        (_json(_x([1, 4], [1, 2, 3, 4]), outputs="y"), "'outputs' must be a list"),
        (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
    ],
)  # fmt: skip
def test_json_mistakes_are_refused_in_the_clients_terms(body: bytes, message: str) -> None:
    with pytest.raises(Rejected) as refused:
        prepare(body, header_length=None, contract=MLP)
    assert message in refused.value.message
    assert refused.value.status == 400


def _binary(header: dict[str, Any], tail: bytes) -> tuple[bytes, int]:
    head = orjson.dumps(header)
    return head + tail, len(head)


def _bx(size: Any) -> dict[str, Any]:
    return {"name": "x", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": size}}


def test_binary_requests_are_checked_and_their_header_rewritten() -> None:
    tail = np.arange(4, dtype="<f4").tobytes()
    body, length = _binary({"inputs": [_bx(16)]}, tail)
    forwarded, new_length = prepare(body, header_length=length, contract=MLP)
    assert new_length is not None and forwarded[new_length:] == tail
    assert orjson.loads(forwarded[:new_length]) == {"inputs": [_bx(16)]}


@pytest.mark.parametrize(
    ("size", "tail", "message"),
    [
        (-1, b"\0" * 16, "invalid binary_data_size -1"),
        ("16", b"\0" * 16, "invalid binary_data_size '16'"),
        (16, b"\0" * 8, "the body ends before them"),
        (16, b"\0" * 20, "the binary data is 20 bytes but the inputs declare 16"),
        (8, b"\0" * 8, "needs 4 values; it has 2"),
        (15, b"\0" * 15, "not a whole number of FP32 values"),
    ],
)
def test_binary_mistakes_are_refused(size: Any, tail: bytes, message: str) -> None:
    body, length = _binary({"inputs": [_bx(size)]}, tail)
    with pytest.raises(Rejected, match=message.replace("(", r"\(")):
        prepare(body, header_length=length, contract=MLP)


def test_bytes_tensors_are_counted_by_their_length_prefixes() -> None:
    items = [b"hello", b"", b"\xff" * 3]
    tail = b"".join(struct.pack("<I", len(item)) + item for item in items)
    ids = {"name": "ids", "shape": [1, 3], "datatype": "INT32", "data": [1, 2, 3]}
    text = {"name": "text", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": len(tail)}}
    body, length = _binary({"inputs": [ids, text]}, tail)
    with pytest.raises(Rejected, match="needs 1 values; it has 3"):
        prepare(body, header_length=length, contract=MIXED)
    text["shape"] = [3]
    cut = {**text, "parameters": {"binary_data_size": len(tail) - 1}}
    body, length = _binary({"inputs": [ids, cut]}, tail[:-1])
    with pytest.raises(Rejected, match="longer than its data"):
        prepare(body, header_length=length, contract=MIXED)
    body, length = _binary({"inputs": [ids, text]}, tail)
    prepare(body, header_length=length, contract=MIXED)
    with pytest.raises(Rejected, match="batch size 3, over the model's max_batch_size 2"):
        prepare(body, header_length=length, contract=Contract(MIXED.inputs, MIXED.outputs, 2))


def test_optional_inputs_may_be_left_out_and_required_ones_may_not() -> None:
    ids = {"name": "ids", "shape": [1, 3], "datatype": "INT32", "data": [1, 2, 3]}
    text = {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["hi"]}
    prepare(_json(ids, text), header_length=None, contract=MIXED)
    with pytest.raises(Rejected, match="missing input 'text'"):
        prepare(_json(ids), header_length=None, contract=MIXED)
    with pytest.raises(Rejected, match="outside the range of INT32"):
        prepare(_json({**ids, "data": [1, 2, 2**40]}, text), header_length=None, contract=MIXED)


def test_header_lengths_must_be_a_length_within_the_body() -> None:
    assert header_length_of(None, 10) is None
    assert header_length_of("10", 10) == 10
    for bad in ("0", "11", "-1", "1e3", " 5", "\uff15"):  # the last: a full-width digit five
        with pytest.raises(Rejected, match="Inference-Header-Content-Length"):
            header_length_of(bad, 10)


def test_decompression_is_limited_on_what_comes_out() -> None:
    body = _json(_x([1, 4], [1, 2, 3, 4]))
    assert decompress(gzip.compress(body), "gzip", limit=1000) == body
    assert decompress(zlib.compress(body), "deflate", limit=1000) == body
    assert decompress(body, "identity", limit=1000) == body
    with pytest.raises(Rejected) as bomb:
        decompress(gzip.compress(b"0" * 10_000_000), "gzip", limit=1 << 20)
    assert bomb.value.status == 413
    members = gzip.compress(b"a" * 10) * 3  # a gzip file may hold several members
    assert decompress(members, "gzip", limit=30) == b"a" * 30
    with pytest.raises(Rejected) as concatenated:  # 1 MB that inflates to 1 GiB, 64 MiB a member
        decompress(gzip.compress(b"\0" * (64 << 20), compresslevel=9) * 16, "gzip", limit=64 << 20)
    assert concatenated.value.status == 413
    with pytest.raises(Rejected) as unknown:
        decompress(body, "br", limit=1000)
    assert unknown.value.status == 415
    with pytest.raises(Rejected, match="not valid gzip"):
        decompress(b"not gzip at all", "gzip", limit=1000)
    with pytest.raises(Rejected, match="truncated"):
        decompress(gzip.compress(body)[:-12], "gzip", limit=1000)
    forwarded, _ = prepare_http(gzip.compress(body), "gzip", None, MLP, 1000)
    assert orjson.loads(forwarded) == orjson.loads(body)


def test_rejections_keep_their_status_across_a_process_boundary() -> None:
    copy = pickle.loads(pickle.dumps(Rejected("too big", status=413)))
    assert (copy.message, copy.status) == ("too big", 413)
    assert as_app_error(copy).status_code == 413
    assert as_app_error(Rejected("bad encoding", status=415)).kind == "UnsupportedMediaType"
    assert as_app_error(MemoryError()).status_code == 413


def test_the_contract_comes_from_the_version_config() -> None:
    config = """
    name: "t--m--v1" backend: "python" max_batch_size: 8
    input [ { name: "input.1" data_type: TYPE_FP32 dims: [ 3, -1 ] optional: true } ]
    output [ { name: "onnx::Gemm_0" data_type: TYPE_INT64 dims: [ 1 ] } ]
    """
    contract = contract_from_config(config)
    assert contract.inputs["input.1"] == TensorRule("input.1", "FP32", (-1, 3, -1), optional=True)
    assert contract.outputs == {"onnx::Gemm_0"} and contract.max_batch_size == 8
    unreadable = contract_from_config("this is not a config")
    with pytest.raises(Rejected):
        unreadable.check_input("x", "FP32", [1])


# --- gRPC --------------------------------------------------------------------------------------


def _grpc(*inputs: Any, raw: list[bytes] | None = None, **extra: Any) -> bytes:
    request = pb.ModelInferRequest(model_name="mlp", inputs=list(inputs), **extra)
    request.raw_input_contents.extend(raw or [])
    return bytes(request.SerializeToString())


def _gx(shape: list[int], datatype: str = "FP32", **fields: Any) -> Any:
    return pb.ModelInferRequest.InferInputTensor(name="x", datatype=datatype, shape=shape, **fields)


def test_grpc_requests_are_checked_on_the_wire() -> None:
    check_infer_request(_grpc(_gx([1, 4]), raw=[b"\0" * 16]), MLP)
    check_infer_request(_grpc(_gx([2, 4], contents=pb.InferTensorContents(fp32_contents=[0.0] * 8))), MLP)
    cases = [
        (_grpc(_gx([10**12, 4]), raw=[b"\0" * 16]), "max_batch_size"),
        (_grpc(_gx([1, 4]), raw=[b"\0" * 12]), "needs 4 values; it has 3"),
        (_grpc(_gx([1, 4]), raw=[b"\0" * 16, b"\0" * 4]), "1 inputs but 2 raw_input_contents"),
        (_grpc(_gx([1, 4], "INT32"), raw=[b"\0" * 16]), "expects FP32"),
        (_grpc(_gx([1, 4], contents=pb.InferTensorContents(int_contents=[1, 2, 3, 4]))), "fp32_contents"),
        (_grpc(_gx([1, 4], parameters={"shared_memory_region": pb.InferParameter(string_param="r")})),
         "shared memory"),
        (_grpc(_gx([1, 4]), raw=[b"\0" * 16],
               outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name="nope")]), "unknown output"),
        (_grpc(), "no inputs"),
    ]  # fmt: skip
    for request, message in cases:
        with pytest.raises(Rejected, match=message):
            check_infer_request(request, MLP)


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_arbitrary_bytes_on_grpc_end_in_a_clear_refusal(data: bytes) -> None:
    try:
        check_infer_request(data, MLP)
    except (Rejected, WireError):
        pass
    except Exception as exc:  # protobuf's own DecodeError is mapped to INVALID_ARGUMENT too
        assert type(exc).__name__ == "DecodeError", repr(exc)


# --- property-based: whatever JSON arrives, the answer is a Rejected or a body to forward --------

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=5),
)
_json_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
)
_tensor = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["x", "y", "", "x\u0000"]) | st.text(max_size=4) | _scalars,
        "shape": st.lists(st.integers(-2, 6), max_size=4) | _json_values,
        "datatype": st.sampled_from(["FP32", "INT32", "BYTES", "BOOL"]) | _json_values,
        "data": _json_values,
        "parameters": st.dictionaries(
            st.sampled_from(["binary_data_size", "shared_memory_region", "x"]), _scalars
        )
        | _json_values,
    },
)
_documents = st.fixed_dictionaries(
    {}, optional={"inputs": st.lists(_tensor, max_size=3) | _json_values, "outputs": _json_values}
)


@settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(_documents, st.binary(max_size=64))
def test_any_json_request_is_either_forwarded_checked_or_refused(
    document: dict[str, Any], tail: bytes
) -> None:
    head = orjson.dumps(document)
    for body, length in ((head, None), (head + tail, len(head))):
        try:
            forwarded, new_length = prepare(body, header_length=length, contract=MLP)
        except Rejected as refused:
            assert refused.status in (400, 413) and refused.message
            continue
        header = orjson.loads(forwarded if new_length is None else forwarded[:new_length])
        for tensor in header["inputs"]:  # what passes fits the model exactly
            assert tensor["name"] == "x" and tensor["datatype"] == "FP32"
            assert len(tensor["shape"]) == 2 and tensor["shape"][1] == 4 and tensor["shape"][0] <= 8


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["x", "y", "ids"]), _json_values, max_size=3) | _json_values)
def test_any_predict_body_is_converted_exactly_or_refused(inputs: Any) -> None:
    try:
        body, length = predict_codec.to_v2_request(orjson.dumps({"inputs": inputs}), MLP)
    except Rejected as refused:
        assert refused.status in (400, 413) and refused.message
        return
    forwarded, _ = prepare(body, header_length=length, contract=MLP)  # what we send passes our own check
    assert forwarded == body
    expected = np.asarray(inputs["x"], dtype=np.float64).astype(np.float32)
    header = orjson.loads(body[:length])
    sent = np.frombuffer(body[length:], dtype="<f4").reshape(header["inputs"][0]["shape"])
    np.testing.assert_array_equal(sent, expected)


@pytest.mark.parametrize(
    ("datatype", "value", "message"),
    [
        ("INT32", [[1.5, 2, 3]], "float values"),
        ("INT32", [[2**40, 1, 2]], "outside the range of INT32"),
        ("INT32", [[True, 1, 2]], "bool values"),
        ("UINT8", [[-1, 1, 2]], "outside the range of UINT8"),
        ("FP32", [[1e39, 1, 2]], "outside the range of FP32"),
        ("FP16", [[70000, 1, 2]], "outside the range of FP16"),
        ("BOOL", [[1, 0, 1]], "int values"),
        ("BYTES", [[1, 2, 3]], "int values"),
        ("FP32", [[1, 2], [3]], "not a rectangular array"),
    ],
)
def test_predict_refuses_values_that_would_change(datatype: str, value: Any, message: str) -> None:
    contract = Contract({"v": TensorRule("v", datatype, (-1, 3))}, frozenset({"o"}), 4)
    with pytest.raises(Rejected, match=message):
        predict_codec.to_v2_request(orjson.dumps({"inputs": {"v": value}}), contract)


@pytest.mark.parametrize(
    ("datatype", "value"),
    [
        ("INT64", [[2**62, -(2**62), 0]]),
        ("UINT64", [[2**64 - 1, 0, 1]]),
        ("FP16", [[0.5, -2, 65504]]),
        ("BF16", [[1.0, -3.5, 0.0078125]]),
        ("BOOL", [[True, False, True]]),
        ("BYTES", [["a", "", "héllo"]]),
        ("FP64", [[1e300, -1e-300, 0.1]]),
    ],
)
def test_predict_round_trips_every_datatype(datatype: str, value: Any) -> None:
    contract = Contract({"v": TensorRule("v", datatype, (-1, 3))}, frozenset({"v"}), 4)
    body, length = predict_codec.to_v2_request(orjson.dumps({"inputs": {"v": value}}), contract)
    header = orjson.loads(body[:length])
    tensor = header["inputs"][0]
    # What Triton would echo back is what we sent: decode it as a response and compare.
    echo = orjson.dumps({"outputs": [{**tensor, "parameters": tensor["parameters"]}]})
    answer = orjson.loads(predict_codec.to_predict_response(echo + body[length:], len(echo), "m", 1))
    assert answer["outputs"]["v"] == value
    decoded = decode_infer_response(echo + body[length:], header_length=len(echo))["v"]
    assert decoded.shape == (1, 3) and math.prod(decoded.shape) == 3


def test_an_unreadable_answer_is_a_502() -> None:
    with pytest.raises(Rejected) as refused:
        predict_codec.to_predict_response(b'{"outputs": 5}', None, "m", 1)
    assert refused.value.status == 502


class _Workers:
    """HeavyWork's interface, recording what would go to a worker process (and running it here)."""

    def __init__(self) -> None:
        self.submitted: list[Any] = []
        self.admitted = 0

    def admit(self, tenant_id: int) -> None:
        self.admitted += 1

    async def run(self, tenant_id: int, fn: Any, *args: Any) -> Any:
        self.submitted.append(args[0])
        return fn(*args)

    def submit(self, tenant_id: int, fn: Any, *args: Any, done: Any) -> None:
        self.submitted.append(args[0])
        try:
            done(fn(*args))
        except Exception as exc:
            done(exc)


def _checked(body: bytes, encoding: str | None, *, inline_bytes: int = 4096) -> tuple[Any, _Workers]:
    """What `RequestChecks.start_http` hands on for an MLP request body, and what went to a worker."""
    workers = _Workers()
    checks = RequestChecks(workers, limit=1 << 20, inline_bytes=inline_bytes)  # type: ignore[arg-type]
    headers = {b"content-encoding": encoding.encode()} if encoding else {}
    ex = Exchange(headers)
    ex.caller, ex.resolved = SimpleNamespace(tenant_id=1), SimpleNamespace(contract=MLP)  # type: ignore[assignment]
    checks.admit(ex)  # before the body is read (no content-length here: as for a chunked body)
    outcome: list[Any] = []
    checks.start_http(ex, body, outcome.append)
    return outcome[0], workers


def _checked_binary(binary: tuple[bytes, int], contract: Contract) -> tuple[Any, _Workers]:
    """What `RequestChecks.start_http` hands on for a binary-tensor body, and what went to a worker."""
    body, length = binary
    workers = _Workers()
    checks = RequestChecks(workers, limit=1 << 20, inline_bytes=256 * 1024)  # type: ignore[arg-type]
    ex = Exchange({b"inference-header-content-length": str(length).encode()})
    ex.caller, ex.resolved = SimpleNamespace(tenant_id=1), SimpleNamespace(contract=contract)  # type: ignore[assignment]
    outcome: list[Any] = []
    checks.start_http(ex, body, outcome.append)
    return outcome[0], workers


def test_small_compressed_bodies_are_checked_inline_and_big_ones_in_a_worker() -> None:
    """A client that compresses every request (tritonclient's request_compression_algorithm) held one
    worker slot of its tenant per request: past CP_CHECK_PER_TENANT at once it got 429."""
    body = _json(_x([1, 4], [1, 2, 3, 4]))
    for encoding, packed in (("gzip", gzip.compress(body)), ("deflate", zlib.compress(body)), (None, body)):
        forwarded, workers = _checked(packed, encoding)
        assert orjson.loads(forwarded[0])["inputs"][0]["data"] == [1, 2, 3, 4], encoding
        assert workers.submitted == [], encoding
    big = _json(_x([1, 4], [1, 2, 3, 4]), padding="x" * 8000)  # inflates past inline_bytes
    forwarded, workers = _checked(gzip.compress(big), "gzip")
    assert orjson.loads(forwarded[0])["inputs"][0]["data"] == [1, 2, 3, 4]
    assert workers.submitted == [gzip.compress(big)]
    # Compressed, over a quarter of inline_bytes as it arrives (what crafted deflate makes slow to inflate),
    # though it inflates to less than inline_bytes: a worker's.
    noise = _json(_x([1, 4], [1, 2, 3, 4]), padding=np.random.default_rng(1).bytes(1500).hex())
    packed = gzip.compress(noise)
    assert len(packed) > 1024 and len(noise) < 4096
    forwarded, workers = _checked(packed, "gzip")
    assert workers.submitted == [packed] and orjson.loads(forwarded[0])["inputs"][0]["data"] == [1, 2, 3, 4]


def test_many_gzip_members_go_to_a_worker_not_the_event_loop() -> None:
    """Thousands of empty gzip members in a small body cost a decompressor each (~90 ms for 256 KiB)."""
    body = _json(_x([1, 4], [1, 2, 3, 4]))
    packed = gzip.compress(body) + gzip.compress(b"") * 200
    forwarded, workers = _checked(packed, "gzip", inline_bytes=64 * 1024)
    assert orjson.loads(forwarded[0])["inputs"][0]["data"] == [1, 2, 3, 4]
    assert workers.submitted == [packed]
    few = gzip.compress(body[:10]) + gzip.compress(body[10:])  # what a client may send: served inline
    forwarded, workers = _checked(few, "gzip")
    assert workers.submitted == [] and orjson.loads(forwarded[0])["inputs"][0]["data"] == [1, 2, 3, 4]


def test_compressed_bodies_that_are_not_valid_are_refused_inline() -> None:
    for packed, encoding, status in (
        (b"not gzip", "gzip", 400),
        (b"x", "br", 415),
        (gzip.compress(b"[1"), "gzip", 400),
    ):
        refused, workers = _checked(packed, encoding)
        assert refused.status_code == status, (encoding, refused.message)
        assert workers.submitted == []


def test_bodies_of_many_nested_lists_go_to_a_worker_not_the_event_loop() -> None:
    """256 KiB of `[[[[1]]]]` rows or empty lists is ~100k lists: 17-25 ms of parsing on the event loop.
    Past INLINE_CONTAINERS lists and objects a small body is a worker's; nested rows of a modest
    tensor, and any body of flat data, still are checked inline."""
    rows = [[1.0, 2.0, 3.0, 4.0]] * 8
    forwarded, workers = _checked(_json(_x([8, 4], rows)), None, inline_bytes=256 * 1024)
    assert workers.submitted == [] and orjson.loads(forwarded[0])["inputs"][0]["data"] == rows
    flat = _json(_x([8, 4], [1.5] * 32), padding="[" * 100 + "x" * 60_000)
    _, workers = _checked(flat, None, inline_bytes=256 * 1024)
    assert workers.submitted == []
    nested = _json(_x([1, 4], [1, 2, 3, 4], parameters={"rows": [[[[1]]]] * 2000}))
    forwarded, workers = _checked(nested, None, inline_bytes=256 * 1024)
    assert workers.submitted == [nested]
    assert len(orjson.loads(forwarded[0])["inputs"][0]["parameters"]["rows"]) == 2000
    # In a binary-tensor body only the JSON header counts: its tensor bytes may hold any '['.
    vector = Contract({"v": TensorRule("v", "FP32", (-1,))}, frozenset({"y"}), 0)
    v = {"name": "v", "shape": [2000], "datatype": "FP32", "parameters": {"binary_data_size": 8000}}
    forwarded, workers = _checked_binary(_binary({"inputs": [v]}, b"[" * 8000), vector)
    assert workers.submitted == [] and forwarded[0][forwarded[1] :] == b"[" * 8000


def test_predict_bodies_of_many_nested_lists_go_to_a_worker() -> None:
    workers = _Workers()
    checks = RequestChecks(workers, limit=1 << 20, inline_bytes=256 * 1024)  # type: ignore[arg-type]
    ex = Exchange({})
    ex.caller, ex.resolved = SimpleNamespace(tenant_id=1), SimpleNamespace(contract=MLP)  # type: ignore[assignment]
    rows = orjson.dumps({"inputs": {"x": [[1, 2, 3, 4]] * 8}})
    asyncio.run(checks.predict_request(ex, rows))
    assert workers.submitted == []
    unbatched = Contract(
        inputs={"x": TensorRule("x", "FP32", (-1, 4))}, outputs=frozenset({"y"}), max_batch_size=0
    )
    ex.resolved = SimpleNamespace(contract=unbatched)  # type: ignore[assignment]
    many = orjson.dumps({"inputs": {"x": [[1, 2, 3, 4]] * 5000}})
    body, length = asyncio.run(checks.predict_request(ex, many))
    assert workers.submitted == [many] and orjson.loads(body[:length])["inputs"][0]["shape"] == [5000, 4]
    noted = orjson.dumps({"inputs": {"x": [[1, 2, 3, 4]] * 8}, "note": [[]] * 5000})  # refused there too
    with pytest.raises(BadRequest, match="unknown field 'note'"):
        asyncio.run(checks.predict_request(ex, noted))
    assert workers.submitted == [many, noted]


def test_nested_data_is_counted_level_by_level_with_its_ranges_checked() -> None:
    ints = Contract({"i": TensorRule("i", "INT32", (-1, 3))}, frozenset({"o"}), 4)
    i = {"name": "i", "shape": [2, 3], "datatype": "INT32"}
    prepare(_json({**i, "data": [[1, 2, 3], [4, 5, -(2**31)]]}), header_length=None, contract=ints)
    with pytest.raises(Rejected, match="outside the range of INT32"):  # nested rows were not range-checked
        prepare(_json({**i, "data": [[1, 2, 3], [4, 5, 2**40]]}), header_length=None, contract=ints)
    with pytest.raises(Rejected, match="nested deeper than its shape, or ragged"):
        prepare(_json({**i, "data": [[1, 2, 3], [[4, 5, 6]]]}), header_length=None, contract=ints)
    with pytest.raises(Rejected, match="needs 6 values; it has 5"):
        prepare(_json({**i, "data": [[1, 2, 3], [4, 5]]}), header_length=None, contract=ints)
    with pytest.raises(Rejected, match="str values in 'data'; INT32 needs integers"):
        prepare(_json({**i, "data": [[1, 2, 3], [4, 5, "6"]]}), header_length=None, contract=ints)
    rank8 = Contract({"x": TensorRule("x", "FP32", (-1,) * 8)}, frozenset({"y"}), 0)
    body = _json(
        {"name": "x", "shape": [3000] + [1] * 7, "datatype": "FP32", "data": [[[[[[[[1.5]]]]]]]] * 3000}
    )
    forwarded, _ = prepare(body, header_length=None, contract=rank8)
    assert orjson.loads(forwarded)["inputs"][0]["shape"][0] == 3000


def test_json_nested_past_what_can_be_forwarded_is_a_400() -> None:
    """orjson reads 1024 levels but writes 254: a request nested 300 deep in `parameters` was a 500."""
    deep = {"deep": orjson.Fragment(b"[" * 300 + b"]" * 300)}
    for body, message in (
        (_json(_x([1, 4], [1, 2, 3, 4], parameters=deep)), "input 'x' nests too deeply"),
        (_json(_x([1, 4], [1, 2, 3, 4]), outputs=[{"name": "y", "parameters": deep}]), "output 'y' nests"),
        (_json(_x([1, 4], [1, 2, 3, 4]), parameters=deep), "parameter 'deep' must be a string, number or"),
    ):
        with pytest.raises(Rejected, match=message) as refused:
            prepare(body, header_length=None, contract=MLP)
        assert refused.value.status == 400


def test_the_requests_own_parameters_are_scalars_as_triton_takes_them() -> None:
    """Triton refuses a request parameter that is a list, an object or null (an input's it ignores)."""
    for value, shown in (([1], "a list"), ({"a": 1}, "an object"), (None, "null")):
        with pytest.raises(
            Rejected, match=f"parameter 'p' must be a string, number or boolean; it is {shown}"
        ):
            prepare(
                _json(_x([1, 4], [1, 2, 3, 4]), parameters={"p": value}), header_length=None, contract=MLP
            )
    scalars = {"s": "a", "i": 1, "f": 1.5, "b": True, "priority": 0}
    forwarded, _ = prepare(
        _json(_x([1, 4], [1, 2, 3, 4]), parameters=scalars), header_length=None, contract=MLP
    )
    assert orjson.loads(forwarded)["parameters"] == scalars
    tensor_level = _json(
        _x([1, 4], [1, 2, 3, 4], parameters={"p": [1]}), outputs=[{"name": "y", "parameters": {"q": {}}}]
    )
    prepare(tensor_level, header_length=None, contract=MLP)


def test_a_large_grpc_request_is_checked_as_resolved_by_its_leading_name() -> None:
    """Checked in a worker after being resolved by the name leading it: a second name anywhere (a
    parser keeps the last) would be another model than the one checked, so it is refused."""
    from control_plane.dataplane.grpc_check import check_large_request

    stock = _grpc(_gx([1, 4]), raw=[b"\0" * 16]) + b"\x78\x01" * 3000  # unknown fields, skipped
    check_large_request(stock, MLP, protowire.leading(stock).body)
    smuggled = stock + protowire.string_field(1, b"t--other--v1")
    with pytest.raises(Rejected, match="model_name and model_version must lead the request"):
        check_large_request(smuggled, MLP, protowire.leading(smuggled).body)
    with pytest.raises(Rejected, match="max_batch_size"):
        big = _grpc(_gx([10**12, 4]), raw=[b"\0" * 16]) + b"\x78\x01" * 3000
        check_large_request(big, MLP, protowire.leading(big).body)


def test_thousands_of_bytes_elements_are_counted_in_a_worker() -> None:
    """256 KiB of empty BYTES elements is 65k length prefixes, counted one by one (30 ms inline)."""
    text = Contract({"t": TensorRule("t", "BYTES", (-1,))}, frozenset({"o"}), 0)
    few = struct.pack("<I", 5) + b"hello"
    many = b"\0\0\0\0" * 65536
    for tail, inline in ((few, True), (many, False)):
        count = 1 if inline else 65536
        t = {
            "name": "t",
            "shape": [count],
            "datatype": "BYTES",
            "parameters": {"binary_data_size": len(tail)},
        }
        forwarded, workers = _checked_binary(_binary({"inputs": [t]}, tail), text)
        assert (workers.submitted == []) is inline
        assert forwarded[0][forwarded[1] :] == tail
    raw = pb.ModelInferRequest.InferInputTensor(name="t", datatype="BYTES", shape=[65536])
    request = _grpc(raw, raw=[many])
    walked = protowire.walk(request, keep=REQUEST_FIELDS)
    assert walked is not None and inline_sized(walked, 256 * 1024)
    with pytest.raises(CheckLater):
        check_walked(request, walked, text, inline=True)
    check_walked(request, walked, text)  # in the worker: counted in full
    shaped = _grpc(_gx([1] * 300_000), raw=[b"\0" * 16])  # typed fields past the inline bytes
    walked = protowire.walk(shaped, keep=REQUEST_FIELDS)
    assert walked is not None and not inline_sized(walked, 256 * 1024)


def test_predict_strings_by_the_thousand_are_converted_in_a_worker() -> None:
    """64k short strings in a 250 KiB /v1/predict body took 25 ms to check and encode one by one inline;
    a model answering thousands of strings is decoded in a worker too."""
    text = Contract({"t": TensorRule("t", "BYTES", (-1,))}, frozenset({"t"}), 0)
    workers = _Workers()
    checks = RequestChecks(workers, limit=1 << 20, inline_bytes=256 * 1024)  # type: ignore[arg-type]
    ex = Exchange({})
    ex.caller = SimpleNamespace(tenant_id=1)  # type: ignore[assignment]
    ex.resolved = SimpleNamespace(contract=text, model="m", version=1)  # type: ignore[assignment]
    few = orjson.dumps({"inputs": {"t": ["hello", "world"]}})
    asyncio.run(checks.predict_request(ex, few))
    assert workers.submitted == []
    many = orjson.dumps({"inputs": {"t": ["a"] * 5000}})
    body, length = asyncio.run(checks.predict_request(ex, many))
    assert workers.submitted == [many] and orjson.loads(body[:length])["inputs"][0]["shape"] == [5000]
    for count, inline in ((2, True), (5000, False)):
        workers.submitted.clear()
        tail = b"".join(struct.pack("<I", 1) + b"a" for _ in range(count))
        output = {
            "name": "t",
            "datatype": "BYTES",
            "shape": [count],
            "parameters": {"binary_data_size": len(tail)},
        }
        head = orjson.dumps({"outputs": [output]})
        answer = asyncio.run(checks.predict_response(ex, head + tail, len(head)))
        assert orjson.loads(answer)["outputs"]["t"] == ["a"] * count
        assert (workers.submitted == []) is inline


def test_the_check_workers_come_back_after_one_dies_while_idle() -> None:
    """A pool whose idle worker was killed (the OOM killer, say) refused every later submit with
    BrokenProcessPool: every big, compressed or /v1/predict request failed until a restart."""

    async def run() -> list[int]:
        heavy = HeavyWork(workers=1, per_tenant=4, queue_limit=8)
        try:
            first = await heavy.run(1, os.getpid)
            os.kill(first, signal.SIGKILL)
            for _ in range(100):  # until the pool has seen its worker die
                await asyncio.sleep(0.05)
                if heavy._pool is not None and heavy._pool._broken:  # type: ignore[attr-defined]
                    break
            return [first, await heavy.run(1, os.getpid), await heavy.run(1, os.getpid)]
        finally:
            heavy.close()

    first, second, third = asyncio.run(run())
    assert second != first and third == second


def test_one_budget_of_bytes_elements_per_request_and_no_counting_for_repeated_inputs() -> None:
    """The inline bound on BYTES elements was per input: 1023 inputs named alike, 4096 empty elements
    each, were all counted on the event loop (1.7 s) before the repeated name was refused."""
    pair = Contract(
        {"a": TensorRule("a", "BYTES", (-1,)), "b": TensorRule("b", "BYTES", (-1,))}, frozenset({"o"}), 0
    )
    half = b"\0\0\0\0" * 3000  # 3000 empty elements: under the bound alone, over it together
    tensors = [
        {"name": n, "shape": [3000], "datatype": "BYTES", "parameters": {"binary_data_size": len(half)}}
        for n in ("a", "b")
    ]
    forwarded, workers = _checked_binary(_binary({"inputs": tensors}, half + half), pair)
    assert len(workers.submitted) == 1 and forwarded[0][forwarded[1] :] == half + half
    grpc_pair = [pb.ModelInferRequest.InferInputTensor(name=n, datatype="BYTES", shape=[3000]) for n in "ab"]
    request = _grpc(*grpc_pair, raw=[half, half])
    walked = protowire.walk(request, keep=REQUEST_FIELDS)
    assert walked is not None
    with pytest.raises(CheckLater):
        check_walked(request, walked, pair, inline=True)
    check_walked(request, walked, pair)
    twice = [pb.ModelInferRequest.InferInputTensor(name="a", datatype="BYTES", shape=[3000])] * 2
    repeated = _grpc(*twice, raw=[half, half])
    walked = protowire.walk(repeated, keep=REQUEST_FIELDS)
    assert walked is not None
    with pytest.raises(Rejected, match="input 'a' appears more than once"):  # before any counting
        check_walked(repeated, walked, pair, inline=True)


def test_a_grpc_shape_has_at_most_64_dimensions_as_over_http() -> None:
    with pytest.raises(Rejected, match="input 'x' has a shape of 255000 dimensions; at most 64"):
        check_infer_request(_grpc(_gx([1] * 255_000), raw=[b"\0" * 16]), MLP)
