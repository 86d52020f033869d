"""Triton's response cache: what the key covers, eviction, and a real server answering repeats from the cache
(tritonclient over HTTP and gRPC: statistics, model config, metrics) while the model is not run again."""

import textwrap
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from conftest import make_onnx_model, onnx_reference, running_server
from gpuserve import ModelRepository
from gpuserve.repository import DiskRepository
from gpuserve.response_cache import ResponseCache, enabled_for, parse_cache_config
from gpuserve.settings import ModelSettings
from gpuserve.types import InferInput, InferOutput, InferRequest, InferResponse, RequestedOutput


class _Model:
    def __init__(self, name="m", version="1", cache=True):
        self.name, self.version = name, version
        self.settings = ModelSettings(name=name, response_cache=cache)


def _request(x, name="input", request_id=None, parameters=None, outputs=None):
    return InferRequest("m", [InferInput.from_numpy(name, x)], request_id=request_id, parameters=parameters,
                        request_outputs=outputs)


def test_the_key_covers_model_inputs_outputs_and_parameters_but_not_transport():
    cache, model = ResponseCache(), _Model()
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    key = cache.key(model, _request(x))
    assert key == cache.key(model, _request(x.copy(), request_id="other"))  # the id is not part of it
    assert key == cache.key(model, _request(x, parameters={"binary_data_output": True, "priority": 2,
                                                            "timeout": 1000}))
    different = [
        cache.key(model, _request(x + 1)),
        cache.key(model, _request(x.reshape(3, 2))),
        cache.key(model, _request(x.astype(np.float64))),
        cache.key(model, _request(x, name="other")),
        cache.key(_Model(version="2"), _request(x)),
        cache.key(_Model(name="n"), _request(x)),
        cache.key(model, _request(x, parameters={"temperature": 0.5})),
        cache.key(model, _request(x, outputs=[RequestedOutput("output", {"classification": 2})])),
    ]
    assert key not in different and len(set(different)) == len(different)
    # how an output travels is not what it holds
    plain = cache.key(model, _request(x, outputs=[RequestedOutput("output")]))
    assert plain == cache.key(model, _request(x, outputs=[RequestedOutput("output", {"binary_data": True})]))
    strings = np.array([b"ab", b"c"], dtype=object)
    assert cache.key(model, _request(strings)) != cache.key(model, _request(np.array([b"a", b"bc"], dtype=object)))
    # a sequence's requests carry state: never cached (as Triton)
    assert cache.key(model, _request(x, parameters={"sequence_id": 7})) is None
    assert ResponseCache(0).key(model, _request(x)) is None


def test_a_model_loaded_again_never_meets_its_predecessors_answers():
    cache = ResponseCache()
    x = np.ones((1, 2), np.float32)
    assert cache.key(_Model(), _request(x)) != cache.key(_Model(), _request(x))


def test_models_that_may_not_use_the_cache():
    assert enabled_for(_Model()) and not enabled_for(_Model(cache=False))
    decoupled = _Model()
    decoupled.decoupled = True
    stateful = _Model()
    stateful.sequences = object()
    assert not any(enabled_for(m) for m in (decoupled, stateful))
    ensemble = _Model()
    ensemble.platform = "ensemble"
    assert enabled_for(ensemble)  # as Triton since 24.08: an ensemble's own answers are kept


def _response(values, name="output"):
    return InferResponse(None, "m", [InferOutput.from_numpy(name, np.asarray(values, np.float32))], model_version="1",
                         parameters={"note": "kept"})


def test_hits_are_fresh_read_only_copies_with_the_new_id():
    cache, model = ResponseCache(), _Model()
    x = np.ones((1, 3), np.float32)
    key = cache.key(model, _request(x))
    original = _response([[1.0, 2.0]])
    assert cache.put(key, original)
    original.outputs[0].as_numpy()[0, 0] = 99.0  # the caller's response changes: the cache does not
    hit = cache.get(key, _request(x, request_id="r2"))
    assert hit.id == "r2" and hit.model_name == "m" and hit.model_version == "1"
    assert hit.parameters == {"note": "kept"}
    np.testing.assert_array_equal(hit.outputs[0].as_numpy(), [[1.0, 2.0]])
    with pytest.raises(ValueError):
        hit.outputs[0].as_numpy()[0, 0] = 5.0
    hit.parameters["changed"] = True
    assert "changed" not in cache.get(key, _request(x)).parameters


