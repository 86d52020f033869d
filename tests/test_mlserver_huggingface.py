"""`mlserver_huggingface.HuggingFaceRuntime`, MLServer's HuggingFace runtime: a model-settings.json naming it
serves a transformers pipeline and answers as MLServer 1.7.1 does (one `hg_jsonlist` output `output`, each
element a result's JSON), checked here against calling the same pipeline directly, over REST and gRPC; its
settings from `parameters.extra` and MLSERVER_MODEL_HUGGINGFACE_*, `pretrained_model` over `parameters.uri`,
adaptive batching calling the pipeline once per batch, bad input as a 400 and a broken model as not ready.
Tiny models with random weights are built here (tests/hf_models.py); nothing is downloaded."""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib.util
import json
import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded: a model that is not on disk fails at once
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from conftest import running_server  # noqa: E402
from hf_models import RUNTIME, TASKS, build_models, write_settings  # noqa: E402
from gpuserve import ModelRepository  # noqa: E402
from gpuserve.repository import DiskRepository  # noqa: E402

TEXT = "this is a good movie"
QUESTION, CONTEXT = "who serves models", "seldon serves models fast"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return build_models(tmp_path_factory.mktemp("hf-models"))


@pytest.fixture(scope="module")
def pipelines(models):
    return {name: transformers.pipeline(TASKS[name], model=str(folder)) for name, folder in models.items()}


def _repository(tmp_path, models, names=tuple(TASKS), **more):
    """A model repository whose folders are copies of the built models, each named by its settings."""
    import shutil

    for name in names:
        folder = tmp_path / name
        shutil.copytree(models[name], folder)
        write_settings(folder, name, TASKS[name], **more.get(name, {}))
    return DiskRepository(tmp_path).populate(ModelRepository())


def _text(name, values, content_type=None):
    tensor = {"name": name, "shape": [len(values)], "datatype": "BYTES", "data": list(values)}
    if content_type:
        tensor["parameters"] = {"content_type": content_type}
    return tensor


def _answer(pipeline_result):
    """What MLServer sends for a pipeline result: a list, each element's JSON as json.dumps writes it."""
    results = pipeline_result if isinstance(pipeline_result, list) else [pipeline_result]
    return {"name": "output", "shape": [len(results), 1], "datatype": "BYTES",
            "parameters": {"content_type": "hg_jsonlist"}, "data": [json.dumps(r) for r in results]}


def _same(output, expected):
    """Equal, scores compared to 1e-5 (a batch pads its rows, which moves the last float digits)."""
    assert {k: v for k, v in output.items() if k != "data"} == {k: v for k, v in expected.items() if k != "data"}
    got, want = [json.loads(d) for d in output["data"]], [json.loads(d) for d in expected["data"]]
    assert json.dumps(_rounded(got)) == json.dumps(_rounded(want))


