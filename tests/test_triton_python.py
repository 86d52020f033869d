"""Triton Python-backend models (config.pbtxt `backend: "python"` + 1/model.py) served unchanged: execute
with request lists from the dynamic batcher, errors per request, BLS, auto-complete, instances, finalize."""

import json
import queue
import textwrap
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import running_server
from gpuserve import ModelRepository
from gpuserve.repository import DiskRepository

HEADER = "import json, time\nimport numpy as np\nimport triton_python_backend_utils as pb_utils\n\n"

ADD_SUB = """
class TritonPythonModel:
    def initialize(self, args):
        self.args = args
        self.config = json.loads(args["model_config"])

    def execute(self, requests):
        responses = []
        for request in requests:
            a = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            b = pb_utils.get_input_tensor_by_name(request, "INPUT1").as_numpy()
            kind = np.array([self.args["model_instance_kind"].encode(), self.args["model_instance_name"].encode()],
                            dtype=object)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", a + b),
                                                         pb_utils.Tensor("OUTPUT1", a - b),
                                                         pb_utils.Tensor("INSTANCE", kind)]))
        return responses
"""
ADD_SUB_CONFIG = """
name: "add_sub"
backend: "python"
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] }, { name: "INPUT1" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] }, { name: "OUTPUT1" data_type: TYPE_FP32 dims: [ 4 ] },
         { name: "INSTANCE" data_type: TYPE_STRING dims: [ 2 ] } ]
instance_group [ { count: 2 kind: KIND_CPU } ]
"""

BATCHED = """
class TritonPythonModel:
    def execute(self, requests):
        time.sleep(0.02)  # busy long enough for the next requests to queue behind this execute
        return [pb_utils.InferenceResponse([
            pb_utils.Tensor("OUTPUT0", pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy() * 2),
            pb_utils.Tensor("BATCH", np.full((pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy().shape[0], 1),
                                             len(requests), np.int32))]) for r in requests]
"""
BATCHED_CONFIG = """
backend: "python"
max_batch_size: 8
dynamic_batching { }
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] }, { name: "BATCH" data_type: TYPE_INT32 dims: [ 1 ] } ]
"""

ERRORS = """
CODES = {1: None, 2: pb_utils.TritonError.NOT_FOUND, 3: pb_utils.TritonError.INVALID_ARG,
         4: pb_utils.TritonError.UNAVAILABLE, 5: pb_utils.TritonError.UNSUPPORTED}

class TritonPythonModel:
    def execute(self, requests):
        out = []
        for request in requests:
            value = int(pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()[0])
            if value == 6:
                raise pb_utils.TritonModelException("raised on purpose")
            if value == 7:
                raise ValueError("plain failure")
            if value == 8:
                return []
            if value == 9:
                return [None] * len(requests)
            if value in CODES:
                error = pb_utils.TritonError("bad value") if CODES[value] is None else \\
                    pb_utils.TritonError(f"code {value}", CODES[value])
                out.append(pb_utils.InferenceResponse(error=error))
            else:
                out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", np.array([value], np.int32))]))
        return out
"""
ERRORS_CONFIG = """
backend: "python"
input [ { name: "INPUT0" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 1 ] } ]
"""

STRINGS = """
class TritonPythonModel:
    def execute(self, requests):
        out = []
        for request in requests:
            text = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()
            upper = np.array([t.upper() for t in text.ravel()], dtype=object).reshape(text.shape)
            params = request.parameters()
            names = ",".join(sorted(request.requested_output_names()))
            out.append(pb_utils.InferenceResponse(
                [pb_utils.Tensor("TEXT_OUT", upper), pb_utils.Tensor("LEN", np.array([len(t) for t in text], np.int64)),
                 pb_utils.Tensor("META", np.array([params.encode(), request.request_id().encode(), names.encode()],
                                                  dtype=object))],
                parameters={"answered": True}))
        return out
"""
STRINGS_CONFIG = """
backend: "python"
input [ { name: "TEXT" data_type: TYPE_STRING dims: [ -1 ] } ]
output [ { name: "TEXT_OUT" data_type: TYPE_STRING dims: [ -1 ] }, { name: "LEN" data_type: TYPE_INT64 dims: [ -1 ] },
         { name: "META" data_type: TYPE_STRING dims: [ 3 ] } ]
"""

BLS = """
class TritonPythonModel:
    def execute(self, requests):
        out = []
        for request in requests:
            target = "add_sub" if pb_utils.get_input_tensor_by_name(request, "WHICH").as_numpy()[0] == 0 else "nowhere"
            call = pb_utils.InferenceRequest(model_name=target, requested_output_names=["OUTPUT0"],
                                             inputs=[pb_utils.get_input_tensor_by_name(request, "INPUT0"),
                                                     pb_utils.get_input_tensor_by_name(request, "INPUT1")])
            answer = call.exec()
            if answer.has_error():
                out.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(answer.error().message(),
                                                                                 answer.error().code())))
                continue
            total = pb_utils.get_output_tensor_by_name(answer, "OUTPUT0")
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("SUM", total.as_numpy())]))
        return out
"""
BLS_CONFIG = """
backend: "python"
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] }, { name: "INPUT1" data_type: TYPE_FP32 dims: [ 4 ] },
        { name: "WHICH" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "SUM" data_type: TYPE_FP32 dims: [ 4 ] } ]
"""

