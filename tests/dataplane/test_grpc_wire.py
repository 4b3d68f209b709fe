"""The wire-level rewrite of ModelInfer messages, checked against real protobuf messages."""

from __future__ import annotations

import random

import pytest
from tritonclient.grpc import service_pb2 as pb

from control_plane.dataplane import protowire
from control_plane.dataplane.protowire import Walked, WireError, encode_varint, read_varint

DTYPES = ["FP32", "INT64", "BYTES", "UINT8", "FP16"]


def _text(rng: random.Random, low: int = 0, high: int = 40) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789-_äß€"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(low, high)))


def _set_parameter(rng: random.Random, parameter: pb.InferParameter) -> None:
    kind = rng.choice(["bool", "int", "string", "double", "uint"])
    if kind == "bool":
        parameter.bool_param = rng.random() < 0.5
    elif kind == "int":
        parameter.int64_param = rng.randint(-(2**63), 2**63 - 1)
    elif kind == "string":
        parameter.string_param = _text(rng)
    elif kind == "double":
        parameter.double_param = rng.uniform(-1e9, 1e9)
    else:
        parameter.uint64_param = rng.randint(0, 2**64 - 1)


def random_request(rng: random.Random) -> pb.ModelInferRequest:
    """A request with random fields and raw tensor payloads of random sizes (up to multi-byte lengths)."""
    request = pb.ModelInferRequest(model_name=_text(rng), model_version=rng.choice(["", "1", "12", "999"]))
    if rng.random() < 0.5:
        request.id = _text(rng, 1)
    for _ in range(rng.randint(0, 3)):
        _set_parameter(rng, request.parameters[_text(rng, 1, 10)])
    for index in range(rng.randint(0, 4)):
        tensor = request.inputs.add(name=f"in{index}", datatype=rng.choice(DTYPES))
        tensor.shape.extend(rng.randint(-1, 64) for _ in range(rng.randint(0, 4)))
        if rng.random() < 0.3:
            tensor.contents.fp32_contents.extend(rng.random() for _ in range(rng.randint(0, 20)))
        else:
            request.raw_input_contents.append(rng.randbytes(rng.choice([0, 1, 127, 128, 5000, 70000])))
    for index in range(rng.randint(0, 2)):
        request.outputs.add(name=f"out{index}")
    return request


def random_response(rng: random.Random) -> pb.ModelInferResponse:
    """A response with random outputs and raw payloads."""
    response = pb.ModelInferResponse(
        model_name=_text(rng), model_version=rng.choice(["", "1", "7"]), id=_text(rng)
    )
    for index in range(rng.randint(0, 3)):
        tensor = response.outputs.add(name=f"out{index}", datatype=rng.choice(DTYPES))
        tensor.shape.extend(rng.randint(1, 16) for _ in range(rng.randint(1, 3)))
        response.raw_output_contents.append(rng.randbytes(rng.choice([0, 3, 200, 20000])))
    return response


def walk(raw: bytes) -> Walked:
    """The proxy's one walk of a message's fields (no limit)."""
    walked = protowire.walk(raw)
    assert walked is not None
    return walked


def rewrite(raw: bytes, name: str, version: str) -> bytes:
    """What the proxy does: walk the fields, put new fields 1 and 2 in front of the untouched rest."""
    new = protowire.string_field(1, name.encode()) + protowire.string_field(2, version.encode())
    return protowire.with_head(raw, new, walk(raw).names)


@pytest.mark.parametrize("seed", range(300))
def test_request_round_trip(seed: int) -> None:
    rng = random.Random(seed)
    request = random_request(rng)
    raw = request.SerializeToString()

    head = walk(raw)

    assert head.head is not None
    assert head.name == request.model_name.encode()
    assert head.version == request.model_version.encode()
    new_name, new_version = _text(rng, 0, 200), rng.choice(["", "1", "42"])
    rewritten = pb.ModelInferRequest.FromString(rewrite(raw, new_name, new_version))
    expected = pb.ModelInferRequest()
    expected.CopyFrom(request)
    expected.model_name, expected.model_version = new_name, new_version
    assert rewritten == expected
    assert rewritten.raw_input_contents == request.raw_input_contents


@pytest.mark.parametrize("seed", range(100))
def test_response_round_trip(seed: int) -> None:
    rng = random.Random(1000 + seed)
    response = random_response(rng)

    rewritten = pb.ModelInferResponse.FromString(rewrite(response.SerializeToString(), "mlp", "3"))

    expected = pb.ModelInferResponse()
    expected.CopyFrom(response)
    expected.model_name, expected.model_version = "mlp", "3"
    assert rewritten == expected


