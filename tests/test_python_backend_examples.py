"""What Triton's python_backend examples (add_sub, bls, auto_complete, decoupled, bls_decoupled,
custom_metrics) rely on, with models written here: each one ran unchanged against `gpuserve start` and
against Triton 2.51, and these are the behaviours where gpuserve first answered differently.

- bls: the model name comes from a BYTES input (`as_numpy()[0]`, a bytes object), which Triton's bindings
  take as a string; and a model that raises answers Triton's message with pybind11's "At:" frames.
- auto_complete: a model folder with only `1/model.py` (no config.pbtxt) is served, its config coming from
  `auto_complete_config`, and `dynamic_batching` shows `preferred_batch_size` [max_batch_size] as Triton's
  normalised config does.
"""

import textwrap
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import running_server
from gpuserve import ModelRepository
from gpuserve.repository import DiskRepository

HEADER = "import asyncio, json\nimport numpy as np\nimport triton_python_backend_utils as pb_utils\n\n"
TWO_IN_TWO_OUT = """
input [ { name: "A" data_type: TYPE_FP32 dims: [ 3 ] }, { name: "B" data_type: TYPE_FP32 dims: [ 3 ] } ]
output [ { name: "SUM" data_type: TYPE_FP32 dims: [ 3 ] }, { name: "DIFF" data_type: TYPE_FP32 dims: [ 3 ] } ]
"""

