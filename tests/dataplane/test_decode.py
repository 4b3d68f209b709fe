"""decode_infer_response against real Triton responses, tritonclient's own parser, and malformed bodies."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import tritonclient.http as triton_http

from control_plane.dataplane.decode import decode_infer_response
from tests.fixtures_triton import RunningTriton
from tests.support.v2 import build_response

CONFIG = """\
name: "{name}"
backend: "python"
max_batch_size: 0
input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] }} ]
output [
  {{ name: "F32" data_type: TYPE_FP32 dims: [ 2, -1 ] }},
  {{ name: "I64" data_type: TYPE_INT64 dims: [ -1 ] }},
  {{ name: "FLAG" data_type: TYPE_BOOL dims: [ -1 ] }},
  {{ name: "TEXT" data_type: TYPE_STRING dims: [ -1 ] }},
  {{ name: "U8" data_type: TYPE_UINT8 dims: [ -1 ] }},
  {{ name: "EMPTY" data_type: TYPE_FP64 dims: [ -1 ] }}
]
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
"""

MODEL = """\
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            outputs = {
                "F32": np.stack([x * 2, x - 0.25]).astype(np.float32),
                "I64": (x * 1000).astype(np.int64) - 2**40,
                "FLAG": x > 0,
                "TEXT": np.array([("v=%g é" % v).encode() for v in x], dtype=object),
                "U8": np.arange(len(x), dtype=np.uint8) + 250,
                "EMPTY": np.zeros(0, dtype=np.float64),
            }
            tensors = [pb_utils.Tensor(name, value) for name, value in outputs.items()]
            responses.append(pb_utils.InferenceResponse(tensors))
        return responses
