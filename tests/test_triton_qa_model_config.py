"""What Triton's qa/L0_model_config (and L0_custom_model_config) checks, with models written here: a
broken config.pbtxt is refused for what is wrong in it, in Triton's words, before any version folder is
looked at (its qa greps the server log for these sentences); --disable-auto-complete-config and the
deprecated --strict-model-config are taken as Triton takes them; --model-config-name picks configs/NAME.pbtxt.

Cases were run against `gpuserve start` as the qa test.sh runs them; these are the ones gpuserve answered
differently at first (a missing version folder hid every config error; several checks did not exist).
"""

import textwrap

import pytest
import tritonclient.http as httpclient

from conftest import make_onnx_model, running_server
from gpuserve import ModelRepository
from gpuserve.cli import _parser, auto_complete
from gpuserve.repository import DiskRepository
from gpuserve.triton_config import use_config_name

TENSORS = """
max_batch_size: 4
input [ { name: "input", data_type: TYPE_FP32, dims: [ 4 ] } ]
output [ { name: "output", data_type: TYPE_FP32, dims: [ 4 ] } ]
"""

# name -> (config.pbtxt after `name:` and the platform line, Triton's sentence); no version folders
STRICT_CASES = {
    "missing_datatype": ('max_batch_size: 4\ninput [ { name: "input", dims: [ 2, -1 ] } ]\n'
                         'output [ { name: "output", data_type: TYPE_FP32, dims: [ 1 ] } ]',
                         "model input 'input' must specify 'data_type' for missing_datatype"),
    "zerodims": ('max_batch_size: 4\ninput [ { name: "input", data_type: TYPE_FP32, dims: [ 0 ] } ]\n'
                 'output [ { name: "output", data_type: TYPE_FP32, dims: [ 1 ] } ]',
                 "model input 'input' dimension must be integer >= 1, or -1 to indicate a variable-size "
                 "dimension for zerodims"),
    "reshape_count": ('max_batch_size: 0\ninput [ { name: "input", data_type: TYPE_FP32, dims: [ 2, 3 ] '
                      'reshape { shape: [ 5 ] } } ]\noutput [ { name: "output", data_type: TYPE_FP32, dims: [ 1 ] } ]',
                      "model input 'input' has different size for dims and reshape for reshape_count"),
    "reshape_runs": ('max_batch_size: 0\ninput [ { name: "input", data_type: TYPE_FP32, dims: [ 2, -1 ] } ]\n'
                     'output [ { name: "output", data_type: TYPE_FP32, dims: [ -1, 2, 3 ] '
                     'reshape { shape: [ -1, 6, -1 ] } } ]',
                     "model output 'output' has different number of variable-size dimensions for dims and "
                     "reshape for reshape_runs"),
    "reshape_empty": ('max_batch_size: 0\ninput [ { name: "input", data_type: TYPE_FP32, dims: [ 1 ] '
                      'reshape { } } ]\noutput [ { name: "output", data_type: TYPE_FP32, dims: [ 1 ] } ]',
                      "model input 'input' cannot have empty reshape for non-batching model as scalar tensors "
                      "are not supported for reshape_empty"),
    "negative_batch": (TENSORS.replace("max_batch_size: 4", "max_batch_size: -1"),
                       "'max_batch_size' must be non-negative value for negative_batch"),
    "priority": (TENSORS + "dynamic_batching { priority_levels: 3 default_priority_level: 4 }",
                 "default priority level must be in range [1, 3] for priority"),
    "priority_policy": (TENSORS + "dynamic_batching { priority_levels: 3 default_priority_level: 1 "
                        "priority_queue_policy { key: 0 value: { max_queue_size: 1 } } }",
                        "priority queue policy must have priority level in range [1, 3] for priority_policy"),
    "ordering": (TENSORS + "dynamic_batching { preserve_ordering: true default_queue_policy { "
                 "timeout_action: DELAY default_timeout_microseconds: 10 } }",
                 "Queue policy can not have DELAY as timeout action when 'preserve_ordering' is true for ordering"),
    "two_starts": (TENSORS + 'sequence_batching { control_input [ '
                   '{ name: "A" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] }, '
                   '{ name: "B" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] } ] }',
                   "sequence batching specifies multiple CONTROL_SEQUENCE_START tensors for two_starts"),
    "no_value": (TENSORS + 'sequence_batching { control_input [ '
                 '{ name: "R" control [ { kind: CONTROL_SEQUENCE_READY } ] } ] }',
                 "sequence batching must specify either 'int32_false_true', 'fp32_false_true' or "
                 "'bool_false_true' for CONTROL_SEQUENCE_READY for no_value"),
    "batch_input": (TENSORS + 'batch_input [ { kind: BATCH_ELEMENT_COUNT target_name: "N" data_type: TYPE_FP32 '
                    'source_input: [ "input", "input" ] } ]',
                    "batch input kind 'BATCH_ELEMENT_COUNT' expects 1 source input, got 2 for batch_input"),
    "batch_output": (TENSORS + 'batch_output [ { target_name: [ "output", "output" ] '
                     'kind: BATCH_SCATTER_WITH_INPUT_SHAPE source_input: [ "input" ] } ]',
                     "target output name 'output' can only be specified once for batch_output"),
    "cpu_gpus": (TENSORS + "instance_group [ { kind: KIND_CPU gpus: [ 0 ] } ]",
                 "instance group cpu_gpus_0 of model cpu_gpus has kind KIND_CPU but specifies one or more GPU"),
    "bad_gpu": (TENSORS + "instance_group [ { kind: KIND_GPU gpus: [ 42 ] } ]",
                "instance group bad_gpu_0 of model bad_gpu specifies invalid or unsupported gpu id 42. GPUs with "
                "at least the minimum required CUDA compute compatibility"),
    "profile": (TENSORS + 'instance_group [ { kind: KIND_CPU profile: [ "0" ] } ]',
                "specifies profile field which is only supported for TensorRT models"),
    "scheduling": (TENSORS + 'ensemble_scheduling { step [ { model_name: "a" input_map { key: "x" value: "input" } '
                   'output_map { key: "y" value: "output" } } ] }',
                   "ensemble scheduling cannot be set for model 'scheduling' whose platform is not ensemble"),
}


