"""gRPC statuses for the data plane: our domain errors and Triton's, never UNKNOWN with a stack trace."""

from __future__ import annotations

import logging

import grpc
from google.protobuf.message import DecodeError
from grpc import aio

from control_plane.dataplane import protowire
from control_plane.dataplane.rewrite import hide_internal_name
from control_plane.errors import AppError
from control_plane.routing.router import Resolved

log = logging.getLogger(__name__)

Code = grpc.StatusCode
_CODES = {
    400: Code.INVALID_ARGUMENT,
    401: Code.UNAUTHENTICATED,
    403: Code.PERMISSION_DENIED,
    404: Code.NOT_FOUND,
    409: Code.FAILED_PRECONDITION,
    413: Code.RESOURCE_EXHAUSTED,
    422: Code.INVALID_ARGUMENT,
    429: Code.RESOURCE_EXHAUSTED,
    499: Code.CANCELLED,  # the client went away (errors.ClientClosed)
    503: Code.UNAVAILABLE,
    504: Code.DEADLINE_EXCEEDED,
}


class RpcFailure(Exception):
    """A gRPC status to end the call with."""

    def __init__(self, code: grpc.StatusCode, message: str, *, retry_after: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after

    @property
    def number(self) -> int:
        """The status code's number, as it goes in `grpc-status`."""
        value: int = self.code.value[0]
        return value

    @classmethod
    def of(cls, exc: Exception) -> RpcFailure:
        """The status for any exception: domain errors keep their meaning, the unforeseen are INTERNAL."""
        if isinstance(exc, RpcFailure):
            return exc
        if isinstance(exc, AppError):
            code = _CODES.get(exc.status_code, Code.INTERNAL)
            return cls(code, exc.message, retry_after=exc.retry_after)
        if isinstance(exc, DecodeError | UnicodeDecodeError | protowire.WireError):
            return cls(Code.INVALID_ARGUMENT, "malformed request message")
        return cls(Code.INTERNAL, "internal error")


BY_NUMBER = {code.value[0]: code for code in Code}


def upstream_failure(exc: aio.AioRpcError, resolved: Resolved | None, timeout: float) -> RpcFailure:
    """Triton's status with internal names replaced; transport failures as a plain UNAVAILABLE."""
    return triton_failure(exc.code(), exc.details() or "", resolved, timeout)


def triton_failure(
    code: grpc.StatusCode, details: str, resolved: Resolved | None, timeout: float
) -> RpcFailure:
    """A status Triton (or the transport to it) ended a call with, in the client's terms."""
    if code == Code.DEADLINE_EXCEEDED:
        return RpcFailure(code, f"the inference server did not answer within {timeout:g}s")
    from_triton = resolved is not None and resolved.triton_name in details
    if resolved is not None:
        details = hide_internal_name(details, triton_name=resolved.triton_name, model=resolved.model)
        if code == Code.NOT_FOUND:  # we route to ready versions only: it is being (un)loaded right now
            message = f"model '{resolved.model}' is not loaded on the inference server right now: {details}"
            return RpcFailure(Code.UNAVAILABLE, message, retry_after=2)
    if code == Code.UNAVAILABLE and not from_triton:  # refused, reset, ...: no internal addresses
        return RpcFailure(code, "the inference server is unavailable", retry_after=1)
    return RpcFailure(code, details)
