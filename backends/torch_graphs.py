"""CUDA graphs for the PyTorch backend: one graph per captured batch size, replayed on static buffers.

A graph replays a fixed sequence of kernels on fixed addresses, so launch overhead (tens of
microseconds per layer for small models) is paid once at capture. Batches are padded up to the
nearest captured size (extra rows zeroed, outputs sliced back); a batch larger than every captured
size, or a model whose non-batch dimensions are dynamic, runs eagerly. The captured sizes are the
model's preferred batch sizes (Triton `dynamic_batching.preferred_batch_size`), else powers of two
up to its max batch size. The padding helpers are pure and tested on the CPU; capture and replay
need a GPU (tests/test_gpu.py).
"""

from __future__ import annotations

import bisect
import logging
import threading
import weakref
from typing import Callable, Dict, List, Optional, Sequence

logger = logging.getLogger("gpuserve.backends.torch")

_V2_TO_TORCH = {"BOOL": "bool", "UINT8": "uint8", "INT8": "int8", "INT16": "int16", "INT32": "int32",
                "INT64": "int64", "FP16": "float16", "FP32": "float32", "FP64": "float64", "BF16": "bfloat16"}


def graph_batch_sizes(preferred: Sequence[int], max_batch: int) -> List[int]:
    """Sizes to capture: the preferred ones, else 1, 2, 4, ... up to and including max_batch."""
    sizes = sorted({int(s) for s in preferred if int(s) > 0})
    if sizes:
        return sizes
    if max_batch < 1:
        return [1]
    sizes, size = [], 1
    while size < max_batch:
        sizes.append(size)
        size *= 2
    return sizes + [max_batch]


def graph_size_for(rows: int, sizes: Sequence[int]) -> Optional[int]:
    """The smallest captured size that holds `rows`, or None (run eagerly)."""
    at = bisect.bisect_left(sizes, rows)
    return sizes[at] if at < len(sizes) else None


def fill_static(static, value, rows: int) -> None:
    """Copy `value` (rows x ...) into the first rows of `static` and zero the padding rows.

    Works on torch tensors (asynchronous copy on the current stream) and NumPy arrays alike.
    """
    if value.shape[1:] != static.shape[1:] or rows != value.shape[0] or rows > static.shape[0]:
        raise ValueError(f"batch of shape {tuple(value.shape)} does not fit a graph buffer of shape "
                         f"{tuple(static.shape)}")
    if hasattr(static, "copy_"):
        static[:rows].copy_(value, non_blocking=True)
        if rows < static.shape[0]:
            static[rows:].zero_()
    else:
        static[:rows] = value
        static[rows:] = 0


def slice_rows(outputs: Dict[str, object], rows: int) -> Dict[str, object]:
    return {name: value[:rows] for name, value in outputs.items()}


class CapturedGraph:
    """One graph at one batch size: its static inputs, its outputs, the stream it was captured on, and the
    lock of that stream (see below): the buffers are shared by the instance's threads, so one batch
    replays at a time."""

    def __init__(self, graph, inputs: list, outputs: Dict[str, object], stream_id: int = 0):
        self.graph, self.inputs, self.outputs = graph, inputs, outputs
        self.stream_id = stream_id
        self.lock = _capture_lock(stream_id)
        weakref.finalize(self, _forget, stream_id)  # however the graph goes, its stream is free again


# A captured graph replays the cuBLAS workspace of the (thread's handle, stream) it was captured on: torch
# keeps one workspace per pair and the capture bakes its address in. Two graphs captured on one stream by
# one thread therefore share a workspace, and replaying them at once on two threads corrupted it: on an H200
# (2026-12-04) `gpuserve start` with graphs at 1..64 rows served 1 and 16 clients, then at 64 clients (batches
# of 20-64 rows: graphs 32 and 64 at once) left 41 requests unanswered in one run and aborted the process
# ("terminate called after throwing c10::AcceleratorError") in the next, while in-process single-graph runs
# and eager calls (a stream per thread) were right. So each size is captured on its own stream, and replays
# of graphs whose capture streams coincide (torch hands out 32 pool streams per device round-robin, so two
# models' streams can) take that stream's lock; an eager call on such a stream takes it too.
_REGISTRY = threading.Lock()
_STREAM_LOCKS: Dict[int, threading.Lock] = {}
_LIVE: Dict[int, int] = {}  # capture stream -> graphs alive that were captured on it


