"""Start-up check of the uvicorn internals that the HTTP fast path (`fastpath.py`) builds on.

The fast path subclasses uvicorn's private `HttpToolsProtocol`. Those internals are not API: they
appeared in uvicorn 0.45 (`_start_asgi_task`) and may change in any release, so pyproject.toml pins a
tested range and this check fails at start-up, with the names that are missing, rather than on the
first request.
"""

from __future__ import annotations

import asyncio

SUPPORTED = ">=0.45,<0.55"  # keep in step with pyproject.toml
MODULE = "uvicorn.protocols.http.httptools_impl"
METHODS = (
    "_start_asgi_task",
    "on_message_begin",
    "on_headers_complete",
    "on_body",
    "on_message_complete",
    "on_response_complete",
    "timeout_keep_alive_handler",
    "connection_lost",
    "shutdown",
    # the connection guard (connection.py)
    "connection_made",
    "data_received",
    "on_url",
    "on_header",
    "send_400_response",
    "resume_writing",
    "_unset_keepalive_if_required",
)
STATE = (
    "cycle",
    "pipeline",
    "flow",
    "server_state",
    "timeout_keep_alive",
    "loop",
    "parser",
    "transport",
    "scope",
    "headers",
    "expect_100_continue",
)
# Attributes set in __init__ of classes the fast path reads but never constructs.
CYCLE = ("response_started", "response_complete")
FLOW = ("read_paused", "write_paused")
PARSER = ("get_method", "get_http_version", "should_keep_alive", "should_upgrade")


class UvicornIncompatible(RuntimeError):
    """The installed uvicorn lacks internals the fast path uses."""


async def _no_app(scope: object, receive: object, send: object) -> None:
    """The probe protocol's app; never called."""


def _missing_internals() -> list[str]:
    """Names the fast path needs that this uvicorn lacks (empty when all are there)."""
    try:
        import uvicorn
        from uvicorn.protocols.http import httptools_impl
        from uvicorn.server import ServerState
    except ImportError as exc:
        return [f"{MODULE} ({exc})"]
    missing = [
        f"{MODULE}.{name}"
        for name in ("HttpToolsProtocol", "STATUS_LINE")
        if not hasattr(httptools_impl, name)
    ]
    if missing:
        return missing
    status_line = httptools_impl.STATUS_LINE
    if not isinstance(status_line, dict) or not isinstance(status_line.get(200), bytes):
        missing.append("STATUS_LINE[200] as bytes")
    protocol_class = httptools_impl.HttpToolsProtocol
    missing += [
        f"HttpToolsProtocol.{name}()" for name in METHODS if not callable(getattr(protocol_class, name, None))
    ]
    try:
        from uvicorn.protocols.http.flow_control import FlowControl
    except ImportError:
        missing.append("uvicorn.protocols.http.flow_control.FlowControl")
    else:
        missing += [
            f"FlowControl.{name}"
            for name in ("pause_reading", "resume_reading", "pause_writing", "resume_writing")
            if not callable(getattr(FlowControl, name, None))
        ]
        missing += [f"FlowControl().{name}" for name in FLOW if name not in _assigned(FlowControl)]
    cycle_class = getattr(httptools_impl, "RequestResponseCycle", None)
    if cycle_class is None:
        missing.append(f"{MODULE}.RequestResponseCycle")
    else:
        missing += [f"RequestResponseCycle().{name}" for name in CYCLE if name not in _assigned(cycle_class)]
    state = ServerState()
    if not hasattr(state, "total_requests"):
        missing.append("ServerState.total_requests")
    loop = asyncio.new_event_loop()
    try:
        config = uvicorn.Config(_no_app, http=protocol_class, lifespan="off", log_config=None)
        probe = protocol_class(config, state, {}, _loop=loop)
    except Exception as exc:  # a constructor that changed shape is as fatal as a missing name
        return [*missing, f"HttpToolsProtocol(config, server_state, app_state, _loop) ({exc!r})"]
    finally:
        loop.close()
    missing += [f"HttpToolsProtocol().{name}" for name in STATE if not hasattr(probe, name)]
    missing += [f"parser.{name}()" for name in PARSER if not callable(getattr(probe.parser, name, None))]
    return missing


def _assigned(cls: type) -> tuple[str, ...]:
    """Attribute names a class's __init__ refers to (where its instance attributes are set)."""
    init = getattr(cls, "__init__", None)
    code = getattr(init, "__code__", None)
    return tuple(code.co_names) if code is not None else ()


def check_uvicorn() -> str:
    """The installed uvicorn's version, or UvicornIncompatible naming every internal it lacks."""
    import uvicorn

    missing = _missing_internals()
    if missing:
        raise UvicornIncompatible(
            f"uvicorn {uvicorn.__version__} lacks internals the HTTP fast path uses: {', '.join(missing)}. "
            f"Install a tested release (uvicorn{SUPPORTED}), e.g. `pip install -c constraints.txt -e .`."
        )
    return uvicorn.__version__
