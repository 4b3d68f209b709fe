"""Check every inference request against its version before Triton sees it: inline, or in a worker.

The checks (`v2request.prepare_http`, `predict_codec`) are plain functions of bytes in modules that
import little, so the same code runs on the event loop for small bodies and in a worker process
(`heavy`) for big ones. A compressed body is decompressed on the event loop when it is small both ways
(at most a quarter of `inline_bytes` as it arrives, `inline_bytes` decompressed, `INLINE_MEMBERS` gzip
members: the work is bounded like a small plain body's, so a client that compresses every request, as
tritonclient's `request_compression_algorithm` does, is not held to the per-tenant cap of the workers);
one past those goes to a worker, under the request limit. So does a small body whose JSON holds more
than `INLINE_CONTAINERS` lists and objects: parsing costs about 0.1-0.2 us per one, and 256 KiB of
`[[[[1]]]]` rows or of empty lists holds 100k of them (17-25 ms of the event loop, every tenant's).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from control_plane.dataplane import predict_codec
from control_plane.dataplane.contract import INLINE_BYTES_ELEMENTS, CheckLater, Rejected
from control_plane.dataplane.exchange import Exchange
from control_plane.dataplane.heavy import HeavyWork
from control_plane.dataplane.upstream import BadGateway
from control_plane.dataplane.v2request import Prepared, decompress, header_length_of, prepare, prepare_http
from control_plane.errors import AppError, BadRequest, PayloadTooLarge

log = logging.getLogger(__name__)
INLINE_MEMBERS = 4  # gzip members decompressed on the event loop (clients send one)
# Compressed bodies decompressed on the event loop: up to a quarter of inline_bytes (64 KiB by default).
# Crafted deflate (thousands of empty dynamic-Huffman blocks) costs ~70 us of zlib per KiB, against a few
# for real data: 237 KiB of it took 16.6 ms; a quarter bounds that near a plain body's parse.
COMPRESSED_INLINE_SHARE = 4
# JSON lists and objects parsed on the event loop (well under a millisecond): a [4096, 4] tensor sent
# as nested rows still is; 256 KiB of nested singletons or empty lists is not.
INLINE_CONTAINERS = 4096


class UnsupportedEncoding(AppError):
    status_code = 415
    kind = "UnsupportedMediaType"


def as_app_error(exc: BaseException) -> AppError:
    """A rejection (or a worker's failure) as the error the client gets."""
    if isinstance(exc, AppError):
        return exc
    if isinstance(exc, Rejected):
        kind = {413: PayloadTooLarge, 415: UnsupportedEncoding, 502: BadGateway}.get(exc.status, BadRequest)
        return kind(exc.message)
    if isinstance(exc, MemoryError):
        return PayloadTooLarge("the request is too large to check")
    log.error("checking a request failed", exc_info=exc)
    return AppError("internal error")


class RequestChecks:
    """Runs the checks inline for small bodies and in worker processes for the rest."""

    def __init__(self, heavy: HeavyWork, *, limit: int, inline_bytes: int):
        self.heavy = heavy
        self.limit = limit
        self.inline_bytes = inline_bytes

    def admit(self, ex: Exchange) -> None:
        """Before the body is read: refuse (429/503) one that would need a worker none can take."""
        assert ex.caller is not None
        headers = ex.headers
        length = headers.get(b"content-length")
        inline = self._inline_bytes(compressed=b"content-encoding" in headers)
        small = length is not None and length.isdigit() and int(length) <= inline
        if not small:  # a small compressed body asks for a worker only if it inflates past inline_bytes
            self.heavy.admit(ex.caller.tenant_id)

    def _inline_bytes(self, *, compressed: bool) -> int:
        """The biggest body, as it arrives, checked on the event loop."""
        return self.inline_bytes // COMPRESSED_INLINE_SHARE if compressed else self.inline_bytes

    def start_http(self, ex: Exchange, body: bytes, then: Callable[[Prepared | AppError], None]) -> None:
        """Check a v2 infer body; `then` gets the body to forward, or the error (maybe synchronously)."""
        assert ex.resolved is not None and ex.caller is not None
        headers, contract = ex.headers, ex.resolved.contract
        length = headers.get(b"inference-header-content-length")
        encoding = ex.header(b"content-encoding")
        try:
            plain = self._inline(body, encoding)
            if plain is not None:
                header_length = header_length_of(length, len(plain))
                if _containers(plain, header_length) > INLINE_CONTAINERS:
                    plain = None
                else:
                    prepared = prepare(plain, header_length=header_length, contract=contract, inline=True)
        except Rejected as exc:
            then(as_app_error(exc))
            return
        except CheckLater:  # thousands of BYTES elements to count: a worker's
            plain = None
        if plain is not None:
            then(prepared)
            return

        def done(outcome: Any) -> None:
            then(as_app_error(outcome) if isinstance(outcome, BaseException) else outcome)

        args = (body, encoding, length, contract, self.limit)
        try:
            self.heavy.submit(ex.caller.tenant_id, prepare_http, *args, done=done)
        except AppError as exc:  # the tenant's share of the workers, or a full queue
            then(exc)

    def _inline(self, body: bytes, encoding: str | None) -> bytes | None:
        """The body to check on the event loop, decompressed; None when it is a worker's (too big, or
        inflating past `inline_bytes`). Rejected for an encoding or compressed data that is not valid."""
        if len(body) > self._inline_bytes(compressed=encoding is not None):
            return None
        if encoding is None:
            return body
        try:
            return decompress(body, encoding, limit=self.inline_bytes, max_members=INLINE_MEMBERS)
        except Rejected as exc:
            if exc.status == 413:  # more than is checked inline: a worker decompresses it under the limit
                return None
            raise

    async def predict_request(self, ex: Exchange, body: bytes) -> tuple[bytes, int]:
        """A /v1/predict body (maybe compressed) as a KServe v2 binary-tensor request."""
        assert ex.resolved is not None
        encoding = ex.header(b"content-encoding")
        contract = ex.resolved.contract
        try:
            plain = self._inline(body, encoding)
        except Rejected as exc:
            raise as_app_error(exc) from None
        convert = predict_codec.to_v2_request
        if plain is not None and _containers(plain, None) <= INLINE_CONTAINERS:
            try:
                inline: tuple[bytes, int] = await self._run(
                    ex, True, convert, plain, contract, None, self.limit, INLINE_BYTES_ELEMENTS
                )
                return inline
            except CheckLater:  # thousands of strings to convert one by one: a worker's
                pass
        prepared: tuple[bytes, int] = await self._run(
            ex, False, convert, body, contract, encoding, self.limit
        )
        return prepared

    async def predict_response(self, ex: Exchange, body: bytes, header_length: int | None) -> bytes:
        """Triton's answer as /v1/predict's JSON outputs."""
        assert ex.resolved is not None
        model, version = ex.resolved.model, ex.resolved.version
        # Triton's answer (its JSON is its own; the model's BYTES outputs are decoded one by one, so a
        # model answering thousands of strings is a worker's)
        inline = len(body) <= self.inline_bytes and (
            len(body) <= INLINE_BYTES_ELEMENTS or body.find(b'"BYTES"', 0, header_length) < 0
        )
        document: bytes = await self._run(
            ex, inline, predict_codec.to_predict_response, body, header_length, model, version
        )
        return document

    async def _run(self, ex: Exchange, inline: bool, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)` here when `inline`, else in a worker; its refusal as the client's error."""
        assert ex.caller is not None
        try:
            if inline:
                return fn(*args)
            return await self.heavy.run(ex.caller.tenant_id, fn, *args)
        except (Rejected, MemoryError) as exc:
            raise as_app_error(exc) from None

    def start(self) -> None:
        """Start the worker processes."""
        self.heavy.start()

    def close(self) -> None:
        """Stop the worker processes."""
        self.heavy.close()


def _containers(body: bytes, header_length: int | None) -> int:
    """About how many JSON lists and objects the body's JSON holds (brackets inside strings count too).

    Counting costs ~0.3 ns a byte, so a body too short to hold more than INLINE_CONTAINERS is not read.
    """
    end = len(body) if header_length is None else header_length
    if end <= INLINE_CONTAINERS:
        return end
    return body.count(b"[", 0, end) + body.count(b"{", 0, end)
