"""Await a callback-style operation: the hot path runs on callbacks, the rest of the code awaits."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


async def wait_for(start: Callable[[Callable[[Any], None]], None]) -> Any:
    """Run `start(done)` and wait for what it passes to `done`; raised if it is an exception."""
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def settle(outcome: Any) -> None:
        if future.done():
            return
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)

    start(settle)
    return await future
