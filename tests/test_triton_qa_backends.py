"""Behaviours Triton's backend qa suites check (qa/L0_warmup, L0_backend_onnxruntime, L0_onnx_optimization,
L0_libtorch_*, L0_model_namespacing), with models built here. Each suite ran against `gpuserve start`
as its test.sh runs Triton; these are the cases where gpuserve first behaved differently.

- L0_warmup: a failing sample leaves the model unavailable with Triton's reason ("failed to run warmup
  sample 'NAME': MESSAGE; "); a decoupled Python model warms up through its response sender; a sample of
  batch_size N with input_data_file sends the file's data in each of its N rows (the file holds one
  request's); each run is logged in Triton's verbose words ("... is running warmup sample 'NAME' for
  iteration N").
- L0_backend_onnxruntime: a BF16 add/sub graph, which ONNX Runtime's CPU provider has no kernels for, is
  served on the CPU by a float32 copy of the graph with its BF16 outputs rounded (it failed to load); the
  answers equal BF16 arithmetic exactly.
- L0_onnx_optimization (the CPU checks): session.use_device_allocator_for_initializers reaches the session's
  config, memory.enable_memory_arena_shrinkage every run's; boolean parameters take Triton's spellings; a CPU
  execution accelerator other than openvino fails the load in Triton's words (GPU accelerators apply to GPU
  instances only, as in Triton).
- L0_libtorch_io_types: a UINT16/32/64 input, output or sequence control fails a libtorch model's load in
  Triton's words (gpuserve loaded it and failed its requests).
- L0_libtorch_inference_mode / _optimized_execution / _shared_weights: INFERENCE_MODE false runs under no_grad
  only, DISABLE_OPTIMIZED_EXECUTION true turns TorchScript's graph optimizer off, ENABLE_WEIGHT_SHARING makes
  a model's instances on one device run one module (gpuserve ignored all three); each said in Triton's words,
  and a value that is not a boolean fails the load as in Triton.
- L0_model_namespacing: with --model-namespacing=true a name two repository folders hold is served from
  each; an ensemble reaches its own folder's copy (else the one copy elsewhere, as the folders change), a
  plain request for it is refused with Triton's "... model namespace must be provided to resolve
  ambiguity."; --model-control-mode takes POLL/EXPLICIT in capitals, as Triton does.
- L0_initializer_as_input: an ONNX initializer the graph also lists as an input is an optional input (the model
  failed to load); a missing required input is refused in Triton core's words.
- L0_libtorch_instance_group_kind_model: KIND_MODEL shows as such and leaves device placement to the model.
- L0_backend_config: --backend-config is parsed and refused in Triton's words; default-max-batch-size completes
  an ONNX model without a config (gpuserve completed it with 64), with Triton's verbose log lines.
- L0_io (CPU parts): a Python model's Tensor.to_dlpack() of a binary request input works (BufferError before).
- L0_pytorch_python_runtime: backend "pytorch" with runtime "model.py" runs an nn.Module or TorchScript file
  as Triton's PyTorch runtime in Python does (the config was refused).
"""

import logging
import textwrap

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import running_server
from gpuserve import ModelRepository
from gpuserve.errors import ModelLoadError
from gpuserve.repository import DiskRepository

def _serve(root, **settings):
    return running_server(repository=DiskRepository(root).populate(ModelRepository()), **settings)


def _python_model(root, name, config, source):
    (root / name / "1").mkdir(parents=True)
    (root / name / "config.pbtxt").write_text(textwrap.dedent(config))
    (root / name / "1" / "model.py").write_text(
        "import numpy as np\nimport triton_python_backend_utils as pb_utils\n\n" + textwrap.dedent(source))


def _warmup(name, dims, data="zero_data: true", batch=1, count=1, key="INPUT", datatype="TYPE_FP32"):
    return (f'model_warmup [{{ name: "{name}" batch_size: {batch} count: {count} inputs {{ key: "{key}" '
            f'value: {{ data_type: {datatype} dims: {dims} {data} }} }} }}]\n')


PY_CONFIG = """
backend: "python"
input [ { name: "INPUT" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUTPUT" data_type: TYPE_FP32 dims: [ 4 ] } ]
instance_group [ { kind: KIND_CPU } ]
"""


def test_a_failing_warmup_sample_leaves_the_model_unavailable_with_tritons_reason(tmp_path):
    _python_model(tmp_path, "failing_infer", PY_CONFIG + _warmup("zero sample", 4), """
        class TritonPythonModel:
            def execute(self, requests):
                return [pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError("An Error Occurred"))
                        for _ in requests]
        """)
    with _serve(tmp_path) as server:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}")
        [entry] = client.get_model_repository_index()
        assert entry["state"] == "UNAVAILABLE"
        assert "failed to run warmup sample 'zero sample': An Error Occurred; " in entry["reason"], entry
        assert not client.is_model_ready("failing_infer")


