"""The last gaps of Triton qa suites already worked on (docs/triton_qa.md, session 18), each checked against
what a real tritonserver 2.51 shows a client or a model.

- A Python-backend model with Direct sequence batching and max_batch_size > 1: Triton 2.51 hands execute one
  request per slot up to the highest slot with a request, the free slots below it as null requests
  (correlation ID 0, no flags, no request ID, READY/START/END 0, CORRID 0, no outputs asked for), and counts
  the batch's size with them but not its inferences. gpuserve ran each sequence's requests in dynamic batches
  of their own (the null rows a model's state update relies on were missing, and batch sizes differed).
  With Triton's rate limiter such a batch waits for its instance's resources, as every other batch does.
- qa/L0_metrics test_model_namespacing_label_with_namespace_on: with --model-namespacing=true Triton 2.51 labels
  every per-model metric with the model's own name and `namespace="<its repository folder>"`; gpuserve had
  no namespace label, and a name two folders hold showed as `composing_model::0` and `::1`.
- qa/L0_model_queue test_policy_reject: tritonserver 2.51 counts an ensemble request that failed in a step
  twice, in the statistics extension's fail count and in nv_inference_request_failure{reason="OTHER"} (a
  request refused before it is scheduled, e.g. for its shape, not at all); gpuserve counted it once.
"""

import asyncio
import json
import urllib.request

import numpy as np

from gpuserve import ModelRepository
from gpuserve.repository import DiskRepository
from gpuserve.types import InferInput, InferRequest
from conftest import running_server
from test_triton_qa_backends import _namespaced_repos

DIRECT_PY = '''
import json
import os

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.log = os.path.join(args["model_repository"], "executes.jsonl")

    def execute(self, requests):
        rows = []
        for r in requests:
            row = {"corr": r.correlation_id(), "flags": r.flags(), "id": r.request_id(),
                   "outs": sorted(r.requested_output_names())}
            for name in ("START", "READY", "CORRID"):
                row[name] = int(pb_utils.get_input_tensor_by_name(r, name).as_numpy().flat[0])
            rows.append(row)
        with open(self.log, "a") as f:
            f.write(json.dumps(rows) + "\\n")
        return [pb_utils.InferenceResponse([pb_utils.Tensor("Y", pb_utils.get_input_tensor_by_name(r, "X").as_numpy())])
                for r in requests]
'''

DIRECT_CONFIG = '''
backend: "python"
max_batch_size: 4
input [ { name: "X" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "Y" data_type: TYPE_INT32 dims: [ 1 ] } ]
sequence_batching {
  max_sequence_idle_microseconds: 5000000
  control_input [
    { name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] },
    { name: "READY" control [ { kind: CONTROL_SEQUENCE_READY int32_false_true: [ 0, 1 ] } ] },
    { name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 } ] }
  ]
}
'''

NULL = {"corr": 0, "flags": 0, "id": "", "outs": [], "START": 0, "READY": 0, "CORRID": 0}


def _real(corr, start=False, end=False, tag=""):
    return {"corr": corr, "flags": (1 if start else 0) | (2 if end else 0), "id": tag, "outs": ["Y"],
            "START": int(start), "READY": 1, "CORRID": corr}


def test_a_python_direct_model_sees_null_requests_in_the_free_slots_below_a_request(tmp_path):
    folder = tmp_path / "direct"
    (folder / "1").mkdir(parents=True)
    (folder / "config.pbtxt").write_text(DIRECT_CONFIG)
    (folder / "1" / "model.py").write_text(DIRECT_PY)
    model = DiskRepository(tmp_path).populate(ModelRepository()).get_model("direct")
    model.load()

    def request(corr, value, tag, start=False, end=False):
        x = np.array([[value]], np.int32)
        return InferRequest("direct", [InferInput("X", [1, 1], "INT32", x)], request_id=tag,
                            parameters={"sequence_id": corr, "sequence_start": start, "sequence_end": end})

    async def steps():
        answers = []
        for corr, value, tag, start, end in [(1, 1, "a1", True, False), (2, 2, "b1", True, False),
                                            (3, 3, "c1", True, False), (3, 33, "c2", False, False),
                                            (1, 11, "a2", False, True), (3, 333, "c3", False, True),
                                            (2, 22, "b2", False, True)]:
            answer = await model.predict(request(corr, value, tag, start, end))
            answers.append(int(answer.outputs[0].as_numpy()[0, 0]))
        return answers

    try:
        assert asyncio.run(steps()) == [1, 2, 3, 33, 11, 333, 22]
        executes = [json.loads(line) for line in (folder / "executes.jsonl").read_text().splitlines()]
        assert executes == [
            [_real(1, start=True, tag="a1")],
            [NULL, _real(2, start=True, tag="b1")],  # slot 1: slot 0 (sequence 1, idle now) is a null row
            [NULL, NULL, _real(3, start=True, tag="c1")],
            [NULL, NULL, _real(3, tag="c2")],
            [_real(1, end=True, tag="a2")],
            [NULL, NULL, _real(3, end=True, tag="c3")],
            [NULL, _real(2, end=True, tag="b2")],
        ]
        stats = model.stats
        assert stats.inference_count == 7 and stats.execution_count == 7  # null rows are no inferences
        assert {size: batch.compute_infer.count for size, batch in stats.batches.items()} == {1: 2, 2: 2, 3: 3}
        assert stats.queue.count == 7 and stats.compute_infer.count == 7
    finally:
        model.stop()