def test_rewrite_is_byte_identical_to_protobuf_serialization() -> None:
    request = pb.ModelInferRequest(model_name="acme--mlp--12--v3", model_version="", id="r1")
    request.inputs.add(name="x", datatype="FP32", shape=[2, 4])
    request.raw_input_contents.append(bytes(range(32)))

    rewritten = rewrite(request.SerializeToString(), "mlp", "3")

    request.model_name, request.model_version = "mlp", "3"
    assert rewritten == request.SerializeToString()


def test_missing_fields_are_inserted_and_empty_ones_dropped() -> None:
    request = pb.ModelInferRequest(id="only-an-id")
    raw = request.SerializeToString()
    head = walk(raw)
    assert (head.name, head.version, head.head) == (b"", b"", 0)

    assert pb.ModelInferRequest.FromString(rewrite(raw, "internal", "")).model_name == "internal"
    named = pb.ModelInferRequest(model_name="x", model_version="5", id="i").SerializeToString()
    cleared = pb.ModelInferRequest.FromString(rewrite(named, "y", ""))
    assert (cleared.model_name, cleared.model_version, cleared.id) == ("y", "", "i")


def test_leading_fields_in_any_order_and_repeated_follow_last_wins() -> None:
    raw = (
        protowire.string_field(2, b"9")
        + protowire.string_field(1, b"first")
        + protowire.string_field(1, b"second")
        + pb.ModelInferRequest(id="i").SerializeToString()
    )
    parsed = pb.ModelInferRequest.FromString(raw)

    head = walk(raw)

    assert head.head is not None
    assert (head.name, head.version) == (parsed.model_name.encode(), parsed.model_version.encode())
    assert pb.ModelInferRequest.FromString(rewrite(raw, "z", "")).model_name == "z"


@pytest.mark.parametrize("number", [1, 2])
def test_a_name_field_after_other_fields_is_not_a_leading_one(number: int) -> None:
    # A parser lets the last occurrence win: a smuggled trailing model_name must not survive a rewrite.
    request = pb.ModelInferRequest(model_name="mine", id="i")
    request.raw_input_contents.append(b"\x0a\x05other")  # looks like field 1, but inside a payload
    raw = request.SerializeToString() + protowire.string_field(number, b"theirs")
    assert (
        getattr(pb.ModelInferRequest.FromString(raw), ["model_name", "model_version"][number - 1]) == "theirs"
    )

    assert walk(raw).head is None


def test_field_1_with_another_wire_type_is_not_a_leading_one() -> None:
    raw = pb.ModelInferRequest(id="i").SerializeToString() + b"\x08\x01"
    assert walk(raw).head is None


def test_unknown_fields_of_every_wire_type_are_skipped() -> None:
    unknown = (
        encode_varint(99 << 3 | 0)
        + encode_varint(2**40)
        + encode_varint(100 << 3 | 1)
        + b"\x00" * 8
        + encode_varint(101 << 3 | 5)
        + b"\x00" * 4
        + encode_varint(5000 << 3 | 2)
        + encode_varint(3)
        + b"abc"
    )
    raw = pb.ModelInferRequest(model_name="m", id="i").SerializeToString() + unknown

    head = walk(raw)

    assert head.head is not None and head.name == b"m"
    assert pb.ModelInferRequest.FromString(rewrite(raw, "n", "")).id == "i"


@pytest.mark.parametrize(
    "raw",
    [
        b"\x0a\x05abc",  # length past the end
        b"\x0a",  # no length
        b"\x0a\x80",  # truncated length varint
        pb.ModelInferRequest(id="abc").SerializeToString()[:-1],  # body field cut short
        b"\x1a\x01a\x80",  # truncated tag
        b"\x00\x01",  # field number 0
        b"\x1b",  # start group (wire type 3)
        b"\x1f",  # wire type 7
        b"\x18" + b"\xff" * 11,  # varint longer than 10 bytes
        b"\x19\x00\x00",  # fixed64 cut short
    ],
)
def test_malformed_bytes_raise_wire_error(raw: bytes) -> None:
    with pytest.raises(WireError):
        protowire.walk(raw)


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 16383, 16384, 2**31, 2**63 - 1, 2**64 - 1])
def test_varints_match_protobuf(value: int) -> None:
    encoded = encode_varint(value)
    assert pb.InferParameter(uint64_param=value).SerializeToString() in (b"", b"\x28" + encoded)
    assert read_varint(b"\xff" + encoded + b"\x01", 1) == (value, 1 + len(encoded))


def test_string_field_matches_protobuf() -> None:
    for name in ["", "a", "x" * 127, "y" * 128, "z" * 20000]:
        assert (
            protowire.string_field(1, name.encode())
            == pb.ModelInferRequest(model_name=name).SerializeToString()
        )


