"""The event loop superserve's router and load client run on.

uvloop (libuv) when it is installed, else asyncio's default loop. Measured on the 2-core
machine (docs/serving.md): the router's per-request cost is mostly event-loop and socket work,
and the time a request spends outside the router's deadline clock is what a tight SLO cannot
hide. ``SUPERSERVE_LOOP=asyncio`` forces the standard loop (for comparison or debugging).
"""
from __future__ import annotations

import asyncio
import os
from typing import Any, Coroutine, TypeVar

T = TypeVar("T")


def loop_name() -> str:
    if os.environ.get("SUPERSERVE_LOOP", "").lower() == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on the loop :func:`loop_name` names."""
    if loop_name() == "uvloop":
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)
