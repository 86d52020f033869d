"""One thread of a model's own for the framework calls that block (a pipeline, a detector, an explainer, an
MLflow model's predict, and their loads).

MLServer runs such runtimes' `predict` on its event loop, so one slow call stops every other request of the
server. Here each of these runtimes gets a single thread: the loop goes on serving, and the model's calls still
run one at a time and in order, as on MLServer's loop (stateful detectors, pipelines that are not thread-safe).
The call runs in a copy of the caller's context, so what a request set in context variables (the labels of a
custom metric logged from inside the call) reaches it.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import functools
from typing import Any, Callable

from gpuserve.hooks import off_loop


class ModelThread:
    def __init__(self, name: str):
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=name)

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await off_loop(self._pool, functools.partial(contextvars.copy_context().run, fn, *args, **kwargs))

    def close(self) -> None:
        """No more calls; one running finishes on its own (the thread is not waited for)."""
        self._pool.shutdown(wait=False)


def close_thread(model: Any) -> None:
    """Close a runtime's `_thread` where it has one (its unload; also after a load that failed)."""
    thread = getattr(model, "_thread", None)
    if thread is not None:
        thread.close()
