"""A stand-in for Triton's `triton_python_backend_utils`, enough to drive our runners outside Triton."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray


class Tensor:
    """A named numpy array; read-only like the shared-memory tensors Triton hands over."""

    def __init__(self, name: str, array: Any) -> None:
        if not isinstance(array, np.ndarray):
            raise TypeError(f"pb_utils.Tensor wants a numpy array, got {type(array).__name__}")
        self._name = name
        self._array = array

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> NDArray[Any]:
        view = self._array.view()
        view.flags.writeable = False
        return view


class TritonError:
    INTERNAL = 13
    INVALID_ARG = 3

    def __init__(self, message: str, code: int = INTERNAL) -> None:
        self._message = message
        self._code = code

    def message(self) -> str:
        return self._message

    def code(self) -> int:
        return self._code


class InferenceRequest:
    """Not Triton's constructor: just the inputs, which is all the runners read."""

    def __init__(self, inputs: dict[str, NDArray[Any]]) -> None:
        self._inputs = [Tensor(name, array) for name, array in inputs.items()]

    def inputs(self) -> list[Tensor]:
        return self._inputs


class InferenceResponse:
    def __init__(self, output_tensors: list[Tensor], error: TritonError | None = None) -> None:
        self._outputs = output_tensors
        self._error = error

    def output_tensors(self) -> list[Tensor]:
        return self._outputs

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> TritonError | None:
        return self._error


def get_input_tensor_by_name(request: InferenceRequest, name: str) -> Tensor | None:
    return next((tensor for tensor in request.inputs() if tensor.name() == name), None)


def get_output_tensor_by_name(response: InferenceResponse, name: str) -> Tensor | None:
    return next((tensor for tensor in response.output_tensors() if tensor.name() == name), None)
