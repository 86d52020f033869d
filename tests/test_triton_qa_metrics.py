"""Behaviours Triton's qa/L0_metrics checks on the metrics port, with models written here (its identity
backend is C++: a Python model that copies its input after `execute_delay_ms` stands in). Each qa file ran
against `gpuserve start` and Triton 2.51 side by side; these are the cases where gpuserve first answered
differently.

- metrics_queue_size_test.py: nv_inference_pending_request_count counts every request not yet begun, also
  one handed to a busy Python instance's second slot and one waiting for its sequence's previous request;
  a Python sequence model's Direct/Oldest max_queue_delay_microseconds lets its batch fill, as Triton's
  sequence batcher does (gpuserve ran those requests one or two at a time).
- metrics_config_test.py: --metrics-config counter_latencies=false drops the nv_inference_*_duration_us
  counters, summary_latencies=true adds Triton's latency summaries (count, sum, and the summary_quantiles
  or the default quantiles); the per-model cache counters and summaries exist only for models using the
  response cache, which get no request summary (gpuserve printed cache counters for every model and took
  no --metrics-config); nv_pinned_memory_pool_total_bytes / used_bytes exist (0 without a GPU, as Triton).
"""

import re
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request

import gevent
import numpy as np
import tritonclient.http as httpclient

from conftest import free_ports, running_server
from gpuserve import ModelRepository
from gpuserve.repository import DiskRepository

IDENTITY = textwrap.dedent("""
    import json
    import time
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        def initialize(self, args):
            config = json.loads(args["model_config"])
            delay = config.get("parameters", {}).get("execute_delay_ms", {}).get("string_value", "0")
            self.delay = int(delay) / 1000.0

        def execute(self, requests):
            time.sleep(self.delay)
            return [pb_utils.InferenceResponse(
                [pb_utils.Tensor("OUTPUT0", pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy())])
                for r in requests]
    """)


def identity_config(delay_ms: int, extra: str = "") -> str:
    return ('backend: "python"\nmax_batch_size: 4\n'
            'input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 1 ] } ]\n'
            'output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 1 ] } ]\n'
            'instance_group [ { count: 1 kind: KIND_CPU } ]\n'
            f'parameters [ {{ key: "execute_delay_ms" value: {{ string_value: "{delay_ms}" }} }} ]\n' + extra)


def write_models(root, models):
    for name, config in models.items():
        (root / name / "1").mkdir(parents=True)
        (root / name / "config.pbtxt").write_text(config)
        (root / name / "1" / "model.py").write_text(IDENTITY)


def serve(root, **settings):
    """Ports the OS picks: fixed ones collided with other servers on the machine."""
    return running_server(repository=DiskRepository(root).populate(ModelRepository()), **settings)


def scrape(server) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.ports['metrics']}/metrics") as r:
        return r.read().decode()


def metric(text: str, name: str, model: str) -> float:
    found = re.search(rf'^{name}{{model="{model}",version="1"}} (\S+)$', text, re.MULTILINE)
    assert found, f"{name} for {model} not in metrics"
    return float(found.group(1))


def send(server, model, count, sequence=False):
    """`count` async requests (round-robin over 4 sequences when `sequence`); their futures."""
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}", concurrency=count)
    data = np.ones((1, 1), np.float32)
    futures, started = [], set()
    for n in range(count):
        tensor = httpclient.InferInput("INPUT0", [1, 1], "FP32").set_data_from_numpy(data)
        extra = {}
        if sequence:
            sid = n % 4 + 1
            extra = dict(sequence_id=sid, sequence_start=sid not in started)
            started.add(sid)
            if n == 4:  # the client's greenlets send concurrently: each sequence's START goes out before the
                gevent.sleep(0.5)  # rest are handed over (a later request arriving first is refused, as Triton)
        futures.append(client.async_infer(model, [tensor], **extra))
    return client, futures


