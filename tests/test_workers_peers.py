"""`gpuserve start --workers 2` answers as one server: statistics and metrics count both workers' requests,
and a model loaded or unloaded, or a trace or log setting changed, through one connection holds on every
connection (server/peers.py). Every request here comes on a new connection, so the kernel hands it to either
worker; before the workers answered each other, each count was one worker's share and model control was off."""

from __future__ import annotations

import contextlib
import json
import re
import time
import urllib.request

import numpy as np
import pytest

from conftest import free_ports
from test_cli import GPUSERVE, start, stop, wait_ready
from test_workers_shared_memory import MODEL  # a model that answers with its worker's pid

httpclient = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")

FRESH = 8  # connections per check: with both workers serving, each check reaches both but in 2 of 256 cases


def _infer(port) -> int:
    client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
    try:
        given = httpclient.InferInput("IN", [1, 4], "FP32")
        given.set_data_from_numpy(np.arange(4, dtype=np.float32).reshape(1, 4))
        return int(client.infer("negate", [given]).as_numpy("PID")[0])
    finally:
        client.close()


def _both_workers(port, at_least: int) -> int:
    """Requests until both workers answered and at least `at_least` were sent; how many were sent."""
    pids, sent, deadline = set(), 0, time.monotonic() + 60
    while (len(pids) < 2 or sent < at_least) and time.monotonic() < deadline:
        pids.add(_infer(port))
        sent += 1
    assert len(pids) == 2, "both workers answered"
    return sent


def _each(port, ask, client_module=httpclient):
    """`ask(client)` over FRESH new connections (tritonclient.http's, or gRPC's)."""
    answers = []
    for _ in range(FRESH):
        client = client_module.InferenceServerClient(f"127.0.0.1:{port}")
        try:
            answers.append(ask(client))
        finally:
            client.close()
    return answers


def _grpc_each(port, ask):
    return _each(port, ask, grpcclient)


def _metric(port, name, model="negate") -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read().decode()
    assert text.count(f"# TYPE {name} ") == 1, "each family once"
    values = [float(m.group(1)) for m in re.finditer(rf'^{name}{{[^}}]*model="{model}"[^}}]*}} (\S+)$', text, re.M)]
    assert len(values) == 1, text
    return values[0]


@contextlib.contextmanager
def _serving(folder, model_source):
    """`gpuserve start FOLDER --workers 2` on a repository of the negate model; (http, grpc, metrics) ports
    once the server says it is ready."""
    (folder / "negate").mkdir()
    (folder / "negate" / "model-settings.json").write_text(json.dumps({"implementation": "negate_model.Negate"}))
    (folder / "negate" / "negate_model.py").write_text(model_source)
    http, grpc, metrics = free_ports(3)
    proc = start([*GPUSERVE, "start", str(folder), "--host", "127.0.0.1", "--http-port", str(http),
                  "--grpc-port", str(grpc), "--metrics-port", str(metrics), "--workers", "2"])
    try:
        wait_ready(http, proc)
        yield http, grpc, metrics
    finally:
        assert stop(proc) == 0


@pytest.fixture
def two_workers(tmp_path):
    with _serving(tmp_path, MODEL) as ports:
        yield ports


def test_statistics_and_metrics_count_every_worker(two_workers):
    http, grpc, metrics = two_workers
    sent = _both_workers(http, 12)

    def counts(stats):
        entry = stats["model_stats"][0]
        return (int(entry["inference_count"]), int(entry["execution_count"]),
                int(entry["inference_stats"]["success"]["count"]))

    assert _each(http, lambda c: counts(c.get_inference_statistics("negate"))) == [(sent, sent, sent)] * FRESH
    assert _each(http, lambda c: counts(c.get_inference_statistics())) == [(sent, sent, sent)] * FRESH
    assert _grpc_each(grpc, lambda c: counts(c.get_inference_statistics("negate", as_json=True))) == \
        [(sent, sent, sent)] * FRESH  # (the JSON of a proto prints 64-bit counts as text)
    assert _metric(metrics, "nv_inference_count") == sent  # worker 0's metrics port, both workers' counts
    assert _metric(metrics, "nv_inference_request_success") == sent
    for _ in range(FRESH):  # the HTTP port's /metrics, on either worker
        assert _metric(http, "nv_inference_count") == sent

    client = httpclient.InferenceServerClient(f"127.0.0.1:{http}")
    try:
        with pytest.raises(Exception, match="not available"):  # the asked worker's refusal, as before
            client.get_inference_statistics("missing")
    finally:
        client.close()


