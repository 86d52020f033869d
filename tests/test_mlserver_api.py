"""MLServer's Python API on gpuserve, in process: MLModel's codec helpers, `@decode_args`, the codec
registry, model settings as runtimes read them, errors, and the adapter's edges."""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime
from typing import List, Optional, Tuple

import numpy as np
import pandas as pd
import pytest

from gpuserve import codecs as native_codecs
from gpuserve.errors import GpuserveError, InvalidInput, status_of
from gpuserve.mlserver import MLModel, ModelSettings
from gpuserve.mlserver.codecs import (
    Base64Codec,
    CodecNotFound,
    DatetimeCodec,
    InputCodec,
    NumpyCodec,
    NumpyRequestCodec,
    PandasCodec,
    StringCodec,
    StringRequestCodec,
    decode_args,
    find_input_codec,
    find_request_codec,
    register_input_codec,
    unregister_input_codec,
)
from gpuserve.mlserver.errors import InferenceError, MLServerError
from gpuserve.mlserver.model import MLModelAdapter
from gpuserve.mlserver.settings import as_mlserver_settings
from gpuserve.mlserver.types import (
    InferenceRequest,
    InferenceResponse,
    MetadataTensor,
    Parameters,
    RequestInput,
    RequestOutput,
)
from gpuserve.mlserver.utils import get_model_uri
from gpuserve.model import InferenceVerb
from gpuserve.settings import ModelSettings as NativeSettings
from gpuserve.types import InferRequest


def text_input(name, values, content_type=None):
    return RequestInput(name=name, shape=[len(values), 1], datatype="BYTES", data=values,
                        parameters=Parameters(content_type=content_type) if content_type else None)


class Plain(MLModel):
    async def predict(self, payload):
        return InferenceResponse(model_name=self.name, outputs=[])


# -- MLModel: what the settings say, and the codec helpers ----------------------------------------------

def test_properties_come_from_settings():
    settings = ModelSettings(name="m", implementation=Plain, platform="custom",
                             parameters={"version": "7", "uri": "w.bin", "extra": {"k": 1}})
    model = Plain(settings)
    assert (model.name, model.version, model.settings.parameters.extra, model.ready) == ("m", "7", {"k": 1}, False)
    assert settings.implementation.endswith("test_mlserver_api.Plain")  # a class is kept as its import path
    model.inputs = [MetadataTensor(name="a", datatype="INT32", shape=[-1])]
    assert model.settings.inputs[0].name == "a"
    meta = asyncio.run(model.metadata())
    assert meta.name == "m" and meta.platform == "custom" and meta.inputs[0].name == "a"


def test_decode_uses_the_inputs_then_the_metadatas_content_type_then_the_default():
    settings = ModelSettings(name="m", inputs=[{"name": "words", "datatype": "BYTES", "shape": [-1, 1],
                                                "parameters": {"content_type": "str"}}])
    model = Plain(settings)
    assert model.decode(text_input("words", [b"a", b"b"])) == ["a", "b"]  # metadata: str
    assert model.decode(text_input("other", ["x"], "str")) == ["x"]  # the input's own
    raw = RequestInput(name="n", shape=[2], datatype="INT32", data=[1, 2])
    assert list(model.decode(raw)) == [1, 2]  # no content type anywhere: the raw data, as MLServer
    assert model.decode(raw, default_codec=NumpyCodec).tolist() == [1, 2]
    # the decoded value is remembered on the input and never serialised
    decoded_once = text_input("words", ["z"])
    model.decode(decoded_once)
    assert "_decoded_payload" not in decoded_once.json()


def test_decode_request_by_request_content_type_or_the_models():
    def request():
        return InferenceRequest(inputs=[RequestInput(name="a", shape=[2, 1], datatype="INT64", data=[1, 2]),
                                        text_input("b", ["x", "y"], "str")])

    frame_model = Plain(ModelSettings(name="m", parameters={"content_type": "pd"}))
    decoded_once = request()
    frame = frame_model.decode_request(decoded_once)
    assert isinstance(frame, pd.DataFrame) and frame["b"].tolist() == ["x", "y"]
    plain = Plain(ModelSettings(name="m"))
    undecoded = request()
    assert plain.decode_request(undecoded) is undecoded
    single = InferenceRequest(inputs=[RequestInput(name="a", shape=[2], datatype="FP32", data=[1, 2])])
    assert plain.decode_request(single, default_codec=NumpyRequestCodec).tolist() == [1.0, 2.0]
    explicit = InferenceRequest(parameters=Parameters(content_type="str"), inputs=[text_input("t", ["q"])])
    assert plain.decode_request(explicit) == ["q"]