def test_a_rewrite_without_changes_returns_the_same_bytes() -> None:
    raw = pb.ModelInferRequest(id="i").SerializeToString()
    assert protowire.with_head(raw, b"", walk(raw).names) is raw


def test_a_walk_stops_past_its_limit() -> None:
    raw = pb.ModelInferRequest(model_name="m", id="i").SerializeToString() + b"\x78\x01" * 8  # 10 fields
    assert protowire.walk(raw, limit=9) is None
    walked = protowire.walk(raw, limit=10)
    assert walked is not None and walked.name == b"m" and walked.head == 3


@pytest.mark.parametrize("seed", range(200))
def test_a_rewrite_drops_every_name_field_wherever_it_lies(seed: int) -> None:
    """Names smuggled anywhere, of any wire type: the walk reads what a parser reads (the last
    length-delimited one), and the rewrite leaves only the new head."""
    rng = random.Random(5000 + seed)
    fields = []
    raw = random_request(rng).SerializeToString()
    walked = protowire.walk(raw)
    assert walked is not None
    pos = 0
    for start, end in walked.names:  # split the stock message into its fields, names apart
        fields.append(raw[pos:start])
        fields.append(raw[start:end])
        pos = end
    rest, pos = raw[pos:], 0
    while pos < len(rest):
        tag, after = read_varint(rest, pos)
        end = protowire.skip_field(rest, after, tag & 7)
        fields.append(rest[pos:end])
        pos = end
    for _ in range(rng.randint(1, 4)):
        number = rng.choice([1, 2])
        smuggled = (
            protowire.string_field(number, _text(rng, 1).encode())
            if rng.random() < 0.8
            else encode_varint(number << 3) + encode_varint(rng.randint(0, 2**40))
        )
        fields.insert(rng.randint(0, len(fields)), smuggled)
    crafted = b"".join(fields)
    parsed = pb.ModelInferRequest.FromString(crafted)

    walked = protowire.walk(crafted)

    assert walked is not None
    assert (walked.name, walked.version) == (parsed.model_name.encode(), parsed.model_version.encode())
    new = protowire.string_field(1, b"internal")
    rewritten = protowire.with_head(crafted, new, walked.names)
    assert protowire.walk(rewritten).names == [(0, len(new))]  # type: ignore[union-attr]
    expected = pb.ModelInferRequest()
    expected.CopyFrom(parsed)
    expected.model_name, expected.model_version = "internal", ""
    again = pb.ModelInferRequest.FromString(rewritten)
    again.DiscardUnknownFields()
    expected.DiscardUnknownFields()  # a name of the wrong wire type is an unknown field to protobuf
    assert again == expected


def test_leading_reads_field_1_then_field_2_once_each() -> None:
    stock = pb.ModelInferRequest(model_name="m", model_version="2", id="i").SerializeToString()
    lead = protowire.leading(stock)
    assert (lead.field1, lead.field2) == (b"m", b"2")
    assert protowire.walk(stock).head == lead.body  # type: ignore[union-attr]
    doubled = protowire.string_field(1, b"mine") + protowire.string_field(1, b"theirs") + stock[3:]
    lead = protowire.leading(doubled)
    assert lead.field1 == b"mine" and protowire.walk(doubled).head != lead.body  # type: ignore[union-attr]


@pytest.mark.parametrize("tag", [0x0A, 0x2A])  # model_name; an input
def test_a_tag_past_32_bits_is_refused_not_read_as_another_field(tag: int) -> None:
    """C++ protobuf (Triton's parser) reads a tag of up to 5 bytes and keeps its low 32 bits, so
    `8A 80 80 80 10` is field 1 to Triton but field 536870913 to a 64-bit varint read: a second
    model_name (another tenant's model) or an input with shared-memory parameters passed the check and
    the rewrite unseen (found by review against libprotobuf's cpp backend)."""
    stock = pb.ModelInferRequest(model_name="mlp", id="i").SerializeToString()
    for hidden in (
        bytes([0x80 | tag, 0x80, 0x80, 0x80, 0x10]),
        bytes([0x80 | tag, 0x80, 0x80, 0x80, 0x80, 0x00]),
    ):
        with pytest.raises(WireError, match="tag longer than 32 bits"):
            protowire.walk(stock + hidden + b"\x03abc")
    five = bytes([0x80 | tag, 0x80, 0x80, 0x80, 0x00])  # tag within 32 bits, 5 bytes: read as is
    walked = protowire.walk(stock + five + b"\x03abc", keep=frozenset({5}))
    assert walked is not None
    assert (walked.name, len(walked.names), walked.spans) == (
        (b"abc", 2, []) if tag == 0x0A else (b"mlp", 1, [(5, len(stock) + 6, len(stock) + 9)])
    )
