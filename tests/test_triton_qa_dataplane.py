"""Data-plane edge cases Triton's qa suites check (qa/L0_infer_zero, L0_infer_reshape, L0_infer_variable,
...), on small models shaped like the qa generators' (qa/common/gen_qa_*.py), built here and served from a
config.pbtxt repository, driven with tritonclient as those suites drive Triton."""

from __future__ import annotations

import textwrap
from typing import List

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from conftest import running_server
from gpuserve import ModelRepository
from gpuserve.repository import DiskRepository

# Triton's "identity" backend is C++; its qa ensembles call it as nop_* models: output i is input i
IDENTITY_PY = """
import json
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.pairs = list(zip([i["name"] for i in config["input"]], [o["name"] for o in config["output"]]))

    def execute(self, requests):
        responses = []
        for request in requests:
            outs = []
            for iname, oname in self.pairs:
                tensor = pb_utils.get_input_tensor_by_name(request, iname)
                if oname == "SHAPE":
                    array = tensor.as_numpy()
                    outs.append(pb_utils.Tensor(oname, np.array([array.shape[1:]] * len(array), np.int64)))
                else:
                    outs.append(pb_utils.Tensor(oname, tensor.as_numpy()))
            responses.append(pb_utils.InferenceResponse(outs))
        return responses
"""


def _model(root, name, config, files=None):
    folder = root / name
    (folder / "1").mkdir(parents=True)
    (folder / "config.pbtxt").write_text(f'name: "{name}"\n' + textwrap.dedent(config))
    for filename, write in (files or {}).items():
        write(folder / "1" / filename)
    return folder


def _python(root, name, config):
    return _model(root, name, 'backend: "python"\n' + textwrap.dedent(config),
                  {"model.py": lambda path: path.write_text(IDENTITY_PY)})


def _serve(root):
    return running_server(repository=DiskRepository(root).populate(ModelRepository()))


def _infer(server, protocol, model, arrays, datatype="FP32"):
    mod = httpclient if protocol == "http" else grpcclient
    client = mod.InferenceServerClient(f"127.0.0.1:{server.ports[protocol]}")
    inputs = []
    for name, array in arrays.items():
        tensor = mod.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return client.infer(model, inputs)


def _identity_onnx(names: List[str], dims: List[str]):
    """ONNX Identity for each INPUTi -> OUTPUTi, every dim symbolic."""
    def write(path):
        import onnx
        from onnx import TensorProto, helper

        def vi(name, i):
            return helper.make_tensor_value_info(name, TensorProto.FLOAT, [f"{d}{i}" for d in dims])

        graph = helper.make_graph([helper.make_node("Identity", [f"INPUT{n}"], [f"OUTPUT{n}"]) for n in names],
                                  "identity", [vi(f"INPUT{n}", n) for n in names],
                                  [vi(f"OUTPUT{n}", n) for n in names])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        model.ir_version = 8
        onnx.save(model, str(path))
    return write


NOBATCH_ZERO_3 = """
platform: "onnxruntime_onnx"
max_batch_size: 0
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] },
        { name: "INPUT1" data_type: TYPE_FP32 dims: [ -1 ] },
        { name: "INPUT2" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] },
         { name: "OUTPUT1" data_type: TYPE_FP32 dims: [ -1 ] },
         { name: "OUTPUT2" data_type: TYPE_FP32 dims: [ -1 ] } ]
"""


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_nobatch_model_inputs_may_differ_in_their_first_dim(tmp_path, protocol):
    """With max_batch_size 0 there is no batch dimension, even where every dim is -1: one request's inputs
    of lengths 0, 2 and 1 are fine (qa/L0_infer_zero onnx_nobatch_zero_3_float32; they were refused as
    'inputs disagree on the batch dimension' and a lone zero-length one as 'needs at least one row')."""
    _model(tmp_path, "onnx_nobatch_zero_3_float32", NOBATCH_ZERO_3,
           {"model.onnx": _identity_onnx(["0", "1", "2"], ["n"])})
    with _serve(tmp_path) as server:
        arrays = {"INPUT0": np.zeros(0, np.float32), "INPUT1": np.arange(2, dtype=np.float32),
                  "INPUT2": np.ones(1, np.float32)}
        result = _infer(server, protocol, "onnx_nobatch_zero_3_float32", arrays)
        for i in range(3):
            np.testing.assert_array_equal(result.as_numpy(f"OUTPUT{i}"), arrays[f"INPUT{i}"])
        zero = _infer(server, protocol, "onnx_nobatch_zero_3_float32", {f"INPUT{i}": np.zeros(0, np.float32)
                                                                      for i in range(3)})
        assert zero.as_numpy("OUTPUT2").shape == (0,)


