"""The gRPC requests the proxy forwards, as Triton's own parser reads them: C++ libprotobuf.

The proxy never parses a ModelInferRequest: it walks the top-level fields (`protowire.walk`), checks
what it found, and puts its own `model_name` in front of the rest. That is only safe if Triton's
parser finds the same fields. upb (the venv's protobuf) refuses some encodings C++ protobuf accepts:
a 5-byte tag whose high bits C++ drops made field 1 of what was to us field 536870913, so another
tenant's model name passed the rewrite (found by review, fixed). Here crafted requests (names and
inputs smuggled with minimal, padded, 5-byte and overflowing tags, other wire types, unknown fields)
go through the proxy's walk, check and rewrite, and what passes is parsed by Debian's python3-protobuf
in its cpp backend (`scripts/test` installs it): the name must be ours, the inputs the ones checked.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError
from tritonclient.grpc import model_config_pb2
from tritonclient.grpc import service_pb2 as pb

from control_plane.dataplane import protowire
from control_plane.dataplane.contract import Contract, Rejected, TensorRule
from control_plane.dataplane.grpc_check import REQUEST_FIELDS, check_large_request, check_walked
from control_plane.dataplane.protowire import WireError, encode_varint

ORACLE = Path(__file__).resolve().parents[1] / "support" / "cpp_protobuf_oracle.py"
SYSTEM_PYTHON = "/usr/bin/python3"
MLP = Contract(inputs={"x": TensorRule("x", "FP32", (-1, 4))}, outputs=frozenset({"y"}), max_batch_size=8)
OURS = protowire.string_field(1, b"tenant--mlp--v1")
REFUSED = (Rejected, WireError, DecodeError, UnicodeDecodeError)


def _tag(rng: random.Random, number: int, wire: int) -> bytes:
    """A field tag in one of the encodings a parser may meet."""
    value = number << 3 | wire
    style = rng.choice(["minimal", "minimal", "padded", "five", "overflow", "long"])
    minimal = encode_varint(value)
    if style == "minimal":
        return minimal
    if style == "overflow":  # bits above 32: C++ drops them
        value |= rng.randint(1, 7) << 32
    size = {"padded": rng.randint(len(minimal), 5), "five": 5, "overflow": 5, "long": rng.randint(6, 10)}[
        style
    ]
    size = max(size, len(encode_varint(value)))
    out = bytearray()
    for index in range(size):
        byte = (value >> (7 * index)) & 0x7F
        out.append(byte | (0x80 if index < size - 1 else 0))
    return bytes(out)


def _smuggled(rng: random.Random) -> bytes:
    """One field a client should not get past the proxy: a name, an input, shared memory, or noise."""
    shm = {"shared_memory_region": pb.InferParameter(string_param="victim")}
    kinds = [
        "name",
        "version",
        "name-varint",
        "input",
        "shm-input",
        "shm-param",
        "shm-output",
        "raw",
        "unknown",
    ]
    kind = rng.choice(kinds)
    if kind == "name-varint":
        return _tag(rng, rng.choice([1, 2]), 0) + encode_varint(rng.randint(0, 2**40))
    tensor = pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[1, 4])
    if kind == "shm-input":
        tensor.parameters["shared_memory_region"].string_param = "victim"
    entry = pb.ModelInferRequest.ParametersEntry(
        key="shared_memory_region", value=shm["shared_memory_region"]
    )
    output = pb.ModelInferRequest.InferRequestedOutputTensor(name="y", parameters=shm)
    number, payload = {
        "name": (1, b"other-tenant--model--v1"),
        "version": (2, b"7"),
        "input": (5, tensor.SerializeToString()),
        "shm-input": (5, tensor.SerializeToString()),
        "shm-param": (4, entry.SerializeToString()),
        "shm-output": (6, output.SerializeToString()),
        "raw": (7, b"\0" * 16),
        "unknown": (rng.choice([15, 99, 2**29 - 1]), b"abc"),
    }[kind]
    return _tag(rng, number, 2) + encode_varint(len(payload)) + payload


def _crafted(rng: random.Random) -> bytes:
    """A valid request for MLP, as separate fields, with 1-3 smuggled fields put anywhere."""
    fields = [protowire.string_field(1, rng.choice([b"mlp", b"m"]))]
    if rng.random() < 0.5:
        fields.append(protowire.string_field(2, b"1"))
    if rng.random() < 0.5:
        fields.append(pb.ModelInferRequest(id="r1").SerializeToString())
    if rng.random() < 0.5:
        fields.append(
            pb.ModelInferRequest(
                parameters={"priority": pb.InferParameter(int64_param=1)}
            ).SerializeToString()
        )
    tensor = pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[1, 4])
    fields.append(pb.ModelInferRequest(inputs=[tensor]).SerializeToString())
    if rng.random() < 0.5:
        output = pb.ModelInferRequest.InferRequestedOutputTensor(name="y")
        fields.append(pb.ModelInferRequest(outputs=[output]).SerializeToString())
    fields.append(protowire.string_field(7, b"\0" * 16))
    for _ in range(rng.randint(1, 3)):
        fields.insert(rng.randint(0, len(fields)), _smuggled(rng))
    return b"".join(fields)


def _forwarded(message: bytes) -> list[bytes]:
    """What the proxy would send Triton for `message`, by the inline and by the worker path."""
    sent = []
    try:
        walked = protowire.walk(message, keep=REQUEST_FIELDS)
        assert walked is not None
        check_walked(message, walked, MLP)
        sent.append(protowire.with_head(message, OURS, walked.names))
    except REFUSED:
        pass
    try:
        lead = protowire.leading(message)
        check_large_request(message, MLP, lead.body)
        sent.append(protowire.with_head(message, OURS, [(0, lead.body)]))
    except REFUSED:
        pass
    return sent


def _cpp_reads(messages: list[bytes]) -> list[dict[str, Any]]:
    python = shutil.which(SYSTEM_PYTHON)
    assert python, f"{SYSTEM_PYTHON} is missing"
    files = [
        model_config_pb2.DESCRIPTOR.serialized_pb.hex(),
        pb.DESCRIPTOR.serialized_pb.hex(),
    ]
    lines = [json.dumps({"files": files})] + [json.dumps({"message": m.hex()}) for m in messages]
    done = subprocess.run(
        [python, str(ORACLE)], input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, (
        f"the C++ protobuf oracle failed (scripts/test installs python3-protobuf):\n{done.stderr[-2000:]}"
    )
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_triton_reads_our_name_and_only_the_checked_inputs_from_whatever_we_forward() -> None:
    rng = random.Random(20261207)
    crafted = [_crafted(rng) for _ in range(4000)]
    forwarded = [sent for message in crafted for sent in _forwarded(message)]
    assert len(forwarded) > 400, len(forwarded)  # enough passed the check for this to mean something
    reads = _cpp_reads(forwarded)
    assert len(reads) == len(forwarded)
    problems = [
        (sent.hex(), read)
        for sent, read in zip(forwarded, reads, strict=True)
        if "error" not in read
        and (read["name"], read["version"], read["inputs"], read["shared_memory"])
        != ("tenant--mlp--v1", "", ["x"], [])
    ]
    assert not problems, problems[:3]
    assert sum("error" not in read for read in reads) > 300  # and most of them C++ reads too


def test_the_oracle_sees_what_the_review_found() -> None:
    """The oracle itself: C++ protobuf reads a 5-byte tag's low 32 bits (field 1 here), which the
    walk refuses; without that refusal the name would have reached Triton."""
    stock = pb.ModelInferRequest(model_name="mlp")
    stock.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    stock.raw_input_contents.append(b"\0" * 16)
    hidden = bytes([0x8A, 0x80, 0x80, 0x80, 0x10]) + encode_varint(5) + b"other"
    crafted = stock.SerializeToString() + hidden
    (read,) = _cpp_reads([crafted])
    assert (read["name"], read["inputs"]) == ("other", ["x"])
    assert len(_forwarded(stock.SerializeToString())) == 2  # by either path
    assert _forwarded(crafted) == []
