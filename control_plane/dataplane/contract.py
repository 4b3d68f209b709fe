"""What one version accepts: input names, datatypes and dims, output names, the batch limit.

Every inference request is checked against its version's contract before Triton sees it, whatever the
protocol. This module is imported by the validation worker processes too, so it needs only the
standard library.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

# Bytes per element; BYTES elements are length-prefixed, so they have no fixed size.
ITEM_SIZES: dict[str, int] = {
    "BOOL": 1, "UINT8": 1, "INT8": 1, "UINT16": 2, "INT16": 2, "FP16": 2, "BF16": 2,
    "UINT32": 4, "INT32": 4, "FP32": 4, "UINT64": 8, "INT64": 8, "FP64": 8, "BYTES": 0,
}  # fmt: skip
# numpy's name for each datatype; BF16 values are held as float32 (numpy has no bfloat16).
NUMPY_NAMES: dict[str, str] = {
    "BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32", "UINT64": "uint64",
    "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64",
    "FP16": "float16", "FP32": "float32", "FP64": "float64", "BF16": "float32", "BYTES": "object",
}  # fmt: skip
SHARED_MEMORY_KEYS = frozenset({"shared_memory_region", "shared_memory_byte_size", "shared_memory_offset"})


class Rejected(Exception):
    """A request the data plane refuses: an HTTP status and a message in the client's terms."""

    def __init__(self, message: str, *, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status

    def __reduce__(self) -> tuple[type[Rejected], tuple[str], dict[str, int]]:
        """Keep the status across a worker process boundary."""
        return Rejected, (self.message,), {"status": self.status}


@dataclass(frozen=True, slots=True)
class TensorRule:
    """One input as the model declares it; `dims` is the full request shape (-1 = any size)."""

    name: str
    datatype: str
    dims: tuple[int, ...]
    optional: bool = False


@dataclass(frozen=True, slots=True)
class Contract:
    """A version's inputs and outputs; `max_batch_size` > 0 means dims[0] of every input is the batch."""

    inputs: dict[str, TensorRule]
    outputs: frozenset[str]
    max_batch_size: int
    max_elements: int = 1 << 28
    required: frozenset[str] = field(init=False)  # the inputs every request must carry

    def __post_init__(self) -> None:
        required = frozenset(name for name, rule in self.inputs.items() if not rule.optional)
        object.__setattr__(self, "required", required)

    def expected(self) -> str:
        """The model's inputs for a message: `'x' (FP32 [-1, 4])`, ..."""
        return ", ".join(f"'{r.name}' ({r.datatype} {list(r.dims)})" for r in self.inputs.values())

    def check_input(self, name: str, datatype: str, shape: list[int]) -> int:
        """The element count of one input after checking it against the model; Rejected otherwise."""
        rule = self.inputs.get(name)
        if rule is None:
            raise Rejected(f"unknown input '{name}'; the model's inputs are {_names(self.inputs)}")
        if datatype != rule.datatype:
            raise Rejected(f"input '{name}' has datatype {datatype}; the model expects {rule.datatype}")
        dims = rule.dims
        if len(shape) != len(dims):
            raise Rejected(
                f"input '{name}' has shape {shape} (rank {len(shape)}); "
                f"the model expects rank {len(dims)}: {list(dims)}"
            )
        for given, expected in zip(shape, dims, strict=False):  # same length, checked above
            if given != expected and expected >= 0:
                raise Rejected(f"input '{name}' has shape {shape}; the model expects {list(dims)}")
        if self.max_batch_size > 0 and shape[0] > self.max_batch_size:
            raise Rejected(
                f"input '{name}' has batch size {shape[0]}, over the model's max_batch_size "
                f"{self.max_batch_size}"
            )
        elements = math.prod(shape)
        if elements > self.max_elements:
            raise Rejected(
                f"input '{name}' has {elements} elements, over the limit of {self.max_elements}", status=413
            )
        return elements

    def check_names(self, inputs: Sequence[str], outputs: Sequence[str]) -> None:
        """Every required input present, each at most once, and only known outputs requested (an output
        may be asked for twice: Triton answers it once)."""
        seen = set(inputs)
        if len(seen) != len(inputs):
            met: set[str] = set()
            for name in inputs:
                if name in met:
                    raise Rejected(f"input '{name}' appears more than once")
                met.add(name)
        if not self.required <= seen:
            missing = [name for name in self.inputs if name in self.required and name not in seen]
            raise Rejected(f"missing input {_names(missing)}; the model's inputs are {_names(self.inputs)}")
        unknown = set(outputs) - self.outputs
        if unknown:
            name = next(name for name in outputs if name in unknown)
            raise Rejected(f"unknown output '{name}'; the model's outputs are {_names(self.outputs)}")


MAX_RANK = 64  # dimensions of a request's shape (Triton's own limit is far larger; no model needs more)


def check_shape(name: str, shape: object) -> list[int]:
    """A request shape: a list of non-negative integers (at most MAX_RANK of them)."""
    if type(shape) is not list or len(shape) > MAX_RANK:
        raise Rejected(f"input '{name}' needs 'shape': a list of non-negative integers")
    for dim in shape:
        if type(dim) is not int or dim < 0:
            raise Rejected(f"input '{name}' has an invalid dimension {dim!r} in shape {shape}")
    return shape


_NO_PARAMETERS: dict[str, object] = {}


_SCALARS = frozenset({str, int, float, bool})


def check_parameters(parameters: object, kind: str = "", name: str = "") -> dict[str, object]:
    """A `parameters` object (of the request, or of input/output `name`); no shared memory.

    The request's own parameters are strings, numbers or booleans, as KServe v2 has them: Triton
    refuses any other (an input's or output's it ignores, so those pass as they are).
    """
    if parameters is None:
        return _NO_PARAMETERS
    where = f"{kind} '{name}'" if kind else "the request"
    if not isinstance(parameters, dict):
        raise Rejected(f"{where}: 'parameters' must be an object")
    if not SHARED_MEMORY_KEYS.isdisjoint(parameters):
        raise Rejected(f"{where}: shared memory is not available through this endpoint; send the data")
    if not kind and not set(map(type, parameters.values())) <= _SCALARS:
        key, value = next((k, v) for k, v in parameters.items() if type(v) not in _SCALARS)
        shown = {list: "a list", dict: "an object", type(None): "null"}.get(type(value), type(value).__name__)
        raise Rejected(f"parameter '{key}' must be a string, number or boolean; it is {shown}")
    return parameters


class CheckLater(Exception):  # not an error: a signal to the caller
    """A check bounded for the event loop went past its bound: run it again in a worker process."""


# BYTES elements counted on the event loop (~0.45 us each in Python): a JPEG or a batch of prompts is a
# few; 256 KiB of empty elements is 65k (30 ms), a worker's.
INLINE_BYTES_ELEMENTS = 4096


def bytes_elements(raw: memoryview, name: str, limit: int | None = None) -> int:
    """The number of elements in a BYTES tensor's binary form (4-byte little-endian length prefixes);
    CheckLater past `limit` of them."""
    count = offset = 0
    end = len(raw)
    while offset < end:
        if limit is not None and count >= limit:
            raise CheckLater()
        if offset + 4 > end:
            raise Rejected(f"BYTES input '{name}' ends inside an element's length prefix")
        offset += 4 + int.from_bytes(raw[offset : offset + 4], "little")
        if offset > end:
            raise Rejected(f"BYTES input '{name}' has an element longer than its data")
        count += 1
    return count


def _names(names: Iterable[str]) -> str:
    return ", ".join(f"'{name}'" for name in names)