NOP = """
max_batch_size: 1024
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] }, { name: "INPUT1" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] }, { name: "OUTPUT1" data_type: TYPE_FP32 dims: [ -1 ] } ]
instance_group [ { kind: KIND_CPU } ]
"""

NOBATCH_ENSEMBLE = """
platform: "ensemble"
max_batch_size: 0
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
ensemble_scheduling { step [
  { model_name: "nop" model_version: -1
    input_map { key: "INPUT0" value: "INPUT0" } input_map { key: "INPUT1" value: "INPUT0" }
    output_map { key: "OUTPUT0" value: "temp" } },
  { model_name: "nop" model_version: -1
    input_map { key: "INPUT0" value: "temp" } input_map { key: "INPUT1" value: "temp" }
    output_map { key: "OUTPUT0" value: "OUTPUT0" } } ] }
"""


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_nobatch_ensemble_through_a_batching_step(tmp_path, protocol):
    """As Triton's ensemble scheduler: a tensor of a non-batching ensemble that has a batching step's dims
    reaches it as a batch of one, and the step's batch-of-one output leaves the ensemble without the batch
    dimension (qa/L0_infer_zero simple_zero_nobatch_*, whose nop steps batch; they were refused with
    'Expected [-1, -1], got [10]')."""
    _python(tmp_path, "nop", NOP)
    _model(tmp_path, "simple_nobatch", NOBATCH_ENSEMBLE)
    with _serve(tmp_path) as server:
        for length in (10, 0):
            data = np.arange(length, dtype=np.float32)
            result = _infer(server, protocol, "simple_nobatch", {"INPUT0": data})
            np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), data)


PY_RESHAPE = """
max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 2, 2 ] reshape: { shape: [ 4 ] } },
        { name: "INPUT1" data_type: TYPE_FP32 dims: [ 2, 2 ] reshape: { shape: [ 4 ] } } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 2, 2 ] reshape: { shape: [ 4 ] } },
         { name: "SHAPE" data_type: TYPE_INT64 dims: [ 1 ] } ]
"""

RESHAPE_ENSEMBLE = """
platform: "ensemble"
max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4, 1 ] reshape: { shape: [ 2, 2 ] } } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 1, 4 ] reshape: { shape: [ 2, 2 ] } },
         { name: "SHAPE" data_type: TYPE_INT64 dims: [ 1 ] } ]
ensemble_scheduling { step [
  { model_name: "reshaping" model_version: -1
    input_map { key: "INPUT0" value: "INPUT0" } input_map { key: "INPUT1" value: "INPUT0" }
    output_map { key: "OUTPUT0" value: "OUTPUT0" } output_map { key: "SHAPE" value: "SHAPE" } } ] }
"""


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_reshape_in_python_models_and_ensembles(tmp_path, protocol):
    """Triton's core applies a config's `reshape` for every backend: a Python model's execute sees the
    reshape's dims and its outputs leave in the config's dims; an ensemble's own inputs reach its steps
    in their reshape's dims and its outputs leave in its dims (qa/L0_infer_reshape's *_reshape ensembles
    and their nop_tunnel steps were refused: 'Expected [-1, 4], got [1, 2, 2]')."""
    _python(tmp_path, "reshaping", PY_RESHAPE)
    _model(tmp_path, "ensemble_reshape", RESHAPE_ENSEMBLE)
    with _serve(tmp_path) as server:
        data = np.arange(12, dtype=np.float32).reshape(3, 2, 2)
        result = _infer(server, protocol, "reshaping", {"INPUT0": data, "INPUT1": data})
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), data)
        np.testing.assert_array_equal(result.as_numpy("SHAPE"), [[4]] * 3)
        data = np.arange(8, dtype=np.float32).reshape(2, 4, 1)
        result = _infer(server, protocol, "ensemble_reshape", {"INPUT0": data})
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), data.reshape(2, 1, 4))
        np.testing.assert_array_equal(result.as_numpy("SHAPE"), [[4]] * 2)


