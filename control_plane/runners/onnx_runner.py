# mypy: ignore-errors
"""Triton Python-backend model that serves an ONNX artifact with onnxruntime.

Shipped as `model.py` next to a generated config.pbtxt whose parameters name the artifact
(`artifact_filename`, in the version directory). Runs inside Triton's Python-backend stub; it is not
imported by the control plane.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

NUMPY_DTYPES = {
    "TYPE_BOOL": np.bool_,
    "TYPE_UINT8": np.uint8,
    "TYPE_UINT16": np.uint16,
    "TYPE_UINT32": np.uint32,
    "TYPE_UINT64": np.uint64,
    "TYPE_INT8": np.int8,
    "TYPE_INT16": np.int16,
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
    "TYPE_FP16": np.float16,
    "TYPE_FP32": np.float32,
    "TYPE_FP64": np.float64,
    "TYPE_STRING": np.object_,
}


class TritonPythonModel:
    """One model instance: an onnxruntime session; all requests of a call run as one batch."""

    def initialize(self, args):
        """Load the artifact named by the config's parameters from this version's directory."""
        config = json.loads(args["model_config"])
        params = {key: value.get("string_value", "") for key, value in config.get("parameters", {}).items()}
        artifact = params.get("artifact_filename") or "model.onnx"
        path = os.path.join(args["model_repository"], str(args["model_version"]), artifact)
        self.max_batch_size = int(config.get("max_batch_size", 0))
        self.input_names = [tensor["name"] for tensor in config["input"]]
        self.outputs = [(tensor["name"], NUMPY_DTYPES[tensor["data_type"]]) for tensor in config["output"]]
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_threads") or 1)
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, sess_options=options, providers=_providers(args))
        self.string_inputs = {arg.name for arg in self.session.get_inputs() if arg.type == "tensor(string)"}

    def execute(self, requests):
        """One response per request; a failing request gets an error response, the others still run."""
        if self.max_batch_size > 0 and len(requests) > 1:
            responses = self._execute_batched(requests)
            if responses is not None:
                return responses
        return [self._execute_one(request) for request in requests]

    def finalize(self):
        """Release the session."""
        self.session = None

    def _execute_one(self, request):
        try:
            return _response(self._run(self._read(request)), self.outputs)
        except Exception as exc:
            return _error_response(exc)

    def _execute_batched(self, requests):
        """Concatenate along dim 0, run once, split back; None (run each alone) if that cannot work."""
        try:
            feeds = [self._read(request) for request in requests]
            sizes = [int(feed[self.input_names[0]].shape[0]) for feed in feeds]
            batch = {name: np.concatenate([feed[name] for feed in feeds]) for name in self.input_names}
            results = self._run(batch)
            if any(value.shape[:1] != (sum(sizes),) for value in results.values()):
                return None
            bounds = np.cumsum(sizes)[:-1]
            parts = {name: np.split(value, bounds) for name, value in results.items()}
        except Exception:
            # E.g. requests with different non-batch dims: each runs alone and gets its own answer.
            return None
        return [
            _response({name: parts[name][index] for name in parts}, self.outputs)
            for index in range(len(requests))
        ]

    def _read(self, request):
        feed = {}
        for name in self.input_names:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                raise ValueError(f"input '{name}' is missing")
            feed[name] = tensor.as_numpy()
        return feed

    def _run(self, feed):
        feed = {name: _to_str(value) if name in self.string_inputs else value for name, value in feed.items()}
        names = [name for name, _ in self.outputs]
        return dict(zip(names, self.session.run(names, feed), strict=True))


def _providers(args):
    if args.get("model_instance_kind") == "GPU" and "CUDAExecutionProvider" in ort.get_available_providers():
        device_id = int(args.get("model_instance_device_id") or 0)
        return [("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _to_str(array):
    """Triton hands BYTES tensors over as bytes objects; onnxruntime wants str."""
    items = [item.decode("utf-8") if isinstance(item, bytes) else str(item) for item in array.flat]
    return np.array(items, dtype=object).reshape(array.shape)


def _cast(value, dtype):
    value = np.asarray(value)
    if dtype is np.object_:
        items = [item if isinstance(item, bytes) else str(item).encode("utf-8") for item in value.flat]
        return np.array(items, dtype=object).reshape(value.shape)
    return value.astype(dtype, copy=False)


def _response(results, outputs):
    tensors = [pb_utils.Tensor(name, _cast(results[name], dtype)) for name, dtype in outputs]
    return pb_utils.InferenceResponse(output_tensors=tensors)


def _error_response(exc):
    message = f"{type(exc).__name__}: {exc}"
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message))
