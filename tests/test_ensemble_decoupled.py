"""An ensemble with a decoupled step (preprocess -> generator -> postprocess, TensorRT-LLM's layout) is
decoupled itself, as in Triton 2.51: unary calls are refused with Triton's words, a stream gets one
response per response of the step with the rest of the graph run on each, and a step's error ends the
request's responses under "in ensemble 'NAME', ". A response is final only when no step is still answering
once it is complete, so one that comes straight from a decoupled step is final only if it carried the flag.
Graphs that join tensors of different decoupled steps (two side by side, or one and the ensemble's inputs)
are refused, as Triton refuses them at load."""

import queue
import textwrap

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import running_server
from gpuserve import ModelRepository
from gpuserve.repository import DiskRepository

REPEAT = textwrap.dedent("""
    import threading
    import numpy as np
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        def execute(self, requests):
            for request in requests:
                count = int(pb_utils.get_input_tensor_by_name(request, "N").as_numpy().ravel()[0])
                threading.Thread(target=self.respond, args=(request.get_response_sender(), count)).start()
            return None

        def respond(self, sender, count):
            for i in range(count):
                sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array([i], np.int32))]))
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
    """)
PLUS = textwrap.dedent("""
    import numpy as np
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        def execute(self, requests):
            responses = []
            for request in requests:
                x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
                if int(x.ravel()[0]) == 5:
                    responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError("five is bad")))
                else:
                    responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", x + 100)]))
            return responses
    """)
REPEAT_FLAGGED = REPEAT.replace(
    "sender.send(pb_utils.InferenceResponse([pb_utils.Tensor(\"OUT\", np.array([i], np.int32))]))",
    "sender.send(pb_utils.InferenceResponse([pb_utils.Tensor(\"OUT\", np.array([i], np.int32))]),\n"
    "                            flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL if i == count - 1 else 0)"
).replace("        sender.send(flags=", "        if not count:\n            sender.send(flags=")
assert REPEAT_FLAGGED != REPEAT
I32 = 'data_type: TYPE_INT32 dims: [ 1 ]'


def _pairs(mapping):
    return ", ".join('{ key: "%s" value: "%s" }' % item for item in mapping.items())


def _ensemble(outputs, *steps):
    """An ensemble of IN (INT32 [1]) whose steps are (model, {input: tensor}, {output: tensor}); the maps are
    written in list form, as Triton accepts them."""
    text = ", ".join('{ model_name: "%s" model_version: -1 input_map [ %s ] output_map [ %s ] }'
                     % (model, _pairs(ins), _pairs(outs)) for model, ins, outs in steps)
    tensors = ", ".join('{ name: "%s" %s }' % (name, I32) for name in outputs)
    return ('platform: "ensemble"\nmax_batch_size: 0\ninput [ { name: "IN" %s } ]\noutput [ %s ]\n'
            "ensemble_scheduling { step [ %s ] }\n" % (I32, tensors, text))


