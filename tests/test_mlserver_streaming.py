"""MLServer's streaming (1.5+): a runtime's `predict_stream` over REST `infer_stream`/`generate_stream`
(Server-Sent Events) and gRPC `ModelStreamInfer` in MLServer's form, as MLServer 1.7.1 answers them
(benchmarks/peers/mlserver_stream_conformance.py asks both servers); other models keep Triton's stream."""

from __future__ import annotations

import json
import textwrap
import time

import grpc
import httpx
import pytest

from conftest import running_server
from mlserver_stream_models import RUNTIME as BASE_RUNTIME
from gpuserve import ModelRepository
from gpuserve.repository import DiskRepository

RUNTIME = BASE_RUNTIME + """

class Endless(Plain):
    async def predict_stream(self, payloads):
        import asyncio, pathlib
        payload = await payloads.__anext__()
        record = pathlib.Path(StringCodec.decode_input(payload.inputs[0])[0])
        sent = 0
        try:
            while True:
                yield InferenceResponse(model_name=self.name, outputs=[StringCodec.encode_output("out", [str(sent)])])
                sent += 1
                await asyncio.sleep(0.01)
        finally:  # the client left: the generator is closed, not left running
            record.write_text(str(sent))


class Late(Plain):
    async def predict_stream(self, payloads):
        import asyncio, pathlib
        payload = await payloads.__anext__()
        record = pathlib.Path(StringCodec.decode_input(payload.inputs[0])[0])
        try:
            await asyncio.sleep(3600)  # nothing before the client gives up
            yield None
        finally:
            record.write_text("1")


class NotAGenerator(Plain):
    def predict_stream(self, payloads):
        return [None]


class OddHeaders(Plain):
    async def predict_stream(self, payloads):
        await payloads.__anext__()
        yield InferenceResponse(model_name=self.name, parameters={"headers": {"bad\\nname": "x", "good": "a\\nb",
                                                                          "fine": "yes"}},
                                outputs=[StringCodec.encode_output("out", ["ok"])])


class Dicts(Plain):
    async def predict_stream(self, payloads):
        await payloads.__anext__()
        yield {"model_name": self.name, "outputs": [{"name": "o", "shape": [1], "datatype": "INT32", "data": [1]}]}
        yield {"outputs": "not a list"}
"""


def _build(root):
    for name, implementation, extra in (("tokens", "runtime.Tokens", {}), ("plain", "runtime.Plain", {}),
                                        ("batched", "runtime.Tokens", {"max_batch_size": 4, "max_batch_time": 0.05}),
                                        ("endless", "runtime.Endless", {}), ("dicts", "runtime.Dicts", {}),
                                        ("unloading", "runtime.Endless", {}), ("late", "runtime.Late", {}),
                                        ("notagen", "runtime.NotAGenerator", {}),
                                        ("oddheaders", "runtime.OddHeaders", {})):
        folder = root / name
        folder.mkdir()
        (folder / "runtime.py").write_text(textwrap.dedent(RUNTIME))
        (folder / "model-settings.json").write_text(json.dumps({"name": name, "implementation": implementation,
                                                                **extra}))
    return root


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("streaming"))


def _serve(repo, **settings):
    return running_server(repository=DiskRepository(repo).populate(ModelRepository()), **settings)


@pytest.fixture(scope="module", params=["gpuserve", "uvicorn"])
def http(request, repo):
    with _serve(repo, http_server=request.param) as server:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.ports['http']}", timeout=30) as client:
            yield client


def _text(text, **extra):
    return {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [text]}], **extra}


def _events(answer):
    assert answer.headers["content-type"] == "text/event-stream; charset=utf-8"
    chunks = answer.text.split("\n\n")
    assert chunks[-1] == "" and all(chunk.startswith("data: ") for chunk in chunks[:-1]), answer.text
    return [json.loads(chunk[len("data: "):]) for chunk in chunks[:-1]]


