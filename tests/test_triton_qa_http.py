"""What Triton's qa tests for the HTTP extensions (qa/L0_http generate_endpoint_test.py, qa/L0_trace
trace_endpoint_test.py) check, answered as Triton 2.51 answers it, on models built here."""

import json
import textwrap

import pytest

from conftest import running_server
from gpuserve import ModelRepository
from gpuserve.repository import DiskRepository

# as qa/python_models/generate_models/mock_llm: PROMPT echoed REPETITION times (a decoupled model)
MOCK_LLM = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            prompt = pb_utils.get_input_tensor_by_name(request, "PROMPT").as_numpy()
            repeat = json.loads(request.parameters()).get("REPETITION", 1)
            sender = request.get_response_sender()
            for _ in range(repeat):
                sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("TEXT", prompt)]))
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
"""
MOCK_LLM_CONFIG = """
backend: "python"
max_batch_size: 0
model_transaction_policy { decoupled: true }
input [ { name: "PROMPT" data_type: TYPE_STRING dims: [ 1, 1 ] },
        { name: "STREAM" data_type: TYPE_BOOL dims: [ 1, 1 ] },
        { name: "input_ids" data_type: TYPE_INT32 dims: [ 1, -1 ] optional: true },
        { name: "scale" data_type: TYPE_FP32 dims: [ 1 ] optional: true } ]
output [ { name: "TEXT" data_type: TYPE_STRING dims: [ 1, -1 ] } ]
"""


@pytest.fixture
def llm_server(tmp_path):
    folder = tmp_path / "mock_llm"
    (folder / "1").mkdir(parents=True)
    (folder / "config.pbtxt").write_text(textwrap.dedent(MOCK_LLM_CONFIG))
    (folder / "1" / "model.py").write_text("import json\n" + textwrap.dedent(MOCK_LLM))
    with running_server(repository=DiskRepository(tmp_path).populate(ModelRepository())) as server:
        yield server


def _error(client, body, stream=False):
    url = "/v2/models/mock_llm/generate" + ("_stream" if stream else "")
    reply = client.post(url, content=body if isinstance(body, str) else json.dumps(body))
    assert reply.status_code >= 400 and reply.headers["content-type"] == "application/json", reply.text
    return reply.json()["error"]


@pytest.mark.parametrize("stream", [False, True])
def test_generate_refuses_what_triton_refuses_in_its_words(llm_server, http, stream):
    client = http(llm_server)
    # an input given twice (JSON allows a repeated member; the first repeated one is named)
    assert _error(client, '{"PROMPT": "a", "STREAM": false, "PROMPT": "b"}', stream) == \
        "input 'PROMPT' already exists in request"
    assert _error(client, '{"PROMPT": "a", "STREAM": false, "STREAM": true, "PROMPT": "b"}', stream) == \
        "input 'STREAM' already exists in request"
    assert _error(client, {"PROMPT": "a", "STREAM": False, "parameters": {"PROMPT": "b"}}, stream) == \
        "Converting keyword: 'parameters': input 'PROMPT' already exists in request"
    # an element of the wrong JSON type for the input's datatype, inputs checked in the body's order
    not_string = "Unable to parse JSON bytes array: attempt to access JSON non-string as string"
    not_bool = "Unable to parse 'data': attempt to access JSON non-boolean as boolean"
    assert _error(client, {"PROMPT": 123, "STREAM": False}, stream) == not_string
    assert _error(client, {"PROMPT": {"USER": "x"}, "STREAM": False}, stream) == not_string
    assert _error(client, {"PROMPT": "a", "STREAM": "false"}, stream) == not_bool
    assert _error(client, {"STREAM": 123, "PROMPT": True}, stream) == not_bool
    assert _error(client, {"PROMPT": "a", "STREAM": False, "input_ids": [1.5]}, stream) == \
        "Unable to parse 'data': attempt to access JSON non-signed-integer as signed-integer"
    assert _error(client, {"PROMPT": "a", "STREAM": False, "scale": ["1"]}, stream) == \
        "Unable to parse 'data': attempt to access JSON non-number as double"
    # parameters: only strings, numbers and booleans; `parameters` an object; `id` a string
    assert _error(client, {"PROMPT": "a", "STREAM": False, "PARAMS": {"P": 0}}, stream) == \
        "parameter 'PARAMS' has invalid type. It should be either 'int', 'bool', or 'string'."
    assert _error(client, {"PROMPT": "a", "STREAM": False, "parameters": {"nested": [1]}}, stream) == \
        "Converting keyword: 'parameters': parameter 'nested' has invalid type. It should be either 'int', " \
        "'bool', or 'string'."
    assert _error(client, {"PROMPT": "a", "STREAM": False, "parameters": 1}, stream) == \
        "Expected JSON object for keyword: 'parameters': attempt to access JSON non-object as object"
    assert _error(client, {"PROMPT": "a", "STREAM": False, "id": 42}, stream) == \
        "Unable to parse 'id': attempt to access JSON non-string as string"
    assert _error(client, "[1, 2]", stream) == "attempt to get members for non-object"


def test_generate_echoes_the_request_id_and_wants_exactly_one_response(llm_server, http):
    client = http(llm_server)
    answer = client.post("/v2/models/mock_llm/generate", json={"PROMPT": "hi", "STREAM": False, "id": "42"}).json()
    assert answer["id"] == "42" and answer["TEXT"] == "hi"
    for body in ({"PROMPT": "hi", "STREAM": False}, {"PROMPT": "hi", "STREAM": False, "id": ""}):
        assert "id" not in client.post("/v2/models/mock_llm/generate", json=body).json()
    events = client.post("/v2/models/mock_llm/generate_stream",
                         json={"PROMPT": "hi", "STREAM": True, "id": "7", "REPETITION": 2}).text
    assert [json.loads(e[len("data: "):])["id"] for e in events.split("\n\n") if e] == ["7", "7"]
    one = ("generate expects model to produce exactly 1 response, use generate stream for model that "
           "generates various number of responses")
    for repeat in (0, 2):
        assert _error(client, {"PROMPT": "hi", "STREAM": True, "REPETITION": repeat}) == one
    # a float parameter and a string parameter named like nothing are taken, as Triton takes them
    assert client.post("/v2/models/mock_llm/generate",
                       json={"PROMPT": "hi", "STREAM": False, "F": 1.5, "parameters": {"id": "x"}}).status_code == 200


# as qa's `simple`: INPUT0 + INPUT1 and INPUT0 - INPUT1, INT32 [16], batched
SIMPLE = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            a = pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy()
            b = pb_utils.get_input_tensor_by_name(r, "INPUT1").as_numpy()
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", a + b), pb_utils.Tensor("OUTPUT1", a - b)]))
        return out
"""
SIMPLE_CONFIG = """
backend: "python"
max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_INT32 dims: [ 16 ] }, { name: "INPUT1" data_type: TYPE_INT32 dims: [ 16 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 16 ] }, { name: "OUTPUT1" data_type: TYPE_INT32 dims: [ 16 ] } ]
"""