def _write(root, name, body, versions=()):
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "config.pbtxt").write_text(f'name: "{name}"\n{body}\n')
    for version in versions:
        (folder / str(version)).mkdir()
    return folder


def _reasons(root, auto_complete_on=True):
    repository = DiskRepository(root)
    repository.auto_complete = auto_complete_on
    registry = repository.populate(ModelRepository())
    with running_server(repository=registry) as server:
        with httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
            index = client.get_model_repository_index()
            ready = {m["name"]: client.is_model_ready(m["name"]) for m in index}
    return {m["name"]: m.get("reason", "") for m in index}, ready


@pytest.mark.parametrize("platform", ["onnxruntime_onnx", "pytorch_libtorch"])
def test_config_errors_are_triton_sentences_before_any_version_is_looked_at(tmp_path, platform):
    for name, (body, _) in STRICT_CASES.items():
        _write(tmp_path, name, f'platform: "{platform}"\n{body}')
    reasons, ready = _reasons(tmp_path, auto_complete_on=False)
    for name, (_, sentence) in STRICT_CASES.items():
        assert sentence in reasons[name], (name, reasons[name])
        assert not ready[name]


def test_tensor_checks_wait_for_auto_complete_while_it_is_on(tmp_path):
    """With auto-complete on (Triton's default) a config's tensors are checked once the model file completed
    them; the model-wide checks still come first."""
    _write(tmp_path, "no_dims", 'platform: "onnxruntime_onnx"\nmax_batch_size: 0\n'
           'input [ { name: "input", data_type: TYPE_FP32 } ]', versions=())
    _write(tmp_path, "negative", 'platform: "onnxruntime_onnx"\nmax_batch_size: -2')
    reasons, _ = _reasons(tmp_path)
    assert "must specify 'dims'" not in reasons["no_dims"]
    assert "'max_batch_size' must be non-negative value for negative" in reasons["negative"]


ENSEMBLE_STEP = ('{{ model_name: "{model}" input_map {{ key: "IN" value: "{source}" }} '
                 'output_map {{ key: "OUT" value: "{target}" }} }}')