ASYNC_BLS = """
import asyncio

class TritonPythonModel:
    async def execute(self, requests):
        out = []
        for request in requests:
            call = pb_utils.InferenceRequest(model_name="add_sub", requested_output_names=["OUTPUT0", "OUTPUT1"],
                                             inputs=[pb_utils.get_input_tensor_by_name(request, "INPUT0"),
                                                     pb_utils.get_input_tensor_by_name(request, "INPUT1")])
            first, second = await asyncio.gather(call.async_exec(), call.async_exec())
            a = pb_utils.get_output_tensor_by_name(first, "OUTPUT0").as_numpy()
            b = pb_utils.get_output_tensor_by_name(second, "OUTPUT1").as_numpy()
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("SUM", a + b)]))
        return out
"""

AUTO = """
class TritonPythonModel:
    @staticmethod
    def auto_complete_config(config):
        config.add_input({"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [4]})
        config.add_output({"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [4]})
        config.set_max_batch_size(4)
        config.set_dynamic_batching()
        return config

    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor(
            "OUTPUT0", pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy() + 1)]) for r in requests]
"""

BROKEN = """
class TritonPythonModel:
    def initialize(self, args):
        raise RuntimeError("cannot start")

    def execute(self, requests):
        return []
"""

FINALIZE = """
class TritonPythonModel:
    def initialize(self, args):
        self.marker = args["model_repository"] + "/finalized"
        family = pb_utils.MetricFamily("echo_calls", "Executions of the echo model", pb_utils.MetricFamily.COUNTER)
        self.calls = family.Metric(labels={"model": args["model_name"]})
        sizes = pb_utils.MetricFamily("echo_rows", "Rows per request", pb_utils.MetricFamily.HISTOGRAM)
        self.rows = sizes.Metric(labels={"model": args["model_name"]}, buckets=[1, 4])

    def execute(self, requests):
        self.calls.increment(1)
        for r in requests:
            self.rows.observe(pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy().size)
        return [pb_utils.InferenceResponse([pb_utils.get_input_tensor_by_name(r, "INPUT0")]) for r in requests]

    def finalize(self):
        open(self.marker, "w").write("done")

    async def is_ready(self):
        import os
        return not os.path.exists(self.marker + ".down")
"""
DECOUPLED = """
import threading

class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            count = int(pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()[0])
            threading.Thread(target=self.answer, args=(request.get_response_sender(), count)).start()
        return None

    def answer(self, sender, count):
        if count < 0:
            sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError("negative", pb_utils.TritonError.INVALID_ARG)),
                        flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            return
        for i in range(count):
            sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array([i], np.int32))]))
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
"""
DECOUPLED_CONFIG = """
backend: "python"
model_transaction_policy { decoupled: true }
input [ { name: "IN" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
"""

BLS_DECOUPLED = """
class TritonPythonModel:
    def execute(self, requests):
        out = []
        for request in requests:
            call = pb_utils.InferenceRequest(model_name="decoupled", requested_output_names=["OUT"],
                                             inputs=[pb_utils.get_input_tensor_by_name(request, "IN")])
            values = [int(pb_utils.get_output_tensor_by_name(r, "OUT").as_numpy()[0])
                      for r in call.exec(decoupled=True) if r.output_tensors()]
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array([sum(values)], np.int32))]))
        return out
"""

ECHO_CONFIG = """
backend: "python"
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]
"""


def write_model(root, name, code, config):
    folder = root / name
    (folder / "1").mkdir(parents=True)
    (folder / "config.pbtxt").write_text(textwrap.dedent(config))
    (folder / "1" / "model.py").write_text(HEADER + textwrap.dedent(code))
    return folder


@pytest.fixture
def repo(tmp_path):
    write_model(tmp_path, "add_sub", ADD_SUB, ADD_SUB_CONFIG)
    write_model(tmp_path, "batched", BATCHED, BATCHED_CONFIG)
    write_model(tmp_path, "errors", ERRORS, ERRORS_CONFIG)
    write_model(tmp_path, "strings", STRINGS, STRINGS_CONFIG)
    write_model(tmp_path, "bls", BLS, BLS_CONFIG)
    write_model(tmp_path, "async_bls", ASYNC_BLS, ADD_SUB_CONFIG.split("output")[0].replace('name: "add_sub"', "")
                + 'output [ { name: "SUM" data_type: TYPE_FP32 dims: [ 4 ] } ]\n')
    write_model(tmp_path, "auto", AUTO, 'backend: "python"\n')
    write_model(tmp_path, "broken", BROKEN, ERRORS_CONFIG)
    write_model(tmp_path, "finalize", FINALIZE, ECHO_CONFIG)
    write_model(tmp_path, "decoupled", DECOUPLED, DECOUPLED_CONFIG)
    write_model(tmp_path, "bls_decoupled", BLS_DECOUPLED, DECOUPLED_CONFIG.replace("model_transaction_policy", "#"))
    return tmp_path


def _fp32(name, array, module=httpclient):
    tensor = module.InferInput(name, list(array.shape), "FP32")
    tensor.set_data_from_numpy(array)
    return tensor


def _int32(value, module=httpclient, name="INPUT0"):
    tensor = module.InferInput(name, [1], "INT32")
    tensor.set_data_from_numpy(np.array([value], np.int32))
    return tensor