def test_least_recently_used_entries_go_first_and_oversized_answers_are_not_kept():
    entry = 4096 * 4  # bytes of one answer's array
    cache, model = ResponseCache(3 * entry + 3 * 1024), _Model()
    keys = [cache.key(model, _request(np.full((1, 2), i, np.float32))) for i in range(4)]
    for key in keys[:3]:
        assert cache.put(key, _response(np.zeros(4096)))
    assert cache.get(keys[0], _request(np.zeros((1, 2), np.float32))) is not None  # now the most recent
    assert cache.put(keys[3], _response(np.zeros(4096)))
    assert cache.get(keys[1], _request(np.zeros((1, 2), np.float32))) is None  # the least recent went
    assert all(cache.get(k, _request(np.zeros((1, 2), np.float32))) is not None for k in (keys[0], keys[2], keys[3]))
    assert cache.bytes <= cache.max_bytes and len(cache) == 3 and cache.evictions == 1
    assert not cache.put(cache.key(model, _request(np.ones((1, 2), np.float32))), _response(np.zeros(20000)))
    cache.clear_model("m")
    assert len(cache) == 0 and cache.bytes == 0


def test_the_same_request_bytes_get_the_same_answer_bytes_while_their_entry_stands():
    cache, model = ResponseCache(), _Model()
    x = np.ones((1, 3), np.float32)
    key = cache.key(model, _request(x))
    body = b'{"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 1, 1]}]}'
    request_key = cache.bytes_key("http m", body)
    assert request_key != cache.bytes_key("http m 1", body) != cache.bytes_key("grpc", body)
    assert cache.bytes_key("http m", body.replace(b"inputs", b"shared_memory_region")) is None
    answer = (200, b'{"outputs": []}', [(b"content-type", b"application/json")])
    cache.put_encoded(request_key, key, answer, "m", None, 15)  # no entry yet: nothing kept
    assert cache.encoded(request_key, model) is None and cache.asked_for(request_key) is None
    assert cache.put(key, _response([[1.0]]), model)
    assert not cache.answers_bytes_for("m")
    cache.put_encoded(request_key, key, answer, "m", None, 15)
    assert cache.encoded(request_key, model) == answer and cache.asked_for(request_key) == ("m", None)
    assert cache.answers_bytes_for("m") and not cache.answers_bytes_for("other")
    assert cache.encoded(request_key, _Model()) is None  # another model object (loaded again): not its answer
    assert cache.encoded(request_key, model) is None and len(cache) == 0  # and the stale entry is gone
    assert cache.put(key, _response([[1.0]]), model)
    cache.put_encoded(request_key, key, answer, "m", None, 15)
    assert cache.encoded(request_key, model) == answer
    cache.clear_model("m")  # the entry goes, and the bytes with it
    assert cache.encoded(request_key, model) is None and cache.bytes == 0 and not cache.answers_bytes_for("m")


def test_the_model_name_is_read_from_a_serialized_infer_request():
    from tritonclient.grpc import service_pb2

    from gpuserve.server.grpc.native import _model_name

    for name in ("m", "a" * 300, "modèle"):
        request = service_pb2.ModelInferRequest(model_name=name, model_version="2", id="x")
        request.inputs.add(name="input", datatype="FP32", shape=[1])
        request.raw_input_contents.append(b"\0" * 4)
        assert _model_name(request.SerializeToString()) == name
    assert _model_name(service_pb2.ModelInferRequest(id="x").SerializeToString()) is None
    assert _model_name(b"") is None and _model_name(b"\x0a\x05ab") is None