def test_encode_and_encode_response():
    model = Plain(ModelSettings(name="m", parameters={"version": "2"},
                                outputs=[{"name": "when", "datatype": "BYTES", "shape": [-1, 1],
                                          "parameters": {"content_type": "datetime"}}]))
    out = model.encode(np.array([1.5, 2.5]), RequestOutput(name="y"))
    assert out.shape == [2, 1] and out.parameters.content_type == "np"
    when = model.encode(["2024-01-02T03:04:05"], RequestOutput(name="when"))  # metadata says datetime
    assert when.parameters.content_type == "datetime"
    labelled = model.encode(["a"], RequestOutput(name="z", parameters=Parameters(content_type="str")))
    assert labelled.parameters.content_type == "str"
    response = model.encode_response(np.array([[1, 2]]))
    assert response.model_name == "m" and response.model_version == "2" and response.outputs[0].shape == [1, 2]
    frame = model.encode_response(pd.DataFrame({"a": [1]}))
    assert frame.parameters.content_type == "pd" and frame.outputs[0].name == "a"
    with pytest.raises(CodecNotFound):
        model.encode_response(object())
    with pytest.raises(CodecNotFound):
        model.encode(object(), RequestOutput(name="q"))


# -- @decode_args ------------------------------------------------------------------------------------

class Simplified(MLModel):
    @decode_args
    async def predict(self, questions: List[str], context: Optional[List[str]] = None,
                      when: Optional[List[datetime]] = None) -> np.ndarray:
        context = context or [""] * len(questions)
        return np.array([len(q) + len(c) for q, c in zip(questions, context)])


def test_decode_args_decodes_by_annotation_and_names_output_0():
    model = Simplified(ModelSettings(name="s"))
    request = InferenceRequest(inputs=[text_input("questions", [b"ab", b"c"]), text_input("context", ["x", "yz"])])
    response = asyncio.run(model.predict(request))
    assert response.model_name == "s" and [o.name for o in response.outputs] == ["output-0"]
    assert NumpyCodec.decode_output(response.outputs[0]).ravel().tolist() == [3, 3]
    only = asyncio.run(model.predict(InferenceRequest(inputs=[text_input("questions", ["abc"])])))
    assert NumpyCodec.decode_output(only.outputs[0]).ravel().tolist() == [3]


def test_decode_args_tuples_request_codecs_and_sync_functions():
    threads = []

    class Many(MLModel):
        @decode_args
        def predict(self, x: np.ndarray, frame: pd.DataFrame) -> Tuple[np.ndarray, List[str], pd.DataFrame]:
            threads.append(threading.get_ident())
            return x * 2, [str(v) for v in frame["c"]], frame.assign(d=frame["c"] + 1)

    model = Many(ModelSettings(name="many"))
    request = InferenceRequest(inputs=[NumpyCodec.encode_input("x", np.array([[1, 2]])),
                                       RequestInput(name="c", shape=[2, 1], datatype="INT64", data=[5, 6])])

    async def call():
        return await model.predict(request), threading.get_ident()

    response, loop_thread = asyncio.run(call())
    assert threads and threads[0] != loop_thread  # a sync predict runs off the event loop
    assert [o.name for o in response.outputs] == ["output-0", "output-1", "c", "d"]
    assert StringCodec.decode_output(response.outputs[1]) == ["5", "6"]