def test_add_sub_over_both_protocols_with_instances_and_metadata(repo):
    registry = DiskRepository(repo).populate(ModelRepository())
    a, b = np.arange(4, dtype=np.float32), np.full(4, 0.5, np.float32)
    with running_server(repository=registry) as server:
        with httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
            result = client.infer("add_sub", [_fp32("INPUT0", a), _fp32("INPUT1", b)])
            assert np.array_equal(result.as_numpy("OUTPUT0"), a + b)
            assert np.array_equal(result.as_numpy("OUTPUT1"), a - b)
            kind, instance = result.as_numpy("INSTANCE")
            assert kind == b"CPU" and instance in (b"add_sub_0_0", b"add_sub_0_1")
            config = client.get_model_config("add_sub")
            assert config["backend"] == "python" and config["platform"] == "" and config["max_batch_size"] == 0
            assert [i["name"] for i in config["input"]] == ["INPUT0", "INPUT1"]
            assert config["instance_group"][0]["kind"] == "KIND_CPU" and config["instance_group"][0]["count"] == 2
            meta = client.get_model_metadata("add_sub")
            assert meta["inputs"][0] == {"name": "INPUT0", "datatype": "FP32", "shape": [4]}
            assert [o["name"] for o in meta["outputs"]] == ["OUTPUT0", "OUTPUT1", "INSTANCE"]
            assert meta["platform"] == "python"
        with grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}") as client:
            result = client.infer("add_sub", [_fp32("INPUT0", a, grpcclient), _fp32("INPUT1", b, grpcclient)],
                                  outputs=[grpcclient.InferRequestedOutput("OUTPUT1")])
            assert np.array_equal(result.as_numpy("OUTPUT1"), a - b) and result.as_numpy("OUTPUT0") is None
        models = registry.versions("add_sub")["1"]
        assert [i.name for i in models.instances] == ["add_sub_0_0", "add_sub_0_1"]
        config = models.instances[0].obj.config  # what initialize() got: the completed config, as Triton passes it
        assert {"instance_group", "optimization", "default_model_filename", "parameters"} <= set(config)
        assert config["instance_group"][0]["name"] == "add_sub_0" and config["input"][0]["optional"] is False
        # Triton names the group it adds for a config without instance_group after the model, its instances
        # GROUP_INDEX (a lone one too): "errors" / "errors_0"; a written group "add_sub_0" -> "add_sub_0_0"
        errors = registry.versions("errors")["1"]
        assert errors.instances[0].name == "errors_0" and errors.config["instance_group"][0]["name"] == "errors"


def test_dynamic_batcher_hands_queued_requests_to_one_execute(repo):
    registry = DiskRepository(repo).populate(ModelRepository())
    with running_server(repository=registry) as server:
        url = f"127.0.0.1:{server.ports['grpc']}"

        def one(k):
            with grpcclient.InferenceServerClient(url) as client:
                return client.infer("batched", [_fp32("INPUT0", np.full((1, 3), k, np.float32), grpcclient)])

        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(one, range(12)))
        for k, result in enumerate(answers):
            assert np.array_equal(result.as_numpy("OUTPUT0"), np.full((1, 3), 2.0 * k, np.float32))
        batches = [int(result.as_numpy("BATCH")[0, 0]) for result in answers]
        assert max(batches) > 1 and max(batches) <= 8
        with httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
            stats = client.get_inference_statistics("batched")["model_stats"][0]
            assert stats["inference_count"] == 12 and stats["execution_count"] < 12
            too_big = _fp32("INPUT0", np.zeros((9, 3), np.float32))
            with pytest.raises(InferenceServerException, match="batch-size must be <= 8") as caught:
                client.infer("batched", [too_big])
            assert caught.value.status() == "400"


@pytest.mark.parametrize("value, http_status, grpc_code, text", [
    (1, "500", "StatusCode.INTERNAL", "bad value"),
    (2, "404", "StatusCode.NOT_FOUND", "code 2"),
    (3, "400", "StatusCode.INVALID_ARGUMENT", "code 3"),
    (4, "503", "StatusCode.UNAVAILABLE", "code 4"),
    (5, "501", "StatusCode.UNIMPLEMENTED", "code 5"),
    (6, "500", "StatusCode.INTERNAL", "TritonModelException: raised on purpose"),
    (7, "500", "StatusCode.INTERNAL", "ValueError: plain failure"),
    (8, "500", "StatusCode.INTERNAL", "do not match the number of InferenceRequest"),
    (9, "500", "StatusCode.INTERNAL", "found type 'None'"),
])
def test_errors_reach_the_client_with_their_code_and_the_server_keeps_serving(repo, value, http_status, grpc_code,
                                                                                text):
    registry = DiskRepository(repo).populate(ModelRepository())
    with running_server(repository=registry) as server:
        with httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
            with pytest.raises(InferenceServerException, match=text) as caught:
                client.infer("errors", [_int32(value)])
            assert caught.value.status() == http_status
            assert client.infer("errors", [_int32(0)]).as_numpy("OUTPUT0").tolist() == [0]
        with grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}") as client:
            with pytest.raises(InferenceServerException, match=text) as caught:
                client.infer("errors", [_int32(value, grpcclient)])
            assert caught.value.status() == grpc_code


def test_error_responses_count_in_the_statistics_as_triton_counts_them(repo):
    """Triton's Python backend: execute returned, so a TritonError response (or no response, [None]) is a
    success in the statistics; a raised exception or a malformed return is a failure (checked against
    Triton 2.51: benchmarks/peers/python_backend_conformance.py, 'statistics errors')."""
    registry = DiskRepository(repo).populate(ModelRepository())
    with running_server(repository=registry) as server:
        with httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
            for value in range(10):
                try:
                    client.infer("errors", [_int32(value)])
                except InferenceServerException:
                    pass
            stats = client.get_inference_statistics("errors")["model_stats"][0]
    assert stats["inference_count"] == 7 and stats["execution_count"] == 10  # 0, 1-5 and 9; 6, 7, 8 failed
    assert stats["inference_stats"]["success"]["count"] == 7 and stats["inference_stats"]["fail"]["count"] == 3