def test_requests_to_models_without_the_cache_are_never_hashed(server, monkeypatch):
    cache = server.dataplane.response_cache
    x = np.ones((1, 4), np.float32)
    with httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
        tensor = httpclient.InferInput("input", [1, 4], "FP32")
        tensor.set_data_from_numpy(x)
        client.infer("cached_onnx", [tensor])  # the cache now keeps answer bytes for cached_onnx
        assert cache.answers_bytes_for("cached_onnx")
        hashed = []
        real = cache.bytes_key
        monkeypatch.setattr(cache, "bytes_key", lambda form, body: hashed.append(form) or real(form, body))
        client.infer("plain", [tensor])
        client.infer("cached_onnx", [tensor])
    with grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}") as client:
        tensor = grpcclient.InferInput("input", [1, 4], "FP32")
        tensor.set_data_from_numpy(x)
        client.infer("plain", [tensor])
        assert len(hashed) == 1 and "cached_onnx" in hashed[0]
        tensor.set_data_from_numpy(x + 7)  # a miss: the message is hashed once, for the lookup and the keeping
        client.infer("cached_onnx", [tensor])
    assert hashed[1:] == ["grpc"]


def test_server_cache_size_from_settings_and_environment(tmp_path, monkeypatch):
    from gpuserve.settings import ServerSettings

    assert ServerSettings.load(tmp_path).response_cache_bytes == 128 * 1024 * 1024
    monkeypatch.setenv("GPUSERVE_RESPONSE_CACHE_BYTES", "4096")
    assert ServerSettings.load(tmp_path).response_cache_bytes == 4096
    assert ServerSettings.load(tmp_path, response_cache_bytes=0).response_cache_bytes == 0  # the flag wins


def test_cache_config_flag():
    assert parse_cache_config(None) is None
    assert parse_cache_config(["local,size=1048576"]) == 1048576
    assert parse_cache_config(["local,size=0"]) == 0
    for bad in (["redis,host=x"], ["local,size=big"], ["local"]):
        with pytest.raises(ValueError, match="--cache-config"):
            parse_cache_config(bad)
    assert parse_cache_config(None, 8192) == 8192  # Triton's older --response-cache-byte-size
    assert parse_cache_config(["local,size=64", "local,size=128"]) == 128  # one cache's settings add up
    with pytest.raises(ValueError, match="Incompatible flags --response-cache-byte-size and --cache-config"):
        parse_cache_config(["local,size=67890"], 12345)
    with pytest.raises(ValueError, match="found multiple cache configurations"):
        parse_cache_config(["local,size=8192", "redis,key=value"])


COUNTING = '''
import json, os
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.calls = 0

    def execute(self, requests):
        responses = []
        for request in requests:
            self.calls += 1
            x = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("OUT", x * 2), pb_utils.Tensor("CALLS", np.array([self.calls], np.int64))]))
        return responses
'''
COUNTING_CONFIG = '''
name: "counting"
backend: "python"
input [ { name: "IN" data_type: TYPE_FP32 dims: [ 3 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 3 ] }, { name: "CALLS" data_type: TYPE_INT64 dims: [ 1 ] } ]
response_cache { enable: true }
'''
ONNX_CONFIG = '''
name: "cached_onnx"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [ { name: "input" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "output" data_type: TYPE_FP32 dims: [ 3 ] } ]
dynamic_batching { }
response_cache { enable: true }
'''


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache-repo")
    (root / "counting" / "1").mkdir(parents=True)
    (root / "counting" / "config.pbtxt").write_text(textwrap.dedent(COUNTING_CONFIG))
    (root / "counting" / "1" / "model.py").write_text(textwrap.dedent(COUNTING))
    (root / "cached_onnx" / "1").mkdir(parents=True)
    weights = make_onnx_model(root / "cached_onnx" / "1" / "model.onnx")
    (root / "cached_onnx" / "config.pbtxt").write_text(textwrap.dedent(ONNX_CONFIG))
    (root / "plain").mkdir()
    make_onnx_model(root / "plain" / "model.onnx")  # a bare artefact: no cache unless asked for
    registry = DiskRepository(root).populate(ModelRepository())
    with running_server(repository=registry) as srv:
        srv.weights = weights
        yield srv