def _ensemble(root, name, steps, inputs=("data",), outputs=("prob",), extra=""):
    tensors = "".join(f'input [ {{ name: "{t}", data_type: TYPE_FP32, dims: [ 4 ] }} ]\n' for t in inputs)
    tensors += "".join(f'output [ {{ name: "{t}", data_type: TYPE_FP32, dims: [ 4 ] }} ]\n' for t in outputs)
    body = ", ".join(ENSEMBLE_STEP.format(model=m, source=s, target=t) for m, s, t in steps)
    _write(root, name, f'platform: "ensemble"\nmax_batch_size: 0\n{tensors}{extra}\n'
           f'ensemble_scheduling {{ step [ {body} ] }}', versions=(1,))


def test_ensemble_graph_errors_are_triton_sentences(tmp_path):
    _ensemble(tmp_path, "unreachable_input", [("m", "data", "prob")], inputs=("data", "data_2"))
    _ensemble(tmp_path, "unreachable_output", [("m", "data", "prob")], outputs=("prob", "prob_2"))
    _ensemble(tmp_path, "not_written", [("m", "data", "t1"), ("m", "t1", "prob"), ("m", "loose", "prob_2")],
              outputs=("prob", "prob_2"))
    _ensemble(tmp_path, "overmapped", [("m", "data", "t1"), ("m", "data", "t1"), ("m", "t1", "prob")])
    _ensemble(tmp_path, "unused", [("m", "data", "t1"), ("m", "data", "prob")])
    _ensemble(tmp_path, "with_groups", [("m", "data", "prob")], extra="instance_group [ { kind: KIND_CPU } ]")
    _write(tmp_path, "with_backend", 'platform: "ensemble"\nbackend: "onnxruntime"\nmax_batch_size: 0')
    _write(tmp_path, "no_steps", 'platform: "ensemble"\nmax_batch_size: 0\nensemble_scheduling { }')
    reasons, ready = _reasons(tmp_path)
    assert "ensemble input 'data_2' for ensemble unreachable_input' is not used" in reasons["unreachable_input"]
    assert "ensemble output 'prob_2' for ensemble unreachable_output' is not used" in reasons["unreachable_output"]
    assert ("output 'prob_2' for ensemble 'not_written' is not written: at least one of its depending tensors, "
            "'loose', is not connected") in reasons["not_written"]
    assert ("ensemble tensor 't1' can appear in an output map only once for ensemble 'overmapped' step 1"
            in reasons["overmapped"])
    assert "ensemble tensor 't1' is unused in ensemble 'unused'" in reasons["unused"]
    assert "instance group should not be specified for ensemble 'with_groups'" in reasons["with_groups"]
    assert ("Ensemble model 'with_backend' must have platform type 'ensemble' and empty backend type"
            in reasons["with_backend"])
    assert "must specify 'step' for ensemble 'no_steps'" in reasons["no_steps"]
    assert not any(ready.values())


def test_backend_named_by_folder_runtime_and_metrics_checks(tmp_path):
    (tmp_path / "no_delimiter").mkdir()
    (tmp_path / "no_delimiter" / "config.pbtxt").write_text("max_batch_size: 0\n")
    (tmp_path / "custom.unknown" / "1").mkdir(parents=True)
    (tmp_path / "custom.unknown" / "config.pbtxt").write_text("max_batch_size: 0\n")
    _write(tmp_path, "escape", f'backend: "onnxruntime"\n{TENSORS}runtime: "../x/libtriton_identity.so"', (1,))
    _write(tmp_path, "runtime", f'backend: "onnxruntime"\n{TENSORS}runtime: "__invalid__"', (1,))
    _write(tmp_path, "mismatch", f'platform: "onnxruntim"\nbackend: "onnxruntime"\n{TENSORS}', (1,))
    _write(tmp_path, "metrics", f'platform: "onnxruntime_onnx"\n{TENSORS}model_metrics {{ metric_control [ {{ '
           'metric_identifier { family: "nv_inference_request_duration" } } ] }', (1,))
    _write(tmp_path, "renamed", f'platform: "onnxruntime_onnx"\n{TENSORS}', (1,))
    text = (tmp_path / "renamed" / "config.pbtxt").read_text().replace('name: "renamed"', 'name: "other"')
    (tmp_path / "renamed" / "config.pbtxt").write_text(text)
    reasons, _ = _reasons(tmp_path)
    assert ("Invalid model name: Could not determine backend for model 'no_delimiter' with no backend in model "
            "configuration. Expected model name of the form 'model.<backend_name>'.") in reasons["no_delimiter"]
    assert ("unable to find backend library for backend 'unknown', try specifying runtime on the model "
            "configuration.") in reasons["custom.unknown"]
    assert "backend library name '../x/libtriton_identity.so' escapes backend directory" in reasons["escape"]
    assert "unable to find backend library '__invalid__' for model 'runtime'" in reasons["runtime"]
    assert "unexpected 'platform' and 'backend' pair, got:onnxruntim, onnxruntime" in reasons["mismatch"]
    assert "metric control must specify 'histogram_options'" in reasons["metrics"]
    assert ("unexpected directory name 'renamed' for model 'other', directory name must equal model name"
            in reasons["renamed"])