def test_request_checks_bytes_parameters_and_requested_outputs(repo):
    registry = DiskRepository(repo).populate(ModelRepository())
    with running_server(repository=registry) as server:
        with httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
            text = httpclient.InferInput("TEXT", [2], "BYTES")
            text.set_data_from_numpy(np.array([b"ab", b"xyz"], dtype=object))
            result = client.infer("strings", [text], request_id="r-7", parameters={"lang": "en", "n": 3}, priority=1,
                                  outputs=[httpclient.InferRequestedOutput("TEXT_OUT"),
                                           httpclient.InferRequestedOutput("META")])
            assert result.as_numpy("TEXT_OUT").tolist() == [b"AB", b"XYZ"] and result.as_numpy("LEN") is None
            params, request_id, names = result.as_numpy("META")
            assert json.loads(params) == {"lang": "en", "n": 3}
            assert request_id == b"r-7" and names == b"META,TEXT_OUT"
            assert result.get_response()["parameters"] == {"answered": True}
            # JSON strings reach execute as bytes too, as in Triton (not str: bytes.upper() would fail)
            text.set_data_from_numpy(np.array(["héllo", "x"], dtype=object), binary_data=False)
            result = client.infer("strings", [text], outputs=[httpclient.InferRequestedOutput("TEXT_OUT")])
            assert result.as_numpy("TEXT_OUT").tolist() == ["héllo".encode().upper(), b"X"]
            answer = httpx.post(f"http://127.0.0.1:{server.ports['http']}/v2/models/strings/infer", json={
                "inputs": [{"name": "TEXT", "shape": [1], "datatype": "BYTES", "data": [5]}]})
            assert answer.status_code == 400 and "must be strings" in answer.json()["error"]
            for inputs, message in (
                    ([_fp32("INPUT0", np.zeros(4, np.float32))], "unexpected inference input 'INPUT0'"),
                    ([_int32(1, name="TEXT")], "data-type is 'INT32', but model 'strings' expects 'BYTES'")):
                with pytest.raises(InferenceServerException, match=message) as caught:
                    client.infer("strings", inputs)
                assert caught.value.status() == "400"
            with pytest.raises(InferenceServerException, match="missing required input") as caught:
                client.infer("add_sub", [_fp32("INPUT0", np.zeros(4, np.float32))])
            assert caught.value.status() == "400"
            with pytest.raises(InferenceServerException, match="unexpected shape") as caught:
                client.infer("add_sub", [_fp32("INPUT0", np.zeros(3, np.float32)),
                                         _fp32("INPUT1", np.zeros(3, np.float32))])
            assert caught.value.status() == "400"


def test_bls_calls_other_models_through_the_server(repo):
    registry = DiskRepository(repo).populate(ModelRepository())
    a, b = np.arange(4, dtype=np.float32), np.full(4, 2.0, np.float32)
    with running_server(repository=registry) as server:
        with httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
            result = client.infer("bls", [_fp32("INPUT0", a), _fp32("INPUT1", b), _int32(0, name="WHICH")])
            assert np.array_equal(result.as_numpy("SUM"), a + b)
            with pytest.raises(InferenceServerException, match="nowhere") as caught:
                client.infer("bls", [_fp32("INPUT0", a), _fp32("INPUT1", b), _int32(1, name="WHICH")])
            assert caught.value.status() == "500"  # as Triton: a BLS error is INTERNAL, whatever the cause
            result = client.infer("async_bls", [_fp32("INPUT0", a), _fp32("INPUT1", b)])
            assert np.array_equal(result.as_numpy("SUM"), (a + b) + (a - b))
            stats = client.get_inference_statistics("add_sub")["model_stats"][0]
            assert stats["inference_count"] == 3  # the BLS calls count where they ran, as Triton counts them


def test_auto_complete_config_and_broken_initialize(repo):
    registry = DiskRepository(repo).populate(ModelRepository())
    with running_server(repository=registry) as server:
        with httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
            config = client.get_model_config("auto")
            assert config["max_batch_size"] == 4 and "dynamic_batching" in config
            assert config["input"][0]["name"] == "INPUT0" and config["input"][0]["dims"] == [4]
            assert client.get_model_metadata("auto")["inputs"][0]["shape"] == [-1, 4]
            x = np.zeros((2, 4), np.float32)
            assert np.array_equal(client.infer("auto", [_fp32("INPUT0", x)]).as_numpy("OUTPUT0"), x + 1)
            assert not client.is_model_ready("broken")
            index = {m["name"]: m for m in client.get_model_repository_index()}
            assert index["broken"]["state"] == "UNAVAILABLE" and "cannot start" in index["broken"]["reason"]
            assert client.is_model_ready("add_sub")


def test_unload_runs_finalize_and_reload_serves_again(repo):
    registry = DiskRepository(repo).populate(ModelRepository())
    marker = repo / "finalize" / "finalized"
    with running_server(repository=registry) as server:
        with httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
            x = np.arange(4, dtype=np.float32)
            assert np.array_equal(client.infer("finalize", [_fp32("INPUT0", x)]).as_numpy("INPUT0"), x)
            assert client.is_model_ready("finalize")
            (repo / "finalize" / "finalized.down").write_text("")
            assert not client.is_model_ready("finalize")  # the model's own is_ready() says so
            (repo / "finalize" / "finalized.down").unlink()
            scrape = urllib.request.urlopen(f"http://127.0.0.1:{server.ports['metrics']}/metrics").read().decode()
            # as Triton prints them: a counter under its own name (TYPE line included), whole numbers, le="4"
            assert "# TYPE echo_calls counter" in scrape and 'echo_calls{model="finalize"} 1\n' in scrape
            assert 'echo_rows_bucket{model="finalize",le="4"} 1\n' in scrape
            assert 'echo_rows_bucket{model="finalize",le="1"} 0\n' in scrape
            from prometheus_client.parser import text_string_to_metric_families

            kinds = {f.name: f.type for f in text_string_to_metric_families(scrape)}
            assert kinds["echo_calls"] == "counter" and kinds["echo_rows"] == "histogram"
            client.unload_model("finalize")
            assert marker.read_text() == "done" and not client.is_model_ready("finalize")
            client.load_model("finalize")
            assert np.array_equal(client.infer("finalize", [_fp32("INPUT0", x)]).as_numpy("INPUT0"), x)