CONFIGS = {
    "repeat": """backend: "python"
max_batch_size: 0
model_transaction_policy { decoupled: true }
input [ { name: "N" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
""",
    "plus": """backend: "python"
max_batch_size: 0
input [ { name: "X" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "Y" data_type: TYPE_INT32 dims: [ 1 ] } ]
""",
    "chain": """platform: "ensemble"
max_batch_size: 0
input [ { name: "IN" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "RESULT" data_type: TYPE_INT32 dims: [ 1 ] }, { name: "MID" data_type: TYPE_INT32 dims: [ 1 ] } ]
ensemble_scheduling { step [
  { model_name: "repeat" model_version: -1 input_map { key: "N" value: "IN" } output_map { key: "OUT" value: "MID" } },
  { model_name: "plus" model_version: -1 input_map { key: "X" value: "MID" } output_map { key: "Y" value: "RESULT" } }
] }
""",
    "plain": """platform: "ensemble"
max_batch_size: 0
input [ { name: "IN" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "RESULT" data_type: TYPE_INT32 dims: [ 1 ] } ]
ensemble_scheduling { step [
  { model_name: "plus" model_version: -1 input_map { key: "X" value: "IN" } output_map { key: "Y" value: "RESULT" } }
] }
""",
    # one decoupled step after another: each response of the first runs the second
    "serial": _ensemble(["RESULT"], ("repeat", {"N": "IN"}, {"OUT": "MID"}), ("repeat", {"N": "MID"}, {"OUT": "RESULT"})),
    "last": _ensemble(["RESULT"], ("repeat", {"N": "IN"}, {"OUT": "RESULT"})),
    "last_flagged": _ensemble(["RESULT"], ("repeat_flagged", {"N": "IN"}, {"OUT": "RESULT"})),
    # refused as Triton refuses them: tensors of different decoupled steps (or of one and the inputs) joined
    "parallel": _ensemble(["A", "B"], ("repeat", {"N": "IN"}, {"OUT": "A"}), ("repeat_flagged", {"N": "IN"}, {"OUT": "B"})),
    "parallel_joined": _ensemble(["C"], ("repeat", {"N": "IN"}, {"OUT": "A"}), ("repeat_flagged", {"N": "IN"}, {"OUT": "B"}),
                                 ("add", {"A": "A", "B": "B"}, {"C": "C"})),
    "serial_both": _ensemble(["MID", "RESULT"], ("repeat", {"N": "IN"}, {"OUT": "MID"}),
                             ("repeat", {"N": "MID"}, {"OUT": "RESULT"})),
    "with_input": _ensemble(["C"], ("repeat", {"N": "IN"}, {"OUT": "A"}), ("add", {"A": "A", "B": "IN"}, {"C": "C"})),
    "unused": _ensemble(["A"], ("repeat", {"N": "IN"}, {"OUT": "A"}), ("repeat_flagged", {"N": "IN"}, {"OUT": "B"})),
}
# a slow step with a short queue after the generator: each response's flow reaches it at once (as in Triton), so
# its queue fills; with max_inflight_requests 1 the flows go one at a time and all are answered
SLOW_STEP = ('backend: "python"\nmax_batch_size: 1\n'
             f'input [ {{ name: "X" {I32} }} ]\noutput [ {{ name: "Y" {I32} }} ]\n'
             "dynamic_batching { default_queue_policy { max_queue_size: 2 } }\n")
SLOW = ("import time\nimport triton_python_backend_utils as pb_utils\n\nclass TritonPythonModel:\n"
        "    def execute(self, requests):\n        time.sleep(0.2)\n"
        "        return [pb_utils.InferenceResponse([pb_utils.Tensor('Y', pb_utils.get_input_tensor_by_name(r, 'X')"
        ".as_numpy() + 100)]) for r in requests]\n")
CONFIGS["slow"] = SLOW_STEP
CONFIGS["fan_queue"] = _ensemble(["RESULT"], ("repeat", {"N": "IN"}, {"OUT": "MID"}), ("slow", {"X": "MID"}, {"Y": "RESULT"}))
CONFIGS["fan_bounded"] = CONFIGS["fan_queue"].replace("ensemble_scheduling {", "ensemble_scheduling { max_inflight_requests: 1")
# two instances; the first response's flow is the slowest, yet the answers keep the generator's order
CONFIGS["uneven"] = ('backend: "python"\nmax_batch_size: 0\ninstance_group [ { count: 2 kind: KIND_CPU } ]\n'
                     f'input [ {{ name: "X" {I32} }} ]\noutput [ {{ name: "Y" {I32} }} ]\n')
UNEVEN = SLOW.replace("        time.sleep(0.2)\n", "").replace(
    "    def execute(self, requests):\n",
    "    def execute(self, requests):\n        if any(int(pb_utils.get_input_tensor_by_name(r, 'X').as_numpy()[0]) == 0"
    " for r in requests):\n            time.sleep(0.5)\n")
CONFIGS["fan_ordered"] = _ensemble(["RESULT"], ("repeat", {"N": "IN"}, {"OUT": "MID"}),
                                   ("uneven", {"X": "MID"}, {"Y": "RESULT"}))
CONFIGS["repeat_flagged"] = CONFIGS["repeat"]
CONFIGS["add"] = ('backend: "python"\nmax_batch_size: 0\n'
                  f'input [ {{ name: "A" {I32} }}, {{ name: "B" {I32} }} ]\noutput [ {{ name: "C" {I32} }} ]\n')
ADD = ("import triton_python_backend_utils as pb_utils\n\nclass TritonPythonModel:\n    def execute(self, requests):\n"
       "        return [pb_utils.InferenceResponse([pb_utils.Tensor('C', pb_utils.get_input_tensor_by_name(r, 'A')"
       ".as_numpy() + pb_utils.get_input_tensor_by_name(r, 'B').as_numpy())]) for r in requests]\n")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    for name, config in CONFIGS.items():
        (root / name / "1").mkdir(parents=True)
        (root / name / "config.pbtxt").write_text(config)
    for name, code in (("repeat", REPEAT), ("repeat_flagged", REPEAT_FLAGGED), ("plus", PLUS), ("add", ADD),
                       ("slow", SLOW), ("uneven", UNEVEN)):
        (root / name / "1" / "model.py").write_text(code)
    with running_server(repository=DiskRepository(root).populate(ModelRepository())) as running:
        yield running