def test_a_decoupled_python_model_warms_up_through_its_response_sender(tmp_path, caplog):
    _python_model(tmp_path, "decoupled", PY_CONFIG + "model_transaction_policy { decoupled: True }\n"
                  + _warmup("decoupled sample", 4, count=2), """
        class TritonPythonModel:
            def execute(self, requests):
                for request in requests:
                    request.get_response_sender().send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                return None
        """)
    with caplog.at_level(logging.DEBUG, logger="gpuserve"):
        model = DiskRepository(tmp_path).build("decoupled")[0]
        try:
            assert model.load() is True
        finally:
            model.stop()
    said = caplog.text
    assert "model 'decoupled' instance decoupled_0_0 is running warmup sample 'decoupled sample' for iteration 1" \
        in said and "for iteration 2" in said


def test_an_error_response_sent_by_a_decoupled_model_fails_its_warmup(tmp_path):
    _python_model(tmp_path, "m", PY_CONFIG + "model_transaction_policy { decoupled: True }\n"
                  + _warmup("s", 4), """
        class TritonPythonModel:
            def execute(self, requests):
                for request in requests:
                    request.get_response_sender().send(pb_utils.InferenceResponse(
                        error=pb_utils.TritonError("no good")), flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        """)
    model = DiskRepository(tmp_path).build("m")[0]
    with pytest.raises(Exception, match="failed to run warmup sample 's': no good; "):
        model.load()


def test_a_batched_python_warmup_sample_is_n_requests_of_one_row(tmp_path):
    _python_model(tmp_path, "m", PY_CONFIG.replace('backend: "python"', 'backend: "python"\nmax_batch_size: 8')
                  + _warmup("eight", 4, batch=8), """
        class TritonPythonModel:
            def execute(self, requests):
                shapes = [pb_utils.get_input_tensor_by_name(r, "INPUT").as_numpy().shape for r in requests]
                if len(requests) != 8 or set(shapes) != {(1, 4)}:
                    raise ValueError(f"{len(requests)} requests of {shapes}")
                return [pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT", np.zeros((1, 4), np.float32))])
                        for _ in requests]
        """)
    model = DiskRepository(tmp_path).build("m")[0]
    try:
        assert model.load() is True
    finally:
        model.stop()


