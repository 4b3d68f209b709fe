"""Read and replace the two leading string fields of a protobuf message without decoding the rest.

`ModelInferRequest` and `ModelInferResponse` both start with `model_name = 1` and
`model_version = 2`, and every protobuf serializer writes fields in number order, so the proxy can
swap those two fields and copy the tensors through as opaque bytes. `walk` finds every field 1 and 2
wherever it lies (a parser keeps the last), and `with_head` leaves none of them but the new ones.
"""

from __future__ import annotations

from dataclasses import dataclass

WIRE_VARINT, WIRE_I64, WIRE_LEN, WIRE_I32 = 0, 1, 2, 5
_MAX_VARINT_SHIFT = 63
# C++ protobuf (Triton's parser) reads a tag of up to 5 bytes and keeps its low 32 bits: a longer one
# read as a varint would be another field to us (8A 80 80 80 10 is field 1 to Triton, 536870913 to a
# 64-bit read), so a name or an input could pass the check and the rewrite unseen. Refused.
MAX_TAG = 0xFFFFFFFF


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message."""


@dataclass(frozen=True, slots=True)
class Head:
    """Fields 1 and 2 read from the start of a message, and the offset where the other fields begin."""

    field1: bytes
    field2: bytes
    body: int


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """The varint at `pos` and the position after it."""
    result = 0
    shift = 0
    end = len(buf)
    while pos < end:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > _MAX_VARINT_SHIFT:
            raise WireError("varint longer than 10 bytes")
    raise WireError("truncated varint")


def encode_varint(value: int) -> bytes:
    """The varint encoding of a non-negative integer."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def string_field(number: int, value: bytes) -> bytes:
    """A length-delimited field on the wire; nothing for an empty value (proto3 omits defaults)."""
    if not value:
        return b""
    return encode_varint(number << 3 | WIRE_LEN) + encode_varint(len(value)) + value


def skip_field(buf: bytes, pos: int, wire_type: int) -> int:
    """The position after the payload of a field whose header ended at `pos`."""
    if wire_type == WIRE_LEN:
        length, pos = read_varint(buf, pos)
        pos += length
    elif wire_type == WIRE_VARINT:
        _, pos = read_varint(buf, pos)
    elif wire_type == WIRE_I64:
        pos += 8
    elif wire_type == WIRE_I32:
        pos += 4
    else:
        raise WireError(f"unsupported wire type {wire_type}")
    if pos > len(buf):
        raise WireError("truncated field")
    return pos


@dataclass(frozen=True, slots=True)
class Walked:
    """A message's top-level fields, walked once with their payloads skipped.

    `name` and `version` are the last length-delimited fields 1 and 2, as a parser reads them;
    `names` where every field 1 or 2 lies (tag included, any wire type); `head` the offset where the
    other fields begin when fields 1 and 2 only lead the message (as every serializer writes them),
    else None; `spans` (number, payload start, payload end) of the length-delimited fields asked for.
    """

    name: bytes
    version: bytes
    names: list[tuple[int, int]]
    head: int | None
    spans: list[tuple[int, int, int]]


_NO_FIELDS: frozenset[int] = frozenset()


def walk(buf: bytes, *, keep: frozenset[int] = _NO_FIELDS, limit: int | None = None) -> Walked | None:
    """The message's fields (see `Walked`); None when it has more than `limit` of them (the walk
    stops there: a caller bounds its work). Raises WireError for malformed bytes."""
    values = [b"", b""]
    names: list[tuple[int, int]] = []
    spans: list[tuple[int, int, int]] = []
    first_other = -1  # where the first field other than 1 and 2 begins
    leading = True  # fields 1 and 2 only before any other
    end = len(buf)
    pos = count = 0
    while pos < end:
        count += 1
        if limit is not None and count > limit:
            return None
        at = pos
        tag = buf[pos]
        if tag < 0x80:  # one-byte tag (fields 1-15): the usual case, inlined
            pos += 1
        else:
            tag, pos = read_varint(buf, pos)
            if tag > MAX_TAG or pos - at > 5:
                raise WireError("field tag longer than 32 bits")
        number = tag >> 3
        if number == 0:
            raise WireError("field number 0")
        if tag & 7 == WIRE_LEN:
            if pos < end and buf[pos] < 0x80:  # short length, inlined
                start = pos + 1
                pos = start + buf[pos]
            else:
                length, start = read_varint(buf, pos)
                pos = start + length
            if pos > end:
                raise WireError("truncated field")
            if number <= 2:
                values[number - 1] = buf[start:pos]
            elif number in keep:
                spans.append((number, start, pos))
        else:
            pos = skip_field(buf, pos, tag & 7)
            if number <= 2:  # a parser skips it as unknown; it is still not where a name belongs
                leading = False
        if number <= 2:
            names.append((at, pos))
            if first_other >= 0:
                leading = False
        elif first_other < 0:
            first_other = at
    head = (end if first_other < 0 else first_other) if leading else None
    return Walked(values[0], values[1], names, head, spans)


def leading(buf: bytes) -> Head:
    """Fields 1 and 2 as a serializer writes them, without walking the rest: field 1, then field 2,
    each at most once, at the start (empty where absent). Whether no other field 1 or 2 follows is
    for `walk` to say: its `head` equals this `body` only then. Raises WireError for a cut field."""
    values = [b"", b""]
    end = len(buf)
    pos = 0
    for tag in (0x0A, 0x12):  # fields 1 and 2 have one-byte tags
        if pos < end and buf[pos] == tag:
            length, start = read_varint(buf, pos + 1)
            pos = start + length
            if pos > end:
                raise WireError("truncated field")
            values[tag >> 4] = buf[start:pos]  # 0x0A >> 4 == 0, 0x12 >> 4 == 1
    return Head(field1=values[0], field2=values[1], body=pos)


def with_head(buf: bytes, head: bytes, names: list[tuple[int, int]]) -> bytes:
    """`head` followed by `buf` without its fields 1 and 2 (`Walked.names`), in one copy."""
    if not names:
        return head + buf if head else buf
    view = memoryview(buf)
    parts: list[bytes | memoryview] = [head]
    pos = 0
    for start, end in names:
        if start > pos:
            parts.append(view[pos:start])
        pos = end
    parts.append(view[pos:])
    return b"".join(parts)
