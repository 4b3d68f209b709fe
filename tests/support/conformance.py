"""Call a served model over each protocol with stock clients, and compare with its framework's outputs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import ml_dtypes
import numpy as np
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.utils import np_to_triton_dtype

from tests.support.zoo import Arrays, ZooModel

PROTOCOLS = ("http-json", "http-binary", "grpc", "predict")
METADATA = ("metadata-http", "metadata-grpc")


@dataclass
class Clients:
    """Stock clients pointed at the control plane, with a consumer key."""

    http: triton_http.InferenceServerClient
    grpc: triton_grpc.InferenceServerClient
    api: httpx.Client
    key: str

    @property
    def headers(self) -> dict[str, str]:
        """The key as an Authorization header."""
        return {"Authorization": f"Bearer {self.key}"}


def call(clients: Clients, protocol: str, model: ZooModel) -> Arrays:
    """The model's outputs for its inputs over one protocol, as numpy arrays by name."""
    calls: dict[str, Callable[[Clients, ZooModel], Arrays]] = {
        "http-json": lambda c, m: _http(c, m, binary=False),
        "http-binary": lambda c, m: _http(c, m, binary=True),
        "grpc": _grpc,
        "predict": _predict,
    }
    return calls[protocol](clients, model)


FP16_JSON = "receiving FP16 data via JSON is not supported"


def refused_in_json(model: ZooModel) -> bool:
    """Triton takes no FP16/BF16 in JSON: such a request must be refused in the user's terms, not served."""
    return any(_json_less(value) for value in model.inputs.values())


def _json_less(value: np.ndarray) -> bool:
    return value.dtype in (np.float16, ml_dtypes.bfloat16)


def _http(clients: Clients, model: ZooModel, *, binary: bool) -> Arrays:
    if not binary and refused_in_json(model):
        return _expect_json_refusal(clients, model)
    inputs = []
    for name, value in model.inputs.items():
        tensor = triton_http.InferInput(name, list(value.shape), np_to_triton_dtype(value.dtype))
        tensor.set_data_from_numpy(value, binary_data=binary)
        inputs.append(tensor)
    outputs = [triton_http.InferRequestedOutput(name, binary_data=binary) for name in model.expected]
    result = clients.http.infer(model.name, inputs, outputs=outputs, headers=clients.headers)
    return {name: result.as_numpy(name) for name in model.expected}


def _expect_json_refusal(clients: Clients, model: ZooModel) -> Arrays:
    name = next(n for n, v in model.inputs.items() if _json_less(v))
    body = {
        "inputs": [
            {
                "name": n,
                "shape": list(v.shape),
                "datatype": np_to_triton_dtype(v.dtype),
                "data": (v.astype(np.float64) if _json_less(v) else v).reshape(-1).tolist(),
            }
            for n, v in model.inputs.items()
        ]
    }
    response = clients.api.post(f"/v2/models/{model.name}/infer", json=body, headers=clients.headers)
    fp16 = model.inputs[name].dtype == np.float16
    if response.status_code != 400 or (fp16 and FP16_JSON not in response.text) or name not in response.text:
        raise AssertionError(
            f"FP16/BF16 in JSON: expected a 400 naming input '{name}', "
            f"got {response.status_code}: {response.text[:200]}"
        )
    return dict(model.expected)  # refused as it must be: nothing else to compare


def _grpc(clients: Clients, model: ZooModel) -> Arrays:
    inputs = []
    for name, value in model.inputs.items():
        tensor = triton_grpc.InferInput(name, list(value.shape), np_to_triton_dtype(value.dtype))
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    outputs = [triton_grpc.InferRequestedOutput(name) for name in model.expected]
    result = clients.grpc.infer(
        model.name, inputs, outputs=outputs, headers={"authorization": f"Bearer {clients.key}"}
    )
    return {name: result.as_numpy(name) for name in model.expected}


def _predict(clients: Clients, model: ZooModel) -> Arrays:
    body = {"inputs": {name: _listed(value) for name, value in model.inputs.items()}}
    response = clients.api.post(f"/v1/predict/{model.name}", json=body, headers=clients.headers)
    if response.status_code != 200:
        raise AssertionError(f"/v1/predict answered {response.status_code}: {response.text[:300]}")
    outputs = response.json()["outputs"]
    return {name: _array(outputs[name], model.expected[name]) for name in model.expected if name in outputs}


def _listed(value: np.ndarray) -> Any:
    if value.dtype == object:
        return np.vectorize(lambda item: item.decode(), otypes=[object])(value).tolist() if value.size else []
    return value.tolist()


def _array(value: Any, like: np.ndarray) -> np.ndarray:
    if like.dtype == object:
        array = np.array(value, dtype=object)
        return np.vectorize(lambda item: item.encode(), otypes=[object])(array) if array.size else array
    return np.array(value, dtype=like.dtype)


def metadata_difference(clients: Clients, protocol: str, model: ZooModel) -> str | None:
    """Whether the model's metadata names its tensors exactly as the exporter did (None when it does)."""
    if protocol == "metadata-http":
        document = clients.http.get_model_metadata(model.name, headers=clients.headers)
        inputs, outputs = document["inputs"], document["outputs"]
        names = [t["name"] for t in inputs], [t["name"] for t in outputs]
    else:
        answer = clients.grpc.get_model_metadata(
            model.name, headers={"authorization": f"Bearer {clients.key}"}
        )
        names = [t.name for t in answer.inputs], [t.name for t in answer.outputs]
    if not set(names[0]) >= set(model.inputs) or set(names[1]) != set(model.expected):
        return f"metadata names {names}; the exporter named {list(model.inputs)}, {list(model.expected)}"
    return None


def difference(model: ZooModel, protocol: str, got: Arrays) -> str | None:
    """Why `got` is not what the framework gave (None when it is)."""
    for name, expected in model.expected.items():
        if name not in got or got[name] is None:
            return f"output '{name}' missing"
        actual = _as_bytes(got[name]) if expected.dtype == object else got[name]
        if model.scalar_outputs and expected.ndim == 0 and actual.size == 1:
            actual = actual.reshape(())  # Triton reports a 0-d output as [1]
        if actual.shape != expected.shape:
            return f"output '{name}' has shape {list(actual.shape)}, the framework {list(expected.shape)}"
        if protocol != "predict" and actual.dtype != expected.dtype:
            return f"output '{name}' has dtype {actual.dtype}, the framework {expected.dtype}"
        if not _same(actual, expected, model):
            return f"output '{name}' differs: {actual.reshape(-1)[:6]} vs {expected.reshape(-1)[:6]}"
    return None


def _as_bytes(value: np.ndarray) -> np.ndarray:
    """BYTES as bytes objects (tritonclient.http gives str for BYTES answered in JSON)."""
    flat = [item.encode() if isinstance(item, str) else item for item in value.reshape(-1)]
    return np.array(flat, dtype=object).reshape(value.shape)


def _same(actual: np.ndarray, expected: np.ndarray, model: ZooModel) -> bool:
    if expected.dtype.kind == "f":
        return bool(
            np.allclose(
                actual.astype(np.float64), expected.astype(np.float64), rtol=model.rtol, atol=model.atol
            )
        )
    return bool(np.array_equal(actual, expected))