def test_decoupled_model_streams_many_responses_over_grpc_only(repo):
    registry = DiskRepository(repo).populate(ModelRepository())
    with running_server(repository=registry) as server:
        answers = queue.Queue()
        with grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}") as client:
            client.start_stream(callback=lambda result, error: answers.put((result, error)))
            for count, request_id in ((3, "a"), (-1, "b"), (0, "c")):
                client.async_stream_infer("decoupled", [_int32(count, grpcclient, "IN")], request_id=request_id,
                                          enable_empty_final_response=True)
            got = [answers.get(timeout=30) for _ in range(6)]
            client.stop_stream()
            with pytest.raises(InferenceServerException, match="ModelInfer RPC doesn't support models with decoupled"):
                client.infer("decoupled", [_int32(1, grpcclient, "IN")])
        values = [(r.get_response().id, r.as_numpy("OUT").tolist() if r.as_numpy("OUT") is not None else None,
                   r.get_response().parameters["triton_final_response"].bool_param) for r, e in got if e is None]
        # each request's responses in its order; "c" (its own thread) may come before "a"'s last ones, as the
        # stream carries what the model sent in the order it sent it (a loaded machine ran c's thread first)
        by_request = {}
        for request_id, out, final in values:
            by_request.setdefault(request_id, []).append((out, final))
        assert by_request == {"a": [([0], False), ([1], False), ([2], False), (None, True)],  # a bare final last
                              "c": [(None, True)]}
        errors = [e for r, e in got if e is not None]
        assert len(errors) == 1 and "negative" in str(errors[0])
        with httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
            with pytest.raises(InferenceServerException, match="HTTP end point doesn't support") as caught:
                client.infer("decoupled", [_int32(1, name="IN")])
            assert caught.value.status() == "501"
            result = client.infer("bls_decoupled", [_int32(4, name="IN")])
            assert result.as_numpy("OUT").tolist() == [0 + 1 + 2 + 3]


HELPER_USER = """
from helpers import VALUE

class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array([VALUE], np.int32))]) for _ in requests]
"""


def test_models_with_same_named_helper_modules_each_get_their_own(tmp_path):
    config = 'backend: "python"\ninput [ { name: "IN" data_type: TYPE_INT32 dims: [ 1 ] } ]\n' \
             'output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] } ]\n'
    for name, value in (("first", 1), ("second", 2)):
        folder = write_model(tmp_path, name, HELPER_USER, config)
        (folder / "1" / "helpers.py").write_text(f"VALUE = {value}\n")
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    with running_server(repository=registry) as server:
        with httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
            for name, value in (("first", 1), ("second", 2)):
                assert client.infer(name, [_int32(0, name="IN")]).as_numpy("OUT").tolist() == [value]


def test_generate_extension_streams_a_decoupled_model_as_server_sent_events(repo, http):
    registry = DiskRepository(repo).populate(ModelRepository())
    with running_server(repository=registry) as server:
        client = http(server)
        reply = client.post("/v2/models/decoupled/generate_stream", json={"IN": 3})
        assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[len("data: "):]) for line in reply.text.split("\n\n") if line]
        assert [e["OUT"] for e in events] == [0, 1, 2]
        assert events[0]["model_name"] == "decoupled" and events[0]["model_version"] == "1"
        failed = client.post("/v2/models/decoupled/generate_stream", json={"parameters": {"IN": -1}})
        assert [json.loads(line[len("data: "):]) for line in failed.text.split("\n\n") if line] == \
            [{"error": "negative"}]
        assert failed.status_code == 400  # as Triton: the first response decides the status
        one = client.post("/v2/models/decoupled/versions/1/generate", json={"IN": 1})
        assert one.status_code == 200 and one.json()["OUT"] == 0
        many = client.post("/v2/models/decoupled/generate", json={"IN": 2})
        assert many.status_code == 400 and "use generate stream" in many.json()["error"]
        text = client.post("/v2/models/strings/generate", json={"TEXT": ["ab", "c"], "parameters": {"lang": "x"},
                                                                 "top_k": 3}).json()
        assert text["TEXT_OUT"] == ["AB", "C"] and text["LEN"] == [2, 1]
        assert json.loads(text["META"][0]) == {"lang": "x", "top_k": 3}
        assert client.post("/v2/models/nowhere/generate", json={}).status_code == 404
        bad = client.post("/v2/models/strings/generate", json={"TEXT": "a", "extra": {"nested": 1}})
        assert bad.status_code == 400 and "extra" in bad.json()["error"]


ACCUMULATE = """
class TritonPythonModel:
    def initialize(self, args):
        self.name = args["model_instance_name"]
        self.totals = {}

    def execute(self, requests):
        out = []
        for request in requests:
            key = int(pb_utils.get_input_tensor_by_name(request, "CORRID").as_numpy()[0, 0])
            if key == 0:  # a Direct batch's null request (a free slot's row), as Triton sends them
                out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT", np.zeros((1, 1), np.int32))]))
                continue
            if pb_utils.get_input_tensor_by_name(request, "START").as_numpy()[0, 0]:
                self.totals[key] = 0
            self.totals[key] += int(pb_utils.get_input_tensor_by_name(request, "INPUT").as_numpy()[0, 0])
            time.sleep(0.002)
            out.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("OUTPUT", np.array([[self.totals[key]]], np.int32)),
                pb_utils.Tensor("WHERE", np.array([[self.name.encode()]], dtype=object))]))
        return out
"""
ACCUMULATE_CONFIG = """
backend: "python"
max_batch_size: 4
sequence_batching {
  max_sequence_idle_microseconds: 5000000
  control_input [
    { name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] },
    { name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 } ] }
  ]
}
instance_group [ { count: 2 kind: KIND_CPU } ]
input [ { name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUTPUT" data_type: TYPE_INT32 dims: [ 1 ] }, { name: "WHERE" data_type: TYPE_STRING dims: [ 1 ] } ]
"""


