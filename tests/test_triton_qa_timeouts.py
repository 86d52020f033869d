"""tritonserver's test hooks that hold gRPC answers back (server/grpc/debug_delays.py), as qa L0_client_timeout
(client_non_infer_timeout_test.py: TRITONSERVER_SERVER_DELAY_GRPC_RESPONSE_SEC) and L0_decoupled
(test_one_to_multi_many: TRITONSERVER_DELAY_GRPC_RESPONSE) use them: gpuserve ignored both, so every
client_timeout on a non-inference call went unused (19 of qa's 20 cases failed) and the stream was not
stressed. Both gRPC transports serve the same servicer, so both are checked."""

import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

from conftest import running_server
from gpuserve import ModelRepository
from gpuserve.repository import DiskRepository

IDENTITY = """backend: "identity"
max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_INT32 dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ -1 ] } ]
"""
REPEAT = """backend: "python"
model_transaction_policy { decoupled: true }
input [ { name: "IN" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
"""
REPEAT_PY = """import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        for request in requests:  # IN responses at once, then the final flag
            count = int(pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()[0])
            sender = request.get_response_sender()
            for i in range(count):
                sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array([i], np.int32))]))
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
"""
TRANSPORTS = ["native", "grpcio"]


def _repository(root):
    (root / "identity" / "1").mkdir(parents=True)
    (root / "identity" / "config.pbtxt").write_text(IDENTITY)
    (root / "repeat" / "1").mkdir(parents=True)
    (root / "repeat" / "config.pbtxt").write_text(REPEAT)
    (root / "repeat" / "1" / "model.py").write_text(REPEAT_PY)
    return DiskRepository(root).populate(ModelRepository())


@pytest.fixture(params=TRANSPORTS)
def delayed_server(request, tmp_path, monkeypatch):
    monkeypatch.setenv("TRITONSERVER_SERVER_DELAY_GRPC_RESPONSE_SEC", "1")
    with running_server(repository=_repository(tmp_path), grpc_transport=request.param) as server:
        monkeypatch.delenv("TRITONSERVER_SERVER_DELAY_GRPC_RESPONSE_SEC")  # read at the start, not per call
        yield grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}")


def _identity_input():
    tensor = grpcclient.InferInput("INPUT0", [1, 1], "INT32")
    tensor.set_data_from_numpy(np.array([[10]], np.int32))
    return [tensor]


CALLS = {
    "is_server_live": lambda c, t: c.is_server_live(client_timeout=t),
    "is_model_ready": lambda c, t: c.is_model_ready("identity", client_timeout=t),
    "get_model_config": lambda c, t: c.get_model_config("identity", client_timeout=t),
    "get_model_repository_index": lambda c, t: c.get_model_repository_index(client_timeout=t),
    "get_inference_statistics": lambda c, t: c.get_inference_statistics("identity", client_timeout=t),
    "get_trace_settings": lambda c, t: c.get_trace_settings(client_timeout=t),
    "update_log_settings": lambda c, t: c.update_log_settings({}, client_timeout=t),
    "get_cuda_shared_memory_status": lambda c, t: c.get_cuda_shared_memory_status(client_timeout=t),
}


def _warm_up(client):
    """Inference is timed against the 1 s delay with 0.8 s: the channel's connect and the model's first run
    (slow on a loaded machine) happen here, untimed, so only an answer's own time is measured."""
    client.infer("identity", _identity_input(), client_timeout=30)


def test_every_non_inference_call_answers_late_and_a_short_client_timeout_expires(delayed_server):
    client = delayed_server
    for name, call in CALLS.items():
        with pytest.raises(InferenceServerException, match="Deadline Exceeded"):
            call(client, 0.2)
        started = time.monotonic()
        call(client, 5.0)  # a timeout long enough: answered, the server none the worse
        assert time.monotonic() - started >= 0.9, name


