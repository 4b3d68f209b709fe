# mypy: ignore-errors
"""What the Python-backend runners share: config parsing, batching requests into one run, responses.

Not shipped alone: `runner_source()` puts this file in front of a runner (`onnx_runner.py`,
`torchscript_runner.py`), in place of the runner's import of it, so that each version's `model.py`
stays one self-contained file, as Triton's Python backend loads it.
"""

import json
import os
import re

import numpy as np
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
    "TYPE_BF16": "BF16",  # numpy has none: a runner that takes BF16 hands it over through DLPack
}


DATATYPES = {
    "bool": "BOOL", "uint8": "UINT8", "uint16": "UINT16", "uint32": "UINT32", "uint64": "UINT64",
    "int8": "INT8", "int16": "INT16", "int32": "INT32", "int64": "INT64",
    "float16": "FP16", "float32": "FP32", "float64": "FP64",
}  # fmt: skip
# What frameworks say when an input does not fit the model (a size it cannot take): the client's mistake.
INPUT_ERROR = re.compile(
    r"invalid (dimensions|rank|shape)|dimension mismatch|shapes cannot be multiplied|size mismatch|"
    r"must match the size|expected .*(size|shape|dimension)|incompatible dimensions|not broadcastable|"
    r"cannot reshape|invalid argument|unexpected input data type",
    re.IGNORECASE,
)


class BatchingRunner:
    """The part of TritonPythonModel that does not depend on the framework.

    A runner sets DEFAULT_ARTIFACT and implements `_load(path, params, args)`, `_run(feed)` (input
    arrays by name -> output arrays by name) and `finalize`; it may override `_error_message`.
    """

    DEFAULT_ARTIFACT = ""

    def initialize(self, args):
        """Load the artifact named by the config's parameters from this version's directory."""
        config = json.loads(args["model_config"])
        params = {key: value.get("string_value", "") for key, value in config.get("parameters", {}).items()}
        artifact = params.get("artifact_filename") or self.DEFAULT_ARTIFACT
        path = os.path.join(args["model_repository"], str(args["model_version"]), artifact)
        self.max_batch_size = int(config.get("max_batch_size", 0))
        self.input_names = [tensor["name"] for tensor in config["input"]]
        self.optional = {tensor["name"] for tensor in config["input"] if tensor.get("optional")}
        self.bf16_inputs = {
            tensor["name"] for tensor in config["input"] if tensor["data_type"] == "TYPE_BF16"
        }
        # 0-d tensors of a model without batching: [1] to Triton, () to the model (see config.py).
        self.scalar_inputs = set(json.loads(params.get("scalar_inputs") or "[]"))
        self.scalar_outputs = set(json.loads(params.get("scalar_outputs") or "[]"))
        self.outputs = [(tensor["name"], NUMPY_DTYPES[tensor["data_type"]]) for tensor in config["output"]]
        self._load(path, params, args)

    def execute(self, requests):
        """One response per request; a failing request gets an error response, the others still run."""
        if self.max_batch_size > 0 and len(requests) > 1:
            responses = self._execute_batched(requests)
            if responses is not None:
                return responses
        return [self._execute_one(request) for request in requests]

    def _execute_one(self, request):
        feed = None
        try:
            feed = self._read(request)
            return _response(self._shaped(self._run(feed)), self.outputs)
        except Exception as exc:
            return self._failure(exc, feed)

    def _failure(self, exc, feed):
        """An error response in the client's terms: what was sent, what went wrong; 400 if it is the input."""
        message = self._error_message(exc)
        if feed is None:
            return _error_response(message)
        sent = ", ".join(f"'{name}' {_datatype(value)} {list(value.shape)}" for name, value in feed.items())
        if INPUT_ERROR.search(message):
            return _error_response(
                f"the model cannot run on the inputs sent ({sent}): {message}", invalid=True
            )
        return _error_response(f"the model failed: {message} (inputs sent: {sent})")

    def _execute_batched(self, requests):
        """Concatenate along dim 0, run once, split back; None (run each alone) if that cannot work."""
        try:
            feeds = [self._read(request) for request in requests]
            present = [name for name in self.input_names if name in feeds[0]]
            if any(feed.keys() != feeds[0].keys() for feed in feeds):
                return None  # some left an optional input out, others did not
            sizes = [int(feed[present[0]].shape[0]) for feed in feeds]
            batch = {name: np.concatenate([feed[name] for feed in feeds]) for name in present}
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

    def _shaped(self, results):
        if not self.scalar_outputs:
            return results
        return {k: np.reshape(v, (1,)) if k in self.scalar_outputs else v for k, v in results.items()}

    def _read(self, request):
        feed = {}
        for name in self.input_names:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                if name in self.optional:
                    continue  # the model's default value applies
                raise ValueError(f"input '{name}' is missing")
            value = self._bf16_input(tensor) if name in self.bf16_inputs else tensor.as_numpy()
            feed[name] = value.reshape(()) if name in self.scalar_inputs else value
        return feed

    def _error_message(self, exc):
        return f"{type(exc).__name__}: {exc}"

    def _bf16_input(self, tensor):
        raise ValueError("BF16 inputs are not supported by this runner")


def _cast(value, dtype):
    value = np.asarray(value)
    if dtype is np.object_:
        items = [item if isinstance(item, bytes) else str(item).encode("utf-8") for item in value.flat]
        return np.array(items, dtype=object).reshape(value.shape)
    return value.astype(dtype, copy=False)


def _response(results, outputs):
    tensors = [_tensor(name, results[name], dtype) for name, dtype in outputs]
    return pb_utils.InferenceResponse(output_tensors=tensors)


def _tensor(name, value, dtype):
    if dtype == "BF16":  # a framework tensor (numpy has no bfloat16): through DLPack
        return pb_utils.Tensor.from_dlpack(name, value.contiguous().__dlpack__())
    return pb_utils.Tensor(name, _cast(value, dtype))


def _error_response(message, invalid=False):
    code = getattr(pb_utils.TritonError, "INVALID_ARG", None) if invalid else None
    error = pb_utils.TritonError(message, code) if code is not None else pb_utils.TritonError(message)
    return pb_utils.InferenceResponse(output_tensors=[], error=error)


def _datatype(value):
    name = getattr(value.dtype, "name", str(value.dtype).removeprefix("torch."))  # numpy or torch
    return {"object": "BYTES", "bfloat16": "BF16"}.get(name) or DATATYPES.get(name, name)