def test_onnx_tensors_against_the_file_in_triton_words(tmp_path):
    def onnx_model(name, body):
        _write(tmp_path, name, body, (1,))
        make_onnx_model(tmp_path / name / "1" / "model.onnx")  # input [-1, 4] FP32 -> output [-1, 3]

    onnx_model("few", 'platform: "onnxruntime_onnx"\nmax_batch_size: 4\n'
               'input [ { name: "input", data_type: TYPE_FP32, dims: [ 4 ] }, '
               '{ name: "extra", data_type: TYPE_FP32, dims: [ 4 ] } ]')
    onnx_model("unknown_output", 'platform: "onnxruntime_onnx"\nmax_batch_size: 4\n'
               'output [ { name: "nope", data_type: TYPE_FP32, dims: [ 3 ] } ]')
    onnx_model("dims", 'platform: "onnxruntime_onnx"\nmax_batch_size: 4\n'
               'output [ { name: "output", data_type: TYPE_FP32, dims: [ 1 ] } ]')
    onnx_model("unbatched", 'platform: "onnxruntime_onnx"\nmax_batch_size: 0\n'
               'output [ { name: "output", data_type: TYPE_FP32, dims: [ 3 ] } ]')
    reasons, _ = _reasons(tmp_path)
    assert "unable to load model 'few', configuration expects 2 inputs, model provides 1" in reasons["few"]
    assert "unexpected inference output 'nope', allowed outputs are: output" in reasons["unknown_output"]
    assert ("model 'dims', tensor 'output': the model expects 2 dimensions (shape [-1,3]) but the model "
            "configuration specifies 2 dimensions (an initial batch dimension because max_batch_size > 0 "
            "followed by the explicit tensor shape, making complete shape [-1,1])") in reasons["dims"]
    assert ("model 'unbatched', tensor 'output': the model expects 2 dimensions (shape [-1,3]) but the model "
            "configuration specifies 1 dimensions (shape [3])") in reasons["unbatched"]


AUTO_COMPLETE = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    @staticmethod
    def auto_complete_config(config):
        {body}

    def execute(self, requests):
        return []
