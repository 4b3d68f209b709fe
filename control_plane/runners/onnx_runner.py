# mypy: ignore-errors
"""Triton Python-backend model that serves an ONNX artifact with onnxruntime.

Shipped as `model.py` next to a generated config.pbtxt whose parameters name the artifact
(`artifact_filename`, in the version directory), with `_common.py` inlined in place of its import
(see `runner_source()`). Runs inside Triton's Python-backend stub; it is not imported by the control
plane.
"""

import re

import numpy as np
import onnxruntime as ort

from control_plane.runners._common import BatchingRunner


class TritonPythonModel(BatchingRunner):
    """One model instance: an onnxruntime session; all requests of a call run as one batch."""

    DEFAULT_ARTIFACT = "model.onnx"

    def _load(self, path, params, args):
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_threads") or 1)
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, sess_options=options, providers=_providers(args))
        self.string_inputs = {arg.name for arg in self.session.get_inputs() if arg.type == "tensor(string)"}

    def finalize(self):
        """Release the session."""
        self.session = None

    def _run(self, feed):
        feed = {name: _to_str(value) if name in self.string_inputs else value for name, value in feed.items()}
        names = [name for name, _ in self.outputs]
        return dict(zip(names, self.session.run(names, feed), strict=True))

    def _error_message(self, exc):
        """onnxruntime's message without its status prefix, node boilerplate and C++ source locations."""
        message = " ".join(str(exc).split())
        message = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", message)
        message = re.sub(
            r"Non-zero status code returned while running (\w+) node\. Name:'[^']*' Status Message: ",
            r"\1: ",
            message,
        )
        message = re.sub(r" ?Please fix either the inputs/outputs or the model\.?", "", message)
        return re.sub(r"\S+\.(?:h|cc|cpp):\d+ (?:[\w:]+\(?\)? )?", "", message)


def _providers(args):
    if args.get("model_instance_kind") == "GPU" and "CUDAExecutionProvider" in ort.get_available_providers():
        device_id = int(args.get("model_instance_device_id") or 0)
        return [("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _to_str(array):
    """Triton hands BYTES tensors over as bytes objects; onnxruntime wants str."""
    items = [item.decode("utf-8") if isinstance(item, bytes) else str(item) for item in array.flat]
    return np.array(items, dtype=object).reshape(array.shape)