def test_declared_dims_take_the_variable_sizes_in_order():
    """Triton maps a reshape's variable dims onto the declared variable dims in order (numpy's reshape
    takes only one -1)."""
    from gpuserve.declared_tensors import declared_dims

    assert declared_dims((5, 3, 1, 7), [-1, 1, -1], [-1, -1, 1], True) == [3, 7, 1]
    assert declared_dims((2, 4), [2, 4], [8], False) == [8]


torch = pytest.importorskip("torch")


class _Identity(torch.nn.Module):
    def forward(self, x):
        return x + 0


class _Strings(torch.nn.Module):
    def forward(self, x: List[str]) -> List[str]:
        return x


LIBTORCH_RESHAPE = """
platform: "pytorch_libtorch"
max_batch_size: 8
input [ { name: "INPUT__0" data_type: TYPE_FP32 dims: [ 1 ] reshape: { shape: [ 1, 1, 1 ] } } ]
output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 1 ] reshape: { shape: [ 1, 1, 1 ] } } ]
"""

LIBTORCH_STRINGS = """
platform: "pytorch_libtorch"
max_batch_size: 8
input [ { name: "INPUT__0" data_type: TYPE_STRING dims: [ 1 ] reshape: { shape: [ ] } } ]
output [ { name: "OUTPUT__0" data_type: TYPE_STRING dims: [ 1 ] reshape: { shape: [ ] } } ]
"""


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_libtorch_reshape_and_one_list_of_strings_output(tmp_path, protocol):
    """A libtorch model gets its `reshape` as ONNX models do (its output came back [B, 1, 1, 1] where the
    config says [B, 1]); a forward returning one List[str] is one BYTES output (it was taken for a tuple of
    outputs, one per string: 500 "'str' object has no attribute 'cpu'"), qa/L0_infer_reshape test_ff1/oo1."""
    _model(tmp_path, "libtorch_zero_1_float32", LIBTORCH_RESHAPE,
           {"model.pt": lambda path: torch.jit.script(_Identity()).save(str(path))})
    _model(tmp_path, "libtorch_zero_1_object", LIBTORCH_STRINGS,
           {"model.pt": lambda path: torch.jit.script(_Strings()).save(str(path))})
    with _serve(tmp_path) as server:
        data = np.arange(3, dtype=np.float32).reshape(3, 1)
        result = _infer(server, protocol, "libtorch_zero_1_float32", {"INPUT__0": data})
        np.testing.assert_array_equal(result.as_numpy("OUTPUT__0"), data)
        words = np.array([[b"a"], [b"bc"]], dtype=object)
        result = _infer(server, protocol, "libtorch_zero_1_object", {"INPUT__0": words}, "BYTES")
        assert result.as_numpy("OUTPUT__0").tolist() == [[b"a"], [b"bc"]]


LABELLED = """
max_batch_size: 0
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1, -1 ] }, { name: "INPUT1" data_type: TYPE_FP32 dims: [ -1, -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1, -1 ] label_filename: "labels0.txt" },
         { name: "OUTPUT1" data_type: TYPE_FP32 dims: [ -1, -1 ] } ]
"""