def _rounded(value):
    if isinstance(value, float):
        return round(value, 5)
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def test_answers_as_the_pipeline_over_rest_and_grpc(tmp_path, models, pipelines, http):
    import tritonclient.grpc as triton

    registry = _repository(tmp_path, models)
    with running_server(repository=registry) as server:
        client = http(server)
        cls = client.post("/v2/models/cls/infer", json={"inputs": [_text("args", [TEXT])]}).json()
        assert cls["model_name"] == "cls" and cls["id"] and cls["outputs"] == [_answer(pipelines["cls"](TEXT))]
        # a batch of texts is `array_inputs`: the pipeline's first argument as a list
        many = client.post("/v2/models/cls/infer", json={"inputs": [_text("array_inputs", [TEXT, "bad movie"])]})
        _same(many.json()["outputs"][0], _answer(pipelines["cls"]([TEXT, "bad movie"])))
        gen = client.post("/v2/models/gen/infer", json={"inputs": [_text("args", ["this is a test"])]}).json()
        assert gen["outputs"] == [_answer(pipelines["gen"]("this is a test"))]
        assert json.loads(gen["outputs"][0]["data"][0])["generated_text"].startswith("this is a test")
        qa = client.post("/v2/models/qa/infer", json={"inputs": [_text("question", [QUESTION]),
                                                                 _text("context", [CONTEXT])]}).json()
        assert qa["outputs"] == [_answer(pipelines["qa"](question=[QUESTION], context=[CONTEXT]))]
        # a keyword given as a `raw` scalar (MLServer's RawCodec), here the number of answers
        top = client.post("/v2/models/qa/infer", json={"inputs": [
            _text("question", [QUESTION]), _text("context", [CONTEXT]),
            {"name": "top_k", "shape": [1], "datatype": "INT32", "data": [2], "parameters": {"content_type": "raw"}}]})
        assert top.json()["outputs"] == [_answer(pipelines["qa"](question=[QUESTION], context=[CONTEXT], top_k=2))]

        metadata = client.get("/v2/models/qa").json()
        assert [(t["name"], t["parameters"]["content_type"]) for t in metadata["inputs"]] == \
            [("context", "str"), ("question", "str")]
        assert metadata["parameters"]["device"] == "cpu"
        assert [t["name"] for t in client.get("/v2/models/cls").json()["outputs"]] == ["outputs"]

        with triton.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}") as grpc_client:
            tensor = triton.InferInput("args", [1], "BYTES")
            tensor.set_data_from_numpy(np.array([TEXT.encode()], dtype=object))
            result = grpc_client.infer("cls", [tensor])
            output = result.get_output("output")
            assert list(output.shape) == [1, 1] and output.parameters["content_type"].string_param == "hg_jsonlist"
            assert [json.loads(v) for v in result.as_numpy("output").ravel()] == [pipelines["cls"](TEXT)[0]]


def _runtime(extra, **settings):
    from gpuserve.huggingface import HuggingFaceRuntime
    from gpuserve.mlserver.settings import ModelSettings

    return HuggingFaceRuntime(ModelSettings(name="m", implementation=RUNTIME, parameters={"extra": extra, **settings}))


def test_settings_come_from_extra_then_the_environment(models, pipelines, monkeypatch):
    """In process: the runtime class itself, as a custom MLServer runtime would use it."""
    from gpuserve.mlserver.types import InferenceRequest

    monkeypatch.setenv("MLSERVER_MODEL_HUGGINGFACE_TASK", "text-classification")
    monkeypatch.setenv("MLSERVER_MODEL_HUGGINGFACE_PRETRAINED_MODEL", str(models["cls"]))
    runtime = _runtime({})  # everything from the environment
    assert (runtime.hf_settings.task, runtime.hf_settings.pretrained_model) == ("text-classification",
                                                                                str(models["cls"]))
    asyncio.run(runtime.load())
    answer = asyncio.run(runtime.predict(InferenceRequest(inputs=[_text("args", [TEXT])])))
    assert answer.outputs[0].model_dump(exclude_none=True)["data"] == \
        [json.dumps(r).encode() for r in pipelines["cls"](TEXT)]
    assert _runtime({"task": "question-answering"}).hf_settings.task == "question-answering"  # extra wins
    translation = _runtime({"task": "translation", "task_suffix": "_en_to_fr"}).hf_settings
    assert translation.task_name == "translation_en_to_fr"
    monkeypatch.setenv("PREDICTIVE_UNIT_PARAMETERS", json.dumps([{"name": "task", "value": "fill-mask",
                                                                  "type": "STRING"}]))
    assert _runtime({"task": "question-answering"}).hf_settings.task == "fill-mask"  # Seldon Core's win over both


def test_pretrained_model_wins_over_the_uri(tmp_path, models, pipelines, http):
    folder = tmp_path / "picked"
    folder.mkdir()
    (folder / "config.json").write_text("not a model")  # parameters.uri's folder: never read
    write_settings(folder, "picked", "text-generation", extra={"pretrained_model": str(models["gen"])})
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    with running_server(repository=registry) as server:
        answer = http(server).post("/v2/models/picked/infer", json={"inputs": [_text("args", ["the server"])]})
        assert answer.json()["outputs"] == [_answer(pipelines["gen"]("the server"))]