"""

PYTHON_CASES = {
    "missing_type": ('config.add_input({"name": "INPUT0", "dims": [4]})\n        return config',
                     "input 'INPUT0' in auto-complete-config function for model 'missing_type' is missing "
                     "'data_type' property."),
    "missing_name": ('config.add_output({"data_type": "TYPE_FP32", "dims": [4]})\n        return config',
                     "output in auto-complete-config function for model 'missing_name' is missing 'name' property."),
    "wrong_property": ('config.add_input({"name": "I", "data_type": "TYPE_FP32", "dims": [4], "shape": 1})\n'
                       '        return config',
                       "input 'I' in auto-complete-config function for model 'wrong_property' contains property "
                       "other than 'name', 'data_type', 'dims' and 'optional'."),
    "policy_args": ('config.set_model_transaction_policy({"decoupled": True, "other": 1})\n        return config',
                    "model transaction property in auto-complete-config function for model 'policy_args' contains "
                    "property other than 'decoupled'"),
    "no_return": ("config.set_max_batch_size(0)",
                  "auto_complete_config function in model 'no_return' must return a valid pb.ModelConfig object."),
}


def test_python_auto_complete_refusals_in_triton_words(tmp_path):
    for name, (body, _) in PYTHON_CASES.items():
        (tmp_path / name / "1").mkdir(parents=True)
        (tmp_path / name / "1" / "model.py").write_text(textwrap.dedent(AUTO_COMPLETE).replace("{body}", body))
    (tmp_path / "policy" / "1").mkdir(parents=True)
    (tmp_path / "policy" / "config.pbtxt").write_text("model_transaction_policy { decoupled: false }\n")
    (tmp_path / "policy" / "1" / "model.py").write_text(textwrap.dedent(AUTO_COMPLETE).replace(
        "{body}", 'config.set_model_transaction_policy({"decoupled": True})\n        return config'))
    reasons, _ = _reasons(tmp_path)
    for name, (_, sentence) in PYTHON_CASES.items():
        assert sentence in reasons[name], (name, reasons[name])
    assert ("trying to change decoupled property in auto-complete-config for model 'policy', which is already "
            "set to 'False'") in reasons["policy"]


def test_auto_complete_flags_as_triton_takes_them(capsys):
    assert auto_complete(_parser().parse_args(["start", "--disable-auto-complete-config"])) is False
    assert auto_complete(_parser().parse_args(["start"])) is None
    assert auto_complete(_parser().parse_args(["start", "--strict-model-config=true"])) is False
    assert "Warning: '--strict-model-config' has been deprecated!" in capsys.readouterr().err
    args = _parser().parse_args(["start", "--disable-auto-complete-config", "--strict-model-config=false"])
    assert auto_complete(args) is False
    assert ("Warning: Overriding deprecated '--strict-model-config' from False to True in favor of "
            "'--disable-auto-complete-config'!") in capsys.readouterr().err


def test_model_config_name_picks_a_config_under_configs(tmp_path):
    folder = tmp_path / "m"
    (folder / "configs").mkdir(parents=True)
    for version in (1, 2, 3):
        (folder / str(version)).mkdir()
        make_onnx_model(folder / str(version) / "model.onnx")
    body = 'platform: "onnxruntime_onnx"\nmax_batch_size: 4\nversion_policy: {{ specific: {{ versions: [{v}] }} }}\n'
    (folder / "config.pbtxt").write_text('name: "m"\n' + body.format(v="1, 3"))
    (folder / "configs" / "h100.pbtxt").write_text('name: "m"\n' + body.format(v="2"))
    try:
        for chosen, versions in (("h100", [2]), ("h200", [1, 3]), (None, [1, 3])):
            use_config_name(chosen)
            registry = DiskRepository(tmp_path).populate(ModelRepository())
            with running_server(repository=registry) as server:
                with httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
                    policy = client.get_model_config("m")["version_policy"]
            assert policy == {"specific": {"versions": versions}}, chosen
    finally:
        use_config_name(None)


def test_python_output_completed_by_auto_complete_loads(tmp_path):
    """A Python model's config may list an output without a type or dims for its auto_complete_config to
    fill in (qa incomplete_output); it loaded as 'unsupported data_type None'."""
    (tmp_path / "incomplete" / "1").mkdir(parents=True)
    (tmp_path / "incomplete" / "config.pbtxt").write_text(
        'output [ { name: "OUT0", data_type: TYPE_FP32 }, { name: "OUT1", dims: [ 4 ] } ]\n')
    body = "\n        ".join([
        'config.add_input({"name": "IN", "data_type": "TYPE_FP32", "dims": [4]})',
        'config.add_output({"name": "OUT0", "data_type": "TYPE_FP32", "dims": [4]})',
        'config.add_output({"name": "OUT1", "data_type": "TYPE_FP32", "dims": [4]})', "return config"])
    (tmp_path / "incomplete" / "1" / "model.py").write_text(textwrap.dedent(AUTO_COMPLETE).replace("{body}", body))
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    with running_server(repository=registry) as server:
        with httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
            assert client.is_model_ready("incomplete")
            outputs = client.get_model_config("incomplete")["output"]
    assert [(o["name"], o["data_type"], o["dims"]) for o in outputs] == [
        ("OUT0", "TYPE_FP32", [4]), ("OUT1", "TYPE_FP32", [4])]


IDENTITY = """
import json
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.outputs = [t["name"] for t in json.loads(args["model_config"])["output"]]

    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor(n, r.inputs()[0].as_numpy()) for n in self.outputs])
                for r in requests]