def test_decode_args_refuses_what_it_cannot_decode_or_encode():
    with pytest.raises(CodecNotFound):
        class Bad(MLModel):
            @decode_args
            async def predict(self, x: set) -> np.ndarray:
                return np.zeros(1)

    class WrongReturn(MLModel):
        @decode_args
        async def predict(self, x: np.ndarray) -> np.ndarray:
            return ["not", "an", "array"]

    request = InferenceRequest(inputs=[NumpyCodec.encode_input("x", np.ones(2))])
    with pytest.raises(MLServerError) as failure:
        asyncio.run(WrongReturn(ModelSettings(name="w")).predict(request))
    assert failure.value.http == 500
    extra = InferenceRequest(inputs=[NumpyCodec.encode_input("x", np.ones(2)),
                                     NumpyCodec.encode_input("y", np.ones(2))])
    with pytest.raises(MLServerError) as failure:
        asyncio.run(WrongReturn(ModelSettings(name="w")).predict(extra))
    assert failure.value.http == 400 and "'y'" in str(failure.value)


# -- the codec registry -------------------------------------------------------------------------------

def test_registry_by_content_type_payload_and_type_hint():
    assert find_input_codec("np") is NumpyCodec and find_input_codec("str") is StringCodec
    assert find_input_codec(payload=[b"x"]) is Base64Codec
    assert find_input_codec(payload=[datetime.now()]) is DatetimeCodec
    assert find_input_codec(type_hint=List[str]) is StringCodec
    assert find_input_codec(type_hint=list[bytes]) is Base64Codec
    assert find_request_codec("pd") is PandasCodec and find_request_codec(payload=pd.DataFrame()) is PandasCodec
    assert find_request_codec("str") is StringRequestCodec and find_input_codec("nope") is None


def test_register_custom_codec_and_refuse_a_silent_replacement():
    @register_input_codec
    class Upper(InputCodec):
        ContentType = "upper-test"

        @classmethod
        def decode_input(cls, request_input):
            return [str(v).upper() for v in request_input.data]

    try:
        model = Plain(ModelSettings(name="m"))
        assert model.decode(text_input("t", ["ab"], "upper-test")) == ["AB"]
        with pytest.raises(ValueError):
            class Other(InputCodec):
                ContentType = "upper-test"

            register_input_codec(Other)
        with pytest.raises(TypeError):
            register_input_codec(native_codecs.NumpyCodec)  # gpuserve's codecs register with gpuserve's registry
    finally:
        unregister_input_codec("upper-test")


def test_codecs_registered_with_gpuserve_are_found_too():
    @native_codecs.register_input_codec
    class Reverse(native_codecs.InputCodec):
        ContentType = "reverse-test"

        @classmethod
        def decode_input(cls, request_input):
            return request_input.as_numpy()[::-1]

    try:
        wrapped = find_input_codec("reverse-test")
        assert wrapped is not None and wrapped.Native is Reverse
        data = RequestInput(name="x", shape=[3], datatype="INT32", data=[1, 2, 3])
        assert wrapped.decode_input(data).tolist() == [3, 2, 1]
    finally:
        native_codecs.unregister_input_codec("reverse-test")


# -- settings, uris, errors -------------------------------------------------------------------------------

def test_settings_view_resolves_uri_against_the_model_folder(tmp_path):
    (tmp_path / "weights.json").write_text("{}")
    native = NativeSettings(name="m", parameters={"uri": "./weights.json"}, folder=str(tmp_path))
    view = as_mlserver_settings(native)
    assert view.parameters.uri == str((tmp_path / "weights.json").resolve()) and view.folder == str(tmp_path)
    assert native.parameters.uri == "./weights.json"  # gpuserve's own settings are left alone
    defaulted = as_mlserver_settings(NativeSettings(name="m", folder=str(tmp_path)))
    assert defaulted.parameters.uri == str(tmp_path)
    assert view.parameters.environment_tarball is None and view.warm_workers is False


def test_get_model_uri_finds_wellknown_files(tmp_path):
    (tmp_path / "model.pkl").write_bytes(b"x")
    settings = as_mlserver_settings(NativeSettings(name="m", folder=str(tmp_path)))
    found = asyncio.run(get_model_uri(settings, wellknown_filenames=["model.joblib", "model.pkl"]))
    assert found == str(tmp_path / "model.pkl")
    assert asyncio.run(get_model_uri(settings)) == str(tmp_path)
    missing = as_mlserver_settings(NativeSettings(name="m", parameters={"uri": "nope.bin"}, folder=str(tmp_path)))
    with pytest.raises(MLServerError) as failure:
        asyncio.run(get_model_uri(missing))
    assert failure.value.http == 422