def _onnx_string_identity(path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["INPUT"], ["OUTPUT"])], "identity",
                              [helper.make_tensor_value_info("INPUT", TensorProto.STRING, ["b", 1])],
                              [helper.make_tensor_value_info("OUTPUT", TensorProto.STRING, ["b", 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_an_input_data_file_holds_one_request_of_a_batched_sample(tmp_path):
    """qa/L0_warmup's onnx_sequence_object: batch_size 8, dims [1], a file of one string ("233")."""
    folder = tmp_path / "strings"
    (folder / "1").mkdir(parents=True)
    (folder / "warmup").mkdir()
    _onnx_string_identity(folder / "1" / "model.onnx")
    (folder / "warmup" / "raw_string_data").write_bytes(b"\x03\x00\x00\x00233")
    (folder / "config.pbtxt").write_text(
        'platform: "onnxruntime_onnx"\nmax_batch_size: 8\n'
        'input [ { name: "INPUT" data_type: TYPE_STRING dims: [ 1 ] } ]\n'
        'output [ { name: "OUTPUT" data_type: TYPE_STRING dims: [ 1 ] } ]\n'
        + _warmup("string statefull", 1, 'input_data_file: "raw_string_data"', batch=8, datatype="TYPE_STRING"))
    model = DiskRepository(tmp_path).build("strings")[0]
    try:
        assert model.load() is True
    finally:
        model.stop()


# L0_onnx_optimization: the ONNX Runtime backend's `parameters`, applied on the CPU ----------------------------

def _onnx_addsub(root, name, extra="", onnx_type="FLOAT", triton_type="TYPE_FP32"):
    """As qa's onnx_float32_float32_float32: OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1."""
    import onnx
    from onnx import TensorProto, helper

    (root / name / "1").mkdir(parents=True)
    kind = getattr(TensorProto, onnx_type)
    io = [helper.make_tensor_value_info(n, kind, ["b", 16]) for n in ("INPUT0", "INPUT1")]
    out = [helper.make_tensor_value_info(n, kind, ["b", 16]) for n in ("OUTPUT0", "OUTPUT1")]
    graph = helper.make_graph([helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
                               helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"])], "addsub", io, out)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(root / name / "1" / "model.onnx"))
    tensors = lambda names: ", ".join(  # noqa: E731
        f'{{ name: "{n}" data_type: {triton_type} dims: [ 16 ] }}' for n in names)
    (root / name / "config.pbtxt").write_text(
        f'name: "{name}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 8\n'
        f'input [ {tensors(("INPUT0", "INPUT1"))} ]\noutput [ {tensors(("OUTPUT0", "OUTPUT1"))} ]\n' + extra)


def _param(key, value):
    return f'parameters: {{ key: "{key}" value: {{ string_value: "{value}" }} }}\n'


def test_onnx_session_and_run_entries_reach_onnx_runtime(tmp_path, caplog):
    """qa's _session_config and _cpu_config models: the session entry is set on the session, the arena
    shrinkage on every run (gpuserve ignored both), each said in Triton's verbose words."""
    _onnx_addsub(tmp_path, "m", "instance_group { count: 2 kind: KIND_CPU }\n"
                 + _param("session.use_device_allocator_for_initializers", "1")
                 + _param("memory.enable_memory_arena_shrinkage", "cpu:0")
                 + _param("enable_mem_arena", "ON") + _param("enable_mem_pattern", "off"))
    with caplog.at_level(logging.DEBUG, logger="gpuserve"):
        model = DiskRepository(tmp_path).build("m")[0]
        try:
            assert model.load() is True
            backend = model.backend
            options = backend.session.get_session_options()
            assert options.get_session_config_entry("session.use_device_allocator_for_initializers") == "1"
            assert options.enable_cpu_mem_arena is True and options.enable_mem_pattern is False
            assert backend.run_options.get_run_config_entry("memory.enable_memory_arena_shrinkage") == "cpu:0"
            x = np.arange(16, dtype=np.float32).reshape(1, 16)
            out = backend.run({"INPUT0": x, "INPUT1": x})
            np.testing.assert_array_equal(out["OUTPUT0"], x + x)
        finally:
            model.stop()
    said = caplog.text
    for line in ("Configuring 'session.use_device_allocator_for_initializers' to '1' for 'm'",
                 "Configuring memory.enable_memory_arena_shrinkage to cpu:0",
                 "Configuring enable_mem_arena to ON", "Configuring enable_mem_pattern to off"):
        assert line in said, line


def test_an_onnx_boolean_parameter_that_is_not_one_fails_the_load_in_tritons_words(tmp_path):
    _onnx_addsub(tmp_path, "m", _param("enable_mem_arena", "maybe"))
    model = DiskRepository(tmp_path).build("m")[0]
    assert model.load() is False
    assert "failed to convert 'maybe' to boolean" in model.reason


# L0_libtorch_io_types: types torch has no dtype for fail the load --------------------------------------------

def _torch_addsub(path):
    import torch

    class AddSub(torch.nn.Module):
        def forward(self, INPUT0, INPUT1):
            return INPUT0 + INPUT1, INPUT0 - INPUT1

    torch.jit.save(torch.jit.script(AddSub()), str(path))


def _libtorch_model(root, name, in_type, out_type, extra=""):
    (root / name / "1").mkdir(parents=True)
    _torch_addsub(root / name / "1" / "model.pt")
    (root / name / "config.pbtxt").write_text(
        f'name: "{name}"\nplatform: "pytorch_libtorch"\nmax_batch_size: 8\n{extra}'
        f'input [ {{ name: "INPUT0" data_type: {in_type} dims: [ 16 ] }}, '
        f'{{ name: "INPUT1" data_type: {in_type} dims: [ 16 ] }} ]\n'
        f'output [ {{ name: "OUTPUT__0" data_type: {out_type} dims: [ 16 ] }}, '
        f'{{ name: "OUTPUT__1" data_type: {out_type} dims: [ 16 ] }} ]\n')


@pytest.mark.parametrize("in_type, out_type, said", [
    ("TYPE_UINT32", "TYPE_INT32", "unsupported datatype TYPE_UINT32 for input 'INPUT0' for model 'm'"),
    ("TYPE_INT32", "TYPE_UINT64", "unsupported datatype TYPE_UINT64 for output 'OUTPUT__0' for model 'm'"),
])
def test_a_libtorch_tensor_type_torch_lacks_fails_the_load_in_tritons_words(tmp_path, in_type, out_type, said):
    _libtorch_model(tmp_path, "m", in_type, out_type)
    with pytest.raises(ModelLoadError) as failed:
        DiskRepository(tmp_path).build("m")[0].load()
    assert said in str(failed.value)


def test_a_libtorch_sequence_control_type_torch_lacks_fails_the_load_in_tritons_words(tmp_path):
    control = ('sequence_batching { control_input [ { name: "CORRID__2" control [ { kind: CONTROL_SEQUENCE_CORRID '
               'data_type: TYPE_UINT32 } ] } ] }\n')
    _libtorch_model(tmp_path, "m", "TYPE_INT32", "TYPE_INT32", control)
    with pytest.raises(ModelLoadError, match="input 'CORRID__2' type 'TYPE_UINT32' is not supported by PyTorch."):
        DiskRepository(tmp_path).build("m")[0].load()


# L0_libtorch_inference_mode, _optimized_execution, _shared_weights: the libtorch backend's switches ----------

def test_libtorch_inference_mode_and_optimized_execution_switches_are_applied(tmp_path, caplog):
    import torch

    _libtorch_model(tmp_path, "m", "TYPE_FP32", "TYPE_FP32",
                    _param("INFERENCE_MODE", "false") + _param("DISABLE_OPTIMIZED_EXECUTION", "true"))
    with caplog.at_level(logging.INFO, logger="gpuserve"):
        model = DiskRepository(tmp_path).build("m")[0]
        try:
            assert model.load() is True
            backend = model.backend
            with backend._mode():
                assert not torch.is_inference_mode_enabled() and not torch.is_grad_enabled()
                assert torch._C._get_graph_executor_optimize() is False
            x = np.arange(16, dtype=np.float32).reshape(1, 16)
            out = backend.run({"INPUT0": x, "INPUT1": x})
            np.testing.assert_array_equal(out["OUTPUT__0"], x + x)
        finally:
            model.stop()
    assert "Inference Mode is disabled for model instance 'm'" in caplog.text
    assert "Optimized execution is disabled for model instance 'm'" in caplog.text


def test_libtorch_switches_are_said_once_a_loaded_version(tmp_path, caplog):
    """qa counts Triton's lines: one per version loaded (the configs were read more often than that)."""
    _libtorch_model(tmp_path, "m", "TYPE_FP32", "TYPE_FP32", _param("INFERENCE_MODE", "true"))
    (tmp_path / "m" / "2").mkdir()
    (tmp_path / "m" / "2" / "model.pt").write_bytes((tmp_path / "m" / "1" / "model.pt").read_bytes())
    with (tmp_path / "m" / "config.pbtxt").open("a") as config:
        config.write("version_policy: { all { } }\n")
    with caplog.at_level(logging.INFO, logger="gpuserve"), _serve(tmp_path) as server:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}")
        assert client.is_model_ready("m", "1") and client.is_model_ready("m", "2")
    assert caplog.text.count("Inference Mode is enabled for model instance 'm'") == 2
    assert caplog.text.count("Optimized execution is enabled for model instance 'm'") == 2


def test_libtorch_weight_sharing_runs_one_module_per_device(tmp_path, caplog):
    _libtorch_model(tmp_path, "m", "TYPE_FP32", "TYPE_FP32",
                    "instance_group [ { count: 4 kind: KIND_CPU } ]\n" + _param("ENABLE_WEIGHT_SHARING", "true"))
    _libtorch_model(tmp_path, "apart", "TYPE_FP32", "TYPE_FP32", "instance_group [ { count: 2 kind: KIND_CPU } ]\n")
    with caplog.at_level(logging.INFO, logger="gpuserve"), _serve(tmp_path) as server:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}")
        x = np.ones((1, 16), np.float32)
        inputs = [httpclient.InferInput(n, [1, 16], "FP32") for n in ("INPUT0", "INPUT1")]
        for i in inputs:
            i.set_data_from_numpy(x)
        np.testing.assert_array_equal(client.infer("m", inputs).as_numpy("OUTPUT__1"), x - x)
    assert caplog.text.count("Reusing TorchScript model for instance 'm'") == 3
    assert "Reusing TorchScript model for instance 'apart'" not in caplog.text
    assert "Weight sharing is enabled for model instance 'm'" in caplog.text


def test_libtorch_instances_share_their_module_only_when_asked(tmp_path):
    _libtorch_model(tmp_path, "m", "TYPE_FP32", "TYPE_FP32",
                    "instance_group [ { count: 3 kind: KIND_CPU } ]\n" + _param("ENABLE_WEIGHT_SHARING", "on"))
    model = DiskRepository(tmp_path).build("m")[0]
    try:
        assert model.load() is True
        modules = {id(instance.backend.module) for instance in model.scheduler.instances}
        assert len(modules) == 1
    finally:
        model.stop()


def test_a_libtorch_switch_that_is_not_a_boolean_fails_the_load_in_tritons_words(tmp_path):
    _libtorch_model(tmp_path, "m", "TYPE_FP32", "TYPE_FP32", _param("INFERENCE_MODE", "yes please"))
    model = DiskRepository(tmp_path).build("m")[0]
    assert model.load() is False
    assert "failed to convert 'yes please' to boolean" in model.reason


# L0_backend_onnxruntime: BF16 operators on the CPU ---------------------------------------------------------

def _onnx_bf16_addsub(root, name):
    _onnx_addsub(root, name, 'instance_group [ { kind: KIND_CPU } ]\n', "BFLOAT16", "TYPE_BF16")


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_bf16_onnx_graph_is_served_on_the_cpu_with_bf16_arithmetic(tmp_path, protocol):
    import ml_dtypes
    import tritonclient.grpc as grpcclient

    _onnx_bf16_addsub(tmp_path, "onnx_bf16")
    cases = [(0.0, 0.0), (-1.5, 3.5), (100.0, 200.0), (1e-2, 1e-2), (1.0, -1.0), (2.0, 2.0), (1.0, 1e-3)]
    a = np.array([[x] * 16 for x, _ in cases], dtype=ml_dtypes.bfloat16)
    b = np.array([[y] * 16 for _, y in cases], dtype=ml_dtypes.bfloat16)
    with _serve(tmp_path) as server:
        module = httpclient if protocol == "http" else grpcclient
        client = module.InferenceServerClient(f"127.0.0.1:{server.ports[protocol]}")
        inputs = [module.InferInput("INPUT0", list(a.shape), "BF16"), module.InferInput("INPUT1", list(b.shape), "BF16")]
        inputs[0].set_data_from_numpy(a)
        inputs[1].set_data_from_numpy(b)
        result = client.infer("onnx_bf16", inputs)
        total, difference = result.as_numpy("OUTPUT0"), result.as_numpy("OUTPUT1")
    assert total.dtype == ml_dtypes.bfloat16 and difference.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(total, a + b)
    np.testing.assert_array_equal(difference, a - b)


def _cpu_accelerator(name):
    return f'optimization {{ execution_accelerators {{ cpu_execution_accelerator : [ {{ name : "{name}" }} ] }} }}\n'


def test_an_unknown_onnx_cpu_accelerator_fails_the_load_in_tritons_words(tmp_path):
    _onnx_addsub(tmp_path, "m", _cpu_accelerator("unknown_cpu"))
    model = DiskRepository(tmp_path).build("m")[0]
    assert model.load() is False
    assert "unknown Execution Accelerator 'unknown_cpu' is requested" in model.reason


def test_the_openvino_cpu_accelerator_runs_on_onnx_runtimes_cpu_provider(tmp_path):
    _onnx_addsub(tmp_path, "m", _cpu_accelerator("openvino"))
    model = DiskRepository(tmp_path).build("m")[0]
    try:
        assert model.load() is True
        x = np.ones((2, 16), np.float32)
        np.testing.assert_array_equal(model.backend.run({"INPUT0": x, "INPUT1": x})["OUTPUT1"], x - x)
    finally:
        model.stop()


# L0_model_namespacing ----------------------------------------------------------------------------------

COMPOSING = """
    class TritonPythonModel:
        @staticmethod
        def auto_complete_config(config):
            for name in ("INPUT0", "INPUT1"):
                config.add_input({"name": name, "data_type": "TYPE_INT32", "dims": [16]})
            for name in ("OUTPUT0", "OUTPUT1"):
                config.add_output({"name": name, "data_type": "TYPE_INT32", "dims": [16]})
            return config

        def execute(self, requests):
            out = []
            for request in requests:
                a, b = (pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in ("INPUT0", "INPUT1"))
                first, second = (a + b, a - b) if SIGN > 0 else (a - b, a + b)
                out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", first.astype(np.int32)),
                                                       pb_utils.Tensor("OUTPUT1", second.astype(np.int32))]))
            return out
    """

ENSEMBLE = """platform: "ensemble"
max_batch_size: 0
input [ { name: "INPUT0" data_type: TYPE_INT32 dims: [ 16 ] }, { name: "INPUT1" data_type: TYPE_INT32 dims: [ 16 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 16 ] }, { name: "OUTPUT1" data_type: TYPE_INT32 dims: [ 16 ] } ]
ensemble_scheduling { step [ { model_name: "composing_model" model_version: -1
  input_map { key: "INPUT0" value: "INPUT0" } input_map { key: "INPUT1" value: "INPUT1" }
  output_map { key: "OUTPUT0" value: "OUTPUT0" } output_map { key: "OUTPUT1" value: "OUTPUT1" } } ] }
"""


def _namespaced_repos(tmp_path):
    roots = []
    for folder, ensemble, sign in (("addsub_repo", "simple_addsub", 1), ("subadd_repo", "simple_subadd", -1)):
        root = tmp_path / folder
        (root / "composing_model" / "1").mkdir(parents=True)
        (root / "composing_model" / "1" / "model.py").write_text(
            f"import numpy as np\nimport triton_python_backend_utils as pb_utils\nSIGN = {sign}\n"
            + textwrap.dedent(COMPOSING))
        (root / ensemble / "1").mkdir(parents=True)
        (root / ensemble / "config.pbtxt").write_text(ENSEMBLE)
        roots.append(root)
    return roots


def test_model_namespacing_serves_one_name_from_each_folder(tmp_path):
    first, second = _namespaced_repos(tmp_path)
    disk = DiskRepository(first, more_roots=[second])
    disk.namespacing = True
    with running_server(repository=disk.populate(ModelRepository())) as server:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}")
        x = np.arange(16, dtype=np.int32)
        inputs = [httpclient.InferInput(n, [16], "INT32") for n in ("INPUT0", "INPUT1")]
        for i in inputs:
            i.set_data_from_numpy(x)
        added = client.infer("simple_addsub", inputs)
        np.testing.assert_array_equal(added.as_numpy("OUTPUT0"), x + x)
        subtracted = client.infer("simple_subadd", inputs)
        np.testing.assert_array_equal(subtracted.as_numpy("OUTPUT0"), x - x)
        with pytest.raises(InferenceServerException, match="model namespace must be provided to resolve ambiguity"):
            client.infer("composing_model", inputs)


def test_tritons_model_control_mode_is_taken_in_capitals():
    from gpuserve.cli import _parser

    for given, taken in (("POLL", "poll"), ("EXPLICIT", "explicit"), ("None", "none")):
        assert _parser().parse_args(["start", ".", f"--model-control-mode={given}"]).model_control_mode == taken


# L0_initializer_as_input: an ONNX initializer the graph also lists as an input is an optional input -------------


def _onnx_with_initializer_input(path, batched=False):
    import onnx
    from onnx import TensorProto, helper

    shape = ["N", 5] if batched else [5, 5]
    ones = helper.make_tensor("INITIALIZER", TensorProto.FLOAT, [5, 5], [1.0] * 25)
    graph = helper.make_graph([helper.make_node("Add", ["INPUT", "INITIALIZER"], ["OUTPUT"])], "add_init",
                              [helper.make_tensor_value_info("INPUT", TensorProto.FLOAT, shape),
                               helper.make_tensor_value_info("INITIALIZER", TensorProto.FLOAT, [5, 5])],
                              [helper.make_tensor_value_info("OUTPUT", TensorProto.FLOAT, shape)], [ones])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


def _initializer_model(root, max_batch_size=0, optional="optional: true"):
    (root / "add_with_initializer" / "1").mkdir(parents=True)
    _onnx_with_initializer_input(root / "add_with_initializer" / "1" / "model.onnx", max_batch_size > 0)
    dims = "[ 5 ]" if max_batch_size else "[ 5, 5 ]"
    (root / "add_with_initializer" / "config.pbtxt").write_text(
        f'platform: "onnxruntime_onnx"\nmax_batch_size: {max_batch_size}\n'
        f'input [ {{ name: "INPUT" data_type: TYPE_FP32 dims: {dims} }},\n'
        f'        {{ name: "INITIALIZER" data_type: TYPE_FP32 dims: {dims} {optional} }} ]\n'
        f'output [ {{ name: "OUTPUT" data_type: TYPE_FP32 dims: {dims} }} ]\n')


def test_an_onnx_initializer_listed_as_an_input_is_an_optional_input(tmp_path):
    """As Triton's ONNX Runtime backend: the initializer counts among the inputs a request may send (it
    overrides the stored value) without counting among those it must send; gpuserve refused to load the
    model ('configuration expects 2 inputs, model provides 1')."""
    _initializer_model(tmp_path)
    with _serve(tmp_path) as server:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}")
        x = np.arange(25, dtype=np.float32).reshape(5, 5)
        given = httpclient.InferInput("INPUT", [5, 5], "FP32")
        given.set_data_from_numpy(x)
        np.testing.assert_array_equal(client.infer("add_with_initializer", [given]).as_numpy("OUTPUT"), x + 1)
        override = httpclient.InferInput("INITIALIZER", [5, 5], "FP32")
        override.set_data_from_numpy(x)
        np.testing.assert_array_equal(
            client.infer("add_with_initializer", [given, override]).as_numpy("OUTPUT"), x + x)
        config = client.get_model_config("add_with_initializer")
        assert [i.get("optional") for i in config["input"]] == [False, True]
        with pytest.raises(InferenceServerException) as refused:
            client.infer("add_with_initializer", [override])
        assert "expected number of inputs between 1 and 2 but got 1 inputs for model 'add_with_initializer'. Got " \
               "input(s) ['INITIALIZER'], but missing required input(s) ['INPUT']. Please provide all required " \
               "input(s)." in str(refused.value)


@pytest.mark.parametrize("max_batch_size, optional, said", [
    (4, "optional: true", "unable to load model 'add_with_initializer', optional input 'INITIALIZER' is not "
                          "supported for models that support batching"),
    (0, "", "unable to load model 'add_with_initializer', configuration expects 2 inputs, model provides 1"),
])
def test_an_onnx_optional_input_is_refused_where_triton_refuses_it(tmp_path, max_batch_size, optional, said):
    _initializer_model(tmp_path, max_batch_size, optional)
    model = DiskRepository(tmp_path).build("add_with_initializer")[0]
    with pytest.raises(Exception) as refused:
        model.load()
    assert said in str(refused.value)


# L0_libtorch_instance_group_kind_model: KIND_MODEL leaves placement to the model -----------------------------

KIND_MODEL_CONFIG = """
platform: "pytorch_libtorch"
max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 16 ] }, { name: "INPUT1" data_type: TYPE_FP32 dims: [ 16 ] } ]
output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 16 ] }, { name: "OUTPUT__1" data_type: TYPE_FP32 dims: [ 16 ] } ]
instance_group [ { kind: KIND_MODEL } ]
"""


def test_a_kind_model_libtorch_model_keeps_its_own_devices_and_shows_kind_model(tmp_path, monkeypatch):
    """As Triton's libtorch backend: a KIND_MODEL instance loads the TorchScript file without moving it to one
    device (the model may span several GPUs and moves its inputs itself; they arrive on the CPU), and the
    config shows KIND_MODEL (gpuserve showed KIND_CPU/KIND_GPU and loaded it onto the chosen device)."""
    import torch

    (tmp_path / "multi_device" / "1").mkdir(parents=True)
    (tmp_path / "multi_device" / "config.pbtxt").write_text(KIND_MODEL_CONFIG)
    _torch_addsub(tmp_path / "multi_device" / "1" / "model.pt")
    asked = []
    load = torch.jit.load

    def spy(path, map_location=None, **kwargs):
        asked.append(map_location)
        return load(path, map_location=map_location, **kwargs)

    monkeypatch.setattr(torch.jit, "load", spy)
    with _serve(tmp_path) as server:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}")
        [group] = client.get_model_config("multi_device")["instance_group"]
        assert group["kind"] == "KIND_MODEL" and group["gpus"] == []
        x, y = np.arange(16, dtype=np.float32)[None], np.full((1, 16), 3, np.float32)
        inputs = [httpclient.InferInput(n, [1, 16], "FP32") for n in ("INPUT0", "INPUT1")]
        inputs[0].set_data_from_numpy(x)
        inputs[1].set_data_from_numpy(y)
        result = client.infer("multi_device", inputs)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT__0"), x + y)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT__1"), x - y)
    assert asked == [None]


