"""The inference core, one for every protocol: authenticate, resolve, limit, forward, account, observe.

HTTP (fast path, ASGI, /v1/predict) and gRPC (`grpc_proxy`) call the same functions: `begin` (key,
tenant, alias/canary resolution), `check_rate` / `check_limits`, `start_forward` (tenant slot,
in-flight accounting, the upstream call through the protocol's `send`) and `observe` (metrics); a
protocol module only translates. Callback-style (`start_*`), so the fast paths serve a request without
a task or a future; the awaitable forms are for the ASGI and /v1/predict paths.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Literal, TypeVar

from control_plane.dataplane.auth import Caller, authenticate
from control_plane.dataplane.callbacks import wait_for
from control_plane.dataplane.exchange import JSON, Exchange, Reply
from control_plane.dataplane.rewrite import rewrite_infer_response
from control_plane.dataplane.upstream import BadGateway, UpstreamCallback, UpstreamResponse, triton_error
from control_plane.dataplane.v2request import Prepared
from control_plane.errors import AppError
from control_plane.state import AppState

log = logging.getLogger(__name__)
T = TypeVar("T")
Send = Callable[[Callable[[T], None]], None]  # a protocol's way to send a request: send(settle)
# What Triton's answer says of the version: it does not have it ("missing"), it failed on the server's
# side ("failed": a stub ended under the request, among others), or nothing of the kind (None).
Gone = Literal["missing", "failed"] | None
EVICTED_CHECK_S = 0.1  # how long a failed answer waits for the routes to say whether its version left


def begin(state: AppState, ex: Exchange, *, model: str, version: int | None) -> None:
    """Authenticate the caller and resolve the model (no I/O: in-memory tables only)."""
    ex.caller = identify(state, ex)
    state.key_usage.touch(ex.caller.key_id)
    ex.resolved = state.router.resolve(
        tenant_id=ex.caller.tenant_id,
        model=model,
        alias=ex.header(b"x-model-alias"),
        version=version,
        routing_key=ex.header(b"x-routing-key"),
    )


def identify(state: AppState, ex: Exchange) -> Caller:
    """The caller of the request's key (admins: for the tenant their `X-Tenant` names), for every protocol;
    raises what refuses it (401, 404)."""
    admin = state.settings.admin_token
    return authenticate(
        state.router.table,
        authorization=ex.header(b"authorization"),
        tenant_header=ex.header(b"x-tenant"),
        admin_token=admin.get_secret_value() if admin is not None else None,
    )


def check_rate(state: AppState, ex: Exchange) -> None:
    """The tenant's rate limit (429 with Retry-After past it)."""
    assert ex.caller is not None
    state.limits.check_rate(ex.caller.tenant_id)


def check_limits(state: AppState, ex: Exchange) -> None:
    """Rate limit, and room to check a big body, before the body is read."""
    check_rate(state, ex)
    state.checks.admit(ex)


def start_forward(
    state: AppState,
    ex: Exchange,
    *,
    send: Send[T],
    done: Callable[[T], None],
    gone: Callable[[T], Gone] | None = None,
) -> None:
    """Forward a checked request to the resolved version, for every protocol: hold a tenant slot from
    now until the answer is in (a request waiting for its version's load holds one too: it is in
    flight for its tenant) and count the request in flight per version and per protocol while it is
    sent.

    `send(settle)` is the protocol's: it sends the request to an instance of the version and calls
    `settle` once with the answer or the error. Raises (429) before anything is sent or waited for;
    after that, `done` gets what `send` settled with, or what ended the wait (503, 404, or
    `ClientClosed` once the protocol called `ex.cancel`). `gone(answer)` says what Triton's answer
    says of the version (`Gone`): "missing" (evicted or unloaded after the routing table said
    resident), or "failed" while the routes no longer call it resident (evicted by the leader of
    another replica while the request ran: its stubs ended under it; checked again after
    `EVICTED_CHECK_S`, as the news may trail the failure by milliseconds): the request then waits
    for the version like a cold one and is sent again, once. A failure of a version still resident
    (a crash the request itself may have caused) is passed on, never sent again.
    """
    resolved, caller = ex.resolved, ex.caller
    assert resolved is not None and caller is not None
    state.limits.acquire(caller.tenant_id)
    if resolved.triton_name in state.residency.resident:
        _send(state, ex, send, done, gone, hit=True)
        return
    try:  # residency (issue 12): load on demand, then forward
        _send_when_resident(state, ex, send, done, gone)
    except BaseException:
        state.limits.release(caller.tenant_id)
        raise


def loaded_on_demand(state: AppState, ex: Exchange) -> bool:
    """Whether the resolved version is not resident: a registered version the next inference loads (a
    readiness check answers it ready without asking Triton, which does not have it; loading it for a
    readiness check would load every model a health check lists)."""
    assert ex.resolved is not None
    return ex.resolved.triton_name not in state.residency.resident


