# mypy: ignore-errors
"""Triton Python-backend model that serves a TorchScript artifact with torch.

Shipped as `model.py` next to a generated config.pbtxt whose parameters name the artifact
(`artifact_filename`, in the version directory), with `_common.py` inlined in place of its import
(see `runner_source()`). Runs inside Triton's Python-backend stub; it is not imported by the control
plane.
"""

import numpy as np
import torch
from torch.utils import dlpack

from control_plane.runners._common import BatchingRunner


class TritonPythonModel(BatchingRunner):
    """One model instance: a TorchScript module; all requests of a call run as one batch."""

    DEFAULT_ARTIFACT = "model.pt"

    def _load(self, path, params, args):
        torch.set_num_threads(int(params.get("intra_op_threads") or 1))
        self.device = _device(args)
        self.module = torch.jit.load(path, map_location=self.device)
        self.module.eval()

    def finalize(self):
        """Release the module."""
        self.module = None

    def _run(self, feed):
        # Optional inputs left out are trailing arguments with defaults: pass the ones given, in order.
        tensors = [_to_tensor(feed[name]).to(self.device) for name in self.input_names if name in feed]
        with torch.inference_mode():
            result = self.module(*tensors)
        if isinstance(result, torch.Tensor):
            result = [result]
        if not isinstance(result, tuple | list) or len(result) != len(self.outputs):
            raise ValueError(
                f"the model returned {_describe(result)}, expected {len(self.outputs)} tensor(s)"
            )
        return {name: _to_host(value) for (name, _), value in zip(self.outputs, result, strict=True)}

    def _bf16_input(self, tensor):
        """numpy has no bfloat16: Triton's tensor is taken over through DLPack."""
        return dlpack.from_dlpack(tensor.to_dlpack())

    def _error_message(self, exc):
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        if len(lines) > 1 and "TorchScript" in lines[0]:
            # A TorchScript interpreter error: a serialized traceback, then "<ErrorType>: <cause>".
            return lines[-1]
        return f"{type(exc).__name__}: {' '.join(lines[:1])}"


def _device(args):
    if args.get("model_instance_kind") == "GPU" and torch.cuda.is_available():
        return torch.device(f"cuda:{int(args.get('model_instance_device_id') or 0)}")
    return torch.device("cpu")


def _to_host(value):
    value = value.detach().cpu()
    return value if value.dtype == torch.bfloat16 else value.numpy()  # BF16 leaves through DLPack


def _to_tensor(array):
    if isinstance(array, torch.Tensor):  # BF16, taken over through DLPack
        return array
    # torch.from_numpy shares memory and wants a writable, contiguous array.
    if not (array.flags.writeable and array.flags.c_contiguous):
        array = np.array(array, order="C")
    return torch.from_numpy(array)


def _describe(result):
    if isinstance(result, tuple | list):
        return f"{len(result)} value(s)"
    return type(result).__name__