# L0_backend_config: --backend-config, and default-max-batch-size completing an ONNX model's config ---------------

def _batchable_onnx(path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"])], "add",
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 16]) for n in ("INPUT0", "INPUT1")],
                              [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, ["N", 16])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


@pytest.fixture
def backend_settings():
    from gpuserve import backend_config

    yield backend_config
    backend_config.configure({})


@pytest.mark.parametrize("given, said", [
    (",default-max-batch-size=3", "No backend specified. --backend-config option format is <backend name>,<setting>="
                                  "<value> or <setting>=<value>. Got ,default-max-batch-size=3"),
    ("default-max-batch-size=", "--backend-config option format is '<backend name>,<setting>=<value>'. Got "
                                "default-max-batch-size="),
    ("onnxruntime,default-max-batch-size", "--backend-config option format is '<backend name>,<setting>=<value>'. "
                                           "Got onnxruntime,default-max-batch-size"),
])
def test_a_malformed_backend_config_stops_the_start_in_tritons_words(tmp_path, capsys, given, said):
    from gpuserve.cli import main

    assert main(["start", "--model-repository", str(tmp_path), f"--backend-config={given}"]) == 2
    assert said in capsys.readouterr().err


def test_backend_config_settings_resolve_as_tritons(backend_settings):
    """Global settings, then the backend's own over them, in name order; default-max-batch-size 4 where not
    given (gpuserve took --backend-config once and ignored it)."""
    from gpuserve.cli import _parser

    args = _parser().parse_args(["start", ".", "--backend-config=default-max-batch-size=7",
                                 "--backend-config=onnxruntime,default-max-batch-size=8",
                                 "--backend-config=onnxruntime,z=0", "--backend-config=onnxruntime,a=0"])
    backend_settings.configure(backend_settings.parse(args.backend_config))
    assert list(backend_settings.settings_for("onnxruntime").items()) == [
        ("a", "0"), ("auto-complete-config", "true"), ("backend-directory", "/opt/tritonserver/backends"),
        ("default-max-batch-size", "8"), ("min-compute-capability", "6.000000"), ("z", "0")]
    assert backend_settings.settings_for("pytorch")["default-max-batch-size"] == "7"
    backend_settings.configure({})
    assert list(backend_settings.settings_for("onnxruntime"))[-1] == "default-max-batch-size"