def test_loads_unloads_and_settings_reach_every_worker(two_workers):
    http, grpc, _ = two_workers
    _both_workers(http, 4)  # both serving (the second may still be starting when the first is ready)
    client = httpclient.InferenceServerClient(f"127.0.0.1:{http}")
    client.unload_model("negate")
    client.close()
    assert _each(http, lambda c: c.is_model_ready("negate")) == [False] * FRESH
    assert _grpc_each(grpc, lambda c: c.is_model_ready("negate")) == [False] * FRESH

    client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc}")
    client.load_model("negate")
    client.close()
    assert _each(http, lambda c: c.is_model_ready("negate")) == [True] * FRESH
    _both_workers(http, 4)

    client = httpclient.InferenceServerClient(f"127.0.0.1:{http}")
    client.update_log_settings({"log_verbose_level": 2})
    client.update_trace_settings(settings={"trace_rate": "7", "trace_level": ["TIMESTAMPS"]})
    client.close()
    assert _each(http, lambda c: c.get_log_settings()["log_verbose_level"]) == [2] * FRESH
    assert _each(http, lambda c: c.get_trace_settings()["trace_rate"]) == ["7"] * FRESH

    client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc}")
    client.update_trace_settings(model_name="negate", settings={"trace_rate": "3"})
    client.close()
    assert _grpc_each(grpc, lambda c: list(c.get_trace_settings("negate", as_json=True)["settings"]["trace_rate"]
                                           ["value"])) == [["3"]] * FRESH
    client = httpclient.InferenceServerClient(f"127.0.0.1:{http}")
    client.update_trace_settings(model_name="negate", settings={})  # REST: the model's own settings dropped
    client.close()
    assert _each(http, lambda c: c.get_trace_settings("negate")["trace_rate"]) == ["7"] * FRESH

    client = httpclient.InferenceServerClient(f"127.0.0.1:{http}")
    try:
        with pytest.raises(Exception, match="missing"):  # a model no worker has: refused as in one process
            client.load_model("missing")
    finally:
        client.close()
    assert _each(http, lambda c: c.is_model_ready("negate")) == [True] * FRESH


SLOW_IN_WORKER_1 = MODEL.replace("""    def load(self):
        self.ready = True""", """    def load(self):
        if os.environ.get("GPUSERVE_WORKER_INDEX") == "1":
            import time
            time.sleep(4)
        self.ready = True""")
assert SLOW_IN_WORKER_1 != MODEL


def test_ready_once_every_worker_is(tmp_path):
    """A worker serves its port while it loads; the server is ready (GET /v2/health/ready) only once every
    worker has loaded, so a client that waited for ready never reaches one still loading."""
    with _serving(tmp_path, SLOW_IN_WORKER_1) as (http, _, _):
        pids = {_infer(http) for _ in range(12)}  # every one answered, by either worker
        assert len(pids) == 2
        assert _each(http, lambda c: c.is_server_ready()) == [True] * FRESH


def test_a_tfserving_config_reload_reaches_every_worker(two_workers, tmp_path_factory):
    """TFServing's HandleReloadConfigRequest on one connection (server/tfserving_reload.py) serves the new list on
    every connection."""
    pytest.importorskip("tensorflow")
    pytest.importorskip("tensorflow_serving.apis")
    import grpc as grpcio
    from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc

    import tf_models

    http, grpc, _ = two_workers
    _both_workers(http, 4)
    elsewhere = tmp_path_factory.mktemp("tfs-reload-workers")
    tf_models.scaled_savedmodel(elsewhere / "scaled" / "1", 2.0)
    request = model_management_pb2.ReloadConfigRequest()
    request.config.model_config_list.config.add(name="scaled", base_path=str(elsewhere / "scaled"),
                                                model_platform="tensorflow")
    with grpcio.insecure_channel(f"127.0.0.1:{grpc}") as channel:
        answer = model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(request, timeout=120)
    assert answer.status.error_code == 0
    assert _each(http, lambda c: c.is_model_ready("scaled")) == [True] * FRESH
    request.config.model_config_list.ClearField("config")  # an empty list: the model goes from every worker
    with grpcio.insecure_channel(f"127.0.0.1:{grpc}") as channel:
        model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(request, timeout=120)
    assert _each(http, lambda c: c.is_model_ready("scaled")) == [False] * FRESH
    assert _each(http, lambda c: c.is_model_ready("negate")) == [True] * FRESH