MODELS = {
    "plus_minus": ('backend: "python"\n' + TWO_IN_TWO_OUT, """
        class TritonPythonModel:
            def initialize(self, args):
                family = pb_utils.MetricFamily(name="plus_minus_calls", description="Calls of plus_minus",
                                               kind=pb_utils.MetricFamily.COUNTER)
                self.calls = family.Metric(labels={"model": "plus_minus", "version": "1"})

            def execute(self, requests):
                out = []
                for request in requests:
                    a = pb_utils.get_input_tensor_by_name(request, "A").as_numpy()
                    b = pb_utils.get_input_tensor_by_name(request, "B").as_numpy()
                    self.calls.increment(1)
                    out.append(pb_utils.InferenceResponse([pb_utils.Tensor("SUM", a + b),
                                                           pb_utils.Tensor("DIFF", a - b)]))
                return out
        """),
    # Routes to the model its BYTES input names, passing that element (bytes) on as Triton's bls example does.
    "router": ('backend: "python"\n' + TWO_IN_TWO_OUT.replace(
        "dims: [ 3 ] } ]\noutput", 'dims: [ 3 ] }, { name: "TARGET" data_type: TYPE_STRING dims: [ 1 ] } ]\noutput'), """
        def relay(request):
            target = pb_utils.get_input_tensor_by_name(request, "TARGET").as_numpy()[0]
            ready = pb_utils.is_model_ready(target)
            call = pb_utils.InferenceRequest(model_name=target, requested_output_names=[b"SUM", "DIFF"],
                                             inputs=[pb_utils.get_input_tensor_by_name(request, "A"),
                                                     pb_utils.get_input_tensor_by_name(request, "B")])
            answer = call.exec()
            if answer.has_error():
                raise pb_utils.TritonModelException(f"ready={ready}: " + answer.error().message())
            return pb_utils.InferenceResponse(answer.output_tensors())

        class TritonPythonModel:
            def execute(self, requests):
                responses = []
                for request in requests:
                    responses.append(relay(request))
                return responses
        """),
    # Sends IN responses (each of value IN), as the decoupled square example does.
    "repeat_n": ('backend: "python"\nmodel_transaction_policy { decoupled: true }\n'
                 'input [ { name: "IN" data_type: TYPE_INT32 dims: [ 1 ] } ]\n'
                 'output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] } ]\n', """
        class TritonPythonModel:
            def execute(self, requests):
                for request in requests:
                    n = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
                    sender = request.get_response_sender()
                    for _ in range(int(n[0])):
                        sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", n)]))
                    sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                return None
        """),
    # Adds up repeat_n's responses through two concurrent decoupled BLS calls.
    "twice_total": ('backend: "python"\ninput [ { name: "IN" data_type: TYPE_INT32 dims: [ 1 ] } ]\n'
                    'output [ { name: "TOTAL" data_type: TYPE_INT64 dims: [ 1 ] } ]\n', """
        class TritonPythonModel:
            async def execute(self, requests):
                out = []
                for request in requests:
                    n = pb_utils.get_input_tensor_by_name(request, "IN")
                    calls = [pb_utils.InferenceRequest(model_name="repeat_n", requested_output_names=["OUT"],
                                                       inputs=[n]).async_exec(decoupled=True) for _ in range(2)]
                    total = 0
                    for responses in await asyncio.gather(*calls):
                        for response in responses:
                            if response.has_error():
                                raise pb_utils.TritonModelException(response.error().message())
                            if response.output_tensors():
                                total += int(pb_utils.get_output_tensor_by_name(response, "OUT").as_numpy()[0])
                    out.append(pb_utils.InferenceResponse([pb_utils.Tensor("TOTAL", np.array([total], np.int64))]))
                return out
        """),
    # No config.pbtxt: the config is the model's auto_complete_config, as in the auto_complete example.
    "self_described": (None, """
        class TritonPythonModel:
            @staticmethod
            def auto_complete_config(config):
                config.set_max_batch_size(4)
                config.add_input({"name": "X", "data_type": "TYPE_FP32", "dims": [2]})
                config.add_output({"name": "Y", "data_type": "TYPE_FP32", "dims": [2]})
                config.set_dynamic_batching()
                return config

            def initialize(self, args):
                self.preferred = json.loads(args["model_config"])["dynamic_batching"]["preferred_batch_size"]

            def execute(self, requests):
                return [pb_utils.InferenceResponse([pb_utils.Tensor(
                    "Y", pb_utils.get_input_tensor_by_name(r, "X").as_numpy() + self.preferred[0])])
                    for r in requests]
        """),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("python_backend_examples")
    for name, (config, code) in MODELS.items():
        (root / name / "1").mkdir(parents=True)
        if config is not None:
            (root / name / "config.pbtxt").write_text(config)
        (root / name / "1" / "model.py").write_text(HEADER + textwrap.dedent(code))
    with running_server(repository=DiskRepository(root).populate(ModelRepository())) as running:
        running.root = root
        yield running


def _client(server, module):
    return module.InferenceServerClient(f"127.0.0.1:{server.ports['http' if module is httpclient else 'grpc']}")


def _tensor(module, name, array):
    datatype = "BYTES" if array.dtype == object else {np.float32: "FP32", np.int32: "INT32"}[array.dtype.type]
    tensor = module.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


@pytest.mark.parametrize("module", [httpclient, grpcclient])
def test_bls_routes_to_the_model_named_by_a_bytes_input(server, module):
    a, b = np.array([1, 2, 3], np.float32), np.array([0.5, 0.5, 4], np.float32)
    with _client(server, module) as client:
        direct = client.infer("plus_minus", [_tensor(module, "A", a), _tensor(module, "B", b)])
        assert np.allclose(direct.as_numpy("SUM"), a + b) and np.allclose(direct.as_numpy("DIFF"), a - b)
        routed = client.infer("router", [_tensor(module, "A", a), _tensor(module, "B", b),
                                         _tensor(module, "TARGET", np.array([b"plus_minus"], object))])
        assert np.allclose(routed.as_numpy("SUM"), a + b) and np.allclose(routed.as_numpy("DIFF"), a - b)


def test_a_raising_execute_answers_with_triton_s_at_frames(server):
    """As the bls example prints it: the message, a blank line, "At:" and the model's frames innermost first,
    with none of the server's own frames."""
    model_py = server.root / "router" / "1" / "model.py"
    lines = model_py.read_text().splitlines()
    raise_line = 1 + next(i for i, line in enumerate(lines) if "raise pb_utils.TritonModelException" in line)
    call_line = 1 + next(i for i, line in enumerate(lines) if "responses.append(relay(request))" in line)
    a = np.zeros(3, np.float32)
    with _client(server, httpclient) as client:
        with pytest.raises(InferenceServerException) as caught:
            client.infer("router", [_tensor(httpclient, "A", a), _tensor(httpclient, "B", a),
                                    _tensor(httpclient, "TARGET", np.array([b"no_such_model"], object))])
    assert caught.value.status() == "500"
    assert caught.value.message() == (
        "Failed to process the request(s) for model 'router_0', message: TritonModelException: ready=False: "
        "Model no_such_model - Error when running inference: Failed for execute the inference request. "
        f"Model 'no_such_model' is not ready.\n\nAt:\n  {model_py}({raise_line}): relay\n"
        f"  {model_py}({call_line}): execute\n")


def test_a_model_folder_without_config_is_served_from_auto_complete_config(server):
    with _client(server, httpclient) as client:
        assert client.is_model_ready("self_described")
        config = client.get_model_config("self_described")
        assert config["backend"] == "python" and config["max_batch_size"] == 4
        assert [(t["name"], t["data_type"], t["dims"]) for t in config["input"]] == [("X", "TYPE_FP32", [2])]
        assert [(t["name"], t["data_type"], t["dims"]) for t in config["output"]] == [("Y", "TYPE_FP32", [2])]
        assert config["dynamic_batching"]["preferred_batch_size"] == [4]  # what initialize() sees too
        x = np.ones((3, 2), np.float32)
        assert np.array_equal(client.infer("self_described", [_tensor(httpclient, "X", x)]).as_numpy("Y"), x + 4)
        index = {m["name"]: m for m in client.get_model_repository_index()}
        assert index["self_described"]["state"] == "READY"
        client.unload_model("self_described")
        assert not client.is_model_ready("self_described")
        client.load_model("self_described")
        assert client.is_model_ready("self_described")


def test_decoupled_stream_and_decoupled_bls(server):
    received = []
    with _client(server, grpcclient) as client:
        client.start_stream(callback=lambda result, error: received.append(error or result))
        client.async_stream_infer("repeat_n", [_tensor(grpcclient, "IN", np.array([3], np.int32))], request_id="r")
        client.stop_stream()  # waits for the responses still coming
    assert [r.as_numpy("OUT").tolist() for r in received] == [[3], [3], [3]]
    with _client(server, httpclient) as client:
        for n in (4, 0, 1):
            answer = client.infer("twice_total", [_tensor(httpclient, "IN", np.array([n], np.int32))])
            assert answer.as_numpy("TOTAL").tolist() == [2 * n * n]
        with pytest.raises(InferenceServerException, match="decoupled transaction policy") as caught:
            client.infer("repeat_n", [_tensor(httpclient, "IN", np.array([1], np.int32))])
        assert caught.value.status() == "501"


def test_custom_metric_is_scraped_with_help_type_and_labels(server):
    a = np.zeros(3, np.float32)
    with _client(server, httpclient) as client:
        client.infer("plus_minus", [_tensor(httpclient, "A", a), _tensor(httpclient, "B", a)])
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.ports['metrics']}/metrics").read().decode()
    assert "# HELP plus_minus_calls Calls of plus_minus" in text
    assert "# TYPE plus_minus_calls counter" in text
    assert 'plus_minus_calls{model="plus_minus",version="1"}' in text