def _n(module, value):
    tensor = module.InferInput("IN", [1], "INT32")
    tensor.set_data_from_numpy(np.array([value], np.int32))
    return tensor


def _stream(server, value, empty_final=False, model="chain"):
    """Every callback of one streamed request until a final response, an error, or 2 s of silence."""
    answers = queue.Queue()
    got = []
    with grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}") as client:
        client.start_stream(callback=lambda result, error: answers.put((result, error)))
        client.async_stream_infer(model, [_n(grpcclient, value)], request_id="r",
                                  enable_empty_final_response=empty_final)
        while True:
            try:
                result, error = answers.get(timeout=2)
            except queue.Empty:
                break
            if error is not None:
                got.append(("error", str(error)))
                break
            response = result.get_response()
            final = response.parameters["triton_final_response"].bool_param
            outputs = {o.name: result.as_numpy(o.name).tolist() for o in response.outputs}
            got.append((outputs, final, response.id, response.model_version))
            if final:
                break
        client.stop_stream()
    return got


def test_the_ensemble_says_it_is_decoupled_and_unary_calls_are_refused_as_triton_refuses(server):
    with httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
        assert client.get_model_config("chain")["model_transaction_policy"] == {"decoupled": True}
        assert client.get_model_config("plain")["model_transaction_policy"] == {"decoupled": False}
        with pytest.raises(InferenceServerException) as caught:
            client.infer("chain", [_n(httpclient, 2)])
        assert caught.value.status() == "501"
        assert "HTTP end point doesn't support models with decoupled transaction policy" in str(caught.value)
        assert client.infer("plain", [_n(httpclient, 2)]).as_numpy("RESULT").tolist() == [102]
    with grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}") as client:
        with pytest.raises(InferenceServerException) as caught:
            client.infer("chain", [_n(grpcclient, 2)])
        assert caught.value.status() == "StatusCode.UNIMPLEMENTED"
        assert "ModelInfer RPC doesn't support models with decoupled transaction policy" in str(caught.value)


def test_each_response_of_the_decoupled_step_runs_the_rest_of_the_graph(server):
    got = _stream(server, 3)
    assert got == [({"MID": [0], "RESULT": [100]}, False, "r", "1"),
                   ({"MID": [1], "RESULT": [101]}, False, "r", "1"),
                   ({"MID": [2], "RESULT": [102]}, True, "r", "1")]  # the step had ended: final


def test_no_response_gives_only_the_empty_final_one_when_asked(server):
    assert _stream(server, 0, empty_final=True) == [({}, True, "r", "")]  # as Triton: no version
    assert _stream(server, 0) == []


def test_a_step_error_ends_the_responses_under_the_ensemble_prefix(server):
    got = _stream(server, 7)  # plus refuses 5: 0..4 answered, then the error, then nothing
    assert [answer[0]["RESULT"] for answer in got[:5]] == [[100], [101], [102], [103], [104]]
    assert not any(answer[1] for answer in got[:5])
    assert got[5:] == [("error", "in ensemble 'chain', five is bad")]
    with httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
        with pytest.raises(InferenceServerException, match="in ensemble 'plain', five is bad") as caught:
            client.infer("plain", [_n(httpclient, 5)])  # a plain ensemble's step error has the prefix too
        assert caught.value.status() == "500"
        stats = client.get_inference_statistics("chain")["model_stats"][0]["inference_stats"]
        assert stats["fail"]["count"] >= 1 and stats["success"]["count"] >= 1


def test_generate_stream_walks_the_decoupled_ensemble_as_server_sent_events(server):
    """TensorRT-LLM's clients stream its ensemble through the generate extension."""
    import json

    import httpx

    reply = httpx.post(f"http://127.0.0.1:{server.ports['http']}/v2/models/chain/generate_stream",
                       json={"IN": 2}, timeout=10)
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[len("data: "):]) for line in reply.text.split("\n\n") if line]
    assert [(e["MID"], e["RESULT"]) for e in events] == [(0, 100), (1, 101)]
    assert events[0]["model_name"] == "chain"


