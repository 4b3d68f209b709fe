"""Inference: `/v1/predict` (JSON lists) and KServe v2 infer (numpy arrays)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from control_plane.client.connection import Connection, path
from control_plane.client.types import Prediction

NUMPY_TO_V2 = {
    "bool": "BOOL",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
}
V2_TO_NUMPY = {v: k for k, v in NUMPY_TO_V2.items()}


def routing_headers(*, alias: str | None, tenant: str | None, routing_key: str | None) -> dict[str, str]:
    """X-Model-Alias, X-Tenant (admin keys infer on a tenant's behalf) and X-Routing-Key (sticky canary)."""
    headers = {"X-Model-Alias": alias, "X-Tenant": tenant, "X-Routing-Key": routing_key}
    return {k: v for k, v in headers.items() if v is not None}


def _v2_input(name: str, value: Any) -> dict[str, Any]:
    array = np.asarray(value)
    if array.dtype.kind in "USO":
        datatype, data = "BYTES", [str(x) for x in array.reshape(-1)]
    elif array.dtype.name in NUMPY_TO_V2:
        datatype, data = NUMPY_TO_V2[array.dtype.name], array.reshape(-1).tolist()
    else:
        raise TypeError(f"input '{name}': numpy dtype {array.dtype} has no KServe v2 datatype")
    return {"name": name, "datatype": datatype, "shape": list(array.shape), "data": data}


def _v2_output(output: Mapping[str, Any]) -> np.ndarray[Any, Any]:
    dtype = V2_TO_NUMPY.get(str(output.get("datatype")), "object")
    return np.asarray(output.get("data", []), dtype=dtype).reshape(output.get("shape", [-1]))


class Inference:
    """Calls the data plane with the connection's key (tenant taken from it; admins name one)."""

    def __init__(self, conn: Connection):
        self._conn = conn

    def predict(
        self,
        model: str,
        inputs: Mapping[str, Any],
        *,
        alias: str | None = None,
        tenant: str | None = None,
        routing_key: str | None = None,
    ) -> Prediction:
        """`POST /v1/predict/{model}` with `{"inputs": {name: nested lists or numbers}}`."""
        body = {
            name: np.asarray(v).tolist() if isinstance(v, np.ndarray) else v for name, v in inputs.items()
        }
        headers = routing_headers(alias=alias, tenant=tenant, routing_key=routing_key)
        answer = self._conn.json("POST", path("v1", "predict", model), json={"inputs": body}, headers=headers)
        return Prediction.model_validate(answer)

    def infer(
        self,
        model: str,
        inputs: Mapping[str, Any],
        *,
        version: int | None = None,
        alias: str | None = None,
        tenant: str | None = None,
        routing_key: str | None = None,
    ) -> dict[str, np.ndarray[Any, Any]]:
        """KServe v2 `POST /v2/models/{model}[/versions/{n}]/infer` (JSON); outputs as numpy arrays."""
        segments: list[str | int] = ["v2", "models", model]
        if version is not None:
            segments += ["versions", version]
        body = {"inputs": [_v2_input(name, value) for name, value in inputs.items()]}
        headers = routing_headers(alias=alias, tenant=tenant, routing_key=routing_key)
        answer = self._conn.json("POST", path(*segments, "infer"), json=body, headers=headers)
        return {o["name"]: _v2_output(o) for o in answer.get("outputs", [])}