@pytest.mark.parametrize("route", ["infer_stream", "generate_stream"])
def test_predict_stream_answers_one_event_a_response(http, route):
    answer = http.post(f"/v2/models/tokens/{route}", json=_text("hello big world", id="my-id"))
    assert answer.status_code == 200
    events = _events(answer)
    assert [e["outputs"][0]["data"] for e in events] == [["hello"], ["big"], ["world"]]
    for index, e in enumerate(events):
        assert e["model_name"] == "tokens" and e["id"] == "my-id"
        # as MLServer's events: the runtime's parameters and the CloudEvents headers stay in each
        assert e["parameters"]["index"] == index and e["parameters"]["headers"]["Ce-Id"] == "my-id"
        assert e["outputs"][0]["parameters"] == {"content_type": "str"}


def test_a_stream_without_an_id_gets_one_for_all_its_responses(http):
    events = _events(http.post("/v2/models/tokens/infer_stream", json=_text("a b")))
    assert len(events) == 2 and events[0]["id"] and events[0]["id"] == events[1]["id"]


def test_generate_with_a_v2_request_is_infer_for_mlserver_runtimes(http):
    answer = http.post("/v2/models/tokens/generate", json=_text("hello world"))
    assert answer.status_code == 200 and answer.json()["outputs"][0]["data"] == ["HELLO WORLD"]
    assert answer.headers["ce-modelid"] == "tokens"


def test_a_runtime_without_predict_stream_answers_its_predict_once(http):
    answer = http.post("/v2/models/plain/infer_stream", json=_text("hello world", id="p"))
    events = _events(answer)
    assert [e["outputs"][0]["data"] for e in events] == [["HELLO WORLD"]]
    assert events[0]["parameters"]["headers"]["Ce-Id"] == "p" and "ce-id" not in answer.headers  # as MLServer


def test_adaptive_batching_leaves_streams_alone(http):
    """As MLServer: a batching runtime streams unbatched; its /infer still batches (one request here)."""
    events = _events(http.post("/v2/models/batched/infer_stream", json=_text("x y z")))
    assert [e["outputs"][0]["data"] for e in events] == [["x"], ["y"], ["z"]]
    assert http.post("/v2/models/batched/infer", json=_text("x y")).json()["outputs"][0]["data"] == ["X Y"]


def test_failures_before_and_during_a_stream(http):
    first = http.post("/v2/models/tokens/infer_stream", json=_text("fail-first"))
    assert first.status_code == 500 and first.json() == {"error": "refused at once"}
    events = _events(http.post("/v2/models/tokens/infer_stream", json=_text("a boom b")))
    assert events[0]["outputs"][0]["data"] == ["a"] and events[1:] == [{"error": "boom mid-stream"}]
    assert http.post("/v2/models/nope/infer_stream", json=_text("a")).status_code == 404
    # a model without versions answers any version a client names (gpuserve/model_repository.py get_model)
    assert _events(http.post("/v2/models/tokens/versions/1/infer_stream", json=_text("a")))[0]["id"]
    bad = http.post("/v2/models/tokens/infer_stream", content=b"{not json")
    assert bad.status_code == 400 and "error" in bad.json()
    assert http.post("/v2/models/tokens/infer", json=_text("still")).json()["outputs"][0]["data"] == ["STILL"]


def _request(pb, text, id_="", model="tokens"):
    request = pb.ModelInferRequest(model_name=model, id=id_)
    tensor = request.inputs.add(name="text", datatype="BYTES", shape=[1])
    tensor.contents.bytes_contents.append(text.encode())
    return request


@pytest.fixture(scope="module", params=["native", "grpcio"])
def channel(request, repo):
    with _serve(repo, grpc_transport=request.param) as server:
        with grpc.insecure_channel(f"127.0.0.1:{server.ports['grpc']}") as channel:
            yield channel