def test_sequence_batching_keeps_each_sequence_on_its_instance_in_order(tmp_path):
    write_model(tmp_path, "accumulate", ACCUMULATE, ACCUMULATE_CONFIG)
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    with running_server(repository=registry) as server:
        url = f"127.0.0.1:{server.ports['grpc']}"

        def value(number):
            tensor = grpcclient.InferInput("INPUT", [1, 1], "INT32")
            tensor.set_data_from_numpy(np.array([[number]], np.int32))
            return [tensor]

        def run(sequence_id):
            seen, places = [], set()
            with grpcclient.InferenceServerClient(url) as client:
                for step in range(1, 7):
                    result = client.infer("accumulate", value(step), sequence_id=sequence_id,
                                          sequence_start=step == 1, sequence_end=step == 6)
                    seen.append(int(result.as_numpy("OUTPUT")[0, 0]))
                    places.add(result.as_numpy("WHERE")[0, 0])
            return seen, places

        with ThreadPoolExecutor(4) as pool:
            outcomes = list(pool.map(run, [11, 12, 13, 14]))
        for seen, places in outcomes:
            assert seen == [1, 3, 6, 10, 15, 21] and len(places) == 1  # in order, on one instance
        assert {p for _, places in outcomes for p in places} == {b"accumulate_0_0", b"accumulate_0_1"}
        with grpcclient.InferenceServerClient(url) as client:
            batching = client.get_model_config("accumulate").config.sequence_batching
            assert batching.max_sequence_idle_microseconds == 5000000
            assert [c.name for c in batching.control_input] == ["START", "CORRID"]
            assert list(batching.control_input[0].control[0].int32_false_true) == [0, 1]
            with pytest.raises(InferenceServerException, match="must specify the START flag") as caught:
                client.infer("accumulate", value(1), sequence_id=11)  # ended above
            assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
            with pytest.raises(InferenceServerException, match="non-zero or non-empty correlation ID"):
                client.infer("accumulate", value(1))
        with httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
            config = client.get_model_config("accumulate")
            assert config["sequence_batching"]["max_sequence_idle_microseconds"] == 5000000
            tensor = httpclient.InferInput("INPUT", [1, 1], "INT32")
            tensor.set_data_from_numpy(np.array([[5]], np.int32))
            with pytest.raises(InferenceServerException, match="control .CORRID. data-type is .BYTES., but model "
                               "'accumulate' expects 'UINT64'") as caught:
                client.infer("accumulate", [tensor], sequence_id="text-id", sequence_start=True)
            assert caught.value.status() == "400"
            with pytest.raises(InferenceServerException, match="unsigned 64-bit") as caught:
                client.infer("accumulate", [tensor], sequence_id=-5, sequence_start=True, sequence_end=True)
            assert caught.value.status() == "400"
            two = httpclient.InferInput("INPUT", [2, 1], "INT32")  # as Triton: one row per sequence step
            two.set_data_from_numpy(np.array([[1], [2]], np.int32))
            with pytest.raises(InferenceServerException, match="batch-size 1") as caught:
                client.infer("accumulate", [two], sequence_id=9, sequence_start=True, sequence_end=True)
            assert caught.value.status() == "400"


WHERE = """
import threading

class TritonPythonModel:
    def execute(self, requests):
        name = threading.current_thread().name.encode()
        return [pb_utils.InferenceResponse([pb_utils.Tensor("THREAD", np.array([name], dtype=object))])
                for _ in requests]
"""
RELAY = """
from relay import call_add_sub
import threading

class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("SUM", call_add_sub())]) for _ in requests]
"""
RELAY_HELPER = """
import numpy as np
import triton_python_backend_utils as pb_utils

def call_add_sub():
    ones = pb_utils.Tensor("INPUT0", np.ones(4, np.float32))
    answer = pb_utils.InferenceRequest(model_name="add_sub", requested_output_names=["OUTPUT0"],
                                       inputs=[ones, pb_utils.Tensor("INPUT1", np.ones(4, np.float32))]).exec()
    return pb_utils.get_output_tensor_by_name(answer, "OUTPUT0").as_numpy()
"""


def test_quick_executes_run_on_the_loop_thread_unless_they_call_the_server(repo):
    write_model(repo, "where", WHERE, 'backend: "python"\ninput [ { name: "IN" data_type: TYPE_INT32 dims: [ 1 ] } ]\n'
                'output [ { name: "THREAD" data_type: TYPE_STRING dims: [ 1 ] } ]\n')
    relay = write_model(repo, "relay", RELAY, 'backend: "python"\ninput [ { name: "IN" data_type: TYPE_INT32 '
                        'dims: [ 1 ] } ]\noutput [ { name: "SUM" data_type: TYPE_FP32 dims: [ 4 ] } ]\n')
    (relay / "1" / "relay.py").write_text(RELAY_HELPER)
    registry = DiskRepository(repo).populate(ModelRepository())
    with running_server(repository=registry) as server:
        with httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
            threads = [client.infer("where", [_int32(0, name="IN")]).as_numpy("THREAD")[0] for _ in range(4)]
            assert threads[0].startswith(b"gpuserve-")  # no timing yet: the instance's thread
            assert not threads[-1].startswith(b"gpuserve-")  # quick and alone: the loop's own thread
            # model.py mentions no server call, its helper does: the first inline run finds out, fails
            # with the reason, and every later execute runs on the instance's thread
            outcomes = []
            for _ in range(4):
                try:
                    outcomes.append(client.infer("relay", [_int32(0, name="IN")]).as_numpy("SUM").tolist())
                except InferenceServerException as exc:
                    outcomes.append(str(exc))
            assert outcomes[0] == [2.0] * 4 and outcomes[-1] == [2.0] * 4
            failures = [o for o in outcomes if isinstance(o, str)]
            assert len(failures) <= 1 and all("event loop" in f for f in failures), outcomes
            if failures:  # (ran inline once: only when the first call measured under the 2 ms lone rule)
                assert registry.get_model("relay").scheduler.config.inline_below_s == 0
            bls_thread = registry.get_model("bls")
            assert bls_thread.scheduler.config.inline_below_s == 0  # model.py calls the server: never inline