@pytest.mark.parametrize("given, max_batch_size, dims, batching", [
    (None, 4, [16], True), ("5", 5, [16], True), ("0", 0, [-1, 16], False)])
def test_an_onnx_model_without_config_is_completed_with_default_max_batch_size(tmp_path, backend_settings, caplog,
                                                                               given, max_batch_size, dims, batching):
    """As Triton's ONNX Runtime backend: a batching model with no max_batch_size gets default-max-batch-size
    (4 unless --backend-config gives one) and dynamic batching above 1 (gpuserve completed it with 64)."""
    (tmp_path / "no_config" / "1").mkdir(parents=True)
    _batchable_onnx(tmp_path / "no_config" / "1" / "model.onnx")
    backend_settings.configure({"onnxruntime": {"default-max-batch-size": given}} if given else {})
    with caplog.at_level(logging.DEBUG, logger="gpuserve"), _serve(tmp_path) as server:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}")
        config = client.get_model_config("no_config")
        assert config["max_batch_size"] == max_batch_size and config["input"][0]["dims"] == dims
        assert ("dynamic_batching" in config) is batching
        x = np.ones((1, 16), np.float32)
        inputs = [httpclient.InferInput(n, [1, 16], "FP32") for n in ("INPUT0", "INPUT1")]
        for tensor in inputs:
            tensor.set_data_from_numpy(x)
        np.testing.assert_array_equal(client.infer("no_config", inputs).as_numpy("OUTPUT0"), x + x)
    said = caplog.text
    assert (f"Found overwritten default setting: default-max-batch-size,{given}" if given else
            "Adding default backend config setting: default-max-batch-size,4") in said
    assert f"autofilled max_batch_size to {max_batch_size} for model 'no_config'" in said
    assert ("Starting dynamic-batcher thread" in said) is batching
    assert 'backend configuration:\\n{"cmdline":{"auto-complete-config":"true",' in said


