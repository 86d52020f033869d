"""TorchServe's metrics under its names on gpuserve's metrics endpoint (server/torchserve_metrics.py): request,
latency and queue counters per model and requested version, status-class counters, the handler's time gauges;
absent from a repository without archives. benchmarks/peers/torchserve_conformance.py compares them with
TorchServe 0.12's. Skipped without torch."""

from __future__ import annotations

import importlib.util
import re
import socket

import pytest

torch = pytest.importorskip("torch")
httpx = pytest.importorskip("httpx")

from conftest import running_server  # noqa: E402
from gpuserve import ModelRepository  # noqa: E402
from gpuserve.repository import DiskRepository  # noqa: E402
from gpuserve.server import torchserve_api  # noqa: E402
from gpuserve.torchserve import model as archives  # noqa: E402
from test_torchserve import CLASS_HANDLER, FUNCTION_HANDLER, make_mar  # noqa: E402


def _samples(text: str, family: str) -> dict:
    """{labels text: value} of one family's samples."""
    return {m.group(1): float(m.group(2)) for m in re.finditer(rf"^{family}\{{([^}}]*)\}} (\S+)$", text, re.M)}


def test_torchserve_counters_and_gauges(tmp_path, monkeypatch):
    monkeypatch.setattr(torchserve_api, "COUNTS", {})
    monkeypatch.setattr(torchserve_api, "STATUSES", {})
    monkeypatch.setattr(archives, "LAST_TIMES", {})
    make_mar(tmp_path / "lin.mar", "lin", CLASS_HANDLER, seed=1)
    make_mar(tmp_path / "fn.mar", "fn", FUNCTION_HANDLER, seed=2)
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    with running_server(repository=registry) as server:
        base, metrics = (f"http://127.0.0.1:{server.ports[k]}" for k in ("http", "metrics"))
        for _ in range(3):
            assert httpx.post(f"{base}/predictions/lin", json=[1, 2, 3, 4]).status_code == 200
        assert httpx.post(f"{base}/predictions/lin/1.0", json=[1, 2, 3, 4]).status_code == 200
        assert httpx.post(f"{base}/predictions/fn", json="fail").status_code == 503
        assert httpx.post(f"{base}/predictions/nope", json=1).status_code == 404
        assert httpx.post(f"{base}/v2/models/lin/infer", json={"inputs": [
            {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}).status_code == 200
        text = httpx.get(f"{metrics}/metrics").text
    host = socket.gethostname()
    assert "# TYPE ts_inference_requests_total counter" in text
    assert "# HELP ts_inference_requests_total Torchserve prometheus counter metric with unit: Count" in text
    # per the version the request named ("default" for none); V2 requests are not TorchServe's; the missing
    # model reached none
    assert _samples(text, "ts_inference_requests_total") == {
        f'model_name="fn",model_version="default",hostname="{host}"': 1.0,
        f'model_name="lin",model_version="1.0",hostname="{host}"': 1.0,
        f'model_name="lin",model_version="default",hostname="{host}"': 3.0}
    latency = _samples(text, "ts_inference_latency_microseconds")
    assert set(latency) == {f'model_name="lin",model_version="1.0",hostname="{host}"',
                            f'model_name="lin",model_version="default",hostname="{host}"'}  # fn failed: none
    assert all(value > 0 for value in latency.values())
    assert set(_samples(text, "ts_queue_latency_microseconds")) == set(latency)
    assert _samples(text, "Requests2XX") == {f'Level="Host",Hostname="{host}"': 4.0}
    assert _samples(text, "Requests4XX") == {f'Level="Host",Hostname="{host}"': 1.0}
    assert _samples(text, "Requests5XX") == {f'Level="Host",Hostname="{host}"': 1.0}
    # the time BaseHandler adds (lin's handler is one where torchserve is installed); fn's adds none
    handler_time = {f'ModelName="lin",Level="Model",Hostname="{host}"'} if importlib.util.find_spec("ts") else set()
    assert set(_samples(text, "HandlerTime")) == handler_time
    # only predictions that answered (fn's one request failed)
    assert set(_samples(text, "PredictionTime")) == {f'ModelName="lin",Level="Model",Hostname="{host}"'}
    assert "# TYPE PredictionTime gauge" in text


def test_no_torchserve_families_without_archives(tmp_path, monkeypatch):
    monkeypatch.setattr(torchserve_api, "COUNTS", {})
    monkeypatch.setattr(torchserve_api, "STATUSES", {})
    with running_server() as server:
        text = httpx.get(f"http://127.0.0.1:{server.ports['metrics']}/metrics").text
    assert "ts_inference_requests_total" not in text and "Requests2XX" not in text
