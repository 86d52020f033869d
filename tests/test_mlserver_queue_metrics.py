"""MLServer's `batch_request_queue` and `parallel_request_queue`: histograms with MLServer 1.7.1's names, help
texts, labels and buckets (prometheus_client's defaults), observed as MLServer observes them: the queue's
length as each request reaches an adaptive batcher, and the requests in flight to the workers as each one is
handed over."""

from __future__ import annotations

import asyncio
import json
import textwrap

import httpx

from conftest import running_server
from gpuserve import ModelRepository
from gpuserve.engine.stats import PROMETHEUS_BUCKETS
from gpuserve.repository import DiskRepository
from test_metrics import sample

RUNTIME = """
import asyncio
from mlserver import MLModel
from mlserver.types import InferenceResponse, ResponseOutput


class Slow(MLModel):
    async def predict(self, payload):
        await asyncio.sleep(0.05)
        rows = payload.inputs[0].shape[0]
        return InferenceResponse(model_name=self.name, outputs=[
            ResponseOutput(name="o", shape=[rows, 1], datatype="INT64", data=[1] * rows)])
"""
BODY = {"inputs": [{"name": "x", "shape": [1, 1], "datatype": "INT64", "data": [1]}]}


def _model(root, name, **settings):
    (root / name).mkdir()
    (root / name / "model-settings.json").write_text(json.dumps({"name": name, "implementation": "slow.Slow",
                                                                 **settings}))
    (root / name / "slow.py").write_text(textwrap.dedent(RUNTIME))


async def _burst(base, model, n):
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        replies = await asyncio.gather(*(client.post(f"/v2/models/{model}/infer", json=BODY) for _ in range(n)))
    assert [r.status_code for r in replies] == [200] * n


def test_queue_histograms_as_mlserver(tmp_path):
    _model(tmp_path, "batched", max_batch_size=4, max_batch_time=0.2)
    _model(tmp_path, "plain")
    _model(tmp_path, "workers", parallel_workers=2)
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    with running_server(repository=registry, metrics_prefix="") as server:
        base, scrape = f"http://127.0.0.1:{server.ports['http']}", f"http://127.0.0.1:{server.ports['metrics']}/metrics"
        before = httpx.get(scrape).text  # the parallel histogram is the process's (another test's workers count)
        asyncio.run(_burst(base, "batched", 6))
        asyncio.run(_burst(base, "workers", 3))
        text = httpx.get(scrape).text

    assert "# HELP batch_request_queue counter of request queue batch size" in text
    assert "# TYPE batch_request_queue histogram" in text
    batched = {"model_name": "batched", "model_version": ""}
    assert sample(text, "batch_request_queue_count", **batched) == 6  # one observation a request
    assert 0 <= sample(text, "batch_request_queue_sum", **batched) <= 15  # at most 0 + 1 + ... + 5 waiting
    buckets = [sample(text, "batch_request_queue_bucket", **batched, le=repr(b)) for b in PROMETHEUS_BUCKETS]
    assert None not in buckets and buckets == sorted(buckets)
    assert sample(text, "batch_request_queue_bucket", **batched, le="+Inf") == 6
    assert 'batch_request_queue_count{model_name="plain"' not in text  # no adaptive batching, no series

    assert "# HELP parallel_request_queue counter of request queue size for workers" in text
    assert "# TYPE parallel_request_queue histogram" in text

    def grown(name, **labels):
        return sample(text, name, **labels) - (sample(before, name, **labels) or 0)

    assert grown("parallel_request_queue_count") == 3  # unlabelled, one observation a request
    assert 3 <= grown("parallel_request_queue_sum") <= 6  # 1, 2, 3 in flight as they arrive
    assert grown("parallel_request_queue_bucket", le="+Inf") == 3
    assert "batch_request_queue{" not in text and "parallel_request_queue{" not in text  # no gauges left