def _counting_call(client, module, values):
    tensor = module.InferInput("IN", [3], "FP32")
    tensor.set_data_from_numpy(np.asarray(values, np.float32))
    result = client.infer("counting", [tensor], request_id="req")
    return result.as_numpy("OUT"), int(result.as_numpy("CALLS")[0]), result.get_response()


def _stats(client, name):
    stats = client.get_inference_statistics(name)["model_stats"][0]
    return stats, stats["inference_stats"]


def test_a_repeated_request_is_answered_without_running_the_model(server):
    url = f"127.0.0.1:{server.ports['http']}"
    with httpclient.InferenceServerClient(url) as client:
        out, calls, _ = _counting_call(client, httpclient, [1, 2, 3])
        again, calls_again, response = _counting_call(client, httpclient, [1, 2, 3])
        np.testing.assert_array_equal(again, [2, 4, 6])
        assert calls_again == calls and response["id"] == "req"  # the cached answer, under this request's id
        _, new_calls, _ = _counting_call(client, httpclient, [1, 2, 4])
        assert new_calls == calls + 1  # other inputs: the model runs
        stats, inference = _stats(client, "counting")
        assert inference["cache_hit"]["count"] == 1 and inference["cache_miss"]["count"] == 2
        assert inference["success"]["count"] == 3 and stats["execution_count"] == 2  # a hit is no execution
        assert inference["queue"]["count"] == 3  # as Triton: a hit passes the queue (perf_analyzer reads this)
        assert stats["inference_count"] == 2
        config = client.get_model_config("counting")
        assert config["response_cache"] == {"enable": True}
    with grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}") as client:
        for _ in range(2):  # the same entry from gRPC, then the same message bytes again
            again, calls_grpc, response = _counting_call(client, grpcclient, [1, 2, 3])
            np.testing.assert_array_equal(again, [2, 4, 6])
            assert calls_grpc == calls and response.id == "req"
        stats = client.get_inference_statistics("counting").model_stats[0]
        assert stats.inference_stats.cache_hit.count == 3 and stats.inference_stats.cache_hit.ns > 0
        assert stats.execution_count == 2
        assert client.get_model_config("counting").config.response_cache.enable
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{server.ports['metrics']}/metrics").read().decode()
    assert 'nv_cache_num_hits_per_model{model="counting",version="1"} 3' in metrics
    assert 'nv_cache_num_misses_per_model{model="counting",version="1"} 2' in metrics
    entries = [line for line in metrics.splitlines() if line.startswith("nv_cache_num_entries ")]
    assert entries and float(entries[0].split()[1]) >= 2 and "nv_cache_util " in metrics


def test_batched_onnx_model_answers_from_the_cache_with_the_same_values(server):
    x = np.random.default_rng(3).normal(size=(2, 4)).astype(np.float32)
    with httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
        before, inference_before = _stats(client, "cached_onnx")
        answers = []
        # the first runs the model; the JSON form hits the entry; the binary form again is the same bytes
        # (answered with the bytes it got before); another id hits the entry under its own id
        for binary, request_id in ((True, ""), (False, ""), (True, ""), (True, "seven")):
            tensor = httpclient.InferInput("input", [2, 4], "FP32")
            tensor.set_data_from_numpy(x, binary_data=binary)
            outputs = [httpclient.InferRequestedOutput("output", binary_data=binary)]
            result = client.infer("cached_onnx", [tensor], outputs=outputs, request_id=request_id)
            assert result.get_response().get("id", "") == request_id
            answers.append(result.as_numpy("output"))
        for answer in answers:
            np.testing.assert_allclose(answer, onnx_reference(x, *server.weights), rtol=1e-5, atol=1e-6)
        stats, inference = _stats(client, "cached_onnx")
        hits = inference["cache_hit"]["count"] - inference_before["cache_hit"]["count"]
        assert hits == 3 and stats["execution_count"] - before["execution_count"] == 1
        # a bad request is not cached: it fails every time, and the server keeps serving
        for _ in range(2):
            bad = httpclient.InferInput("input", [2, 5], "FP32")
            bad.set_data_from_numpy(np.zeros((2, 5), np.float32))
            with pytest.raises(Exception, match="expects|shape"):
                client.infer("cached_onnx", [bad])
        assert _stats(client, "cached_onnx")[1]["cache_hit"]["count"] == inference["cache_hit"]["count"]