@pytest.fixture
def simple_server(tmp_path):
    folder = tmp_path / "simple"
    (folder / "1").mkdir(parents=True)
    (folder / "config.pbtxt").write_text(textwrap.dedent(SIMPLE_CONFIG))
    (folder / "1" / "model.py").write_text(textwrap.dedent(SIMPLE))
    with running_server(repository=DiskRepository(tmp_path).populate(ModelRepository())) as server:
        yield server


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_shared_memory_refusals_in_triton_words(simple_server, protocol):
    """qa/L0_shared_memory test_register_out_of_bound and test_too_big_shm."""
    import os

    import numpy as np
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    import tritonclient.utils.shared_memory as shm
    from tritonclient.utils import InferenceServerException

    module = httpclient if protocol == "http" else grpcclient
    client = module.InferenceServerClient(f"127.0.0.1:{simple_server.ports[protocol]}")
    key = f"/qa_http_{os.getpid()}_{protocol}"
    handles = [shm.create_shared_memory_region("in0", key + "_0", 64), shm.create_shared_memory_region("big", key + "_1", 128)]
    try:
        for byte_size, offset in ((65, 0), (64, 1), (1, 64), (0, 65)):
            with pytest.raises(InferenceServerException, match="failed to register shared memory region 'r': invalid args"):
                client.register_system_shared_memory("r", key + "_0", byte_size, offset=offset)
        shm.set_shared_memory_region(handles[0], [np.arange(16, dtype=np.int32)])
        client.register_system_shared_memory("in0", key + "_0", 64)
        client.register_system_shared_memory("big", key + "_1", 128)
        for size in (128, 60):
            first, second = module.InferInput("INPUT0", [1, 16], "INT32"), module.InferInput("INPUT1", [1, 16], "INT32")
            first.set_shared_memory("in0", 64)
            second.set_shared_memory("big", size)
            with pytest.raises(InferenceServerException) as refused:
                client.infer("simple", [first, second])
            assert "input byte size mismatch for input 'INPUT1' for model 'simple'. Expected 64, got " \
                f"{size}" in str(refused.value)
        client.unregister_system_shared_memory()
    finally:
        for handle in handles:
            shm.destroy_shared_memory_region(handle)
        client.close()