LABELLED_ENSEMBLE = """
platform: "ensemble"
max_batch_size: 0
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1, -1 ] }, { name: "INPUT1" data_type: TYPE_FP32 dims: [ -1, -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1, -1 ] }, { name: "OUTPUT1" data_type: TYPE_FP32 dims: [ -1, -1 ] } ]
ensemble_scheduling { step [
  { model_name: "labelled" model_version: -1
    input_map { key: "INPUT0" value: "INPUT0" } input_map { key: "INPUT1" value: "INPUT1" }
    output_map { key: "OUTPUT0" value: "OUTPUT0" } output_map { key: "OUTPUT1" value: "OUTPUT1" } } ] }
"""


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_classification_labels_per_output_and_through_an_ensemble(tmp_path, protocol):
    """As Triton: an output's labels are its own label_filename's (an output without one has none); an
    ensemble output without one takes the labels of the step output that produces it; a non-batching
    model's (or ensemble's) output is classified as one flat tensor (qa/L0_infer_variable test_class_*:
    simple_*_nobatch answered one row per first dim, unlabelled)."""
    folder = _python(tmp_path, "labelled", LABELLED)
    (folder / "labels0.txt").write_text("".join(f"label{i}\n" for i in range(6)))
    _model(tmp_path, "labelled_ensemble", LABELLED_ENSEMBLE)
    data = np.array([[0, 5, 1], [4, 2, 3]], np.float32)
    with _serve(tmp_path) as server:
        mod = httpclient if protocol == "http" else grpcclient
        client = mod.InferenceServerClient(f"127.0.0.1:{server.ports[protocol]}")
        inputs = [mod.InferInput(n, [2, 3], "FP32") for n in ("INPUT0", "INPUT1")]
        for tensor in inputs:
            tensor.set_data_from_numpy(data)
        wanted = [mod.InferRequestedOutput(n, class_count=2) for n in ("OUTPUT0", "OUTPUT1")]
        for model in ("labelled", "labelled_ensemble"):
            result = client.infer(model, inputs, outputs=wanted)
            assert result.as_numpy("OUTPUT0").tolist() == [b"5.000000:1:label1", b"4.000000:3:label3"], model
            assert result.as_numpy("OUTPUT1").tolist() == [b"5.000000:1", b"4.000000:3"], model


# as qa/L0_optional_input's optional_identity: a response per given input, only that input's output
OPTIONAL_IDENTITY_PY = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            for i in ("0", "1"):
                tensor = pb_utils.get_input_tensor_by_name(request, "INPUT" + i)
                if tensor is not None:
                    responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT" + i, tensor.as_numpy())]))
        return responses
"""

OPTIONAL_TENSORS = """
max_batch_size: 4
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 1 ] optional: true },
        { name: "INPUT1" data_type: TYPE_FP32 dims: [ 1 ] optional: true } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 1 ] }, { name: "OUTPUT1" data_type: TYPE_FP32 dims: [ 1 ] } ]
"""

CONNECTING = """
ensemble_scheduling { step [
  { model_name: "optional_identity" model_version: -1
    input_map { key: "INPUT0" value: "INPUT0" } input_map { key: "INPUT1" value: "INPUT1" }
    output_map { key: "OUTPUT0" value: "internal0" } output_map { key: "OUTPUT1" value: "internal1" } },
  { model_name: "optional_identity" model_version: -1
    input_map { key: "INPUT0" value: "internal0" } input_map { key: "INPUT1" value: "internal1" }
    output_map { key: "OUTPUT0" value: "OUTPUT0" } output_map { key: "OUTPUT1" value: "OUTPUT1" } } ] }