def test_models_without_response_cache_run_every_time(server):
    x = np.full((1, 4), 3.0, np.float32)
    with httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
        _, before = _stats(client, "plain")
        for _ in range(3):
            tensor = httpclient.InferInput("input", [1, 4], "FP32")
            tensor.set_data_from_numpy(x)
            client.infer("plain", [tensor])
        stats, inference = _stats(client, "plain")
        assert inference["cache_hit"]["count"] == 0 and inference["cache_miss"]["count"] == 0
        assert inference["success"]["count"] - before["success"]["count"] == 3
        assert "response_cache" not in client.get_model_config("plain")


def test_a_server_without_a_cache_runs_every_time(tmp_path):
    (tmp_path / "counting" / "1").mkdir(parents=True)
    (tmp_path / "counting" / "config.pbtxt").write_text(textwrap.dedent(COUNTING_CONFIG))
    (tmp_path / "counting" / "1" / "model.py").write_text(textwrap.dedent(COUNTING))
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    with running_server(repository=registry, response_cache_bytes=0) as srv:
        with httpclient.InferenceServerClient(f"127.0.0.1:{srv.ports['http']}") as client:
            calls = [_counting_call(client, httpclient, [1, 1, 1])[1] for _ in range(2)]
            assert calls[1] == calls[0] + 1
            assert _stats(client, "counting")[1]["cache_hit"]["count"] == 0


def test_shared_memory_inputs_are_keyed_by_what_the_region_holds_now(server):
    """The same request body naming a region can carry other data each time: never answered by its bytes."""
    import os

    import tritonclient.utils.shared_memory as shm

    key = f"/gpuserve-cache-{os.getpid()}"
    handle = shm.create_shared_memory_region("cache-in", key, 32)
    try:
        with httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
            client.register_system_shared_memory("cache-in", key, 32)
            try:
                for seed in (11, 12, 11):
                    x = np.random.default_rng(seed).normal(size=(2, 4)).astype(np.float32)
                    shm.set_shared_memory_region(handle, [x])
                    tensor = httpclient.InferInput("input", [2, 4], "FP32")
                    tensor.set_shared_memory("cache-in", 32)
                    got = client.infer("cached_onnx", [tensor]).as_numpy("output")
                    np.testing.assert_allclose(got, onnx_reference(x, *server.weights), rtol=1e-5, atol=1e-6)
            finally:
                client.unregister_system_shared_memory("cache-in")
    finally:
        shm.destroy_shared_memory_region(handle)


def test_a_failing_cache_never_fails_a_request(server, monkeypatch):
    """Whatever goes wrong inside the cache, requests are answered by the model as if it were not there."""
    def broken(*args, **kwargs):
        raise RuntimeError("cache broke")

    cache = server.dataplane.response_cache
    monkeypatch.setattr(server.dataplane, "cached_answer", broken)
    for name in ("put_encoded", "get", "put"):
        monkeypatch.setattr(cache, name, broken)
    x = np.random.default_rng(5).normal(size=(1, 4)).astype(np.float32)
    expected = onnx_reference(x, *server.weights)
    for module, port in ((httpclient, server.ports["http"]), (grpcclient, server.ports["grpc"])):
        with module.InferenceServerClient(f"127.0.0.1:{port}") as client:
            for _ in range(2):
                tensor = module.InferInput("input", [1, 4], "FP32")
                tensor.set_data_from_numpy(x)
                np.testing.assert_allclose(client.infer("cached_onnx", [tensor]).as_numpy("output"), expected,
                                           rtol=1e-5, atol=1e-6)


