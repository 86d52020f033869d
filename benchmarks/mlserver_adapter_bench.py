"""What serving an MLServer runtime costs at its edge, in process: one V2 request through gpuserve's
MLModelAdapter (native request -> MLServer's InferenceRequest -> the runtime's decode_request /
encode_response with NumpyRequestCodec -> InferenceResponse -> native response) against the runtime's own
work on the arrays (the limit: a doubling of a 1x4 array), microseconds of thread CPU a call. The
adapter's share is what MLServer users pay in gpuserve over a native model.

    .venv/bin/python benchmarks/mlserver_adapter_bench.py [--calls 5000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpuserve.mlserver import MLModel  # noqa: E402
from gpuserve.mlserver.codecs import NumpyRequestCodec  # noqa: E402
from gpuserve.mlserver.model import MLModelAdapter  # noqa: E402
from gpuserve.mlserver.settings import ModelSettings  # noqa: E402
from gpuserve.types import InferInput, InferRequest  # noqa: E402


class Echo(MLModel):
    async def predict(self, payload):
        x = self.decode_request(payload, default_codec=NumpyRequestCodec)
        return self.encode_response(x * 2, default_codec=NumpyRequestCodec)


def _request() -> InferRequest:
    return InferRequest("echo", [InferInput("x", [1, 4], "FP32", np.arange(4, dtype=np.float32).reshape(1, 4))])


async def _rounds(calls: int, rounds: int) -> dict:
    adapter = MLModelAdapter(Echo(ModelSettings(name="echo", implementation=Echo)))
    await adapter.load()
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    served, limit = [], []
    for _ in range(rounds):
        for _ in range(calls // 10):
            await adapter(_request())
        start = time.thread_time()
        for _ in range(calls):
            await adapter(_request())
        served.append((time.thread_time() - start) / calls * 1e6)
        start = time.thread_time()
        for _ in range(calls):
            _request()
            (x * 2).copy()
        limit.append((time.thread_time() - start) / calls * 1e6)
    return {"served_us": statistics.median(served), "served_range": (min(served), max(served)),
            "limit_us": statistics.median(limit)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    result = asyncio.run(_rounds(args.calls, args.rounds))
    low, high = result["served_range"]
    print(f"MLServer runtime through the adapter: {result['served_us']:.1f} us a call (rounds {low:.1f}-{high:.1f}); "
          f"the request and the runtime's own array work: {result['limit_us']:.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