def test_grpc_stream_in_mlserver_form(channel):
    """MLServer's stub (ModelInferResponse on the stream): one predict_stream reads every request of the
    stream, and each response carries the first request's id."""
    from gpuserve.mlserver.grpc import dataplane_pb2 as pb, dataplane_pb2_grpc as services

    stub = services.GRPCInferenceServiceStub(channel)
    answers = list(stub.ModelStreamInfer(iter([_request(pb, "one two", "first"), _request(pb, "three", "second")]),
                                         timeout=30))
    assert [(a.model_name, a.id, list(a.outputs[0].contents.bytes_contents), a.parameters["index"].int64_param)
            for a in answers] == [("tokens", "first", [b"one"], 0), ("tokens", "first", [b"two"], 1),
                                  ("tokens", "first", [b"three"], 0)]
    for text, words in (("a boom b", "boom mid-stream"), ("fail-first", "refused at once")):
        with pytest.raises(grpc.RpcError) as failed:
            list(stub.ModelStreamInfer(iter([_request(pb, text)]), timeout=30))
        assert failed.value.code() == grpc.StatusCode.INTERNAL and failed.value.details() == words


def test_grpc_stream_trailing_metadata_carries_the_cloudevents_headers(channel):
    from gpuserve.mlserver.grpc import dataplane_pb2 as pb, dataplane_pb2_grpc as services

    call = services.GRPCInferenceServiceStub(channel).ModelStreamInfer(iter([_request(pb, "x", "id-1")]), timeout=30)
    assert len(list(call)) == 1
    assert dict(call.trailing_metadata())["ce-id"] == "id-1"


def test_other_models_keep_tritons_stream(channel):
    """A runtime without predict_stream (and every Triton or KServe model) answers tritonclient's form."""
    from gpuserve.server.grpc import inference_pb2 as pb, inference_pb2_grpc as services

    stub = services.GRPCInferenceServiceStub(channel)
    answers = list(stub.ModelStreamInfer(iter([_request(pb, "hi", "a", "plain"), _request(pb, "yo", "b", "plain")]),
                                         timeout=30))
    assert [(a.error_message, a.infer_response.id) for a in answers] == [("", "a"), ("", "b")]
    missing = list(stub.ModelStreamInfer(iter([_request(pb, "x", model="nope")]), timeout=30))
    assert "nope" in missing[0].error_message


def test_streams_names_runtimes_with_their_own_predict_stream():
    from gpuserve.mlserver import MLModel
    from gpuserve.mlserver.model import MLModelAdapter
    from gpuserve.mlserver.settings import ModelSettings

    class Plain(MLModel):
        async def predict(self, payload):
            return None

    class Streaming(Plain):
        async def predict_stream(self, payloads):
            yield None

    class Below(Streaming):
        pass

    streams = {klass.__name__: MLModelAdapter(klass(ModelSettings(name="m", implementation=klass))).streams
               for klass in (Plain, Streaming, Below)}
    assert streams == {"Plain": False, "Streaming": True, "Below": True}


def test_a_streaming_runtime_in_parallel_workers_answers_its_predict_once_in_mlserver_form(tmp_path):
    """As MLServer's workers: a call reaches the runtime's `predict` in a worker, once; gRPC still answers
    in MLServer's form (the worker tells the server the runtime streams)."""
    from gpuserve.mlserver.grpc import dataplane_pb2 as pb, dataplane_pb2_grpc as services

    folder = tmp_path / "tokens"
    folder.mkdir()
    (folder / "runtime.py").write_text(textwrap.dedent(RUNTIME))
    (folder / "model-settings.json").write_text(json.dumps({"name": "tokens", "implementation": "runtime.Tokens",
                                                            "parallel_workers": 1}))
    with _serve(tmp_path) as server:
        answer = httpx.post(f"http://127.0.0.1:{server.ports['http']}/v2/models/tokens/infer_stream",
                            json=_text("a b", id="w"), timeout=60)
        assert [e["outputs"][0]["data"] for e in _events(answer)] == [["A B"]]
        with grpc.insecure_channel(f"127.0.0.1:{server.ports['grpc']}") as channel:
            answers = list(services.GRPCInferenceServiceStub(channel).ModelStreamInfer(
                iter([_request(pb, "c d", "g")]), timeout=60))
        assert [(a.id, list(a.outputs[0].contents.bytes_contents)) for a in answers] == [("g", [b"C D"])]


