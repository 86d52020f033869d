"""Calling user hooks the way KServe does: sync or async, with only the arguments they accept.

User code overrides `predict(self, payload)` or `predict(self, payload, headers=None,
response_headers=None)`; both must work. A sync hook runs in the default executor so it never
blocks the event loop (kserve/kserve#3950); a hook left at the base class's pass-through is skipped.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
from typing import Any, Callable


@functools.lru_cache(maxsize=4096)
def _arity(func: Callable) -> tuple[int, frozenset, bool]:
    """How many positional args `func` takes, which keywords, and whether it takes **kwargs."""
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return 99, frozenset(), True
    positional = 0
    keywords = set()
    var_kw = False
    for param in sig.parameters.values():
        if param.kind is param.VAR_POSITIONAL:
            positional = 99
        elif param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            positional += 1
            keywords.add(param.name)
        elif param.kind is param.KEYWORD_ONLY:
            keywords.add(param.name)
        elif param.kind is param.VAR_KEYWORD:
            var_kw = True
    return positional, frozenset(keywords), var_kw


def fit_args(func: Callable, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Drop trailing positional and unknown keyword arguments `func` cannot take."""
    target = getattr(func, "__func__", func)
    try:
        positional, keywords, var_kw = _arity(target)
    except TypeError:  # an unhashable callable: ask without the cache
        positional, keywords, var_kw = _arity.__wrapped__(target)
    if hasattr(func, "__self__"):
        positional = max(positional - 1, 0) if positional != 99 else 99
    args = args[:positional]
    if not var_kw:
        kwargs = {k: v for k, v in kwargs.items() if k in keywords}
    return args, kwargs


@functools.lru_cache(maxsize=4096)
def _is_async(func: Callable) -> bool:
    return inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func)


def is_async(func: Callable) -> bool:
    """Cached per function (bound methods share their function's entry): asked on every request."""
    target = getattr(func, "__func__", func)
    try:
        return _is_async(target)
    except TypeError:  # an unhashable callable: ask without the cache
        return inspect.iscoroutinefunction(target) or inspect.isasyncgenfunction(target)


async def call_hook(func: Callable, *args: Any, **kwargs: Any) -> Any:
    """Await an async hook, run a sync one in the executor; an awaitable result is awaited too."""
    args, kwargs = fit_args(func, args, kwargs)
    if is_async(func):
        result = func(*args, **kwargs)
        if inspect.isasyncgen(result):
            return result
        return await result
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()  # the hook sees the request's context (e.g. metrics labels)
    result = await loop.run_in_executor(None, functools.partial(context.run, func, *args, **kwargs))
    if inspect.isawaitable(result):
        result = await result
    return result


def overrides(obj: Any, name: str, base: type) -> bool:
    """True when `obj`'s class replaced `base.name` (a pass-through left alone is skipped)."""
    return getattr(type(obj), name, None) is not getattr(base, name, None)