"""


def _step_model(root, name, max_batch=4, dtype="TYPE_FP32", dims="16", inputs=("INPUT0",), outputs=("OUTPUT0",)):
    tensors = "".join(f'input [ {{ name: "{n}", data_type: {dtype}, dims: [ {dims} ] }} ]\n' for n in inputs)
    tensors += "".join(f'output [ {{ name: "{n}", data_type: {dtype}, dims: [ {dims} ] }} ]\n' for n in outputs)
    _write(root, name, f'backend: "python"\nmax_batch_size: {max_batch}\n{tensors}', (1,))
    (root / name / "1" / "model.py").write_text(IDENTITY)


def _pipeline(root, name, steps, max_batch=4, dims="16", version=-1):
    """An ensemble IN -> steps (model, input, output) in a chain -> OUT; FP32 [dims]."""
    body, source = [], "IN"
    for index, (model, key_in, key_out) in enumerate(steps):
        target = "OUT" if index == len(steps) - 1 else f"t{index}"
        body.append(f'{{ model_name: "{model}" model_version: {version} input_map {{ key: "{key_in}" '
                    f'value: "{source}" }} output_map {{ key: "{key_out}" value: "{target}" }} }}')
        source = target
    _write(root, name, f'platform: "ensemble"\nmax_batch_size: {max_batch}\n'
           f'input [ {{ name: "IN", data_type: TYPE_FP32, dims: [ {dims} ] }} ]\n'
           f'output [ {{ name: "OUT", data_type: TYPE_FP32, dims: [ {dims} ] }} ]\n'
           f'ensemble_scheduling {{ step [ {", ".join(body)} ] }}', (1,))


def test_ensemble_steps_checked_against_their_models_in_triton_words(tmp_path):
    _step_model(tmp_path, "fp32")
    _step_model(tmp_path, "fp32_batch2", max_batch=2)
    _step_model(tmp_path, "fp32_3d", dims="16, 16, 16")
    _step_model(tmp_path, "int32", dtype="TYPE_INT32")
    _step_model(tmp_path, "two_inputs", inputs=("INPUT0", "INPUT1"))
    _pipeline(tmp_path, "good", [("fp32", "INPUT0", "OUTPUT0")])
    _pipeline(tmp_path, "batch", [("fp32_batch2", "INPUT0", "OUTPUT0")], max_batch=3)
    _pipeline(tmp_path, "shape", [("fp32", "INPUT0", "OUTPUT0"), ("fp32_3d", "INPUT0", "OUTPUT0")])
    _pipeline(tmp_path, "dtype", [("int32", "INPUT0", "OUTPUT0")])
    _pipeline(tmp_path, "bad_input", [("fp32", "WRONG", "OUTPUT0")])
    _pipeline(tmp_path, "bad_output", [("fp32", "INPUT0", "WRONG")])
    _pipeline(tmp_path, "unmapped", [("two_inputs", "INPUT0", "OUTPUT0")])
    _pipeline(tmp_path, "absent", [("nowhere", "INPUT0", "OUTPUT0")])
    _pipeline(tmp_path, "version", [("fp32", "INPUT0", "OUTPUT0")], version=2)
    _pipeline(tmp_path, "itself", [("itself", "IN", "OUT")])
    reasons, ready = _reasons(tmp_path)
    assert ready["good"] and reasons["good"] == ""
    expected = {
        "batch": "ensemble batch allows maximum batch size 3, but it contains model fp32_batch2 which only allows "
                 "maximum batch size to be 2",
        "shape": "in ensemble shape, ensemble tensor t0: inconsistent shape: [-1,16] is inferred from model fp32 "
                 "while [-1,16,16,16] is inferred from model fp32_3d",
        "dtype": "in ensemble dtype, ensemble tensor IN: inconsistent data type: TYPE_FP32 is inferred from model "
                 "dtype while TYPE_INT32 is inferred from model int32",
        "bad_input": "in ensemble bad_input, ensemble tensor IN is mapping to non-existing input WRONG in model fp32",
        "bad_output": "in ensemble bad_output, ensemble tensor OUT is mapped from non-existing output WRONG in "
                      "model fp32",
        "unmapped": "in ensemble unmapped, input INPUT1 in model two_inputs is not mapped to any ensemble tensors",
        "absent": "ensemble absent contains models that are not available or ambiguous: nowhere",
        "version": "ensemble 'version' depends on 'fp32' whose required version 2 is not loaded",
        "itself": "circular dependency between ensembles: itself -> ... -> itself -> itself",
    }
    for name, sentence in expected.items():
        assert reasons[name] == sentence, (name, reasons[name])
        assert not ready[name]


def test_a_written_dynamic_batching_shows_without_batching(tmp_path):
    """qa L0_config_json dbatch: a max_batch_size 0 model's dynamic_batching and its queue policies are in
    its config as written (gpuserve left the block out)."""
    _write(tmp_path, "m", 'platform: "onnxruntime_onnx"\nmax_batch_size: 0\n'
           'dynamic_batching { max_queue_delay_microseconds: 42 default_queue_policy { default_timeout_microseconds: 123 } '
           'priority_queue_policy { key: 1 value: { default_timeout_microseconds: 123 } } }', (1,))
    make_onnx_model(tmp_path / "m" / "1" / "model.onnx")
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    with running_server(repository=registry) as server:
        with httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
            batching = client.get_model_config("m")["dynamic_batching"]
    assert batching["max_queue_delay_microseconds"] == 42
    assert batching["default_queue_policy"]["default_timeout_microseconds"] == 123
    assert batching["priority_queue_policy"]["1"]["default_timeout_microseconds"] == 123


def test_libtorch_config_must_name_forwards_inputs_and_an_output(tmp_path):
    """qa autofill_noplatform/pytorch: a config with no inputs for a two-argument forward, or no outputs,
    fails the load in Triton's libtorch backend's words (gpuserve loaded both)."""
    torch = pytest.importorskip("torch")

    class AddSub(torch.nn.Module):
        def forward(self, INPUT__0, INPUT__1):
            return INPUT__0 + INPUT__1, INPUT__0 - INPUT__1

    tensors = {"input": 'input [ { name: "INPUT__0", data_type: TYPE_FP32, dims: [ 4 ] }, '
                        '{ name: "INPUT__1", data_type: TYPE_FP32, dims: [ 4 ] } ]',
               "output": 'output [ { name: "OUTPUT__0", data_type: TYPE_FP32, dims: [ 4 ] } ]'}
    for name, kept in (("no_inputs", "output"), ("no_outputs", "input"), ("both", None)):
        body = tensors[kept] if kept else tensors["input"] + "\n" + tensors["output"]
        _write(tmp_path, name, f'backend: "pytorch"\nmax_batch_size: 4\n{body}', (1,))
        torch.jit.script(AddSub()).save(str(tmp_path / name / "1" / "model.pt"))
    reasons, ready = _reasons(tmp_path)
    assert "unable to load model 'no_inputs', configuration expects 0 inputs, model provides 2" in reasons["no_inputs"]
    assert "model configuration must contain at least one output, none were specified" in reasons["no_outputs"]
    assert ready["both"] and not ready["no_inputs"] and not ready["no_outputs"]


def test_a_metric_family_that_takes_no_buckets_is_warned_about_once(tmp_path, caplog):
    """qa model_metrics/valid_config_with_warn: Triton loads the model and warns in these words."""
    _write(tmp_path, "m", f'platform: "onnxruntime_onnx"\n{TENSORS}model_metrics {{ metric_control [ {{ '
           'metric_identifier { family: "nv_inference_request_success" } histogram_options { buckets: [ 1, 2 ] } } ] }',
           (1,))
    repository = DiskRepository(tmp_path)
    with caplog.at_level("WARNING", logger="gpuserve"):
        repository.scan()
        repository.scan()
    said = [r.getMessage() for r in caplog.records if "customizable" in r.getMessage()]
    assert said == ["Metric family 'nv_inference_request_success' in 'metric_identifier' is not a customizable "
                    "metric in Triton core."]