def test_inference_is_not_delayed_and_errors_wait_too(delayed_server):
    client = delayed_server
    _warm_up(client)
    started = time.monotonic()
    result = client.infer("identity", _identity_input(), client_timeout=0.8)
    assert result.as_numpy("OUTPUT0").tolist() == [[10]] and time.monotonic() - started < 0.8
    started = time.monotonic()
    with pytest.raises(InferenceServerException, match="Request for unknown model"):
        client.get_model_metadata("nothing", client_timeout=5.0)
    assert time.monotonic() - started >= 0.9  # as Triton: the error is answered after the delay too


def test_a_timed_out_registration_is_done_and_can_be_undone(delayed_server):
    client = delayed_server
    handle = shm.create_shared_memory_region("timeouts_in", "/gpuserve_timeouts_in", 32)
    try:
        with pytest.raises(InferenceServerException, match="Deadline Exceeded"):
            client.register_system_shared_memory("timeouts_in", "/gpuserve_timeouts_in", 32, client_timeout=0.2)
        assert "timeouts_in" in str(client.get_system_shared_memory_status(client_timeout=5.0))
        client.unregister_system_shared_memory(client_timeout=5.0)
        client.register_system_shared_memory("timeouts_in", "/gpuserve_timeouts_in", 32, client_timeout=5.0)
        client.unregister_system_shared_memory(client_timeout=5.0)
        assert "timeouts_in" not in str(client.get_system_shared_memory_status(client_timeout=5.0))
    finally:
        shm.destroy_shared_memory_region(handle)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_unset_hooks_wrap_nothing(tmp_path, monkeypatch, transport):
    monkeypatch.delenv("TRITONSERVER_SERVER_DELAY_GRPC_RESPONSE_SEC", raising=False)
    monkeypatch.delenv("TRITONSERVER_DELAY_GRPC_RESPONSE", raising=False)
    from gpuserve.server.grpc import debug_delays

    method = object()
    assert debug_delays.delayed(method, debug_delays.common_delay_s()) is method
    with running_server(repository=_repository(tmp_path), grpc_transport=transport) as server:
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}")
        assert client.is_server_live(client_timeout=30)  # the channel's connect, untimed (slow when loaded)
        assert client.is_server_live(client_timeout=0.5)


@pytest.mark.parametrize("value, seconds", [("2", 2), (" 3s", 3), ("1.9", 1), ("x", 0), ("-4", 0), ("", 0)])
def test_values_are_read_as_atoi_reads_them(monkeypatch, value, seconds):
    from gpuserve.server.grpc import debug_delays

    monkeypatch.setenv("TRITONSERVER_SERVER_DELAY_GRPC_RESPONSE_SEC", value)
    assert debug_delays.common_delay_s() == seconds


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_each_decoupled_response_on_a_stream_waits_its_turn(tmp_path, monkeypatch, transport):
    monkeypatch.setenv("TRITONSERVER_DELAY_GRPC_RESPONSE", "300")
    with running_server(repository=_repository(tmp_path), grpc_transport=transport) as server:
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}")
        arrivals = []
        client.start_stream(callback=lambda result, error: arrivals.append((time.monotonic(), result, error)))
        started = time.monotonic()
        for request_id in ("a", "b"):  # two requests' 3 responses each: six writes, one after another
            tensor = grpcclient.InferInput("IN", [1], "INT32")
            tensor.set_data_from_numpy(np.array([3], np.int32))
            client.async_stream_infer("repeat", [tensor], request_id=request_id)
        deadline = time.monotonic() + 30
        while len(arrivals) < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        client.stop_stream()
        assert [error for _, _, error in arrivals] == [None] * 6
        assert arrivals[-1][0] - started >= 6 * 0.3 * 0.9
        for request_id in ("a", "b"):
            outs = [int(r.as_numpy("OUT")[0]) for _, r, _ in arrivals if r.get_response().id == request_id]
            assert outs == [0, 1, 2]
        _warm_up(client)
        started = time.monotonic()
        client.infer("identity", _identity_input(), client_timeout=0.8)  # unary inference: no delay
        assert time.monotonic() - started < 0.8
