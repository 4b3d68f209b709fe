"""Models whose signatures are worth validating against (several inputs and dtypes, fixed dims)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from onnx import TensorProto, helper

from tests.support import model_files
from tests.support.api import Api
from tests.support.deploy import Deployed, upload_and_alias
from tests.support.model_files import ONNX_IR_VERSION, ONNX_OPSET

# name -> (ONNX element type, KServe datatype, per-item shape); the batch dimension "N" comes first.
MULTI_INPUTS: dict[str, tuple[int, str, list[int]]] = {
    "token_ids": (TensorProto.INT32, "INT32", [2]),
    "weights_in": (TensorProto.DOUBLE, "FP64", [3]),
    "mask_u8": (TensorProto.UINT8, "UINT8", [1]),
}


def onnx_multi_input(path: Path) -> Path:
    """Three inputs of different dtypes (`MULTI_INPUTS`), each passed through to `<name>_out`."""
    nodes, inputs, outputs = [], [], []
    for name, (elem_type, _, dims) in MULTI_INPUTS.items():
        nodes.append(helper.make_node("Identity", [name], [f"{name}_out"]))
        inputs.append(helper.make_tensor_value_info(name, elem_type, ["N", *dims]))
        outputs.append(helper.make_tensor_value_info(f"{name}_out", elem_type, ["N", *dims]))
    graph = helper.make_graph(nodes, "multi", inputs, outputs)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)], ir_version=ONNX_IR_VERSION
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


def onnx_fixed(path: Path) -> Path:
    """An MLP with fixed dims: `frame` FP32 [2, 4] -> `logits` FP32 [2, 3] (so max_batch_size 0)."""
    return model_files.onnx_mlp(
        path, dynamic_batch=False, batch=2, input_name="frame", output_name="logits", seed=5
    )


def deploy_artifact(
    api: Api, *, tenant: str, model: str, artifact: Path, consumer: str, publisher: str, **spec: Any
) -> Deployed:
    """Register `model` (ONNX, with `spec`), upload `artifact`, wait ready, point `production` at it."""
    created = api.create_model(tenant, key=publisher, name=model, format="onnx", **spec)
    assert created.status_code == 201, created.text
    return upload_and_alias(
        api, tenant=tenant, model=model, artifact=artifact, consumer=consumer, publisher=publisher
    )