def _capture_lock(stream_id: int) -> threading.Lock:
    with _REGISTRY:
        _LIVE[stream_id] = _LIVE.get(stream_id, 0) + 1
        return _STREAM_LOCKS.setdefault(stream_id, threading.Lock())


def _forget(stream_id: int) -> None:
    with _REGISTRY:
        left = _LIVE.get(stream_id, 0) - 1
        if left > 0:
            _LIVE[stream_id] = left
        else:
            _LIVE.pop(stream_id, None)


def lock_for_stream(stream_id: int) -> Optional[threading.Lock]:
    """The lock an eager call on this stream must hold, if a live graph was captured on it."""
    return _STREAM_LOCKS.get(stream_id) if stream_id in _LIVE else None


def graphs_alive() -> bool:
    return bool(_LIVE)


# One capture at a time in the process: models load in parallel, and two captures at once would each see
# the other's work on the device.
_CAPTURE_LOCK = threading.Lock()


def capture_graphs(torch, call, specs, sizes: Sequence[int], device, cast,
                   streams: Optional[Callable[[], object]] = None) -> Dict[int, CapturedGraph]:
    """Capture `call(*inputs) -> {name: tensor}` at each size, each on a stream of its own (`streams()`
    makes one; by default a new torch stream on the device), so no two graphs share a cuBLAS workspace.
    Each graph has its own memory pool too: a shared pool is only safe when graphs replay in capture order
    and never at once, and the instance's two threads may replay two sizes at the same time. Capture errors
    are thread-local: another model serving or warming up on its own thread meanwhile neither breaks this
    capture nor is broken by it.

    Returns {} (eager only) when an input has a dynamic non-batch dimension or no declared shape.
    """
    for spec in specs:
        if len(spec.shape) < 1 or any(d < 0 for d in spec.shape[1:]) or spec.datatype not in _V2_TO_TORCH:
            logger.warning("CUDA graphs need fixed non-batch shapes; input %s is %s %s: running eagerly",
                           spec.name, spec.datatype, spec.shape)
            return {}
    fixed = {spec.shape[0] for spec in specs if spec.shape[0] >= 0}
    if fixed:  # no batch dimension: the one shape the model takes
        sizes = sorted(fixed)[:1]
    if streams is None:
        def streams():
            return torch.cuda.Stream(device=device)
    graphs: Dict[int, CapturedGraph] = {}
    # On the model's GPU, not the thread's current one; captured on our own streams, since torch.cuda.graph's
    # default capture stream is made once, on whichever device is current the first time any graph is taken.
    with _CAPTURE_LOCK, torch.cuda.device(device):
        for size in sorted(sizes):
            side = streams()
            inputs = [cast(torch.zeros([size, *spec.shape[1:]], dtype=getattr(torch, _V2_TO_TORCH[spec.datatype]),
                                       device=device)) for spec in specs]
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                # warm-up outside capture: lazy init, cuBLAS handles and this stream's workspace, autotuning,
                # and TorchScript's profiling executor, which specialises the graph only after its first runs
                for _ in range(3):
                    call(*inputs)
            torch.cuda.current_stream(device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=side, capture_error_mode="thread_local"):
                outputs = call(*inputs)
            graphs[size] = CapturedGraph(graph, inputs, outputs, int(getattr(side, "cuda_stream", id(side))))
        torch.cuda.synchronize(device)
    logger.info("captured CUDA graphs at batch sizes %s", sorted(graphs))
    return graphs
