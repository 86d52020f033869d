"""Metrics scraped over HTTP from a running server: names, labels, counters that move, NVML absence,
custom metrics from models in process and across parallel workers."""

import json
import logging
import re
import textwrap

import httpx
import tritonclient.grpc as grpcclient

from conftest import make_onnx_model, running_server
from gpuserve import InferOutput, InferResponse, Model, ModelRepository, metrics
from gpuserve.repository import DiskRepository
from gpuserve.server.nvml import GpuSampler


def sample(text, name, **labels):
    """The value of one sample, or None."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = rf"^{re.escape(name)}\{{{re.escape(want)}\}} (\S+)$" if labels else rf"^{re.escape(name)} (\S+)$"
    match = re.search(pattern, text, re.M)
    return float(match.group(1)) if match else None


class Logged(Model):
    def load(self):
        metrics.register("my_custom_metric", "A value the model logs")
        self.ready = True

    def predict(self, payload, headers=None):
        metrics.log(my_custom_metric=34)
        return InferResponse(payload.id, self.name, [InferOutput.from_numpy("y", payload.inputs[0].as_numpy())])


def test_counters_names_and_labels_move(tmp_path):
    (tmp_path / "mlp").mkdir()
    make_onnx_model(tmp_path / "mlp" / "model.onnx")
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    registry.update(Logged("logged"))
    with running_server(repository=registry, metrics_prefix="") as server:
        rest = f"http://127.0.0.1:{server.ports['http']}"
        body = {"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32", "data": [1] * 8}]}
        for _ in range(3):
            assert httpx.post(f"{rest}/v2/models/mlp/infer", json=body).status_code == 200
        assert httpx.post(f"{rest}/v2/models/mlp/infer", json={"inputs": [{"name": "bad", "shape": [1],
                                                                        "datatype": "FP32", "data": [1]}]}).status_code == 400
        httpx.post(f"{rest}/v2/models/logged/infer",
                   json={"inputs": [{"name": "x", "shape": [1], "datatype": "INT32", "data": [1]}]})
        with grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}") as client:
            assert client.is_server_live()
        for url in (f"{rest}/metrics", f"http://127.0.0.1:{server.ports['metrics']}/metrics"):
            text = httpx.get(url).text
            assert sample(text, "nv_inference_request_success", model="mlp", version="") == 3
            # MLServer 1.5 and 1.7.1 label their request metrics {model, version}
            assert sample(text, "model_infer_request_success_total", model="mlp", version="") == 3
            assert sample(text, "model_infer_request_duration_count", model="mlp", version="") == 3
            assert sample(text, "nv_inference_count", model="mlp", version="") == 6
            assert sample(text, "nv_inference_exec_count", model="mlp", version="") == 3
            assert sample(text, "nv_inference_compute_infer_duration_us", model="mlp", version="") > 0
            assert sample(text, "nv_inference_queue_duration_us", model="mlp", version="") >= 0
            assert sample(text, "model_infer_request_duration_seconds_count", model="mlp", version="") == 3
            assert sample(text, "gpuserve_batch_size_bucket", model="mlp", version="", le="2.0") == 3
            assert sample(text, "nv_inference_pending_request_count", model="mlp", version="") == 0
            assert "batch_request_queue" not in text  # MLServer's histogram: adaptive batching only
            assert sample(text, "rest_server_requests_total", endpoint="infer_latest", method="POST",
                          status_code="200", path="/v2/models/{model_name}/infer") >= 3
            assert sample(text, "rest_server_requests_total", endpoint="infer_latest", method="POST",
                          status_code="400", path="/v2/models/{model_name}/infer") == 1
            assert sample(text, "grpc_server_handled_total", grpc_method="ServerLive", grpc_code="OK") == 1
            assert sample(text, "my_custom_metric_count", model_name="logged", model_version="") >= 1
            assert "# TYPE nv_inference_request_success counter" in text
            assert "nv_gpu_utilization" not in text  # no GPU here


def test_prefix_and_path(tmp_path):
    with running_server([Logged("logged")], metrics_prefix="gs_", metrics_path="/prom") as server:
        text = httpx.get(f"http://127.0.0.1:{server.ports['http']}/prom").text
        assert "gs_nv_inference_request_success" in text and "\nnv_inference_request_success" not in text


def test_nvml_absent_is_one_log_line(caplog):
    with caplog.at_level(logging.INFO, logger="gpuserve.metrics"):
        sampler = GpuSampler(0.1)
        assert sampler.start() is False
    assert sampler.samples == [] and not sampler.available
    assert len([r for r in caplog.records if "NVML" in r.getMessage()]) == 1


def test_custom_metrics_across_parallel_workers(tmp_path):
    for name in ("counted", "twin"):  # two pools logging the same metric names: one family each in the scrape
        _counted_model(tmp_path / name, name)
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    with running_server(repository=registry) as server:
        rest = f"http://127.0.0.1:{server.ports['http']}"
        for n in range(1, 9):
            assert httpx.post(f"{rest}/v1/models/counted:predict", json={"instances": list(range(n))}).status_code == 200
        assert httpx.post(f"{rest}/v1/models/twin:predict", json={"instances": [1]}).status_code == 200
        text = httpx.get(f"http://127.0.0.1:{server.ports['metrics']}/metrics").text
    counts = [float(v) for v in re.findall(r'^rows_seen_count\{model_name="counted",model_version=""\} (\S+)$', text, re.M)]
    sums = [float(v) for v in re.findall(r'^rows_seen_sum\{model_name="counted",model_version=""\} (\S+)$', text, re.M)]
    assert sum(counts) == 8 and sum(sums) == sum(range(1, 9))
    fly = [float(v) for v in re.findall(r'^never_registered_sum\{model_name="counted",model_version=""\} (\S+)$',
                                        text, re.M)]
    assert sum(fly) == 8 * 2.5
    assert re.findall(r'^rows_seen_count\{model_name="twin",model_version=""\} (\S+)$', text, re.M)
    assert text.count("# TYPE rows_seen histogram") == 1 and text.count("# TYPE never_registered histogram") == 1
    from prometheus_client.parser import text_string_to_metric_families

    names = [family.name for family in text_string_to_metric_families(text)]
    assert len(names) == len(set(names)), [n for n in set(names) if names.count(n) > 1]


def _counted_model(folder, name):
    folder.mkdir()
    (folder / "model-settings.json").write_text(json.dumps(
        {"name": name, "implementation": "counted_model.Counted", "parallel_workers": 2}))
    (folder / "counted_model.py").write_text(textwrap.dedent("""
        from gpuserve import Model, metrics

        class Counted(Model):
            def load(self):
                metrics.register("rows_seen", "Rows a worker saw")
                self.ready = True

            def predict(self, payload, headers=None):
                metrics.log(rows_seen=len(payload["instances"]))
                metrics.log(never_registered=2.5)  # as MLServer's mlserver.log: registered on the fly
                return {"predictions": payload["instances"]}
        """))


class Doubler1(Model):
    def load(self):
        self.ready = True

    def predict(self, payload, headers=None):
        return {"predictions": [2 * x for x in payload["instances"]]}


class Boom(Model):
    def load(self):
        self.ready = True

    def predict(self, payload, headers=None):
        raise RuntimeError("boom")


def test_failures_carry_tritons_reasons_and_v1_calls_count(http):
    with running_server([Doubler1("counted-v1"), Boom("boom")]) as server:
        client = http(server)
        for _ in range(3):
            assert client.post("/v1/models/counted-v1:predict", json={"instances": [1, 2]}).status_code == 200
        assert client.post("/v1/models/boom:predict", json={"instances": [1]}).status_code == 500
        stats = client.get("/v2/models/counted-v1/stats").json()["model_stats"][0]
        assert stats["inference_stats"]["success"]["count"] == 3  # V1 calls count as V2 ones do
        text = client.get("/metrics").text
    assert sample(text, "nv_inference_request_success", model="counted-v1", version="") == 3
    for reason, want in (("BACKEND", 1), ("REJECTED", 0), ("CANCELED", 0), ("OTHER", 0)):
        assert sample(text, "nv_inference_request_failure", model="boom", reason=reason, version="") == want


def test_host_gauges_as_triton_exports_them(tmp_path, http):
    from gpuserve.server.cpu_metrics import CpuSampler

    stat, meminfo = tmp_path / "stat", tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       1000 kB\nMemFree:         100 kB\nMemAvailable:    400 kB\n")
    stat.write_text("cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 1 2 3 4\n")
    sampler = CpuSampler(str(stat), str(meminfo))
    assert sampler.utilization() == 0.0 and sampler.memory() == (1024000, 614400)
    stat.write_text("cpu  150 0 150 900 0 0 0 0 0 0\n")  # 200 jiffies later, 100 of them idle
    assert sampler.utilization() == 0.5
    assert CpuSampler(str(tmp_path / "none"), str(tmp_path / "none")).memory() is None
    with running_server([Doubler1("d")]) as server:
        text = http(server).get("/metrics").text
    assert 0.0 <= sample(text, "nv_cpu_utilization") <= 1.0
    assert sample(text, "nv_cpu_memory_total_bytes") > sample(text, "nv_cpu_memory_used_bytes") > 0


def test_whole_numbers_render_as_integers_for_perf_analyzer():
    """perf_analyzer reads GPU gauges with `NAME\\{gpu_uuid\\="..."\\} (\\d+\\.?\\d*)`: Go's exponent form
    (1.50754820096e+11) would read as 1 byte. Fractions and infinities keep Prometheus' float form."""
    from prometheus_client.core import GaugeMetricFamily

    from gpuserve.server.metrics import render

    family = GaugeMetricFamily("nv_gpu_memory_total_bytes", "GPU total memory, in bytes", labels=["gpu_uuid"])
    family.add_metric(["GPU-abc"], 150754820096.0)
    ratio = GaugeMetricFamily("nv_gpu_utilization", "GPU utilization rate [0.0 - 1.0)", labels=["gpu_uuid"])
    ratio.add_metric(["GPU-abc"], 0.25)
    text = "\n" + render([family, ratio]).decode()
    found = re.search(r'\nnv_gpu_memory_total_bytes\{gpu_uuid\="([^"]+)"\} (\d+\.?\d*)', text)
    assert found and found.groups() == ("GPU-abc", "150754820096"), text
    assert 'nv_gpu_utilization{gpu_uuid="GPU-abc"} 0.25' in text