def pending_reaches(server, model: str, want: float) -> float:
    """The pending count once it reads `want`, or its last value after 30 s. Sent requests reach the server
    when the client's threads get to run (late on a loaded machine), so the count is polled, not read once after
    a fixed sleep; it must still reach `want` before the first execute (1.5 s) ends, which a wrong count never
    does (each value it takes is off)."""
    deadline = time.monotonic() + 30
    while True:
        seen = metric(scrape(server), "nv_inference_pending_request_count", model)
        if seen == want or time.monotonic() > deadline:
            return seen
        time.sleep(0.02)


def test_pending_count_includes_a_request_staged_behind_the_running_one(tmp_path):
    """Triton's default scheduler: 1 of 5 requests runs, 4 are pending (gpuserve said 3: the one on the
    instance's second slot was not counted)."""
    write_models(tmp_path, {"default": identity_config(1500)})
    with serve(tmp_path) as server:
        client, futures = send(server, "default", 5)
        assert pending_reaches(server, "default", 4) == 4
        for future in futures:
            future.get_result()
        client.close()
        assert metric(scrape(server), "nv_inference_pending_request_count", "default") == 0


def test_python_sequence_model_batches_sequences_within_the_strategy_delay(tmp_path):
    """qa's sequence_direct / sequence_oldest: 10 requests on 4 sequences run as batches of 4, 4, 2; while
    the first batch runs, 6 are pending (those behind their sequence's running request included)."""
    write_models(tmp_path, {
        "sequence_direct": identity_config(1500, "sequence_batching { direct { max_queue_delay_microseconds: "
                                                 "100000, minimum_slot_utilization: 1.0 } }\n"),
        "sequence_oldest": identity_config(1500, "sequence_batching { oldest { max_queue_delay_microseconds: "
                                                 "100000, max_candidate_sequences: 4 } }\n")})
    with serve(tmp_path) as server:
        runs = {}

        def run(model):
            client, futures = send(server, model, 10, sequence=True)
            runs[model] = pending_reaches(server, model, 6)
            for future in futures:
                future.get_result()
            client.close()

        threads = [threading.Thread(target=run, args=(m,)) for m in ("sequence_direct", "sequence_oldest")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        with httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
            for model in ("sequence_direct", "sequence_oldest"):
                stats = client.get_inference_statistics(model)["model_stats"][0]
                sizes = sorted(b["batch_size"] for b in stats["batch_stats"] for _ in range(
                    int(b["compute_infer"]["count"])))
                assert (runs[model], sizes) == (6, [2, 4, 4]), model


IDENTITY_CACHED = ('backend: "python"\nmax_batch_size: 0\n'
                   'input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]\n'
                   'output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]\n')


def infer_each(server, models, times=3):
    with httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
        for model in models:
            for _ in range(times):
                data = np.array([1.0, 2.0], np.float32)
                client.infer(model, [httpclient.InferInput("INPUT0", [2], "FP32").set_data_from_numpy(data)])


def test_default_metrics_have_counters_and_cache_metrics_only_for_cached_models(tmp_path):
    write_models(tmp_path, {"cache_off": IDENTITY_CACHED + "response_cache { enable: false }\n",
                            "cache_on": IDENTITY_CACHED + "response_cache { enable: true }\n"})
    with serve(tmp_path) as server:
        infer_each(server, ("cache_off", "cache_on"))
        text = scrape(server)
    for name in ("request", "queue", "compute_input", "compute_infer", "compute_output"):
        assert f'nv_inference_{name}_duration_us{{model="cache_off",version="1"}}' in text
    for name in ("nv_cache_num_hits_per_model", "nv_cache_num_misses_per_model", "nv_cache_hit_duration_per_model",
                 "nv_cache_miss_duration_per_model"):
        assert f'{name}{{model="cache_on",version="1"}}' in text and f'{name}{{model="cache_off"' not in text
    assert metric(text, "nv_cache_num_hits_per_model", "cache_on") == 2
    assert "_summary" not in text and "nv_inference_first_response_histogram_ms" not in text
    assert re.search(r"^nv_pinned_memory_pool_total_bytes \d+$", text, re.MULTILINE)
    assert re.search(r"^nv_pinned_memory_pool_used_bytes 0$", text, re.MULTILINE)
    # whole microseconds, as Triton counts them
    assert float(metric(text, "nv_inference_request_duration_us", "cache_off")).is_integer()


def test_summaries_replace_counters_as_metrics_config_says(tmp_path):
    write_models(tmp_path, {"cache_off": IDENTITY_CACHED, "cache_on": IDENTITY_CACHED + "response_cache { enable: true }\n"})
    config = {"summary_latencies": "true", "counter_latencies": "false", "summary_quantiles": "0.1:0.0.1,0.7:0.01,bad"}
    with serve(tmp_path, metrics_config=config) as server:
        before = scrape(server)
        infer_each(server, ("cache_off", "cache_on"))
        text = scrape(server)
    assert "_duration_us" not in text and "nv_cache_num_hits_per_model" not in text
    # present from the start, as Triton's: no observations yet, so no quantile values
    assert 'nv_inference_queue_summary_us{model="cache_off",version="1",quantile="0.1"} NaN' in before
    assert metric(text, "nv_inference_request_summary_us_count", "cache_off") == 3
    assert metric(text, "nv_inference_compute_infer_summary_us_count", "cache_off") == 3
    for quantile in ("0.1", "0.7"):
        assert f'nv_inference_request_summary_us{{model="cache_off",version="1",quantile="{quantile}"}}' in text
    assert 'quantile="0.5"' not in text  # the default quantiles are replaced
    # a cached model: cache hit/miss summaries, no request summary (Triton's DLIS-4762)
    assert 'nv_inference_request_summary_us_count{model="cache_on"' not in text
    assert metric(text, "nv_cache_hit_summary_per_model_count", "cache_on") == 2
    assert metric(text, "nv_cache_miss_summary_per_model_count", "cache_on") == 1
    assert 'nv_cache_hit_summary_per_model_count{model="cache_off"' not in text


def test_a_malformed_metrics_config_stops_the_start_in_tritons_words(tmp_path):
    done = subprocess.run([sys.executable, "-m", "gpuserve.cli", "start", str(tmp_path), "--metrics-config",
                           "summary_latencies"], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "--metrics-config option format is <setting>=<value>. Got summary_latencies" in done.stderr


def test_tritons_model_namespacing_flag_is_taken():
    """qa's namespace-off launch line (--model-namespacing=false, Triton's default) starts; gpuserve serves a
    model name once either way."""
    from gpuserve.cli import _parser

    for value, expected in (("false", False), ("true", True)):
        args = _parser().parse_args(["start", ".", f"--model-namespacing={value}", "--metrics-config",
                                     "summary_latencies=true", "--metrics-config", "summary_quantiles=0.5:0.05"])
        assert args.model_namespacing is expected
        assert args.metrics_config == ["summary_latencies=true", "summary_quantiles=0.5:0.05"]


def test_allow_metrics_flags_take_effect(tmp_path):
    """Triton's --allow-metrics=false serves no metrics port; --allow-cpu-metrics=false drops the nv_cpu_*
    gauges (gpuserve took both flags and ignored them)."""
    import socket

    from gpuserve.cli import _parser, metrics_endpoint

    args = _parser().parse_args(["start", ".", "--allow-metrics=false", "--allow-gpu-metrics=true"])
    assert metrics_endpoint(args) == {"enable_metrics_server": False, "gpu_metrics": False}
    args = _parser().parse_args(["start", ".", "--allow-cpu-metrics=false", "--metrics-interval-ms=250"])
    assert metrics_endpoint(args) == {"cpu_metrics": False, "nvml_interval_seconds": 0.25}
    write_models(tmp_path, {"cache_off": IDENTITY_CACHED})
    with serve(tmp_path, cpu_metrics=False) as server:
        text = scrape(server)
        assert "nv_cpu_" not in text and "nv_inference_count" in text
    (unused,) = free_ports(1)  # a port nothing listens on, asked for as the metrics port
    with serve(tmp_path, enable_metrics_server=False, metrics_port=unused) as server:
        assert "metrics" not in server.ports
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", unused)) != 0


DECOUPLED = textwrap.dedent("""
    import time
    import numpy as np
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        def execute(self, requests):
            for request in requests:
                sender = request.get_response_sender()
                for wait in (0.3, 2.0):  # the last response far behind the first
                    time.sleep(wait)
                    sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array([1], np.int32))]))
                sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            return None
    """)


def test_first_response_histogram_as_histogram_latencies_asks(tmp_path):
    """histogram_latencies=true: nv_inference_first_response_histogram_ms per model, Triton's default buckets or
    the config's model_metrics ones; a decoupled model's count is its first response's time, not its last."""
    write_models(tmp_path, {"plain": identity_config(200)})
    (tmp_path / "stream" / "1").mkdir(parents=True)
    (tmp_path / "stream" / "1" / "model.py").write_text(DECOUPLED)
    (tmp_path / "stream" / "config.pbtxt").write_text(
        'backend: "python"\nmodel_transaction_policy { decoupled: true }\n'
        'input [ { name: "IN" data_type: TYPE_INT32 dims: [ 1 ] } ]\n'
        'output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] } ]\n'
        'model_metrics { metric_control: [ { metric_identifier: { family: "nv_inference_first_response_histogram_ms" }'
        ' histogram_options: { buckets: [ -1, 0.0, 250, 2.5 ] } } ] }\n')
    import tritonclient.grpc as grpcclient

    with serve(tmp_path, metrics_config={"histogram_latencies": "true"}) as server:
        empty = scrape(server)
        client, futures = send(server, "plain", 1)
        futures[0].get_result()
        client.close()
        answers = []
        with grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}") as stream:
            stream.start_stream(callback=lambda result, error: answers.append(error or result))
            tensor = grpcclient.InferInput("IN", [1], "INT32")
            tensor.set_data_from_numpy(np.array([1], np.int32))
            stream.async_stream_infer("stream", [tensor])
            deadline = time.time() + 30
            while len(answers) < 2 and time.time() < deadline:
                time.sleep(0.05)
            stream.stop_stream()
        text = scrape(server)
    name = "nv_inference_first_response_histogram_ms"
    assert f'{name}_count{{model="plain",version="1"}} 0' in empty
    took = metric(text, f"{name}_sum", "plain")  # one request: its time is the sum (~200 ms, more when loaded)
    assert metric(text, f"{name}_count", "plain") == 1 and 200 <= took < 30000
    buckets = re.findall(rf'^{name}_bucket{{model="plain",version="1",le="([^"]+)"}} (\d+)$', text, re.MULTILINE)
    assert buckets == [(le, str(int(took <= float(le)))) for le in ("100", "500", "2000", "5000", "+Inf")]
    # the decoupled model: its first response after ~0.3 s (its last after ~2.3 s), in its own buckets
    assert metric(text, f"{name}_count", "stream") == 1 and 300 <= metric(text, f"{name}_sum", "stream") < 2000
    buckets = re.findall(rf'^{name}_bucket{{model="stream",version="1",le="([^"]+)"}} (\d+)$', text, re.MULTILINE)
    assert buckets == [("-1", "0"), ("0", "0"), ("2.5", "0"), ("250", "0"), ("+Inf", "1")]


def test_no_histogram_unless_asked(tmp_path):
    write_models(tmp_path, {"plain": identity_config(0)})
    with serve(tmp_path) as server:
        client, futures = send(server, "plain", 1)
        futures[0].get_result()
        client.close()
        assert "first_response" not in scrape(server)
