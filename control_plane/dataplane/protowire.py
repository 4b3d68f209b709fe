"""Read and replace the two leading string fields of a protobuf message without decoding the rest.

`ModelInferRequest` and `ModelInferResponse` both start with `model_name = 1` and
`model_version = 2`, and every protobuf serializer writes fields in number order, so the proxy can
swap those two fields and copy the tensors through as opaque bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

WIRE_VARINT, WIRE_I64, WIRE_LEN, WIRE_I32 = 0, 1, 2, 5
_MAX_VARINT_SHIFT = 63


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


def read_head(buf: bytes) -> Head | None:
    """Fields 1 and 2 when they lead the message; None when either also appears after another field.

    The rest of the message is walked too (field headers only, payloads are skipped): a parser
    lets the last occurrence of a field win, so a second `model_name` near the end must not slip
    past a rewrite of the first. None means: let a real protobuf parser handle this message.
    Raises WireError for malformed bytes.
    """
    values = [b"", b""]
    end = len(buf)
    pos = 0
    while pos < end:
        tag = buf[pos]  # fields 1 and 2 have one-byte tags
        if tag not in (0x0A, 0x12):
            break
        length, start = read_varint(buf, pos + 1)
        pos = start + length
        if pos > end:
            raise WireError("truncated field")
        values[tag >> 4] = buf[start:pos]  # 0x0A >> 4 == 0, 0x12 >> 4 == 1
    body = pos
    while pos < end:
        tag = buf[pos]
        if tag < 0x80:  # one-byte tag (fields 1-15): the usual case, inlined
            pos += 1
        else:
            tag, pos = read_varint(buf, pos)
        if tag < 0x08:
            raise WireError("field number 0")
        if tag < 0x18:  # fields 1 and 2, any wire type
            return None
        if tag & 7 == WIRE_LEN and pos < end and buf[pos] < 0x80:  # short length, inlined
            pos += 1 + buf[pos]
            if pos > end:
                raise WireError("truncated field")
        else:
            pos = skip_field(buf, pos, tag & 7)
    return Head(field1=values[0], field2=values[1], body=body)


def replace_head(buf: bytes, head: bytes, body: int) -> bytes:
    """`head` followed by `buf` from offset `body` on, in one copy."""
    if not body and not head:
        return buf
    return b"".join((head, memoryview(buf)[body:]))
