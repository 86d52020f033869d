"""Behaviours Triton's qa tests for the Python backend check (qa/L0_backend_python, L0_decoupled,
L0_request_cancellation, L0_grpc_state_cleanup), with models written here. Each qa file ran against
`gpuserve start` and Triton 2.51 side by side; these are the cases where gpuserve first answered differently.

- python_test.py test_bf16: a BF16 input refuses `as_numpy()` with Triton's message and reaches torch
  through DLPack as bfloat16; a bfloat16 tensor made with `from_dlpack` is answered as BF16.
- parameters/response_parameters_test.py: `InferenceResponse(parameters=...)` refuses what Triton's stub
  refuses (a non-dict, a non-str key, a value not bool/int/str) with its words; the model relays them.
- L0_grpc_state_cleanup's *_shutdownserver cases: once shutdown begins, a request arriving on an open gRPC
  stream is answered with an error (Triton: "Request for unknown model: 'NAME' has no available versions",
  its models unloading) instead of being run; in-flight requests still finish.
- L0_decoupled test_response_order: on one gRPC stream, a decoupled model's responses to two requests
  arrive interleaved as the model sends them (gpuserve held the second request's until the first ended).
- async_execute/concurrency_test.py: a decoupled model's `async def execute` runs in the background from its
  first request, so one instance's executes overlap (a shorter one answers first); an exception it raises
  after closing its streams is logged, as Triton's stub logs it.
- bls (qa python_models/bls): `InferenceRequest` without model_name, inputs or requested_output_names is a
  TypeError; a decoupled call's response iterator starts again once gone to its end and goes on when left
  midway; a BLS call from a process the model forked is answered as in process (it hung, then was refused);
  a request with too few inputs is refused for its count before its datatypes, as Triton core orders them;
  a model.py's `unittest.main("model")` finds its own tests, sees none of the server's flags, and a
  SystemExit from execute fails the request, not the server.
- bls (bls_init_error, bls_finalize_error, bls_model_loading): BLS from initialize or finalize is refused in
  Triton's words; `pb_utils.load_model` takes a config and files override, and works from the initialize
  of a model loaded through the repository API.
- L0_request_cancellation scheduler_test (oldest/direct sequence): cancelling a request that waits for its
  sequence's turn cancels the sequence: its other waiting requests answer CANCELLED, counted CANCELED.
"""

import builtins
import json
import queue
import textwrap
import threading
import time

import ml_dtypes
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import free_ports, running_server
from gpuserve import ModelRepository
from gpuserve.repository import DiskRepository

HEADER = "import json\nimport numpy as np\nimport triton_python_backend_utils as pb_utils\n\n"