async def wait_resident(state: AppState, ex: Exchange) -> None:
    """Before a metadata or config call, for every protocol: a version that is not resident is loaded on
    demand and waited for as an inference is (503 with Retry-After when the wait is over or the load
    failed), holding one of the tenant's slots and after one of its tokens, as such a call costs a load.
    Before this, such calls answered 503 with a Retry-After that never came true: nothing loaded it."""
    resolved, caller = ex.resolved, ex.caller
    assert resolved is not None and caller is not None
    if resolved.triton_name in state.residency.resident:
        return
    check_rate(state, ex)
    state.limits.acquire(caller.tenant_id)

    def start(done: Callable[[AppError | None], None]) -> None:
        ex.cancel = state.residency.when_resident(resolved, done)  # a hang-up ends the wait

    began = time.perf_counter()
    try:
        await wait_for(start)  # raises the error the wait ended with
    except asyncio.CancelledError:  # the call itself was cancelled (a gRPC reset): stop waiting
        if ex.cancel is not None:
            ex.cancel()
        raise
    finally:
        ex.cancel = None
        ex.waited_s += time.perf_counter() - began
        state.limits.release(caller.tenant_id)


def _send(
    state: AppState,
    ex: Exchange,
    send: Send[T],
    done: Callable[[T], None],
    gone: Callable[[T], Gone] | None,
    *,
    hit: bool,
) -> None:
    """Send now, holding the tenant's slot (given back with the answer, or if `send` raises)."""
    resolved, caller = ex.resolved, ex.caller
    assert resolved is not None and caller is not None
    name, tenant_id = resolved.triton_name, caller.tenant_id
    limits, inflight, residency = state.limits, state.inflight, state.residency
    metrics = state.metrics
    gauge = metrics.http_in_flight if ex.protocol == "http" else metrics.in_flight.labels(ex.protocol)
    inflight[name] += 1  # neither keep-warm nor eviction unloads a version with requests in flight
    gauge.inc()
    began = time.perf_counter()
    residency.used[name] = began  # residency (issue 12): recency for eviction
    if hit:
        residency.stats.hits += 1

    def settle(outcome: T) -> None:
        ex.upstream_s = time.perf_counter() - began
        inflight[name] -= 1
        if name in residency.blockers and not inflight[name]:
            residency.unblocked(name)  # a version waits for the room it can now give
        gauge.dec()
        verdict = gone(outcome) if gone is not None and not ex.reloaded else None
        if verdict == "missing":
            residency.gone(name)
            again()
        elif verdict == "failed" and name in residency.resident:  # the news may trail the failure
            asyncio.get_running_loop().call_later(EVICTED_CHECK_S, evicted_or_passed_on, outcome)
        elif verdict == "failed":
            again()
        else:
            answer(outcome)

    def answer(outcome: T) -> None:
        limits.release(tenant_id)
        done(outcome)

    def again() -> None:
        ex.reloaded = True
        try:
            _send_when_resident(state, ex, send, done, gone)  # still holding the slot
        except Exception as exc:
            limits.release(tenant_id)
            done(_as_error(exc))  # type: ignore[arg-type]  # every protocol's outcome takes an AppError

    def evicted_or_passed_on(outcome: T) -> None:
        if name not in residency.resident:
            again()
        else:
            answer(outcome)

    try:
        send(settle)
    except BaseException:
        inflight[name] -= 1
        gauge.dec()
        limits.release(tenant_id)
        raise


def _send_when_resident(
    state: AppState,
    ex: Exchange,
    send: Send[T],
    done: Callable[[T], None],
    gone: Callable[[T], Gone] | None,
) -> None:
    """Residency (issue 12): send once the version is resident, or answer why not (503, 404), holding
    the tenant's slot meanwhile; `ex.cancel` ends the wait if the client goes away."""
    resolved, caller = ex.resolved, ex.caller
    assert resolved is not None and caller is not None
    began = time.perf_counter()

    def resident(error: AppError | None) -> None:
        ex.cancel = None
        ex.waited_s += time.perf_counter() - began  # Server-Timing `load` (a resend waits again)
        if error is not None:
            state.limits.release(caller.tenant_id)
            done(error)  # type: ignore[arg-type]  # every protocol's outcome type takes an AppError
            return
        try:
            _send(state, ex, send, done, gone, hit=False)
        except Exception as exc:  # `_send` gave the slot back
            done(_as_error(exc))  # type: ignore[arg-type]

    ex.cancel = state.residency.when_resident(resolved, resident)


def _as_error(exc: Exception) -> AppError:
    """An exception raised while forwarding from a callback, as the error to answer with."""
    if isinstance(exc, AppError):
        return exc
    log.error("forwarding a request failed", exc_info=exc)
    return AppError("internal error")


def http_gone(outcome: UpstreamResponse | AppError) -> Gone:
    """What Triton's HTTP answer says of the version (see `Gone`)."""
    if isinstance(outcome, UpstreamResponse):
        if outcome.status == 404:
            return "missing"
        if outcome.status >= 500:
            return "failed"
    return None


