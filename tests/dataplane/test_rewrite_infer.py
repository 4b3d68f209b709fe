"""Triton's infer answer under the client's model name: only the name and version are replaced, and
nothing after them is copied, whatever the request's `id` holds."""

from __future__ import annotations

import random

import numpy as np
import orjson
import pytest

from control_plane.dataplane.rewrite import rewrite_infer_response

NAME = "acme--mlp--3--v1"


def _answer(request_id: str | None, outputs: list[dict[str, object]]) -> bytes:
    """Triton's JSON header, in Triton's order: id, model_name, model_version, outputs."""
    document: dict[str, object] = {}
    if request_id is not None:
        document["id"] = request_id
    document.update({"model_name": NAME, "model_version": "1", "outputs": outputs})
    return orjson.dumps(document)


@pytest.mark.parametrize("seed", range(200))
def test_the_name_is_replaced_whatever_the_id_and_outputs_hold(seed: int) -> None:
    rng = random.Random(seed)
    tricky = ['"model_name":"acme--mlp--3--v1","model_version":"1"', '\\"', '"', "é", "x" * 600]
    request_id = rng.choice([None, "", "r1", "".join(rng.choices(tricky, k=rng.randint(1, 4)))])
    data = rng.choices(tricky, k=3)
    body = _answer(request_id, [{"name": "y", "datatype": "BYTES", "shape": [3], "data": data}])

    head, tail, length = rewrite_infer_response(
        body, header_length=None, triton_name=NAME, model="mlp", version=3
    )

    assert length is None
    document = orjson.loads(head + bytes(tail))
    expected = {**orjson.loads(body), "model_name": "mlp", "model_version": "3"}
    assert document == expected
    assert list(document) == list(expected)


def test_nothing_after_the_name_is_copied_and_the_binary_header_length_follows() -> None:
    big: list[dict[str, object]] = [
        {"name": "y", "datatype": "FP32", "shape": [100000], "data": [0.5] * 100000}
    ]
    body = _answer("x" * 600, big)  # a long id: the name is past the first 512 bytes
    head, tail, length = rewrite_infer_response(
        body, header_length=None, triton_name=NAME, model="mlp", version=3
    )
    assert tail.obj is body and len(head) < 700  # the outputs stay where they are
    assert orjson.loads(head + bytes(tail))["model_name"] == "mlp"
    tensor = np.arange(4, dtype="<f4").tobytes()
    header = _answer(
        "r", [{"name": "y", "datatype": "FP32", "shape": [4], "parameters": {"binary_data_size": 16}}]
    )
    head, tail, length = rewrite_infer_response(
        header + tensor, header_length=len(header), triton_name=NAME, model="mlp", version=3
    )
    whole = head + bytes(tail)
    assert length is not None and whole[length:] == tensor
    assert orjson.loads(whole[:length])["model_version"] == "3"