SLOW_DECOUPLED = """
import threading

class TritonPythonModel:
    def initialize(self, args):
        self.marker = args["model_repository"] + "/cancelled"

    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            threading.Thread(target=self.answer, args=(sender,)).start()
        return None

    def answer(self, sender):
        for i in range(500):
            if sender.is_cancelled():
                open(self.marker, "w").write(str(i))
                break
            sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array([i], np.int32))]))
            time.sleep(0.01)
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
"""


@pytest.mark.parametrize("transport", ["grpc", "sse"])
def test_a_client_that_leaves_a_decoupled_stream_is_seen_as_cancelled(tmp_path, transport):
    folder = write_model(tmp_path, "slow", SLOW_DECOUPLED, DECOUPLED_CONFIG)
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    with running_server(repository=registry) as server:
        if transport == "grpc":
            answers = queue.Queue()
            with grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}") as client:
                client.start_stream(callback=lambda result, error: answers.put(result))
                client.async_stream_infer("slow", [_int32(1, grpcclient, "IN")])
                assert [int(answers.get(timeout=10).as_numpy("OUT")[0]) for _ in range(3)] == [0, 1, 2]
                client.stop_stream(cancel_requests=True)
        else:
            import httpx

            url = f"http://127.0.0.1:{server.ports['http']}/v2/models/slow/generate_stream"
            with httpx.stream("POST", url, json={"IN": 1}, timeout=10) as reply:
                events = [line for line, _ in zip((x for x in reply.iter_lines() if x), range(3))]
            assert len(events) == 3
        marker = folder / "cancelled"
        deadline = time.monotonic() + 10
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists() and 3 <= int(marker.read_text()) < 400  # saw the client leave, not before


WARMED = """
class TritonPythonModel:
    def initialize(self, args):
        self.calls = 0

    def execute(self, requests):
        self.calls += len(requests)
        return [pb_utils.InferenceResponse([pb_utils.Tensor("CALLS", np.array([[self.calls]], np.int32))])
                for _ in requests]
"""


def test_model_warmup_runs_execute_before_the_model_is_ready(tmp_path):
    write_model(tmp_path, "warmed", WARMED, """
        backend: "python"
        max_batch_size: 2
        input [ { name: "X" data_type: TYPE_FP32 dims: [ 3 ] } ]
        output [ { name: "CALLS" data_type: TYPE_INT32 dims: [ 1 ] } ]
        model_warmup [ { name: "zeros" batch_size: 2 count: 3 inputs { key: "X" value: { data_type: TYPE_FP32
                         dims: [ 3 ] zero_data: true } } } ]
        """)
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    with running_server(repository=registry) as server:
        with httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
            result = client.infer("warmed", [_fp32("X", np.zeros((1, 3), np.float32))])
            # three warmup runs of two requests came first (Triton sends batch_size 2 as two requests)
            assert result.as_numpy("CALLS").tolist() == [[7]]


STUCK = """
import builtins, threading


class TritonPythonModel:
    def execute(self, requests):
        if int(pb_utils.get_input_tensor_by_name(requests[0], "IN").as_numpy()[0]) == 1:
            builtins.__dict__.setdefault("_stuck_execute_running", threading.Event()).set()
            time.sleep(4)  # user code that does not come back in time
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array([1], np.int32))]) for _ in requests]
"""


def test_unloading_a_model_stuck_in_execute_does_not_hang(tmp_path, monkeypatch):
    import builtins
    import threading

    from gpuserve.triton_python import PythonInstance

    running = threading.Event()  # set by the model (it runs in this process) once its execute is stuck
    monkeypatch.setitem(builtins.__dict__, "_stuck_execute_running", running)
    monkeypatch.setattr(PythonInstance, "close_timeout_s", 0.5)
    write_model(tmp_path, "stuck", STUCK, 'backend: "python"\ninput [ { name: "IN" data_type: TYPE_INT32 dims: [ 1 ] } ]\n'
                'output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] } ]\n')
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    with running_server(repository=registry) as server:
        url = f"127.0.0.1:{server.ports['http']}"
        with httpclient.InferenceServerClient(url) as client:
            assert client.infer("stuck", [_int32(0, name="IN")]).as_numpy("OUT").tolist() == [1]

        def call():
            with httpclient.InferenceServerClient(url, network_timeout=30) as caller:
                try:
                    caller.infer("stuck", [_int32(1, name="IN")])
                    return "answered"
                except InferenceServerException as exc:
                    return exc.status()

        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(call)
            assert running.wait(30)  # the execute is running now (a fixed 0.5 s sleep could unload before it)
            started = time.monotonic()
            with httpclient.InferenceServerClient(url, network_timeout=30) as client:
                client.unload_model("stuck")
                assert time.monotonic() - started < 3.5  # not the 4 s the execute takes
                assert pending.result(timeout=10) == "503"
                client.load_model("stuck")
                assert client.infer("stuck", [_int32(0, name="IN")]).as_numpy("OUT").tolist() == [1]