def http_send(
    state: AppState, ex: Exchange, body: bytes, headers: Sequence[tuple[bytes, bytes]]
) -> Send[UpstreamResponse | AppError]:
    """The HTTP `send` for `start_forward`: POST the body to the version's infer path on Triton."""
    resolved = ex.resolved
    assert resolved is not None

    def send(settle: UpstreamCallback) -> None:
        state.upstream.start(
            b"POST",
            resolved.infer_path,
            body=body,
            headers=headers,
            callback=settle,
            triton_name=resolved.triton_name,
        )

    return send


async def forward(
    state: AppState, ex: Exchange, *, body: bytes, headers: Sequence[tuple[bytes, bytes]]
) -> UpstreamResponse:
    """`start_forward` over HTTP, awaited; raises the error instead of passing it on."""

    def go(done: UpstreamCallback) -> None:
        start_forward(state, ex, send=http_send(state, ex, body, headers), done=done, gone=http_gone)

    response: UpstreamResponse = await wait_for(go)
    return response


def start_infer(state: AppState, ex: Exchange, body: bytes, done: Callable[[Reply | AppError], None]) -> None:
    """Check the body against the version, forward it; `done` gets the reply with only the model name
    and version rewritten, or the error. Raises (429, 503) before anything is checked or sent."""

    def checked(prepared: Prepared | AppError) -> None:
        if isinstance(prepared, AppError):
            done(prepared)
            return
        data, header_length = prepared
        headers = forward_headers(ex, header_length)

        def settle(upstream: UpstreamResponse | AppError) -> None:
            if isinstance(upstream, AppError):
                done(upstream)
            else:
                done(_reply_or_error(state, ex, data, headers, upstream))

        try:
            start_forward(state, ex, send=http_send(state, ex, data, headers), done=settle, gone=http_gone)
        except AppError as exc:
            done(exc)

    state.checks.start_http(ex, body, checked)


def forward_headers(ex: Exchange, header_length: int | None) -> list[tuple[bytes, bytes]]:
    """What Triton needs to read a checked body (it is never compressed any more)."""
    content_type = ex.headers.get(b"content-type", JSON)
    if header_length is None:
        return [(b"content-type", content_type)]
    return [(b"content-type", content_type), (b"inference-header-content-length", b"%d" % header_length)]


async def infer(state: AppState, ex: Exchange, body: bytes) -> Reply:
    """`start_infer`, awaited; raises the error instead of passing it on."""

    def go(done: Callable[[Reply | AppError], None]) -> None:
        start_infer(state, ex, body, done)

    reply: Reply = await wait_for(go)
    return reply


def _reply_or_error(
    state: AppState, ex: Exchange, body: bytes, headers: list[tuple[bytes, bytes]], upstream: UpstreamResponse
) -> Reply | AppError:
    """Triton's answer as the client's reply; whatever goes wrong becomes an error, never a hang."""
    try:
        return _reply(state, ex, body, headers, upstream)
    except AppError as exc:
        return exc
    except Exception as exc:  # an answer we cannot read: 502, and the request completes
        log.warning("unreadable answer from Triton: %s", exc)
        return BadGateway("the inference server's answer could not be read")


def _reply(
    state: AppState, ex: Exchange, body: bytes, headers: list[tuple[bytes, bytes]], upstream: UpstreamResponse
) -> Reply:
    resolved = ex.resolved
    assert resolved is not None
    if upstream.status != 200:
        raise triton_error(upstream, resolved)
    raw_length = upstream.headers.get(b"inference-header-content-length")
    header_length = int(raw_length) if raw_length is not None else None
    head, tail, new_length = rewrite_infer_response(
        upstream.body,
        header_length=header_length,
        triton_name=resolved.triton_name,
        model=resolved.model,
        version=resolved.version,
    )
    extra = [(b"inference-header-content-length", str(new_length).encode())] if new_length is not None else []
    reply = Reply(200, upstream.headers.get(b"content-type", JSON), head, tail, extra)
    if resolved.shadow is not None:
        shadow_name = resolved.shadow[0]

        def mirror() -> None:  # after the live response is out: never on its latency
            if shadow_name not in state.residency.resident:  # issue 12: load it, skip this mirror
                state.residency.prefetch(shadow_name)
                state.residency.stats.shadow_skipped += 1
                return
            state.shadow.mirror(
                resolved=resolved,
                body=body,
                headers=headers,
                live_body=upstream.body,
                live_header_length=header_length,
            )

        reply.after = mirror
    return reply


def observe(state: AppState, ex: Exchange, *, total_s: float) -> None:
    """Record one finished request in the metrics (one not resolved to a version is not recorded)."""
    resolved = ex.resolved
    if resolved is None:
        return
    state.metrics.observe(
        tenant=resolved.tenant,
        model=resolved.model,
        version=str(resolved.version),
        protocol=ex.protocol,
        status=ex.status,
        total_s=total_s,
        upstream_s=ex.upstream_s,
    )