# L0_io (CPU parts): a Python model reading its inputs through DLPack -----------------------------------------

DLPACK_CONFIG = """
backend: "python"
max_batch_size: 64
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 16 ] }, { name: "INPUT1" data_type: TYPE_FP32 dims: [ 16 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 16 ] } ]
"""


@pytest.mark.parametrize("binary", [True, False])
def test_a_python_model_takes_its_inputs_through_dlpack(tmp_path, binary):
    """As qa's dlpack_add_sub: Tensor.to_dlpack() of a request's input works (gpuserve reads binary inputs in
    place, read-only, and this NumPy's DLPack refuses read-only arrays: every request failed with BufferError)."""
    _python_model(tmp_path, "dlpack_add", DLPACK_CONFIG, """
        from torch.utils.dlpack import from_dlpack, to_dlpack

        class TritonPythonModel:
            def execute(self, requests):
                responses = []
                for request in requests:
                    a, b = (from_dlpack(pb_utils.get_input_tensor_by_name(request, n).to_dlpack())
                            for n in ("INPUT0", "INPUT1"))
                    out = pb_utils.Tensor.from_dlpack("OUTPUT0", to_dlpack(a + b))
                    responses.append(pb_utils.InferenceResponse([out]))
                return responses
        """)
    with _serve(tmp_path) as server:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}")
        x = np.arange(16, dtype=np.float32)[None]
        inputs = [httpclient.InferInput(n, [1, 16], "FP32") for n in ("INPUT0", "INPUT1")]
        for tensor in inputs:
            tensor.set_data_from_numpy(x, binary_data=binary)
        np.testing.assert_array_equal(client.infer("dlpack_add", inputs).as_numpy("OUTPUT0"), x + x)