def test_pipelined_repeats_are_answered_in_order_from_the_cache(server):
    """Cache hits answered inside the read callback keep HTTP/1.1 pipelining's order, close included."""
    import json
    import socket

    def post(values, close=False):
        body = json.dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": values}]})
        head = (f"POST /v2/models/cached_onnx/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n" + ("Connection: close\r\n" if close else "") + "\r\n")
        return head.encode() + body.encode()

    def answers(sock):
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk

    a, b = [1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]
    for _ in range(2):  # the second round: every request is a repeat
        with socket.create_connection(("127.0.0.1", server.ports["http"]), timeout=10) as sock:
            sock.sendall(post(a) + post(b) + post(a) + post(b, close=True) + post(a))  # the last is after close
            data = answers(sock)
        bodies = [json.loads(part.split(b"\r\n\r\n", 1)[1].split(b"HTTP/1.1")[0]) for part in data.split(b"HTTP/1.1 ")[1:]]
        assert len(bodies) == 4
        for values, got in zip((a, b, a, b), bodies):
            expected = onnx_reference(np.array([values], np.float32), *server.weights)
            np.testing.assert_allclose(got["outputs"][0]["data"], expected.ravel(), rtol=1e-5, atol=1e-6)


MLSERVER_RUNTIME = '''
import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class Counter(MLModel):
    async def load(self):
        self.calls = 0
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        self.calls += 1
        rows = len(NumpyCodec.decode_input(payload.inputs[0]))
        return InferenceResponse(model_name=self.name,
                                 outputs=[NumpyCodec.encode_output("calls", np.full(rows, self.calls))])
'''


def test_an_mlserver_runtime_enables_the_cache_in_model_settings(tmp_path):
    import json

    folder = tmp_path / "counter"
    folder.mkdir()
    (folder / "model-settings.json").write_text(json.dumps({"name": "counter", "implementation": "runtime.Counter",
                                                             "response_cache": True}))
    (folder / "runtime.py").write_text(MLSERVER_RUNTIME)
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    with running_server(repository=registry) as srv:
        with httpclient.InferenceServerClient(f"127.0.0.1:{srv.ports['http']}") as client:
            calls = []
            for values in ([1, 2], [1, 2], [3, 4], [1, 2]):
                tensor = httpclient.InferInput("x", [2], "FP32")
                tensor.set_data_from_numpy(np.asarray(values, np.float32))
                calls.append(int(client.infer("counter", [tensor]).as_numpy("calls").ravel()[0]))
            assert calls == [1, 1, 2, 1]  # the model ran for each new input only
            assert _stats(client, "counter")[1]["cache_hit"]["count"] == 2


def test_concurrent_repeats_and_new_inputs_never_get_another_requests_answer(server):
    """16 clients draw from 12 inputs in both HTTP forms and gRPC, with and without ids: every answer is
    the one for its own input (hits, misses and byte-level hits interleaved)."""
    import concurrent.futures
    import random

    pool = [np.random.default_rng(100 + i).normal(size=(1, 4)).astype(np.float32) for i in range(12)]
    expected = [onnx_reference(x, *server.weights) for x in pool]
    http_url, grpc_url = f"127.0.0.1:{server.ports['http']}", f"127.0.0.1:{server.ports['grpc']}"

    def client(seed):
        chooser = random.Random(seed)
        wrong = []
        with httpclient.InferenceServerClient(http_url) as http, grpcclient.InferenceServerClient(grpc_url) as grpc:
            for n in range(30):
                i = chooser.randrange(len(pool))
                form = chooser.choice(("binary", "json", "grpc"))
                module, c = (grpcclient, grpc) if form == "grpc" else (httpclient, http)
                tensor = module.InferInput("input", [1, 4], "FP32")
                if form == "grpc":
                    tensor.set_data_from_numpy(pool[i])
                else:
                    tensor.set_data_from_numpy(pool[i], binary_data=form == "binary")
                request_id = chooser.choice(("", f"r{seed}-{n}"))
                result = c.infer("cached_onnx", [tensor], request_id=request_id)
                got = result.as_numpy("output")
                if not np.allclose(got, expected[i], rtol=1e-5, atol=1e-6):
                    wrong.append((form, i))
        return wrong

    with concurrent.futures.ThreadPoolExecutor(16) as executor:
        wrong = [w for ws in executor.map(client, range(16)) for w in ws]
    assert wrong == []
