"""Call the control plane with KServe's own Python SDK, in a process of its own.

kserve's gRPC messages and tritonclient's are both compiled into protobuf's default pool under the package
`inference`, so the two cannot be imported by one process ("duplicate symbol 'inference.ServerLiveRequest'"):
the test suite, which imports tritonclient, runs this as `python -m tests.support.kserve_sdk_client` with a
JSON plan on stdin and reads a JSON report on stdout.

Plan: {"http": base URL, "grpc": "host:port", "key": consumer key,
       "calls": [{"model": name, "inputs": {name: {"datatype", "shape", "data"}}}],
       "missing": a model name nobody has, "bad_key": a key that is not one}
Report: {"calls": [{mode: {"ready": bool, "model_name": str, "outputs": {name: {"datatype", "shape",
         "data"}}} or {"error": str}}], "refusals": {case: status code or gRPC code name}}
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import grpc
import httpx
import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig

MODES = ("rest-json", "rest-binary", "grpc")


def _request(model: str, inputs: dict[str, Any], *, binary: bool) -> InferRequest:
    tensors = []
    for name, spec in inputs.items():
        tensor = InferInput(name=name, shape=spec["shape"], datatype=spec["datatype"])
        if spec["datatype"] == "BYTES":
            data = np.array([item.encode() for item in spec["data"]], dtype=object)
        else:
            data = np.array(spec["data"], dtype=np.float32)
        tensor.set_data_from_numpy(data.reshape(spec["shape"]), binary_data=binary)
        tensors.append(tensor)
    return InferRequest(model_name=model, infer_inputs=tensors, request_id="kserve-sdk")


def _outputs(response: Any) -> dict[str, Any]:
    found = {}
    for output in response.outputs:
        array = output.as_numpy()
        data = [v.decode() if isinstance(v, bytes) else v for v in array.reshape(-1).tolist()]
        found[output.name] = {"datatype": output.datatype, "shape": list(array.shape), "data": data}
    return found


async def _call(
    rest: InferenceRESTClient, rpc: InferenceGRPCClient, plan: dict[str, Any], call: dict[str, Any]
) -> dict[str, Any]:
    http, model = plan["http"], call["model"]
    headers = {"Authorization": f"Bearer {plan['key']}"}
    metadata = (("authorization", f"Bearer {plan['key']}"),)
    report: dict[str, Any] = {}
    for mode in MODES:
        try:
            if mode == "grpc":
                ready = await rpc.is_model_ready(model, headers=metadata)
                response = await rpc.infer(_request(model, call["inputs"], binary=False), headers=metadata)
            else:
                ready = await rest.is_model_ready(http, model, headers=headers)
                request = _request(model, call["inputs"], binary=mode == "rest-binary")
                response = await rest.infer(http, request, model_name=model, headers=dict(headers))
            report[mode] = {"ready": ready, "model_name": response.model_name, "outputs": _outputs(response)}
        except Exception as exc:  # reported per mode: the test names what failed
            report[mode] = {"error": f"{type(exc).__name__}: {str(exc)[:500]}"}
    return report


async def _refusals(
    rest: InferenceRESTClient, rpc: InferenceGRPCClient, plan: dict[str, Any]
) -> dict[str, Any]:
    """What the SDK raises for a model nobody has and for a key that is not one."""
    call = plan["calls"][0]
    found: dict[str, Any] = {}
    cases = {"missing": (plan["missing"], plan["key"]), "bad_key": (call["model"], plan["bad_key"])}
    for case, (model, key) in cases.items():
        request = _request(model, call["inputs"], binary=False)
        try:
            await rest.infer(
                plan["http"], request, model_name=model, headers={"Authorization": f"Bearer {key}"}
            )
            found[f"rest-{case}"] = "answered"
        except httpx.HTTPStatusError as exc:
            found[f"rest-{case}"] = exc.response.status_code
        try:
            await rpc.infer(request, headers=(("authorization", f"Bearer {key}"),))
            found[f"grpc-{case}"] = "answered"
        except grpc.RpcError as exc:
            found[f"grpc-{case}"] = exc.code().name  # type: ignore[attr-defined]
    return found


async def main(plan: dict[str, Any]) -> dict[str, Any]:
    rest = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=60))
    rpc = InferenceGRPCClient(plan["grpc"], timeout=60, retries=0)
    try:
        calls = [await _call(rest, rpc, plan, call) for call in plan["calls"]]
        return {"calls": calls, "refusals": await _refusals(rest, rpc, plan)}
    finally:
        await rest.close()
        await rpc.close()


if __name__ == "__main__":
    json.dump(asyncio.run(main(json.load(sys.stdin))), sys.stdout)