def test_metrics_carry_tritons_namespace_label_under_model_namespacing(tmp_path, monkeypatch):
    first, second = _namespaced_repos(tmp_path)
    monkeypatch.setattr(DiskRepository, "namespacing", True)  # as --model-namespacing=true sets it
    disk = DiskRepository(first, more_roots=[second])
    with running_server(repository=disk.populate(ModelRepository())) as server:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.ports['metrics']}/metrics") as reply:
            text = reply.read().decode()
    for folder, names in ((first, ("composing_model", "simple_addsub")), (second, ("composing_model", "simple_subadd"))):
        for name in names:
            labels = f'model="{name}",namespace="{folder.resolve()}"'
            assert f'nv_inference_count{{{labels},version="1"}} 0' in text
            assert f'nv_inference_request_failure{{{labels},reason="BACKEND",version="1"}} 0' in text
            assert f'nv_inference_pending_request_count{{{labels},version="1"}} 0' in text
    assert "composing_model::" not in "".join(line for line in text.splitlines() if line.startswith("nv_"))


STEP_PY = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "X").as_numpy()
            if x[0] > 100:
                raise ValueError("too big")
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", x)]) if x[0] >= 0 else
                       pb_utils.InferenceResponse(error=pb_utils.TritonError("negative")))
        return out
"""

STEP_ENSEMBLE = """
platform: "ensemble"
input [ { name: "IN" data_type: TYPE_FP32 dims: [ 1 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 1 ] } ]
ensemble_scheduling { step [ { model_name: "step" model_version: -1 input_map { key: "X" value: "IN" }
                               output_map { key: "Y" value: "OUT" } } ] }
"""


def test_an_ensemble_request_failed_in_a_step_counts_twice_as_tritons(tmp_path):
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    for name, config, code in (("step", 'backend: "python"\ninput [ { name: "X" data_type: TYPE_FP32 dims: [ 1 ] } ]\n'
                                        'output [ { name: "Y" data_type: TYPE_FP32 dims: [ 1 ] } ]\n', STEP_PY),
                               ("ens", STEP_ENSEMBLE, None)):
        (tmp_path / name / "1").mkdir(parents=True)
        (tmp_path / name / "config.pbtxt").write_text(config)
        if code:
            (tmp_path / name / "1" / "model.py").write_text(code)
    with running_server(repository=DiskRepository(tmp_path).populate(ModelRepository())) as server:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}")

        def send(value, shape=(1,)):
            tensor = httpclient.InferInput("IN", list(shape), "FP32")
            tensor.set_data_from_numpy(np.full(shape, value, np.float32))
            try:
                client.infer("ens", [tensor])
            except InferenceServerException:
                pass
            stats = client.get_inference_statistics("ens")["model_stats"][0]["inference_stats"]
            return stats["fail"]["count"], stats["success"]["count"]

        assert send(1.0, (2,)) == (0, 0)  # refused for its shape before it is scheduled: not counted
        assert send(-1.0) == (2, 0)  # the step's error response
        assert send(500.0) == (4, 0)  # the step's execute raised
        assert send(1.0) == (4, 1)
        with urllib.request.urlopen(f"http://127.0.0.1:{server.ports['metrics']}/metrics") as reply:
            assert 'nv_inference_request_failure{model="ens",reason="OTHER",version="1"} 4' in reply.read().decode()
        client.close()


BUSY_PY = """
import builtins
import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        log = builtins.__dict__.setdefault("_leftovers_busy", [])
        log.append(("start", time.monotonic()))
        time.sleep(0.05)
        log.append(("end", time.monotonic()))
        return [pb_utils.InferenceResponse([pb_utils.Tensor("Y", pb_utils.get_input_tensor_by_name(r, "X").as_numpy())])
                for r in requests]
"""


def test_a_python_direct_sequence_batch_waits_for_its_rate_limiter_resources(tmp_path):
    import builtins

    from gpuserve.engine import rate_limiter

    needs = 'instance_group [ { count: 1 kind: KIND_CPU rate_limiter { resources [ { name: "R" global: true count: 1 } ] } } ]\n'
    io = ('max_batch_size: 2\ninput [ { name: "X" data_type: TYPE_INT32 dims: [ 1 ] } ]\n'
          'output [ { name: "Y" data_type: TYPE_INT32 dims: [ 1 ] } ]\n')
    for name, extra in (("seq", "sequence_batching { max_sequence_idle_microseconds: 5000000 }\n"),
                        ("plain", "dynamic_batching { }\n")):
        (tmp_path / name / "1").mkdir(parents=True)
        (tmp_path / name / "config.pbtxt").write_text('backend: "python"\n' + io + needs + extra)
        (tmp_path / name / "1" / "model.py").write_text(BUSY_PY)
    builtins.__dict__["_leftovers_busy"] = []
    rate_limiter.configure("execution_count", ["R:1"])
    try:
        registry = DiskRepository(tmp_path).populate(ModelRepository())
        seq, plain = registry.get_model("seq"), registry.get_model("plain")
        seq.load()
        plain.load()

        def request(model, value, **parameters):
            x = np.array([[value]], np.int32)
            return InferRequest(model, [InferInput("X", [1, 1], "INT32", x)], parameters=parameters)

        async def both():
            sequences = [seq.predict(request("seq", n, sequence_id=n, sequence_start=True, sequence_end=True))
                         for n in range(1, 5)]
            others = [plain.predict(request("plain", n)) for n in range(4)]
            await asyncio.gather(*sequences, *others)

        try:
            asyncio.run(both())
        finally:
            seq.stop()
            plain.stop()
        log = builtins.__dict__["_leftovers_busy"]
        running, most = 0, 0
        for what, _ in sorted(log, key=lambda item: item[1]):
            running += 1 if what == "start" else -1
            most = max(most, running)
        assert len(log) >= 4 and most == 1  # one unit of R: never two executes at once
    finally:
        rate_limiter.configure(None)