"""
X = np.array([1.5, -2.0, 0.0], dtype=np.float32)


def expected_outputs(x: np.ndarray) -> dict[str, np.ndarray]:
    """What the model above computes, as decode_infer_response should return it."""
    text = np.empty(len(x), dtype=object)
    text[:] = [f"v={v:g} é".encode() for v in x]
    return {
        "F32": np.stack([x * 2, x - 0.25]).astype(np.float32),
        "I64": (x * 1000).astype(np.int64) - 2**40,
        "FLAG": x > 0,
        "TEXT": text,
        "U8": (np.arange(len(x)) + 250).astype(np.uint8),
        "EMPTY": np.zeros(0, dtype=np.float64),
    }


def assert_same_arrays(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert actual.keys() == expected.keys()
    for name, want in expected.items():
        got = actual[name]
        assert got.dtype == want.dtype, name
        assert got.shape == want.shape, name
        np.testing.assert_array_equal(got, want, err_msg=name)


@pytest.fixture(scope="module")
def multi_output_model(triton: RunningTriton) -> str:
    """A Python-backend model with FP32, INT64, BOOL, BYTES, UINT8 and empty FP64 outputs, loaded."""
    assert triton.repository is not None
    name = f"decode_{uuid.uuid4().hex[:8]}"
    folder = triton.repository / name
    (folder / "1").mkdir(parents=True)
    (folder / "config.pbtxt").write_text(CONFIG.format(name=name))
    (folder / "1" / "model.py").write_text(MODEL)
    triton.client.load_model(name)
    return name


def _triton_infer(triton: RunningTriton, model: str, extra: dict[str, Any]) -> tuple[bytes, int | None]:
    request = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [3], "data": X.tolist()}], **extra}
    response = httpx.post(f"{triton.http_url}/v2/models/{model}/infer", content=orjson.dumps(request))
    assert response.status_code == 200, response.text
    length = response.headers.get("inference-header-content-length")
    return response.content, int(length) if length is not None else None


ALL_BINARY = {"parameters": {"binary_data_output": True}}
MIXED = {
    "outputs": [
        {"name": "F32", "parameters": {"binary_data": True}},
        {"name": "I64"},
        {"name": "FLAG", "parameters": {"binary_data": True}},
        {"name": "TEXT", "parameters": {"binary_data": True}},
        {"name": "U8"},
        {"name": "EMPTY", "parameters": {"binary_data": True}},
    ]
}


@pytest.mark.parametrize("extra", [{}, ALL_BINARY, MIXED], ids=["json", "binary", "mixed"])
def test_decodes_real_triton_responses(
    triton: RunningTriton, multi_output_model: str, extra: dict[str, Any]
) -> None:
    body, header_length = _triton_infer(triton, multi_output_model, extra)
    assert (header_length is None) == (not extra)
    decoded = decode_infer_response(body, header_length=header_length)
    assert_same_arrays(decoded, expected_outputs(X))


def test_agrees_with_tritonclients_parser_on_binary_responses(
    triton: RunningTriton, multi_output_model: str
) -> None:
    body, header_length = _triton_infer(triton, multi_output_model, MIXED)
    header = orjson.loads(body[:header_length])
    binary = {o["name"] for o in header["outputs"] if "binary_data_size" in o.get("parameters", {})}
    assert binary == {"F32", "FLAG", "TEXT", "EMPTY"}, "Triton should mix binary and JSON outputs"
    decoded = decode_infer_response(body, header_length=header_length)
    oracle = triton_http.InferResult.from_response_body(body, header_length=header_length)
    for name, array in decoded.items():
        np.testing.assert_array_equal(array, oracle.as_numpy(name), err_msg=name)


def _text(*items: bytes) -> np.ndarray:
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array


HAND_BUILT: dict[str, np.ndarray] = {
    "F32": np.array([[0.5, -1.25], [3.0, 1e-8]], dtype=np.float32),
    "I64": np.array([-(2**62), 7, 0], dtype=np.int64),
    "U64": np.array([2**64 - 1], dtype=np.uint64),
    "FLAG": np.array([[True], [False]]),
    "TEXT": _text(b"", b"ab", b"\xc3\xa9"),
    "F64": np.zeros((2, 0, 3), dtype=np.float64),
}


@pytest.mark.parametrize("binary", ["none", "all", "alternate"])
def test_round_trips_hand_built_responses(binary: str) -> None:
    flags = {"none": [False] * 6, "all": [True] * 6, "alternate": [True, False] * 3}[binary]
    body, header_length = build_response(
        [(name, array, flag) for (name, array), flag in zip(HAND_BUILT.items(), flags, strict=True)]
    )
    assert_same_arrays(decode_infer_response(body, header_length=header_length), HAND_BUILT)


def test_json_data_may_be_nested_and_bf16_widens_to_float32() -> None:
    bf16 = (np.array([1.0, -2.5, 3.140625], dtype=np.float32).view(np.uint32) >> 16).astype("<u2")
    header = orjson.dumps(
        {
            "outputs": [
                {"name": "n", "datatype": "INT32", "shape": [2, 2], "data": [[1, 2], [3, 4]]},
                {"name": "b", "datatype": "BF16", "shape": [3], "parameters": {"binary_data_size": 6}},
            ]
        }
    )
    decoded = decode_infer_response(header + bf16.tobytes(), header_length=len(header))
    assert decoded["n"].dtype == np.int32
    np.testing.assert_array_equal(decoded["n"], [[1, 2], [3, 4]])
    assert decoded["b"].dtype == np.float32
    np.testing.assert_array_equal(decoded["b"], [1.0, -2.5, 3.140625])


def test_empty_json_tensors_keep_their_datatype() -> None:
    body = _json(
        {"name": "f", "datatype": "BOOL", "shape": [0, 2], "data": []},
        {"name": "t", "datatype": "BYTES", "shape": [0], "data": []},
    )
    decoded = decode_infer_response(body, header_length=None)
    assert decoded["f"].dtype == np.dtype(bool) and decoded["f"].shape == (0, 2)
    assert decoded["t"].dtype == np.dtype(object) and decoded["t"].shape == (0,)


def _out(**fields: Any) -> dict[str, Any]:
    return {"name": "y", "datatype": "FP32", "shape": [2], "data": [1.0, 2.0], **fields}


def _json(*outputs: Any) -> bytes:
    return orjson.dumps({"outputs": list(outputs)})


def _binary(output: dict[str, Any], raw: bytes) -> tuple[bytes, int]:
    header = _json(output)
    return header + raw, len(header)


MALFORMED: dict[str, tuple[bytes, int | None, str]] = {
    "not json": (b"{nope", None, "not valid JSON"),
    "no outputs": (b'{"model_name": "m"}', None, "no 'outputs' list"),
    "outputs not a list": (b'{"outputs": 3}', None, "no 'outputs' list"),
    "output not an object": (_json(5), None, "not an object"),
    "no name": (_json({"datatype": "FP32", "shape": [1], "data": [1]}), None, "has no name"),
    "unknown datatype": (_json(_out(datatype="FP8")), None, "unknown datatype"),
    "negative dim": (_json(_out(shape=[-1])), None, "invalid shape"),
    "bool dim": (_json(_out(shape=[True, 2])), None, "invalid shape"),
    "duplicate name": (_json(_out(), _out()), None, "more than once"),
    "no data": (_json(_out(data=None)), None, "neither a 'data' list"),
    "count vs shape": (_json(_out(shape=[3])), None, "has 2 elements; shape [3] needs 3"),
    "strings as FP32": (_json(_out(data=["a", "b"])), None, "not a FP32 tensor"),
    "ragged data": (_json(_out(data=[[1.0], [2.0, 3.0]])), None, "not a FP32 tensor"),
    "overflowing INT8": (_json(_out(datatype="INT8", data=[1, 300])), None, "do not fit INT8"),
    "fraction in INT64": (_json(_out(datatype="INT64", data=[1, 2.5])), None, "do not fit INT64"),
    "negative UINT64": (_json(_out(datatype="UINT64", data=[-1, 2])), None, "do not fit UINT64"),
    "number in BOOL": (_json(_out(datatype="BOOL", data=[1, 0])), None, "not a BOOL tensor"),
    "number in BYTES": (_json(_out(datatype="BYTES", data=["a", 1])), None, "non-string element"),
    "header length past body": (b'{"outputs": []}', 99, "outside a body"),
    "bad binary size": (*_binary(_out(data=None, parameters={"binary_data_size": -4}), b""), "invalid"),
    "binary past end": (*_binary(_out(parameters={"binary_data_size": 8}), b"\0" * 4), "body ends"),
    "binary size vs shape": (*_binary(_out(parameters={"binary_data_size": 4}), b"\0" * 4), "needs 8"),
    "trailing bytes": (*_binary(_out(parameters={"binary_data_size": 8}), b"\0" * 9), "unaccounted"),
    "BYTES cut in prefix": (
        *_binary(_out(datatype="BYTES", shape=[1], parameters={"binary_data_size": 2}), b"\1\0"),
        "inside an element's length prefix",
    ),
    "BYTES element past end": (
        *_binary(_out(datatype="BYTES", shape=[1], parameters={"binary_data_size": 6}), b"\5\0\0\0ab"),
        "past its end",
    ),
    "BYTES count vs shape": (
        *_binary(_out(datatype="BYTES", shape=[2], parameters={"binary_data_size": 5}), b"\1\0\0\0a"),
        "has 1 elements; shape [2] needs 2",
    ),
    "odd BF16 bytes": (
        *_binary(_out(datatype="BF16", shape=[1], parameters={"binary_data_size": 3}), b"\0" * 3),
        "whole number of BF16",
    ),
}


@pytest.mark.parametrize("case", MALFORMED, ids=list(MALFORMED))
def test_malformed_responses_raise_value_error_with_a_clear_message(case: str) -> None:
    body, header_length, message = MALFORMED[case]
    with pytest.raises(ValueError, match=re.escape(message)):
        decode_infer_response(body, header_length=header_length)