"""


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_optional_inputs_and_outputs_not_given_flow_through_an_ensemble(tmp_path, protocol):
    """As Triton: an optional ensemble input left out, and a step output the step did not give, are absent
    tensors: steps run without them (their model's inputs being optional) and the ensemble answers without
    them; a Python model's declared output that it did not give is left out, not an error
    (qa/L0_optional_input test_ensemble_optional_*: 'cannot run its steps without ['INPUT1']')."""
    folder = _model(tmp_path, "optional_identity", 'backend: "python"\n' + OPTIONAL_TENSORS,
                    {"model.py": lambda path: path.write_text(OPTIONAL_IDENTITY_PY)})
    assert folder.exists()
    _model(tmp_path, "connecting", 'platform: "ensemble"\n' + OPTIONAL_TENSORS + CONNECTING)
    mod = httpclient if protocol == "http" else grpcclient
    data = np.ones((1, 1), np.float32)
    with _serve(tmp_path) as server:
        client = mod.InferenceServerClient(f"127.0.0.1:{server.ports[protocol]}")
        given = mod.InferInput("INPUT0", [1, 1], "FP32")
        given.set_data_from_numpy(data)
        for model in ("optional_identity", "connecting"):
            wanted = [mod.InferRequestedOutput("OUTPUT0"), mod.InferRequestedOutput("OUTPUT1")]
            result = client.infer(model, [given], outputs=wanted)
            np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), data)
            assert result.as_numpy("OUTPUT1") is None, model


NAN_INF_PY = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = np.array([np.nan, np.inf, -np.inf, 1, 2, 3], dtype=np.float32)
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", out)]) for _ in requests]
"""


def test_nan_and_infinities_in_json_as_triton_writes_them(tmp_path):
    """Triton's JSON writes NaN, Infinity and -Infinity (qa/L0_nan_inf); orjson alone wrote null, so
    tritonclient's as_numpy gave nan for all three and the infinities were lost."""
    import urllib.request

    _model(tmp_path, "nan_inf_output", """
           backend: "python"
           input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
           output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 6 ] } ]
           """, {"model.py": lambda path: path.write_text(NAN_INF_PY)})
    with _serve(tmp_path) as server:
        body = b'{"inputs":[{"name":"INPUT0","datatype":"FP32","shape":[1],"data":[1]}]}'
        url = f"http://127.0.0.1:{server.ports['http']}/v2/models/nan_inf_output/infer"
        with urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST")) as answer:
            text = answer.read().decode()
        assert '"data":[NaN,Infinity,-Infinity,1.0,2.0,3.0]' in text
        client = httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}")
        tensor = httpclient.InferInput("INPUT0", [1], "FP32")
        tensor.set_data_from_numpy(np.zeros(1, np.float32))
        got = client.infer("nan_inf_output", [tensor], outputs=[httpclient.InferRequestedOutput(
            "OUTPUT0", binary_data=False)]).as_numpy("OUTPUT0")
        np.testing.assert_array_equal(got, np.array([np.nan, np.inf, -np.inf, 1, 2, 3], np.float32))


LIBTORCH_OUTPUT = """
platform: "pytorch_libtorch"
max_batch_size: 8
input [ { name: "INPUT__0" data_type: TYPE_FP32 dims: [ 1 ] } ]
output [ { name: "%s" data_type: %s dims: [ 1 ] } ]
"""


def test_libtorch_outputs_are_checked_against_the_config_at_each_run(tmp_path):
    """As Triton's libtorch backend (qa/L0_output_validation): an output declared as NAME__N is the forward's
    N-th return value, and one that does not exist, or a dtype other than the declared one, fails the
    request with its words (gpuserve answered the first return value under either name, as FP32)."""
    import urllib.error
    import urllib.request

    def save(path):
        torch.jit.script(_Identity()).save(str(path))

    _model(tmp_path, "libtorch_datatype_1_float32", LIBTORCH_OUTPUT % ("OUTPUT__0", "TYPE_INT32"), {"model.pt": save})
    _model(tmp_path, "libtorch_index_1_float32", LIBTORCH_OUTPUT % ("OUTPUT__1", "TYPE_FP32"), {"model.pt": save})
    _model(tmp_path, "libtorch_zero_1_float32", LIBTORCH_OUTPUT % ("OUTPUT__0", "TYPE_FP32"), {"model.pt": save})
    body = b'{"inputs":[{"name":"INPUT__0","shape":[1,1],"datatype":"FP32","data":[1.0]}]}'
    with _serve(tmp_path) as server:
        def post(model):
            url = f"http://127.0.0.1:{server.ports['http']}/v2/models/{model}/infer"
            try:
                with urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST")) as answer:
                    return answer.status, answer.read().decode()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read().decode()

        status, text = post("libtorch_datatype_1_float32")
        assert status == 400 and "configuration expects datatype TYPE_INT32 for output 'OUTPUT__0', model " \
                                 "provides TYPE_FP32" in text
        status, text = post("libtorch_index_1_float32")
        assert status == 400 and "The output OUTPUT__1 in the model configuration refers to an output index " \
                                 "which doesn't exist. This model has 1 outputs" in text
        assert post("libtorch_zero_1_float32")[0] == 200