def test_adaptive_batching_calls_the_pipeline_once_per_batch(tmp_path, models, pipelines, http, monkeypatch):
    from gpuserve.huggingface import runtime as hf_runtime

    calls = []
    plain = hf_runtime._call

    def counted(pipeline, args, kwargs):
        calls.append(len(args[0]) if args and isinstance(args[0], list) else 1)
        return plain(pipeline, args, kwargs)

    monkeypatch.setattr(hf_runtime, "_call", counted)
    registry = _repository(tmp_path, models, ("cls",), cls={"max_batch_size": 4, "max_batch_time": 0.5})
    texts = [TEXT, "bad movie", "the gpu is fast", "what a test"]
    with running_server(repository=registry) as server:
        client = http(server)

        def ask(text):
            return client.post("/v2/models/cls/infer", json={"inputs": [_text("array_inputs", [text])]}).json()

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(ask, texts))
    for text, answer in zip(texts, answers):
        _same(answer["outputs"][0], _answer(pipelines["cls"]([text])))
    assert max(calls) > 1 and sum(calls) == len(texts), calls  # one pipeline call answered several requests


def test_requests_of_one_args_text_each_are_batched_as_one_list_call(tmp_path, models, pipelines, http,
                                                                     monkeypatch):
    """MLServer's examples send one text as `args`; merged, MLServer calls the pipeline with the texts as so many
    positional arguments and fails them all. Here they are one list call, answered as each alone."""
    from gpuserve.huggingface import runtime as hf_runtime

    calls = []
    plain = hf_runtime._call

    def counted(pipeline, args, kwargs):
        calls.append(len(args[0]) if args and isinstance(args[0], list) else -len(args))
        return plain(pipeline, args, kwargs)

    monkeypatch.setattr(hf_runtime, "_call", counted)
    batched = {"max_batch_size": 4, "max_batch_time": 0.5}
    registry = _repository(tmp_path, models, ("cls", "gen"), cls=batched, gen=batched)
    texts = [TEXT, "bad movie", "the gpu is fast today", "what"]
    with running_server(repository=registry) as server:
        client = http(server)

        def ask(model, text):
            return client.post(f"/v2/models/{model}/infer", json={"inputs": [_text("args", [text])]}).json()

        for model in ("cls", "gen"):
            calls.clear()
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                answers = list(pool.map(lambda text: ask(model, text), texts))
            for text, answer in zip(texts, answers):
                _same(answer["outputs"][0], _answer(pipelines[model](text)))
            # one list call answered several requests, and no call got several texts as positional arguments
            assert max(calls) > 1 and sum(calls) == len(texts), (model, calls)


def test_bad_input_is_a_400_and_the_model_keeps_serving(tmp_path, models, http):
    registry = _repository(tmp_path, models, ("qa", "cls"))
    with running_server(repository=registry) as server:
        client = http(server)
        unknown = client.post("/v2/models/qa/infer", json={"inputs": [_text("query", [QUESTION])]})
        assert unknown.status_code == 400 and "query" in unknown.json()["error"]
        not_json = client.post("/v2/models/cls/infer", json={"inputs": [_text("args", ["{nope"], "hg_json")]})
        assert not_json.status_code == 400 and "decode" in not_json.json()["error"]
        assert client.post("/v2/models/cls/infer", json={"inputs": [_text("args", [TEXT])]}).status_code == 200