SOMETIMES_SLOW = """
class TritonPythonModel:
    def execute(self, requests):
        if int(pb_utils.get_input_tensor_by_name(requests[0], "IN").as_numpy()[0]) == 1:
            end = time.perf_counter() + 0.03
            while time.perf_counter() < end:  # pure Python, no call a source check could see
                pass
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array([1], np.int32))]) for _ in requests]
"""


def test_an_execute_that_turns_out_slow_on_the_loop_stops_inline_runs(tmp_path):
    write_model(tmp_path, "spiky", SOMETIMES_SLOW, 'backend: "python"\ninput [ { name: "IN" data_type: TYPE_INT32 '
                'dims: [ 1 ] } ]\noutput [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] } ]\n')
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    with running_server(repository=registry) as server:
        model = registry.get_model("spiky")
        assert model.scheduler.config.inline_below_s > 0  # nothing in its source says it may wait
        with httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
            for value in (0, 0, 0, 1, 0):
                assert client.infer("spiky", [_int32(value, name="IN")]).as_numpy("OUT").tolist() == [1]
        assert model.scheduler.config.inline_below_s == 0  # the slow run on the loop ended inline runs


def test_outputs_the_config_does_not_declare_are_not_answered(tmp_path):
    write_model(tmp_path, "extra", """
        class TritonPythonModel:
            def execute(self, requests):
                return [pb_utils.InferenceResponse([
                    pb_utils.Tensor("OUTPUT0", pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy()),
                    pb_utils.Tensor("EXTRA", np.array([7], np.int32))]) for r in requests]
        """, """
        backend: "python"
        input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 2 ] } ]
        output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 2 ] } ]
        """)
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    with running_server(repository=registry) as server:
        with httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
            x = np.array([1.0, 2.0], np.float32)
            result = client.infer("extra", [_fp32("INPUT0", x)])
            assert [o["name"] for o in result.get_response()["outputs"]] == ["OUTPUT0"]  # as Triton
            with pytest.raises(InferenceServerException, match="unexpected inference output") as caught:
                client.infer("extra", [_fp32("INPUT0", x)], outputs=[httpclient.InferRequestedOutput("EXTRA")])
            assert caught.value.status() == "400"


OPTIONAL_INPUTS = """
class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            given = [name for name in ("A", "B", "C") if pb_utils.get_input_tensor_by_name(request, name) is not None]
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("COUNT", np.array([len(given)], np.int32))]))
        return responses
"""


def _optional_config(optional_a, optional_b, optional_c):
    inputs = ", ".join(f'{{ name: "{n}" data_type: TYPE_FP32 dims: [ -1 ] optional: {str(o).lower()} }}'
                       for n, o in (("A", optional_a), ("B", optional_b), ("C", optional_c)))
    return f'backend: "python"\ninput [ {inputs} ]\noutput [ {{ name: "COUNT" data_type: TYPE_INT32 dims: [ 1 ] }} ]\n'


def test_missing_and_absent_inputs_are_judged_by_the_config_in_tritons_words(tmp_path):
    write_model(tmp_path, "none_optional", OPTIONAL_INPUTS, _optional_config(False, False, False))
    write_model(tmp_path, "c_optional", OPTIONAL_INPUTS, _optional_config(False, False, True))
    write_model(tmp_path, "all_optional", OPTIONAL_INPUTS, _optional_config(True, True, True))
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    with running_server(repository=registry) as server:
        for module, port, bad in ((httpclient, server.ports["http"], "400"),
                                  (grpcclient, server.ports["grpc"], "StatusCode.INVALID_ARGUMENT")):
            client = module.InferenceServerClient(f"127.0.0.1:{port}")
            one = [_fp32("A", np.zeros(2, np.float32), module)]
            # Triton's sentences exactly (its lists have no space after the comma): clients compare them whole
            cases = [("none_optional", one, "expected 3 inputs but got 1 inputs for model 'none_optional'. Got "
                      "input(s) ['A'], but missing required input(s) ['B','C']. Please provide all required input(s)."),
                     ("c_optional", [], "expected number of inputs between 2 and 3 but got 0 inputs for model "
                      "'c_optional'. Got input(s) [], but missing required input(s) ['A','B']. Please provide all "
                      "required input(s).")]
            for model, inputs, words in cases:
                with pytest.raises(InferenceServerException) as caught:
                    client.infer(model, inputs)
                assert words in caught.value.message() and caught.value.status() == bad
            # a request with no inputs at all reaches a model whose inputs are all optional, as in Triton
            assert client.infer("all_optional", []).as_numpy("COUNT").tolist() == [0]
            assert client.infer("all_optional", one).as_numpy("COUNT").tolist() == [1]


def test_a_kind_model_instance_is_told_its_kind_is_model(tmp_path):
    """Triton passes model_instance_kind as its kind's name: "MODEL" for KIND_MODEL (the model places itself)."""
    write_model(tmp_path, "add_sub", ADD_SUB, ADD_SUB_CONFIG.replace("{ count: 2 kind: KIND_CPU }", "{ kind: KIND_MODEL }"))
    a = np.ones(4, np.float32)
    with running_server(repository=DiskRepository(tmp_path).populate(ModelRepository())) as server:
        with httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
            kind, _ = client.infer("add_sub", [_fp32("INPUT0", a), _fp32("INPUT1", a)]).as_numpy("INSTANCE")
            assert kind == b"MODEL"
            assert client.get_model_config("add_sub")["instance_group"][0]["kind"] == "KIND_MODEL"