def _scalar_onnx(path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["INPUT"], ["OUTPUT"])], "scalar",
                              [helper.make_tensor_value_info("INPUT", TensorProto.FLOAT, [])],
                              [helper.make_tensor_value_info("OUTPUT", TensorProto.FLOAT, [])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


SCALAR = """
input [ { name: "INPUT" data_type: TYPE_FP32 dims: [ %s ] } ]
output [ { name: "OUTPUT" data_type: TYPE_FP32 dims: [ %s ] } ]
"""


def test_onnx_scalar_tensors_take_config_dims_of_ones_only(tmp_path):
    """As Triton's ONNX Runtime backend (qa/L0_scalar_io): a scalar model tensor is served with config dims
    of 1s ([1], [1, 1]); other dims fail the load in its words (gpuserve loaded dims [2] and served them)."""
    for name, dims in (("onnx_scalar_1dim", "1"), ("onnx_scalar_2dim", "1, 1"), ("onnx_scalar_bad", "2")):
        _model(tmp_path, name, SCALAR % (dims, dims), {"model.onnx": _scalar_onnx})
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    with running_server(repository=registry) as server:
        bad = registry.get_model("onnx_scalar_bad")
        assert not bad.ready and ("unable to load model 'onnx_scalar_bad', scalar tensor 'INPUT', should only "
                                  "provide 1 in the model configuration when the model doesn't support batching. "
                                  "Model configuration provided: [2].") in bad.reason
        for name, data in (("onnx_scalar_1dim", np.ones(1, np.float32)), ("onnx_scalar_2dim", np.ones((1, 1), np.float32))):
            result = _infer(server, "grpc", name, {"INPUT": data})
            np.testing.assert_array_equal(result.as_numpy("OUTPUT"), data)


@pytest.mark.parametrize("accept, encoding", [("gzip", "gzip"), ("deflate", "deflate"), ("identity", None),
                                              ("deflate;q=0.5, gzip;q=0.8", "gzip"), ("br", None)])
def test_inference_answers_are_compressed_as_accept_encoding_asks(tmp_path, accept, encoding):
    """As Triton (qa/L0_data_compression): an inference answer is compressed with the Accept-Encoding choice
    of the highest weight among gzip and deflate (tritonclient's response_compression_algorithm); gpuserve
    answered uncompressed whatever was asked."""
    import urllib.request
    import zlib

    _model(tmp_path, "ident", NOBATCH_ZERO_3, {"model.onnx": _identity_onnx(["0", "1", "2"], ["n"])})
    def body(n):
        data = b",".join(b"%d.25" % k for k in range(n))
        return b'{"inputs":[' + b",".join(b'{"name":"INPUT%d","shape":[%d],"datatype":"FP32","data":[%s]}' % (i, n, data)
                                          for i in range(3)) + b"]}"

    with _serve(tmp_path) as server:
        url = f"http://127.0.0.1:{server.ports['http']}/v2/models/ident/infer"
        request = urllib.request.Request(url, data=body(300), method="POST", headers={"Accept-Encoding": accept})
        with urllib.request.urlopen(request) as answer:
            assert answer.headers.get("Content-Encoding") == encoding
            raw = answer.read()
        text = zlib.decompress(raw, 31 if encoding == "gzip" else 15) if encoding else raw
        assert b'"name":"OUTPUT2"' in text
        # an answer under COMPRESS_MIN_BYTES goes as it is, whatever was asked (it would not get smaller)
        small = urllib.request.Request(url, data=body(3), method="POST", headers={"Accept-Encoding": accept})
        with urllib.request.urlopen(small) as answer:
            assert answer.headers.get("Content-Encoding") is None
            assert b'"name":"OUTPUT2"' in answer.read()
        if encoding:
            client = httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}")
            for n in (2, 400):  # answered as it is, then compressed
                inputs = [httpclient.InferInput(f"INPUT{i}", [n], "FP32") for i in range(3)]
                for tensor in inputs:
                    tensor.set_data_from_numpy(np.arange(n, dtype=np.float32))
                result = client.infer("ident", inputs, request_compression_algorithm=encoding,
                                      response_compression_algorithm=encoding)
                np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), np.arange(n))