def test_trace_config_flags_are_the_trace_settings_clients_read_and_clear_back_to(tmp_path, http):
    """qa/L0_trace trace_endpoint_test.py: the server starts with `--trace-config triton,file=F
    --trace-config level=TIMESTAMPS --trace-config rate=1`; clients read those, and a cleared global
    setting goes back to them."""
    from gpuserve.cli import _parser, trace_config

    args = _parser().parse_args(["start", str(tmp_path), "--trace-config", "triton,file=global_unittest.log",
                                 "--trace-config", "level=TIMESTAMPS", "--trace-config", "rate=1",
                                 "--trace-count", "5", "--trace-config", "opentelemetry,url=localhost"])
    configs = trace_config(args)
    expected = {"trace_file": "global_unittest.log", "trace_level": ["TIMESTAMPS"], "trace_rate": "1",
                "trace_count": "5", "log_frequency": "0", "trace_mode": "triton"}
    folder = tmp_path / "simple"
    (folder / "1").mkdir(parents=True)
    (folder / "config.pbtxt").write_text(textwrap.dedent(SIMPLE_CONFIG))
    (folder / "1" / "model.py").write_text(textwrap.dedent(SIMPLE))
    with running_server(repository=DiskRepository(tmp_path).populate(ModelRepository()),
                        trace_config=configs) as server:
        client = http(server)
        assert client.get("/v2/trace/setting").json() == expected
        assert client.get("/v2/models/simple/trace/setting").json() == expected
        client.post("/v2/trace/setting", json={"trace_rate": "7", "trace_level": ["TENSORS"]})
        client.post("/v2/trace/setting", json={"trace_rate": None, "trace_level": None, "trace_count": None})
        assert client.get("/v2/trace/setting").json() == expected
    with pytest.raises(Exception, match="unknown trace level"):
        trace_config(_parser().parse_args(["start", "--trace-config", "level=BOGUS"]))


# `simple` that waits for the test to say go (a file), after saying it has started (another file)
GATED = """
import os
import time

import triton_python_backend_utils as pb_utils

GATE = os.path.join(os.path.dirname(__file__), "..", "..", "..")  # the test's tmp_path


class TritonPythonModel:
    def execute(self, requests):
        open(os.path.join(GATE, "started"), "w").close()
        for _ in range(3000):
            if os.path.exists(os.path.join(GATE, "go")):
                break
            time.sleep(0.01)
        out = []
        for r in requests:
            a = pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy()
            b = pb_utils.get_input_tensor_by_name(r, "INPUT1").as_numpy()
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", a + b), pb_utils.Tensor("OUTPUT1", a - b)]))
        return out
"""


def _wait_for(path):
    import time

    for _ in range(3000):
        if path.exists():
            return
        time.sleep(0.01)
    raise AssertionError(f"{path} never appeared")