def test_a_decoupled_step_after_another_runs_per_response_and_final_comes_alone(server):
    """As Triton 2.51: IN=3 -> MID 0, 1, 2 -> RESULT (none), 0, (0, 1); the second step sends its flag alone,
    so no response is final and the request ends with the empty final response when asked for one."""
    got = _stream(server, 3, empty_final=True, model="serial")
    assert got == [({"RESULT": [0]}, False, "r", "1"), ({"RESULT": [0]}, False, "r", "1"),
                   ({"RESULT": [1]}, False, "r", "1"), ({}, True, "r", "")]
    assert _stream(server, 3, model="serial") == [({"RESULT": [0]}, False, "r", "1"),
                                                 ({"RESULT": [0]}, False, "r", "1"), ({"RESULT": [1]}, False, "r", "1")]


def test_a_response_straight_from_a_decoupled_step_is_final_only_with_the_flag(server):
    assert _stream(server, 2, model="last") == [({"RESULT": [0]}, False, "r", "1"), ({"RESULT": [1]}, False, "r", "1")]
    assert _stream(server, 2, model="last_flagged") == [({"RESULT": [0]}, False, "r", "1"),
                                                       ({"RESULT": [1]}, True, "r", "1")]


@pytest.mark.parametrize("name", ["parallel", "parallel_joined", "serial_both", "with_input"])
def test_joining_tensors_of_different_decoupled_steps_is_refused_as_triton_refuses_it(server, name):
    reason = (f"in ensemble {name}, step of model '{name}' receives inputs originated from different "
              "decoupled models")  # Triton's words, which name the ensemble twice
    with httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
        assert not client.is_model_ready(name)
        index = {m["name"]: m for m in client.get_model_repository_index()}
        assert (index[name]["state"], index[name]["reason"]) == ("UNAVAILABLE", reason)
    assert _stream(server, 2, model=name) == [("error", f"Request for unknown model: '{name}' has no available versions")]


def test_a_step_output_nothing_reads_is_refused_as_triton_refuses_it(server):
    with httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
        index = {m["name"]: m for m in client.get_model_repository_index()}
        assert index["unused"]["state"] == "UNAVAILABLE"
        assert "ensemble tensor 'B' is unused in ensemble 'unused'" in index["unused"]["reason"]


def test_loading_an_ensemble_again_through_the_repository_api(server):
    """The ensemble's readiness is its steps' while it loads (it used to look stepless, so loads failed)."""
    with httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
        client.load_model("last")
        assert client.is_model_ready("last")
        with pytest.raises(InferenceServerException, match="receives inputs originated from different decoupled"):
            client.load_model("parallel")
    assert _stream(server, 1, model="last_flagged") == [({"RESULT": [0]}, True, "r", "1")]


def test_each_response_flows_through_the_later_steps_at_once_and_meets_their_queue_limit(server):
    """Triton's EnsembleStepMaxQueueSizeTest step 2: ten responses reach a step that holds two queued requests;
    flows running one after another never filled it."""
    got = _stream(server, 10, model="fan_queue")
    answered, last = got[:-1], got[-1]
    assert last[0] == "error" and "Exceeds maximum queue size" in last[1], got
    assert len(answered) < 10 and all(a[0]["RESULT"] == [100 + i] for i, a in enumerate(answered))


def test_max_inflight_requests_bounds_the_flows_of_one_request(server):
    got = _stream(server, 6, model="fan_bounded")
    assert [a[0]["RESULT"] for a in got] == [[100 + i] for i in range(6)], got
    assert [a[1] for a in got] == [False] * 5 + [True]
    with httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
        scheduling = client.get_model_config("fan_bounded")["ensemble_scheduling"]
        assert scheduling["max_inflight_requests"] == 1


def test_flows_that_finish_out_of_order_are_answered_in_the_generators_order(server):
    got = _stream(server, 4, model="fan_ordered")
    assert [a[0]["RESULT"] for a in got] == [[100], [101], [102], [103]], got
    assert [a[1] for a in got] == [False, False, False, True]


@pytest.mark.parametrize("written, words", [
    ("-5", "Expected integer, got: -"), ('"invalid_value"', 'Expected integer, got: "invalid_value"'),
    ("12345678901", "Integer out of range (12345678901)")])
def test_a_max_inflight_requests_that_is_no_uint32_is_refused_in_the_parsers_words(written, words):
    from gpuserve.ensemble import max_inflight_requests
    from gpuserve.errors import InvalidSettings
    from gpuserve.triton_config import parse_pbtxt

    config = parse_pbtxt(f"ensemble_scheduling {{ max_inflight_requests: {written} step [ ] }}")
    with pytest.raises(InvalidSettings, match=words.replace("(", r"\(").replace(")", r"\)")):
        max_inflight_requests(config)
    assert max_inflight_requests(parse_pbtxt("ensemble_scheduling { max_inflight_requests: 4 }")) == 4
