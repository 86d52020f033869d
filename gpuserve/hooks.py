"""Calling user hooks the way KServe does: sync or async, with only the arguments they accept.

User code overrides `predict(self, payload)` or `predict(self, payload, headers=None,
response_headers=None)`; both must work. A sync hook runs on the event loop while its calls are quick
(as KServe runs every one), in the default executor otherwise, so a slow one never blocks the loop
(kserve/kserve#3950; gpuserve/hook_placement.py); a hook left at the base class's pass-through is skipped.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import time
from typing import Any, Callable, Optional

from gpuserve.errors import cancelled_here, escaped
from gpuserve.hook_placement import Placement, placement_of


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
        if not inspect.isasyncgen(result):
            result = await guarded(result)
    else:
        result = await _sync_hook(func, args, kwargs)
        if inspect.isawaitable(result):
            result = await guarded(result)
    return guarded_stream(result) if inspect.isasyncgen(result) else result


async def in_executor(func: Callable, *args: Any, **kwargs: Any) -> Any:
    """`func` on the default executor, in a copy of the caller's context (the hook sees the request's, e.g.
    metrics labels); what it raises outside Exception, or a StopIteration, comes back as the request's 500."""
    return await off_loop(None, functools.partial(_run, contextvars.copy_context(), func, args, kwargs))


async def _sync_hook(func: Callable, args: tuple, kwargs: dict) -> Any:
    """A sync hook on the loop while its calls are quick, else on the default executor (hook_placement.py);
    a model's `sync_hooks_on_loop` True or False decides for it."""
    call = functools.partial(_run, contextvars.copy_context(), func, args, kwargs)
    chosen = getattr(getattr(func, "__self__", None), "sync_hooks_on_loop", None)
    if chosen is True:
        return call()
    return await placed(None if chosen is False else placement_of(func), None, call)


async def placed(placement: Optional[Placement], executor: Any, call: Callable, *args: Any) -> Any:
    """`call(*args)` on the loop or on `executor` (None: the loop's default), as `placement` says; always on the
    executor without one (on the calling thread in a worker process, `off_loop`)."""
    if placement is None or _INLINE:
        return await off_loop(executor, call, *args)
    if placement.on_loop:
        start = time.perf_counter()
        try:
            return call(*args)
        except RuntimeError as exc:
            if not _needs_no_loop(exc):
                raise
            placement.keep_off_loop()  # and this call runs again, on a thread, below
        finally:
            placement.loop_call(time.perf_counter() - start)
    return await asyncio.get_running_loop().run_in_executor(executor, functools.partial(placement.run_timed, call,
                                                                                        *args))


def _needs_no_loop(exc: RuntimeError) -> bool:
    """asyncio's refusal to start or run a loop where one runs (a sync hook calling asyncio.run). The call is
    run again on a thread: what the hook did before that refusal runs twice, once."""
    text = str(exc)
    return "cannot be called from a running event loop" in text or "event loop is already running" in text


# A worker process (gpuserve/parallel.py) holds one model, and its loop serves one call at a time: there a call
# that blocks holds up nothing, and a hop to a thread and back is two waits for the GIL on the request's path.
_INLINE = False


def run_blocking_inline() -> None:
    """From now on in this process, what `off_loop` is given runs on the calling thread (worker processes)."""
    global _INLINE
    _INLINE = True


async def off_loop(executor: Any, func: Callable, *args: Any) -> Any:
    """`func(*args)` on `executor` (None: the loop's default) so the loop goes on serving; on the calling thread
    in a worker process (`run_blocking_inline`)."""
    if _INLINE:
        return func(*args)
    return await asyncio.get_running_loop().run_in_executor(executor, func, *args)


def _run(context: contextvars.Context, func: Callable, args: tuple, kwargs: dict) -> Any:
    try:
        return context.run(func, *args, **kwargs)
    except StopIteration as exc:
        raise escaped(exc) from None
    except Exception:
        raise
    except BaseException as exc:
        raise escaped(exc) from None


async def guarded(awaitable: Any) -> Any:
    """Await model code; what it raises outside Exception (but a real cancellation) is the request's 500."""
    try:
        return await awaitable
    except Exception:
        raise
    except BaseException as exc:
        if cancelled_here(exc):
            raise
        raise escaped(exc) from None


async def guarded_stream(stream: Any) -> Any:
    """A model's async generator, whose sys.exit() and the like end the stream as an error (`guarded`), where
    the transport iterating it would otherwise stop the loop. Closing this closes the model's generator."""
    try:
        while True:
            try:
                item = await guarded(stream.__anext__())
            except StopAsyncIteration:
                return
            yield item
    finally:
        await stream.aclose()  # (an async generator's: only those are wrapped)


def overrides(obj: Any, name: str, base: type) -> bool:
    """True when `obj`'s class replaced `base.name` (a pass-through left alone is skipped)."""
    return getattr(type(obj), name, None) is not getattr(base, name, None)