def test_unregister_during_inference_waits_for_the_request(tmp_path):
    """qa/L0_shared_memory TestSharedMemoryUnregister: unregistering regions an inference is using
    succeeds, they stay listed until it has answered (its outputs written), then they are gone."""
    import os

    import numpy as np
    import tritonclient.http as httpclient
    import tritonclient.utils.shared_memory as shm

    folder = tmp_path / "repo" / "simple"
    (folder / "1").mkdir(parents=True)
    (folder / "config.pbtxt").write_text(textwrap.dedent(SIMPLE_CONFIG))
    (folder / "1" / "model.py").write_text(textwrap.dedent(GATED))
    names = ["input0", "input1", "output0", "output1"]
    key = f"/qa_http_{os.getpid()}_gate_"
    handles = [shm.create_shared_memory_region(n, key + n, 64) for n in names]
    shm.set_shared_memory_region(handles[0], [np.arange(16, dtype=np.int32)])
    shm.set_shared_memory_region(handles[1], [np.ones(16, dtype=np.int32)])
    try:
        with running_server(repository=DiskRepository(tmp_path / "repo").populate(ModelRepository())) as server:
            url = f"127.0.0.1:{server.ports['http']}"
            client, other = httpclient.InferenceServerClient(url), httpclient.InferenceServerClient(url)
            for name in names:
                client.register_system_shared_memory(name, key + name, 64)
            inputs = [httpclient.InferInput(f"INPUT{i}", [1, 16], "INT32") for i in (0, 1)]
            outputs = [httpclient.InferRequestedOutput(f"OUTPUT{i}") for i in (0, 1)]
            for i in (0, 1):
                inputs[i].set_shared_memory(f"input{i}", 64)
                outputs[i].set_shared_memory(f"output{i}", 64)
            pending = client.async_infer("simple", inputs, outputs=outputs)
            _wait_for(tmp_path / "started")
            other.unregister_system_shared_memory()
            assert sorted(r["name"] for r in other.get_system_shared_memory_status()) == sorted(names)
            (tmp_path / "go").touch()
            result = pending.get_result()
            assert result.get_output("OUTPUT0")["shape"] == [1, 16]
            summed = shm.get_contents_as_numpy(handles[2], np.int32, [1, 16])
            assert summed.tolist() == [list(range(1, 17))]
            assert other.get_system_shared_memory_status() == []
            client.close()
            other.close()
    finally:
        for handle in handles:
            shm.destroy_shared_memory_region(handle)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_allow_client_shm_false_refuses_register_and_unregister_in_triton_words(tmp_path, protocol):
    """qa/L0_shared_memory test_client_shm_disabled_by_default, on a server started as a later Triton's
    `--allow-client-shm=false` (gpuserve's default is Triton 2.51's: allowed)."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    from gpuserve.cli import _parser

    assert _parser().parse_args(["start", "--allow-client-shm=false"]).allow_client_shm is False
    with running_server(repository=ModelRepository(), allow_client_shm=False) as server:
        module = httpclient if protocol == "http" else grpcclient
        client = module.InferenceServerClient(f"127.0.0.1:{server.ports[protocol]}")
        words = "Client shared memory is disabled. Start the server with '--allow-client-shm=true' to enable."
        with pytest.raises(InferenceServerException, match=words):
            client.register_system_shared_memory("dummy", "/dummy", 8)
        with pytest.raises(InferenceServerException, match=words):
            client.unregister_system_shared_memory("dummy")
        status = client.get_system_shared_memory_status()
        assert (status if protocol == "http" else list(status.regions)) == []
        client.close()


def test_server_metadata_claims_the_extensions_triton_claims(http):
    """qa/L0_server_status test_basic: cuda_shared_memory is among them on every machine, as in Triton."""
    import tritonclient.grpc as grpcclient

    with running_server(repository=ModelRepository()) as server:
        wanted = {"classification", "sequence", "model_repository", "schedule_policy", "model_configuration",
                  "system_shared_memory", "cuda_shared_memory", "binary_tensor_data", "parameters", "statistics",
                  "trace", "logging"}
        assert wanted <= set(http(server).get("/v2").json()["extensions"])
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}")
        assert wanted <= set(client.get_server_metadata().extensions)
        client.close()


def test_an_invalid_shared_memory_key_is_refused_in_later_tritons_words():
    """qa/L0_shared_memory test_register_invalid_shm_key (Triton 2.51 only failed to open such a key)."""
    from gpuserve.errors import InvalidInput
    from gpuserve.shared_memory import SharedMemoryRegistry

    for key in ("/", "///"):
        with pytest.raises(InvalidInput) as refused:
            SharedMemoryRegistry().register("my_test_shm_name", key, 0, 10000)
        assert str(refused.value).startswith(f"cannot register shared memory region 'my_test_shm_name' - "
                                             f"invalid shm key '{key}'")