# L0_pytorch_python_runtime: backend "pytorch" with runtime "model.py" ----------------------------------------

TORCH_RUNTIME = """
backend: "pytorch"
runtime: "model.py"
max_batch_size: {batch}
input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] }}, {{ name: "INPUT1" data_type: TYPE_FP32 dims: [ 4 ] }} ]
output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] }}, {{ name: "OUTPUT1" data_type: TYPE_FP32 dims: [ 4 ] }} ]
parameters: {{ key: "TORCH_COMPILE_OPTIONAL_PARAMETERS" value: {{ string_value: "{{\\"disable\\": true}}" }} }}
{extra}
"""

TORCH_MODULE = """
import torch


class AddSubNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(1))

    def forward(self, INPUT0, INPUT1):
        return (INPUT0 + INPUT1) * self.scale, INPUT0 - INPUT1
"""


def test_the_pytorch_runtime_in_python_serves_modules_and_torchscript(tmp_path, caplog):
    """As Triton's PyTorch runtime in Python: a model.py's nn.Module (its weights from model.pt beside it),
    or a TorchScript model.pt alone; requests of a batching model run as one batch. gpuserve refused such a
    config ("unable to find backend library 'model.py'")."""
    import torch

    for name, batch, extra in (("addsub", 0, ""), ("batched", 8, "dynamic_batching { preferred_batch_size: [ 4 ] "
                                                                  "max_queue_delay_microseconds: 2000000 }\n"
                                                                  'parameters: { key: "NUM_THREADS" value: '
                                                                  '{ string_value: "2" } }'),
                               ("scripted", 0, "instance_group [ { kind: KIND_MODEL } ]")):
        (tmp_path / name / "1").mkdir(parents=True)
        (tmp_path / name / "config.pbtxt").write_text(TORCH_RUNTIME.format(batch=batch, extra=extra))
    (tmp_path / "addsub" / "1" / "model.py").write_text(TORCH_MODULE)
    (tmp_path / "batched" / "1" / "model.py").write_text(TORCH_MODULE)
    torch.save({"scale": torch.full((1,), 10.0)}, str(tmp_path / "batched" / "1" / "model.pt"))
    _torch_addsub(tmp_path / "scripted" / "1" / "model.pt")
    x, y = np.arange(4, dtype=np.float32), np.full(4, 2, np.float32)
    with caplog.at_level(logging.DEBUG, logger="gpuserve"), _serve(tmp_path) as server:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}", concurrency=4)

        def infer(model, a, b):
            inputs = [httpclient.InferInput(n, list(a.shape), "FP32") for n in ("INPUT0", "INPUT1")]
            inputs[0].set_data_from_numpy(a)
            inputs[1].set_data_from_numpy(b)
            return client.async_infer(model, inputs)

        for model, scale in (("addsub", 1), ("scripted", 1)):
            result = infer(model, x, y).get_result()
            np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), (x + y) * scale)
            np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), x - y)
        rows = [np.full((1, 4), i, np.float32) for i in range(4)]  # four requests, one batch of the preferred 4
        for i, pending in enumerate([infer("batched", row, row) for row in rows]):
            result = pending.get_result()
            np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), rows[i] * 2 * 10)
            np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), rows[i] * 0)
        config = client.get_model_config("batched")
        assert (config["backend"], config["runtime"], config["default_model_filename"]) == ("pytorch", "model.py", "")
        assert client.get_inference_statistics("batched")["model_stats"][0]["execution_count"] == 1
    said = caplog.text
    for line in ("Torch parallelism settings for 'addsub': NUM_THREADS = 1; NUM_INTEROP_THREADS = 1;",
                 "Torch parallelism settings for 'batched': NUM_THREADS = 2; NUM_INTEROP_THREADS = 1;",
                 "'torch.compile' optional parameter(s) for 'addsub': {'disable': True}",
                 "Loading 'scripted' as TorchScript", "Model parameter file not found for 'addsub'"):
        assert line in said, line
    assert "Loading 'addsub' as TorchScript" not in said
