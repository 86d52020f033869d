"""Behaviours Triton's qa/L0_metrics checks on the metrics port, with models written here (its identity
backend is C++: a Python model that copies its input after `execute_delay_ms` stands in). Each qa file ran
against `gpuserve start` and Triton 2.51 side by side; these are the cases where gpuserve first answered
differently.

- metrics_queue_size_test.py: nv_inference_pending_request_count counts every request not yet begun, also
  one handed to a busy Python instance's second slot and one waiting for its sequence's previous request;
  a Python sequence model's Direct/Oldest max_queue_delay_microseconds lets its batch fill, as Triton's
  sequence batcher does (gpuserve ran those requests one or two at a time).
"""

import re
import textwrap
import threading
import time
import urllib.request

import numpy as np
import tritonclient.http as httpclient

from conftest import running_server
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


def serve(root, port, **settings):
    return running_server(repository=DiskRepository(root).populate(ModelRepository()), http_port=port,
                          grpc_port=port + 1, metrics_port=port + 2, **settings)


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
        futures.append(client.async_infer(model, [tensor], **extra))
    return client, futures


def test_pending_count_includes_a_request_staged_behind_the_running_one(tmp_path):
    """Triton's default scheduler: 1 of 5 requests runs, 4 are pending (gpuserve said 3: the one on the
    instance's second slot was not counted)."""
    write_models(tmp_path, {"default": identity_config(1500)})
    with serve(tmp_path, 9340) as server:
        client, futures = send(server, "default", 5)
        time.sleep(0.7)
        assert metric(scrape(server), "nv_inference_pending_request_count", "default") == 4
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
    with serve(tmp_path, 9343) as server:
        runs = {}

        def run(model):
            client, futures = send(server, model, 10, sequence=True)
            time.sleep(0.8)
            runs[model] = metric(scrape(server), "nv_inference_pending_request_count", model)
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