def test_mlserver_errors_have_their_status_in_the_error_table():
    assert status_of(InferenceError("bad")) == (400, "INVALID_ARGUMENT")
    assert status_of(MLServerError("boom", status_code=500)) == (500, "INTERNAL")
    assert isinstance(CodecNotFound(name="x"), GpuserveError)


# -- the adapter's edges ------------------------------------------------------------------------------

class Recorder(MLModel):
    unloaded = 0

    def load(self):  # sync load, returning None: ready
        self.loaded = True

    def predict(self, payload):
        count = np.array([len(payload.parameters.headers)])
        return InferenceResponse(model_name="", outputs=[NumpyCodec.encode_output("h", count)],
                                 parameters=Parameters(headers={"x-n": 1}, note="kept"))

    async def unload(self):
        Recorder.unloaded += 1
        return True


class Refuses(MLModel):
    async def load(self):
        return False


async def test_adapter_lifecycle_headers_and_protocol_checks():
    adapter = Recorder.__gpuserve_adapter__(NativeSettings(name="rec", parameters={"version": "3"}))
    assert isinstance(adapter, MLModelAdapter) and adapter.version == "3"
    assert await adapter.load() and adapter.ready and adapter.runtime.ready and adapter.runtime.loaded
    request = InferRequest.from_numpy("rec", {"x": np.ones(1)})
    response, headers = await adapter(request, {"a": "1", "b": "2"})
    ce = {k: v for k, v in headers.items() if k.startswith("Ce-")}  # MLServer's CloudEvents headers
    assert headers == {"x-n": "1", **ce} and ce["Ce-Type"] == "io.seldon.serving.inference.response"
    assert response.parameters == {"note": "kept"} and response.model_name == "rec"
    assert response.outputs[0].as_numpy().tolist() == [[2 + 6]]  # the client's two and six CloudEvents ones
    with pytest.raises(InvalidInput):
        await adapter({"instances": [1]}, {})
    with pytest.raises(GpuserveError) as failure:
        await adapter(request, {}, InferenceVerb.EXPLAIN)
    assert failure.value.http == 501
    assert adapter.metadata()["versions"] == [] and adapter.get_input_types() == []
    await adapter.aclose()
    adapter.stop()
    assert Recorder.unloaded == 1 and not adapter.ready

    refused = Refuses.__gpuserve_adapter__(NativeSettings(name="no"))
    assert await refused.load() is False and "returned False" in refused.reason


def _python(code: str, path: str = "") -> str:
    import os
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (path, os.environ.get("PYTHONPATH", "")) if p))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_mlserver_imports_mean_gpuserve_mlserver_where_mlserver_is_absent():
    out = _python(
        "import importlib.util, sys\n"
        "assert importlib.util.find_spec('mlserver') is None\n"
        "from gpuserve.mlserver.alias import install\n"
        "assert install() and install()\n"
        "import mlserver, gpuserve.mlserver\n"
        "from mlserver.codecs import NumpyCodec, decode_args\n"
        "from mlserver.types import InferenceRequest\n"
        "import gpuserve.mlserver.codecs as ours, gpuserve.mlserver.types as types\n"
        "assert mlserver is gpuserve.mlserver and NumpyCodec is ours.NumpyCodec\n"
        "assert InferenceRequest is types.InferenceRequest and sys.modules['mlserver.codecs'] is ours\n"
        "try:\n"
        "    import mlserver.no_such_part\n"
        "except ModuleNotFoundError as exc:\n"
        "    print('missing', exc.name)\n")
    assert out == "missing mlserver.no_such_part"


def test_an_installed_mlserver_is_left_alone(tmp_path):
    (tmp_path / "mlserver").mkdir()
    (tmp_path / "mlserver" / "__init__.py").write_text("REAL = True\n")
    out = _python("from gpuserve.mlserver.alias import install\n"
                  "assert not install()\n"
                  "import mlserver\n"
                  "print(mlserver.REAL)\n", str(tmp_path))
    assert out == "True"
