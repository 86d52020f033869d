"""Parallel workers for CPU-bound custom Python models (MLServer's `parallel_workers`).

Each worker is a spawned process (never forked: the parent may hold CUDA or threads) that builds
and loads its own copy of the model from the model's settings. Requests go to whichever worker is
free (a process pool's shared queue), not round-robin, so one slow request does not hold up the
requests queued behind it on the same worker. Arrays travel pickled; the model's own event loop in
each worker runs async hooks.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Dict, List, Optional, Tuple

from gpuserve.errors import ModelLoadError
from gpuserve.metrics import worker_metric_dirs
from gpuserve.model import InferenceVerb, Model
from gpuserve.settings import ModelSettings

_MODEL = None
_LOOP: Optional[asyncio.AbstractEventLoop] = None


def _worker_init(settings_json: str, folder: Optional[str], metrics_dir: str) -> None:
    global _MODEL, _LOOP
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # before prometheus_client is first imported here
    from gpuserve.model_repository import run_load
    from gpuserve.repository import instantiate, runtime_for

    settings = ModelSettings.model_validate_json(settings_json)
    settings.folder = folder
    settings.parallel_workers = 0
    _LOOP = asyncio.new_event_loop()
    model = instantiate(runtime_for(settings), settings)
    if not _LOOP.run_until_complete(run_load(model)):
        raise ModelLoadError(f"worker {os.getpid()} could not load '{settings.name}': {model.reason}")
    _MODEL = model


def _worker_describe() -> Dict[str, Any]:
    return {"pid": os.getpid(), "inputs": _MODEL.get_input_types(), "outputs": _MODEL.get_output_types(),
            "metadata": _MODEL.metadata() if hasattr(_MODEL, "metadata") else None}


def _worker_call(body: Any, headers: Optional[dict], verb: int) -> Tuple[Any, Dict[str, str]]:
    return _LOOP.run_until_complete(_MODEL(body, headers, InferenceVerb(verb)))


class ParallelModel(Model):
    """Stands in the parent for a model whose copies run in `workers` processes."""

    def __init__(self, settings: ModelSettings, workers: int):
        super().__init__(settings.name)
        self.settings = settings
        self.version = settings.parameters.version
        self.workers = workers
        self.pool: Optional[ProcessPoolExecutor] = None
        self.description: Dict[str, Any] = {}
        self.worker_pids: List[int] = []
        self.inflight = 0  # requests handed to the pool and not yet answered
        self.metrics_dir: Optional[str] = None

    def load(self) -> bool:
        # Workers write custom metrics to files in their own directory; the server's exposition merges them.
        self.metrics_dir = tempfile.mkdtemp(prefix=f"gpuserve-metrics-{self.name}-")
        worker_metric_dirs.add(self.metrics_dir)
        settings_json = self.settings.model_dump_json()
        self.pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_worker_init,
                                        initargs=(settings_json, self.settings.folder, self.metrics_dir))
        try:
            futures = [self.pool.submit(_worker_describe) for _ in range(self.workers)]
            described = [f.result() for f in futures]
        except Exception as exc:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = None
            raise ModelLoadError(f"parallel workers for '{self.name}' failed to start: {exc}") from None
        self.description = described[0]
        self.worker_pids = sorted({d["pid"] for d in described})
        self.ready = True
        return True

    async def __call__(self, body, headers=None, verb: InferenceVerb = InferenceVerb.PREDICT):
        loop = asyncio.get_running_loop()
        self.inflight += 1
        try:
            return await loop.run_in_executor(self.pool, _worker_call, body, dict(headers or {}), verb.value)
        finally:
            self.inflight -= 1

    def get_input_types(self):
        return self.description.get("inputs", [])

    def get_output_types(self):
        return self.description.get("outputs", [])

    def metadata(self) -> Dict[str, Any]:
        meta = self.description.get("metadata") or super().metadata()
        return {**meta, "name": self.name}

    def stop(self) -> None:
        super().stop()
        self.ready = False
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
        if self.metrics_dir:
            worker_metric_dirs.discard(self.metrics_dir)
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
            self.metrics_dir = None