MODELS = {
    # As qa's identity_bf16: the input goes to torch through DLPack and back; as_numpy() must fail on both.
    "identity_bf16": ('backend: "python"\nmax_batch_size: 64\n'
                      'input [ { name: "INPUT0" data_type: TYPE_BF16 dims: [ -1 ] } ]\n'
                      'output [ { name: "OUTPUT0" data_type: TYPE_BF16 dims: [ -1 ] } ]\n', """
        import torch

        def refuses_numpy(tensor):
            try:
                tensor.as_numpy()
            except pb_utils.TritonModelException as e:
                return "tensor dtype is bf16 and cannot be converted to numpy" in str(e).lower()
            return False

        class TritonPythonModel:
            def execute(self, requests):
                responses = []
                for request in requests:
                    given = pb_utils.get_input_tensor_by_name(request, "INPUT0")
                    t = torch.utils.dlpack.from_dlpack(given.to_dlpack())
                    assert t.dtype == torch.bfloat16, t.dtype
                    out = pb_utils.Tensor.from_dlpack("OUTPUT0", torch.utils.dlpack.to_dlpack(t * 2))
                    assert refuses_numpy(given) and refuses_numpy(out)
                    assert given.triton_dtype() == "BF16" and out.triton_dtype() == "BF16"
                    responses.append(pb_utils.InferenceResponse([out]))
                return responses
        """),
    # As qa's response_parameters: builds a response with the JSON it is sent, answers the refusal as an error.
    "response_parameters": ('backend: "python"\n'
                            'input [ { name: "P" data_type: TYPE_STRING dims: [ 1 ] } ]\n'
                            'output [ { name: "OUT" data_type: TYPE_STRING dims: [ 1 ] } ]\n', """
        class TritonPythonModel:
            def execute(self, requests):
                responses = []
                for request in requests:
                    given = json.loads(pb_utils.get_input_tensor_by_name(request, "P").as_numpy()[0])
                    if isinstance(given, dict):
                        given = {int(k) if k.isdigit() else k: v for k, v in given.items()}
                    try:
                        responses.append(pb_utils.InferenceResponse(
                            [pb_utils.Tensor("OUT", np.array([b"ok"], dtype=object))], parameters=given))
                    except Exception as e:
                        responses.append(pb_utils.InferenceResponse(
                            error=pb_utils.TritonError(str(e), pb_utils.TritonError.INVALID_ARG)))
                return responses
        """),
    # Request IN=0 answers, waits until request IN=1 has answered, then answers again (final).
    "interleave": ('backend: "python"\nmodel_transaction_policy { decoupled: true }\n'
                   'input [ { name: "IN" data_type: TYPE_INT32 dims: [ 1 ] } ]\n'
                   'output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] } ]\n', """
        import threading

        SECOND_SENT = threading.Event()
        FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL

        def answer(request):
            n = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
            sender = request.get_response_sender()
            out = pb_utils.InferenceResponse([pb_utils.Tensor("OUT", n)])
            if n[0] == 0:
                sender.send(out)
                SECOND_SENT.wait(30)
                sender.send(out, flags=FINAL)
            else:
                sender.send(out, flags=FINAL)
                SECOND_SENT.set()

        class TritonPythonModel:
            def execute(self, requests):
                for request in requests:
                    threading.Thread(target=answer, args=(request,), daemon=True).start()
                return None
        """),
    # A sequence model whose first request (START) waits for the test's gate, so later ones queue behind it.
    "seq_gate": ('backend: "python"\nmax_batch_size: 1\nsequence_batching { direct { } }\n'
                 'input [ { name: "IN" data_type: TYPE_INT32 dims: [ 1 ] } ]\n'
                 'output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] } ]\n', """
        import builtins, threading

        GATE = builtins.__dict__.setdefault("_qa_seq_gate", threading.Event())

        class TritonPythonModel:
            def execute(self, requests):
                GATE.wait(60)
                return [pb_utils.InferenceResponse([pb_utils.Tensor(
                    "OUT", pb_utils.get_input_tensor_by_name(r, "IN").as_numpy())]) for r in requests]
        """),
    # As qa's async_execute_decouple: an async decoupled execute sleeps WAIT s; -1 closes the stream and raises.
    "async_decoupled": ('backend: "python"\nmodel_transaction_policy { decoupled: true }\n'
                        'input [ { name: "WAIT" data_type: TYPE_FP32 dims: [ 1 ] } ]\n'
                        'output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 1 ] } ]\n', """
        import asyncio

        FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL

        class TritonPythonModel:
            async def execute(self, requests):
                wait = float(pb_utils.get_input_tensor_by_name(requests[0], "WAIT").as_numpy()[0])
                sender = requests[0].get_response_sender()
                if wait < 0:
                    sender.send(flags=FINAL)
                    raise ValueError("async_decoupled cannot wait a negative time")
                await asyncio.sleep(wait)
                sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array([wait], np.float32))]),
                            flags=FINAL)
        """),
    # Two inputs, for a request giving one of them in the wrong datatype.
    "two_inputs": ('backend: "python"\n'
                   'input [ { name: "A" data_type: TYPE_FP32 dims: [ 2 ] }, { name: "B" data_type: TYPE_FP32 dims: [ 2 ] } ]\n'
                   'output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 2 ] } ]\n', """
        class TritonPythonModel:
            def execute(self, requests):
                return [pb_utils.InferenceResponse([pb_utils.Tensor(
                    "OUT", pb_utils.get_input_tensor_by_name(r, "A").as_numpy())]) for r in requests]
        """),
    # N responses then a bare final flag, as the square_int32 example.
    "repeat": ('backend: "python"\nmodel_transaction_policy { decoupled: true }\n'
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
        """),
    # BLS as qa's bls model calls it: the iterator of a decoupled call, and a call from a forked process.
    "bls_caller": ('backend: "python"\n'
                   'input [ { name: "WHAT" data_type: TYPE_STRING dims: [ 1 ] } ]\n'
                   'output [ { name: "OUT" data_type: TYPE_STRING dims: [ 1 ] } ]\n', """
        import os
        import select

        def iterated():
            call = pb_utils.InferenceRequest(model_name="repeat", requested_output_names=["OUT"],
                                             inputs=[pb_utils.Tensor("IN", np.array([3], np.int32))])
            responses = call.exec(decoupled=True)
            first = [len(list(responses))]
            for _ in responses:  # a finished iterator starts again from the first response
                pass
            again = len(list(responses))
            responses = call.exec(decoupled=True)
            for i, _ in enumerate(responses):
                if i == 1:
                    break
            next(responses)
            rest = len(list(responses))  # one left midway goes on from there
            try:
                next(responses)
                ended = False
            except StopIteration:
                ended = True
            return {"first": first[0], "again": again, "rest": rest, "ended": ended}

        def forked():
            read, write = os.pipe()
            pid = os.fork()
            if pid == 0:
                try:
                    answer = pb_utils.InferenceRequest(model_name="repeat", requested_output_names=["OUT"],
                                                       inputs=[pb_utils.Tensor("IN", np.array([1], np.int32))]).exec()
                    os.write(write, (answer.error().message() if answer.has_error() else "answered").encode())
                except Exception as e:
                    os.write(write, f"{type(e).__name__}: {e}".encode())
                os._exit(0)
            os.close(write)
            if not select.select([read], [], [], 30)[0]:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                return "hung"
            said = os.read(read, 4096).decode()
            os.waitpid(pid, 0)
            return said

        def incomplete():
            refused = []
            for kwargs in ({"inputs": [], "requested_output_names": []}, {"model_name": "m", "inputs": []},
                           {"model_name": "m", "requested_output_names": []}):
                try:
                    pb_utils.InferenceRequest(**kwargs)
                except TypeError:
                    refused.append(True)
            return len(refused)

        class TritonPythonModel:
            def execute(self, requests):
                what = pb_utils.get_input_tensor_by_name(requests[0], "WHAT").as_numpy()[0].decode()
                said = {"iterated": iterated, "forked": forked, "incomplete": incomplete}[what]()
                return [pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array([json.dumps(said).encode()],
                                                                                    dtype=object))])]
        """),
    # As qa's argument_validation: wrong argument types are TypeErrors (pybind11's), a None tensor in a list and a
    # bad correlation ID are Triton's own exceptions; answers what was not refused as expected.
    "argument_validation": ('backend: "python"\n'
                            'input [ { name: "IN" data_type: TYPE_INT32 dims: [ 1 ] } ]\n'
                            'output [ { name: "OUT" data_type: TYPE_STRING dims: [ 1 ] } ]\n', """
        T = pb_utils.Tensor("IN", np.array([1], np.int32))
        R, E = pb_utils.InferenceRequest, pb_utils.TritonModelException
        REQ = dict(model_name="m", inputs=[T], requested_output_names=["o"])
        CASES = {
            "inputs=[None]": (E, lambda: R(**{**REQ, "inputs": [None]})),
            "inputs=None": (TypeError, lambda: R(**{**REQ, "inputs": None})),
            "model_name=None": (TypeError, lambda: R(**{**REQ, "model_name": None})),
            "outputs=[None]": (TypeError, lambda: R(**{**REQ, "requested_output_names": [None]})),
            "correlation_id=None": (TypeError, lambda: R(**REQ, correlation_id=None)),
            "correlation_id=1.5": (E, lambda: R(**REQ, correlation_id=1.5)),
            "request_id=None": (TypeError, lambda: R(**REQ, request_id=None)),
            "model_version=None": (TypeError, lambda: R(**REQ, model_version=None)),
            "flags=None": (TypeError, lambda: R(**REQ, flags=None)),
            "response [None]": (E, lambda: pb_utils.InferenceResponse(output_tensors=[None])),
            "response None": (TypeError, lambda: pb_utils.InferenceResponse(output_tensors=None)),
            "tensor name None": (TypeError, lambda: pb_utils.Tensor(None, np.array([1]))),
            "tensor data None": (TypeError, lambda: pb_utils.Tensor("X", None)),
            "from_dlpack None": (E, lambda: pb_utils.Tensor.from_dlpack("X", None)),
            "from_dlpack ''": (E, lambda: pb_utils.Tensor.from_dlpack("", None)),
            "log level None": (TypeError, lambda: pb_utils.Logger.log("m", None)),
            "log level 1": (TypeError, lambda: pb_utils.Logger.log("m", 1)),
            "log_info None": (TypeError, lambda: pb_utils.Logger.log_info(None)),
        }

        def missed():
            wrong = []
            for case, (expected, call) in CASES.items():
                try:
                    call()
                    wrong.append(case + ": nothing raised")
                except expected:
                    pass
                except Exception as exc:
                    wrong.append(f"{case}: {type(exc).__name__}")
            accepted = [pb_utils.InferenceRequest(**REQ, correlation_id="id-5").correlation_id(),
                        R(model_name="m", inputs=[], requested_output_names=[]).correlation_id(),
                        pb_utils.Logger.log("fine", pb_utils.Logger.LogLevel.WARNING),
                        len(pb_utils.InferenceResponse(output_tensors=[]).output_tensors())]
            return wrong, accepted

        class TritonPythonModel:
            def execute(self, requests):
                said = json.dumps(missed())
                return [pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array([said.encode()], dtype=object))])
                        for _ in requests]
        """),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("triton_qa_python")
    for name, (config, code) in MODELS.items():
        (root / name / "1").mkdir(parents=True)
        (root / name / "config.pbtxt").write_text(config)
        (root / name / "1" / "model.py").write_text(HEADER + textwrap.dedent(code))
    with running_server(repository=DiskRepository(root).populate(ModelRepository())) as running:
        yield running


def _http(server):
    return httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}")


def test_bf16_refuses_as_numpy_and_round_trips_through_dlpack(server):
    pytest.importorskip("torch")
    data = np.array([[1.5, -2.0, 3.25]], dtype=ml_dtypes.bfloat16)
    tensor = httpclient.InferInput("INPUT0", list(data.shape), "BF16").set_data_from_numpy(data)
    with _http(server) as client:
        result = client.infer("identity_bf16", [tensor])
    assert result.get_response()["outputs"][0]["datatype"] == "BF16"
    out = result.as_numpy("OUTPUT0")
    assert out.dtype == data.dtype
    np.testing.assert_array_equal(out.astype(np.float32), data.astype(np.float32) * 2)


@pytest.mark.parametrize("params, refusal", [
    ([], "Expect dict, got <class 'list'>"),
    ({"1": "int key"}, "Expect parameters keys to have type str, found type <class 'int'>"),
    ({"int": 2, "float": 0.5}, "Expect parameters values to have type bool/int/str, found type <class 'float'>"),
    ({"null": None}, "Expect parameters values to have type bool/int/str, found type <class 'NoneType'>"),
    ({"list": ["x"]}, "Expect parameters values to have type bool/int/str, found type <class 'list'>"),
])
def test_response_parameters_refused_in_triton_s_words(server, params, refusal):
    tensor = httpclient.InferInput("P", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([json.dumps(params).encode()], dtype=object))
    with _http(server) as client, pytest.raises(InferenceServerException) as caught:
        client.infer("response_parameters", [tensor])
    assert refusal in str(caught.value) and caught.value.status() == "400"


def test_response_parameters_of_bool_int_str_are_answered(server):
    tensor = httpclient.InferInput("P", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([json.dumps({"b": True, "i": 3, "s": "x"}).encode()], dtype=object))
    with _http(server) as client:
        result = client.infer("response_parameters", [tensor])
    assert result.get_response()["parameters"] == {"b": True, "i": 3, "s": "x"}


def test_a_stream_takes_no_new_request_once_the_server_is_stopping(tmp_path):
    root = tmp_path / "repo"
    (root / "echo" / "1").mkdir(parents=True)
    (root / "echo" / "config.pbtxt").write_text(
        'backend: "python"\ninput [ { name: "P" data_type: TYPE_STRING dims: [ 1 ] } ]\n'
        'output [ { name: "OUT" data_type: TYPE_STRING dims: [ 1 ] } ]\n')
    (root / "echo" / "1" / "model.py").write_text(HEADER + textwrap.dedent("""
        class TritonPythonModel:
            def execute(self, requests):
                return [pb_utils.InferenceResponse([pb_utils.Tensor(
                    "OUT", pb_utils.get_input_tensor_by_name(r, "P").as_numpy())]) for r in requests]
        """))
    answers = queue.Queue()
    tensor = grpcclient.InferInput("P", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([b"x"], dtype=object))
    with running_server(repository=DiskRepository(root).populate(ModelRepository())) as running:
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{running.ports['grpc']}")
        client.start_stream(callback=lambda result, error: answers.put((result, error)))
        client.async_stream_infer("echo", [tensor], request_id="before")
        result, error = answers.get(timeout=30)
        assert error is None and result.get_response().id == "before"
        running.dataplane.stopping = True  # what the server sets when a shutdown begins
        client.async_stream_infer("echo", [tensor], request_id="after")
        result, error = answers.get(timeout=30)
        client.stop_stream()
        client.close()
        running.dataplane.stopping = False
    assert result is None and "Request for unknown model: 'echo' has no available versions" in str(error)
    assert running.dataplane.stopping  # set again by the server's own shutdown


def test_decoupled_responses_of_two_requests_on_one_stream_arrive_interleaved(server):
    answers = queue.Queue()
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}")
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    for i in (0, 1):
        tensor = grpcclient.InferInput("IN", [1], "INT32")
        tensor.set_data_from_numpy(np.array([i], dtype=np.int32))
        client.async_stream_infer("interleave", [tensor], request_id=str(i))
    got = []
    for _ in range(3):
        result, error = answers.get(timeout=60)
        assert error is None, error
        got.append(result.get_response().id)
    client.stop_stream()
    client.close()
    assert got == ["0", "1", "0"]


def _until(condition, what):
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.02)


def test_cancelling_a_queued_sequence_request_cancels_the_sequence_s_other_queued_ones(server):
    gate = builtins.__dict__.setdefault("_qa_seq_gate", threading.Event())
    model = server.dataplane.repository.get_model("seq_gate")
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}")
    answers = {name: queue.Queue() for name in ("start", "cancelled", "queued")}
    tensor = grpcclient.InferInput("IN", [1, 1], "INT32")
    tensor.set_data_from_numpy(np.array([[7]], dtype=np.int32))
    calls = {}
    for name in answers:
        calls[name] = client.async_infer("seq_gate", [tensor], sequence_id=42, sequence_start=name == "start",
                                         callback=lambda result, error, q=answers[name]: q.put((result, error)))
        _until(lambda n=len(calls): sum(s.pending for s in model.sequences.active.values()) == n, f"{name} sent")
    calls["cancelled"].cancel()
    _until(lambda: all(s.cancelled for s in model.sequences.active.values()), "the sequence cancelled")
    gate.set()
    result, error = answers["start"].get(timeout=60)
    assert error is None and result.as_numpy("OUT").tolist() == [[7]]
    result, error = answers["queued"].get(timeout=60)
    assert result is None and error.status() == "StatusCode.CANCELLED"
    _until(lambda: sum(server.dataplane.stats_of(model).fail_reasons.values()) >= 2, "both failures counted")
    assert server.dataplane.stats_of(model).fail_reasons["CANCELED"] == 2
    client.close()


def test_a_decoupled_async_execute_overlaps_the_next_one_and_its_error_is_logged(server, caplog):
    answers = queue.Queue()
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}")
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    for wait in (3.0, 0.2, -1.0):
        tensor = grpcclient.InferInput("WAIT", [1], "FP32")
        tensor.set_data_from_numpy(np.array([wait], dtype=np.float32))
        client.async_stream_infer("async_decoupled", [tensor], request_id=str(wait))
    got = []
    for _ in range(2):
        result, error = answers.get(timeout=60)
        assert error is None, error
        got.append(result.get_response().id)
    client.stop_stream()
    client.close()
    assert got == ["0.2", "3.0"]
    _until(lambda: "ValueError: async_decoupled cannot wait a negative time" in caplog.text, "the error logged")


def _bls(server, what):
    tensor = httpclient.InferInput("WHAT", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([what.encode()], dtype=object))
    with _http(server) as client:
        return json.loads(client.infer("bls_caller", [tensor]).as_numpy("OUT")[0])


def test_a_decoupled_bls_iterator_restarts_when_finished_and_resumes_when_left_midway(server):
    assert _bls(server, "iterated") == {"first": 4, "again": 4, "rest": 1, "ended": True}


def test_an_incomplete_bls_request_is_a_type_error(server):
    assert _bls(server, "incomplete") == 3


def test_a_bls_call_from_a_forked_process_is_answered_as_in_process(server):
    said = _bls(server, "forked")  # a decoupled callee without decoupled=True: the in-process refusal
    assert said.startswith("Model repeat - Error when running inference: Model repeat is using the decoupled. "
                           "The current BLS request call doesn't support models"), said


def test_too_few_inputs_are_refused_for_their_count_before_their_datatype(server):
    tensor = httpclient.InferInput("A", [2], "FP64").set_data_from_numpy(np.zeros(2))
    with _http(server) as client, pytest.raises(InferenceServerException) as caught:
        client.infer("two_inputs", [tensor])
    assert "expected 2 inputs but got 1 inputs for model 'two_inputs'. Got input(s) ['A'], but missing required " \
           "input(s) ['B']" in str(caught.value)


def test_a_model_running_unittest_main_finds_its_tests_and_a_system_exit_fails_only_its_request(tmp_path):
    root = tmp_path / "repo"
    (root / "selftest" / "1").mkdir(parents=True)
    (root / "selftest" / "config.pbtxt").write_text(
        'backend: "python"\ninput [ { name: "EXIT" data_type: TYPE_BOOL dims: [ 1 ] } ]\n'
        'output [ { name: "OUT" data_type: TYPE_STRING dims: [ 1 ] } ]\n')
    (root / "selftest" / "1" / "model.py").write_text(HEADER + textwrap.dedent("""
        import sys
        import unittest

        class SelfTest(unittest.TestCase):
            def test_itself(self):
                self.assertTrue(True)

        class TritonPythonModel:
            def execute(self, requests):
                if pb_utils.get_input_tensor_by_name(requests[0], "EXIT").as_numpy()[0]:
                    sys.exit(3)
                run = unittest.main("model", exit=False).result
                said = json.dumps([run.testsRun, run.wasSuccessful(), sys.argv[1:]])
                return [pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array([said.encode()], dtype=object))])]
        """))
    import subprocess
    import sys
    import urllib.request

    http, grpc, metrics = free_ports(3)
    server = subprocess.Popen([sys.executable, "-m", "gpuserve.cli", "start", f"--model-repository={root}",
                               "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def ready():
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/ready", timeout=1).status == 200
            except OSError:
                return False
        _until(ready, "the server ready")
        with httpclient.InferenceServerClient(f"127.0.0.1:{http}") as client:
            def ask(leave):
                tensor = httpclient.InferInput("EXIT", [1], "BOOL").set_data_from_numpy(np.array([leave]))
                return client.infer("selftest", [tensor])
            with pytest.raises(InferenceServerException, match="SystemExit: 3"):
                ask(True)
            assert json.loads(ask(False).as_numpy("OUT")[0]) == [1, True, []]
    finally:
        server.terminate()
        server.wait(30)


def test_bls_in_initialize_is_refused_and_load_model_takes_an_override_from_initialize(tmp_path):
    root = tmp_path / "repo"
    io = ('input [ { name: "IN" data_type: TYPE_INT32 dims: [ 1 ] } ]\n'
          'output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] } ]\n')
    execute = """
            def execute(self, requests):
                return [pb_utils.InferenceResponse([pb_utils.Tensor(
                    "OUT", pb_utils.get_input_tensor_by_name(r, "IN").as_numpy())]) for r in requests]
        """
    override = json.dumps({"backend": "python", "parameters": {"from": {"string_value": "initialize"}},
                           "input": [{"name": "IN", "data_type": "TYPE_INT32", "dims": [1]}],
                           "output": [{"name": "OUT", "data_type": "TYPE_INT32", "dims": [1]}]})
    models = {
        "target": "",
        "bls_in_init": """
            def initialize(self, args):
                pb_utils.InferenceRequest(model_name="target", requested_output_names=["OUT"],
                                          inputs=[pb_utils.Tensor("IN", np.array([1], np.int32))]).exec()
        """,
        "loader": f"""
            def initialize(self, args):
                pb_utils.load_model("target", config={override!r})
        """,
    }
    models = {name: "class TritonPythonModel:\n" + textwrap.indent(textwrap.dedent(init) + textwrap.dedent(execute),
                                                                      "    ") for name, init in models.items()}
    for name, code in models.items():
        (root / name / "1").mkdir(parents=True)
        (root / name / "config.pbtxt").write_text('backend: "python"\n' + io)
        (root / name / "1" / "model.py").write_text(HEADER + code)
    with running_server(repository=DiskRepository(root).populate(ModelRepository(), [])) as running:
        with _http(running) as client:
            with pytest.raises(InferenceServerException) as caught:
                client.load_model("bls_in_init")
            assert "BLS is only supported during the 'execute' function." in str(caught.value)
            client.load_model("loader")
            assert client.get_model_config("target")["parameters"] == {"from": {"string_value": "initialize"}}


def test_a_model_loaded_at_start_up_loads_another_from_its_initialize(tmp_path):
    """qa bls_model_loading started with --load-model: the server's loop was not yet known to the model while
    it loaded, so load_model from initialize failed ('the server's event loop is not running yet')."""
    root = tmp_path / "repo"
    io = ('input [ { name: "IN" data_type: TYPE_INT32 dims: [ 1 ] } ]\n'
          'output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] } ]\n')
    loads = 'pb_utils.load_model("target"); assert pb_utils.is_model_ready("target")'
    for name, init in (("target", "pass"), ("loader", loads)):
        (root / name / "1").mkdir(parents=True)
        (root / name / "config.pbtxt").write_text('backend: "python"\n' + io)
        (root / name / "1" / "model.py").write_text(HEADER + textwrap.dedent(f"""
            class TritonPythonModel:
                def initialize(self, args):
                    {init}

                def execute(self, requests):
                    return [pb_utils.InferenceResponse([pb_utils.Tensor(
                        "OUT", pb_utils.get_input_tensor_by_name(r, "IN").as_numpy())]) for r in requests]
            """))
    with running_server(repository=DiskRepository(root).populate(ModelRepository(), ["loader"])) as running:
        with _http(running) as client:
            assert client.is_model_ready("loader") and client.is_model_ready("target")


def test_a_finalize_that_never_returns_is_cut_off_by_the_exit_timeout(tmp_path):
    """qa io's decoupled models wait in finalize for response threads that died: tritonserver gives up after
    --exit-timeout-secs and exits 1; gpuserve logged so but its process waited for the finalize for ever."""
    import signal
    import subprocess
    import sys
    import urllib.request

    (tmp_path / "stuck" / "1").mkdir(parents=True)
    (tmp_path / "stuck" / "config.pbtxt").write_text(
        'backend: "python"\ninput [ { name: "IN" data_type: TYPE_INT32 dims: [ 1 ] } ]\n'
        'output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] } ]\n')
    (tmp_path / "stuck" / "1" / "model.py").write_text(HEADER + textwrap.dedent("""
        import time

        class TritonPythonModel:
            def execute(self, requests):
                return []

            def finalize(self):
                while True:
                    time.sleep(0.1)
        """))
    http, grpc, metrics = free_ports(3)
    server = subprocess.Popen([sys.executable, "-m", "gpuserve.cli", "start", f"--model-repository={tmp_path}",
                               "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics),
                               "--exit-timeout-secs=2"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        def ready():
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/ready", timeout=1).status == 200
            except OSError:
                return False
        _until(ready, "the server ready")
        server.send_signal(signal.SIGTERM)
        _, log = server.communicate(timeout=30)
        assert server.returncode == 1 and "Exit timeout expired. Exiting immediately." in log
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_pb_utils_arguments_of_the_wrong_type_are_refused_as_triton_s_bindings_refuse_them(server):
    with _http(server) as client:
        tensor = httpclient.InferInput("IN", [1], "INT32").set_data_from_numpy(np.array([1], np.int32))
        said = json.loads(client.infer("argument_validation", [tensor]).as_numpy("OUT")[0])
    assert said == [[], ["id-5", 0, None, 0]]


def test_a_load_names_its_files_as_triton_joins_them_and_refuses_shell_characters_in_a_python_model_s_name(tmp_path):
    """qa model_control's ModelIDValidationTest: 'file:/1/model.py' is the model's 1/model.py (Triton joins the
    path to the model folder; gpuserve refused a leading '/'), and a Python model whose name holds a shell
    character fails to load with the Python backend's 'Invalid stub name: contains invalid characters'."""
    import base64

    code = HEADER + textwrap.dedent("""
        class TritonPythonModel:
            def execute(self, requests):
                print('Hello from NAME')  # as qa's: a quote in the name makes this file unparsable
                return [pb_utils.InferenceResponse([pb_utils.get_input_tensor_by_name(r, "INPUT0")]) for r in requests]
        """)

    def load(name):
        config = {"name": name, "backend": "python", "max_batch_size": 4,
                  "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [-1]}],
                  "output": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [-1]}]}
        body = {"parameters": {"config": json.dumps(config),
                               "file:/1/model.py": base64.b64encode(code.replace("NAME", name).encode()).decode()}}
        return httpx.post(f"http://127.0.0.1:{running.ports['http']}/v2/repository/models/{name}/load", json=body)

    import httpx

    (tmp_path / "repo").mkdir()
    with running_server(repository=DiskRepository(tmp_path / "repo").populate(ModelRepository(), [])) as running:
        assert load("model-with-hyphens").status_code == 200
        with _http(running) as client:
            assert client.is_model_ready("model-with-hyphens")
        for name in ("model;test", "model|test", "model$test", "model\\test", "model'test'", "model!test"):
            answer = load(name)
            assert answer.status_code == 400 and "Invalid stub name: contains invalid characters" in answer.text, name


def test_is_ready_must_answer_a_bool_and_a_slow_check_is_waited_on_by_the_next_question(tmp_path, monkeypatch):
    """qa model_readiness TestUserDefinedModelReadinessFunction: is_ready() returning "ready" is NOT READY
    (gpuserve took any truthy answer); a check slower than the limit answers NOT READY, and the next question
    waits for that same check and answers READY (gpuserve started a new check each time, so never READY).
    A 2 s limit and a 3 s check leave a loaded machine 1 s either way (0.6 s and 0.9 s left 0.3 s: a CI-like run
    on one busy core saw the second question answered before the check's thread got to end)."""
    import gpuserve.triton_python as triton_python

    monkeypatch.setattr(triton_python, "READY_CHECK_S", 2.0)
    io = ('input [ { name: "IN" data_type: TYPE_INT32 dims: [ 1 ] } ]\n'
          'output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] } ]\n')
    for name, body in (("word", 'return "ready"'), ("slow", "time.sleep(3.0); return True")):
        (tmp_path / name / "1").mkdir(parents=True)
        (tmp_path / name / "config.pbtxt").write_text('backend: "python"\n' + io)
        (tmp_path / name / "1" / "model.py").write_text(HEADER + textwrap.dedent(f"""
            import time

            class TritonPythonModel:
                def execute(self, requests):
                    return [pb_utils.InferenceResponse([pb_utils.Tensor(
                        "OUT", pb_utils.get_input_tensor_by_name(r, "IN").as_numpy())]) for r in requests]

                def is_ready(self):
                    {body}
            """))
    with running_server(repository=DiskRepository(tmp_path).populate(ModelRepository())) as running:
        with _http(running) as client:
            assert not client.is_model_ready("word")
            for _ in range(2):
                assert not client.is_model_ready("slow")  # the check runs past 2 s
                assert client.is_model_ready("slow")  # the same check, ended meanwhile


def test_an_execution_env_tarball_is_unpacked_once_checked_and_its_packages_importable(tmp_path, caplog):
    """qa env: EXECUTION_ENV_PATH ($$TRITON_MODEL_DIRECTORY/...) was ignored: a model needing a package from
    its environment failed to import it, and a tarball with '../' or absolute entries loaded without a word.
    Now it is unpacked once ("Extracting Python execution env"), its entries checked first, as Triton."""
    import io as iolib
    import logging
    import sys
    import tarfile

    caplog.set_level(logging.DEBUG, logger="gpuserve")
    site = f"lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages"
    probe = f"gpuserve_env_probe_{id(tmp_path)}"

    def tarball(path, entries):
        with tarfile.open(path, "w:gz") as archive:
            for name, body in entries.items():
                info = tarfile.TarInfo(name)
                if isinstance(body, str):  # a link, as a venv's bin/python3 to the interpreter's absolute path
                    info.type, info.linkname = tarfile.SYMTYPE, body
                    archive.addfile(info)
                    continue
                info.size = len(body)
                archive.addfile(info, iolib.BytesIO(body))

    io = ('input [ { name: "IN" data_type: TYPE_INT32 dims: [ 1 ] } ]\n'
          'output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] } ]\n')
    env = ('parameters: { key: "EXECUTION_ENV_PATH" value: '
           '{ string_value: "$$TRITON_MODEL_DIRECTORY/env.tar.gz" } }\n')
    marker = tmp_path / "outside.txt"
    for name, entries in (("uses_env", {f"{site}/{probe}.py": b"ANSWER = 42\n", "bin/python3": sys.executable}),
                          ("slips", {"../../../" + str(marker).lstrip("/"): b"x"}),
                          ("absolute", {str(marker): b"x"})):
        (tmp_path / name / "1").mkdir(parents=True)
        (tmp_path / name / "config.pbtxt").write_text('backend: "python"\n' + io + env)
        tarball(tmp_path / name / "env.tar.gz", entries)
        (tmp_path / name / "1" / "model.py").write_text(HEADER + textwrap.dedent(f"""
            class TritonPythonModel:
                def initialize(self, args):
                    import {probe}
                    self.answer = {probe}.ANSWER

                def execute(self, requests):
                    return [pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array([self.answer], np.int32))])
                            for r in requests]
            """))
    with running_server(repository=DiskRepository(tmp_path).populate(ModelRepository())) as running:
        with _http(running) as client:
            tensor = httpclient.InferInput("IN", [1], "INT32").set_data_from_numpy(np.array([1], np.int32))
            assert client.infer("uses_env", [tensor]).as_numpy("OUT").tolist() == [42]
            assert not client.is_model_ready("slips") and not client.is_model_ready("absolute")
            client.load_model("uses_env")  # the tarball unchanged: not unpacked again
    assert not marker.exists()
    log = caplog.text
    assert log.count("Extracting Python execution env") == 3  # each tarball once
    assert "Path contains '..'" in log and "Path is absolute" in log


def test_a_python_model_without_its_model_py_fails_the_start_in_triton_s_words(tmp_path):
    """qa L0_backend_python test.sh greps the log of a start whose model has no model.py for the stub's
    "Failed to preinitialize Python stub: Python model file not found in 'PATH'" and core's
    "failed to load 'NAME'" (gpuserve said "PATH does not exist" and logged no such line at start-up)."""
    import subprocess
    import sys

    (tmp_path / "non_existent_model" / "1").mkdir(parents=True)
    (tmp_path / "non_existent_model" / "config.pbtxt").write_text(
        'backend: "python"\ninput [ { name: "IN" data_type: TYPE_INT32 dims: [ 1 ] } ]\n'
        'output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] } ]\n')
    http, grpc, metrics = free_ports(3)
    ended = subprocess.run([sys.executable, "-m", "gpuserve.cli", "start", f"--model-repository={tmp_path}",
                            "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics)],
                           capture_output=True, text=True, timeout=120)
    wanted = ("Failed to preinitialize Python stub: Python model file not found in "
              f"'{tmp_path}/non_existent_model/1/model.py'")
    assert ended.returncode != 0 and wanted in ended.stderr
    assert "failed to load 'non_existent_model' version 1: " in ended.stderr


def test_a_model_py_imports_files_beside_it_relatively_too(tmp_path):
    """qa L0_backend_python test.sh multi_file: model.py does `import file1` and `from . import file2`, as
    Triton's stub imports it as '<version>.model'; the relative import failed ('attempted relative import
    with no known parent package') and the model did not load."""
    (tmp_path / "multi_file" / "1").mkdir(parents=True)
    (tmp_path / "multi_file" / "config.pbtxt").write_text(
        'backend: "python"\ninput [ { name: "IN" data_type: TYPE_INT32 dims: [ 1 ] } ]\n'
        'output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] } ]\n')
    (tmp_path / "multi_file" / "1" / "file1.py").write_text("ONE = 1\n")
    (tmp_path / "multi_file" / "1" / "file2.py").write_text("TWO = 2\n")
    (tmp_path / "multi_file" / "1" / "model.py").write_text(HEADER + textwrap.dedent("""
        import file1
        from . import file2

        class TritonPythonModel:
            def execute(self, requests):
                from . import file2 as again  # at run time too
                return [pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array(
                    [file1.ONE + file2.TWO + again.TWO], np.int32))]) for r in requests]
        """))
    with running_server(repository=DiskRepository(tmp_path).populate(ModelRepository())) as running:
        with _http(running) as client:
            tensor = httpclient.InferInput("IN", [1], "INT32").set_data_from_numpy(np.array([1], np.int32))
            assert client.infer("multi_file", [tensor]).as_numpy("OUT").tolist() == [5]