def test_a_broken_folder_or_task_is_not_ready_with_the_reason(tmp_path, models, http):
    registry_root = tmp_path
    broken = registry_root / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    write_settings(broken, "broken", "text-classification")
    import shutil

    shutil.copytree(models["cls"], registry_root / "wrongtask")
    write_settings(registry_root / "wrongtask", "wrongtask", "sentiment")
    shutil.copytree(models["cls"], registry_root / "cls")
    write_settings(registry_root / "cls", "cls", "text-classification")
    shutil.copytree(models["cls"], registry_root / "onnx")
    write_settings(registry_root / "onnx", "onnx", "text-classification", extra={"optimum_model": True})
    registry = DiskRepository(registry_root).populate(ModelRepository())
    with running_server(repository=registry) as server:
        client = http(server)
        index = {m["name"]: m for m in client.post("/v2/repository/index", json={}).json()}
        assert index["broken"]["state"] == "UNAVAILABLE" and index["broken"]["reason"]
        assert index["wrongtask"]["state"] == "UNAVAILABLE"
        assert "Invalid transformer task: sentiment" in index["wrongtask"]["reason"]
        assert index["cls"]["state"] == "READY"
        if importlib.util.find_spec("optimum") is None:  # optimum_model without optimum: the package to install
            assert index["onnx"]["state"] == "UNAVAILABLE" and "optimum[onnxruntime]" in index["onnx"]["reason"]
        assert client.post("/v2/models/cls/infer", json={"inputs": [_text("args", [TEXT])]}).status_code == 200


def test_mlserver_huggingface_imports_as_gpuserve_codecs():
    """Client code written for MLServer: `from mlserver_huggingface.codecs import HuggingfaceRequestCodec`."""
    if importlib.util.find_spec("mlserver_huggingface") is None:
        from gpuserve.mlserver.alias import install

        install()
    import mlserver_huggingface
    from mlserver_huggingface.codecs import HuggingfaceRequestCodec, NumpyListCodec

    from gpuserve.huggingface import codecs
    from gpuserve.mlserver.codecs import find_input_codec, find_request_codec

    if mlserver_huggingface.__name__ == "gpuserve.huggingface":  # the alias (the real package is not installed)
        assert HuggingfaceRequestCodec is codecs.HuggingfaceRequestCodec
        assert mlserver_huggingface.HuggingFaceRuntime.__module__ == "gpuserve.huggingface.runtime"
    assert find_request_codec("hf") is codecs.HuggingfaceRequestCodec
    assert find_input_codec("hg_jsonlist") is codecs.HuggingfaceListJSONCodec
    request = codecs.HuggingfaceRequestCodec.encode_request(
        {"question": "who", "top_k": 2, "rows": [np.arange(3.0), np.ones(3)], "table": {"a": [1]}})
    assert [(i.name, i.parameters.content_type) for i in request.inputs] == \
        [("question", "raw"), ("top_k", "raw"), ("rows", "nplist"), ("table", "hg_json")]
    decoded = codecs.HuggingfaceRequestCodec.decode_request(request)
    assert decoded["question"] == "who" and decoded["top_k"] == 2 and decoded["table"] == {"a": [1]}
    assert [r.tolist() for r in decoded["rows"]] == [[0.0, 1.0, 2.0], [1.0, 1.0, 1.0]]
    # an answer: MLServer's json.dumps spacing, NumPy values as lists and numbers
    answer = codecs.HuggingfaceRequestCodec.encode_response("m", {"score": np.float32(0.5), "ids": np.arange(2)})
    assert answer.outputs[0].data.root == [b'{"score": 0.5, "ids": [0, 1]}'] and answer.outputs[0].shape == [1, 1]
    assert NumpyListCodec.ContentType == "nplist"
    image_module = pytest.importorskip("PIL.Image")
    image = image_module.new("RGB", (3, 2), (10, 20, 30))
    image.format = "PNG"
    pictures = codecs.HuggingfaceRequestCodec.encode_request({"images": [image]})
    assert pictures.inputs[0].parameters.content_type == "pillow_image"
    assert codecs.EqualUtil.pil_equal(codecs.HuggingfaceRequestCodec.decode_request(pictures)["images"][0], image)
    # an image inside an answer is a data URI, read back as an image
    uri = json.loads(codecs.json_encode({"mask": image}))["mask"]
    assert uri.startswith("data:image/png;base64,")
    assert codecs.EqualUtil.pil_equal(codecs.json_decode(json.dumps({"mask": uri}))["mask"], image)