def _closed(record):
    for _ in range(300):
        if record.exists() and record.read_text():
            return int(record.read_text())
        time.sleep(0.02)
    raise AssertionError("the runtime's stream was never closed")


def test_a_client_that_leaves_closes_the_runtimes_stream(http, channel, tmp_path):
    """REST and gRPC alike: when the client goes, the runtime's predict_stream is closed (its `finally`
    runs) instead of making responses nobody reads."""
    from gpuserve.mlserver.grpc import dataplane_pb2 as pb, dataplane_pb2_grpc as services

    record = tmp_path / "rest.txt"
    with http.stream("POST", "/v2/models/endless/infer_stream", json=_text(str(record))) as answer:
        lines = answer.iter_lines()
        assert next(lines).startswith("data: ")
    assert _closed(record) < 1000
    record = tmp_path / "grpc.txt"
    stub = services.GRPCInferenceServiceStub(channel)
    call = stub.ModelStreamInfer(iter([_request(pb, str(record), model="endless")]), timeout=30)
    assert next(call).outputs[0].contents.bytes_contents == [b"0"]
    call.cancel()
    assert _closed(record) < 1000


def test_dicts_a_runtime_yields_are_responses_and_one_that_is_not_ends_the_stream_in_words(http):
    events = _events(http.post("/v2/models/dicts/infer_stream", json=_text("x")))
    assert events[0]["outputs"][0]["data"] == [1] and len(events) == 2
    assert "yielded a dict that is not an InferenceResponse" in events[1]["error"]


def test_a_first_request_that_does_not_parse_ends_the_mlserver_stream_with_invalid_argument(channel):
    from gpuserve.mlserver.grpc import dataplane_pb2 as pb, dataplane_pb2_grpc as services

    request = pb.ModelInferRequest(model_name="tokens")
    request.inputs.add(name="text", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(b"\x05\x00")  # a length prefix cut short
    with pytest.raises(grpc.RpcError) as failed:
        list(services.GRPCInferenceServiceStub(channel).ModelStreamInfer(iter([request]), timeout=30))
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT, failed.value.details()


def test_a_client_that_leaves_before_the_first_response_closes_the_runtimes_stream(http, tmp_path):
    record = tmp_path / "late.txt"
    with pytest.raises(httpx.ReadTimeout):
        http.post("/v2/models/late/infer_stream", json=_text(str(record)), timeout=0.5)
    assert _closed(record) == 1


def test_an_unload_ends_the_streams_of_its_model(http, tmp_path):
    """Before: the unload answered and the runtime went on streaming to its clients for as long as they read."""
    record = tmp_path / "unloading.txt"
    with http.stream("POST", "/v2/models/unloading/infer_stream", json=_text(str(record))) as answer:
        lines = answer.iter_lines()
        assert next(lines).startswith("data: ")
        assert http.post("/v2/repository/models/unloading/unload").status_code == 200
        rest = [line for line in lines if line.startswith("data: ")]
    assert rest and "unloaded while this stream ran" in json.loads(rest[-1][len("data: "):])["error"]
    assert _closed(record) < 1000


def test_a_predict_stream_that_is_no_async_generator_is_refused_in_words(http):
    answer = http.post("/v2/models/notagen/infer_stream", json=_text("x"))
    assert answer.status_code == 500 and "must be an async generator" in answer.json()["error"]


def test_response_headers_grpc_cannot_carry_are_left_out_of_the_trailing_metadata(channel):
    """A runtime's header with a line break in its name or value ended the whole stream on the client's side."""
    from gpuserve.mlserver.grpc import dataplane_pb2 as pb, dataplane_pb2_grpc as services

    call = services.GRPCInferenceServiceStub(channel).ModelStreamInfer(
        iter([_request(pb, "x", model="oddheaders")]), timeout=30)
    assert [list(a.outputs[0].contents.bytes_contents) for a in call] == [[b"ok"]]
    trailing = dict(call.trailing_metadata())
    assert trailing["fine"] == "yes" and "good" not in trailing and trailing["ce-modelid"] == "oddheaders"
