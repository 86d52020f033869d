"""The event loop the in-process benchmarks run on: the one `gpuserve start` serves on (uvloop when it is
installed, server/model_server.py), so what they measure is what the server runs."""

from __future__ import annotations

import asyncio


def event_loop(choice: str = "auto"):
    """(name, runner) for "auto", "uvloop" or "asyncio"."""
    if choice in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise
        else:
            return "uvloop", uvloop.run
    return "asyncio", asyncio.run