TWO_STEPS = """
platform: "ensemble"
max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] }, { name: "OUTPUT1" data_type: TYPE_FP32 dims: [ -1 ] } ]
ensemble_scheduling { step [
  { model_name: "first" model_version: -1
    input_map { key: "INPUT0" value: "INPUT0" } input_map { key: "INPUT1" value: "INPUT0" }
    output_map { key: "OUTPUT0" value: "OUTPUT0" } },
  { model_name: "second" model_version: -1
    input_map { key: "INPUT0" value: "INPUT0" } input_map { key: "INPUT1" value: "INPUT0" }
    output_map { key: "OUTPUT1" value: "OUTPUT1" } } ] }
"""


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_ensemble_runs_only_the_steps_the_requested_outputs_need(tmp_path, protocol):
    """As Triton (qa/L0_simple_ensemble): a step none of whose outputs is requested (or needed by a needed
    step) does not run, and an answer made by steps carries the request's sequence_id, sequence_start and
    sequence_end as parameters (test_ensemble_sequence_flags reads them; gpuserve ran every step and
    answered no parameters)."""
    for name in ("first", "second"):
        _python(tmp_path, name, NOP)
    _model(tmp_path, "two_steps", TWO_STEPS)
    mod = httpclient if protocol == "http" else grpcclient
    with _serve(tmp_path) as server:
        client = mod.InferenceServerClient(f"127.0.0.1:{server.ports[protocol]}")
        tensor = mod.InferInput("INPUT0", [1, 2], "FP32")
        tensor.set_data_from_numpy(np.ones((1, 2), np.float32))
        result = client.infer("two_steps", [tensor], outputs=[mod.InferRequestedOutput("OUTPUT0")],
                              sequence_id=7, sequence_start=True)
        assert result.as_numpy("OUTPUT1") is None
        stats = client.get_inference_statistics("second")
        if protocol == "grpc":
            assert stats.model_stats[0].inference_count == 0
            flags = result.get_response().parameters
            assert (flags["sequence_id"].int64_param, flags["sequence_start"].bool_param,
                    flags["sequence_end"].bool_param) == (7, True, False)
        else:
            assert stats["model_stats"][0]["inference_count"] == 0
            assert result.get_response()["parameters"] == {"sequence_id": 7, "sequence_start": True,
                                                           "sequence_end": False}


def test_http_bodies_are_taken_up_to_2_gib_by_default():
    """Triton 2.51 takes a binary tensor of 300 MB (and qa/L0_large_payload's 1.9 GB) over HTTP, as gRPC;
    gpuserve refused bodies past 256 MiB with 413. The default is now gRPC's message bound, 2 GiB - 1."""
    from gpuserve.settings import ServerSettings

    settings = ServerSettings.load(None)
    assert settings.max_request_bytes == 2**31 - 1 == settings.grpc_max_message_bytes
