"""Triton model repositories: config.pbtxt parsed, version policies, batching settings, label files,
and broken configs reported with a reason while the rest keep serving."""

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import make_onnx_model, onnx_reference, running_server
from gpuserve import ModelRepository
from gpuserve.errors import InvalidSettings
from gpuserve.repository import DiskRepository
from gpuserve.triton_config import chosen_versions, parse_pbtxt

CONFIG = """
name: "{name}"
platform: "onnxruntime_onnx"   # comments are allowed
max_batch_size: 16
input [
  {{ name: "input", data_type: TYPE_FP32, dims: [ 4 ] }}
]
output [
  {{
    name: "output"
    data_type: TYPE_FP32
    dims: [ 3 ]
    label_filename: "labels.txt"
  }}
]
instance_group [ {{ count: 1, kind: KIND_CPU }} ]
dynamic_batching {{ preferred_batch_size: [ 4, 8 ] max_queue_delay_microseconds: 200 }}
{policy}
"""


def make_repo(root, name, policy="", versions=(1, 2, 3)):
    folder = root / name
    weights = {}
    for v in versions:
        (folder / str(v)).mkdir(parents=True)
        weights[v] = make_onnx_model(folder / str(v) / "model.onnx", seed=v)
    (folder / "config.pbtxt").write_text(CONFIG.format(name=name, policy=policy))
    (folder / "labels.txt").write_text("a\nb\nc\n")
    return weights


def test_parser_handles_text_format_forms():
    config = parse_pbtxt('name: "m" max_batch_size: 4 input { name: "x" dims: 1 dims: 2 } input [ { name: "y" } ]\n'
                         'parameters { key: "k" value: { string_value: "v" } } optimization { cuda { graphs: true } }\n'
                         "version_policy: { latest: { num_versions: 2 } }")
    assert [i["name"] for i in config["input"]] == ["x", "y"] and config["input"][0]["dims"] == [1, 2]
    assert config["parameters"] == {"k": {"string_value": "v"}}
    assert config["optimization"]["cuda"]["graphs"] is True
    assert chosen_versions(config, [3, 1, 2]) == [2, 3]
    assert chosen_versions({"version_policy": {"all": {}}}, [2, 1]) == [1, 2]
    assert chosen_versions({"version_policy": {"specific": {"versions": [1, 3]}}}, [1, 2, 3]) == [1, 3]
    assert chosen_versions({}, [1, 5, 2]) == [5]
    with pytest.raises(InvalidSettings, match="line 2"):
        parse_pbtxt('name: "m"\n  @@@')


def test_triton_repository_serves_with_policies(tmp_path):
    latest = make_repo(tmp_path, "latest")  # default policy: latest 1
    every = make_repo(tmp_path, "every", "version_policy: { all: {} }")
    make_repo(tmp_path, "some", "version_policy: { specific: { versions: [ 1, 3 ] } }")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.pbtxt").write_text('name: "bad" platform: "onnxruntime_onnx" input [ { name: ')
    (tmp_path / "tf" / "1").mkdir(parents=True)
    (tmp_path / "tf" / "config.pbtxt").write_text('name: "tf" platform: "tensorflow_savedmodel"')
    (tmp_path / "trt" / "1").mkdir(parents=True)
    (tmp_path / "trt" / "config.pbtxt").write_text('name: "trt" platform: "tensorrt_plan"')
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    assert sorted(registry.versions("latest")) == ["3"]
    assert sorted(registry.versions("every")) == ["1", "2", "3"]
    assert sorted(registry.versions("some")) == ["1", "3"]
    with running_server(repository=registry) as server:
        with httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
            x = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
            tensor = httpclient.InferInput("input", [2, 4], "FP32")
            tensor.set_data_from_numpy(x)
            out = client.infer("latest", [tensor]).as_numpy("output")
            assert np.allclose(out, onnx_reference(x, *latest[3]), rtol=1e-5, atol=1e-6)
            out = client.infer("every", [tensor], model_version="1").as_numpy("output")
            assert np.allclose(out, onnx_reference(x, *every[1]), rtol=1e-5, atol=1e-6)
            config = client.get_model_config("latest")
            assert config["max_batch_size"] == 16 and config["input"][0]["dims"] == [4]
            assert config["dynamic_batching"]["preferred_batch_size"] == [4, 8]
            labelled = client.infer("latest", [tensor], outputs=[
                httpclient.InferRequestedOutput("output", class_count=1)]).as_numpy("output")
            assert labelled[0][0].decode().split(":")[2] in ("a", "b", "c")
            index = {(m["name"], m.get("version", "")): m for m in client.get_model_repository_index()}
            assert "cannot read" in index[("bad", "")]["reason"] or "expected" in index[("bad", "")]["reason"]
            # served now (backends/tensorflow.py); an empty version folder has no SavedModel to load
            assert "model.savedmodel does not exist" in index[("tf", "1")]["reason"]
            assert "TensorRT" in index[("trt", "1")]["reason"]
            assert client.is_server_ready() and not client.is_model_ready("bad")


SESSION_PARAMETERS = """
parameters {{ key: "intra_op_thread_count" value: {{ string_value: "1" }} }}
parameters {{ key: "inter_op_thread_count" value: {{ string_value: "{inter}" }} }}
parameters {{ key: "execution_mode" value: {{ string_value: "{mode}" }} }}
parameters {{ key: "enable_mem_pattern" value: {{ string_value: "0" }} }}
parameters {{ key: "my_own_key" value: {{ string_value: "left for the model" }} }}
optimization {{ graph {{ level: {level} }} }}
"""


@pytest.mark.parametrize("mode, inter, level, want_mode, want_level", [
    ("1", 2, -1, "ORT_PARALLEL", "ORT_ENABLE_BASIC"), ("0", 0, 2, "ORT_SEQUENTIAL", "ORT_DISABLE_ALL")])
def test_onnx_runtime_parameters_of_a_config_reach_the_session(tmp_path, mode, inter, level, want_mode, want_level):
    weights = make_repo(tmp_path, "tuned", SESSION_PARAMETERS.format(mode=mode, inter=inter, level=level),
                        versions=(1,))
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    model = registry.get_model("tuned")
    model.load()
    try:
        options = model.backend.session.get_session_options()
        assert options.intra_op_num_threads == 1 and options.inter_op_num_threads == max(inter, 1)
        assert options.execution_mode.name == want_mode and options.graph_optimization_level.name == want_level
        assert options.enable_mem_pattern is False and options.enable_cpu_mem_arena is True
        x = np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32)
        out = model.backend.run({"input": x})["output"]
        assert np.allclose(out, onnx_reference(x, *weights[1]), rtol=1e-5, atol=1e-6)
    finally:
        model.stop()


@pytest.mark.parametrize("entry, message", [
    ('parameters { key: "intra_op_thread_count" value: { string_value: "two" } }', "integer"),
    ('parameters { key: "execution_mode" value: { string_value: "fast" } }', "sequential"),
    ('parameters { key: "enable_mem_arena" value: { string_value: "yes" } }', "failed to convert 'yes' to boolean")])
def test_a_malformed_session_parameter_is_a_reason_not_a_silent_default(tmp_path, entry, message):
    make_repo(tmp_path, "bad", entry, versions=(1,))
    make_repo(tmp_path, "good", versions=(1,))
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    with running_server(repository=registry) as server:
        with httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
            index = {m["name"]: m for m in client.get_model_repository_index()}
            assert message in index["bad"]["reason"] and not client.is_model_ready("bad")
            assert client.is_model_ready("good")


def dynamic_onnx(path):
    """Y = X and Z = -X, every axis dynamic: what a model exported with dynamic axes looks like."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["X"], ["Y"]), helper.make_node("Neg", ["X"], ["Z"])], "dyn",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", "M"])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", "M"]),
         helper.make_tensor_value_info("Z", TensorProto.FLOAT, ["N", "M"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


PINNED = """platform: "onnxruntime_onnx"
max_batch_size: 8
input [ {{ name: "{input}", data_type: {dtype}, dims: [ {dims} ] }} ]
output [ {{ name: "Y", data_type: TYPE_FP32, dims: [ 4 ], label_filename: "labels.txt" }} ]
"""


def pinned_repo(root, name, input="X", dtype="TYPE_FP32", dims="4"):
    (root / name / "1").mkdir(parents=True)
    dynamic_onnx(root / name / "1" / "model.onnx")
    (root / name / "config.pbtxt").write_text(PINNED.format(input=input, dtype=dtype, dims=dims))
    (root / name / "labels.txt").write_text("a\nb\nc\nd\n")


def test_config_tensors_are_checked_against_the_model_and_narrow_it(tmp_path):
    pinned_repo(tmp_path, "pinned")
    pinned_repo(tmp_path, "typo", input="WRONG")
    pinned_repo(tmp_path, "wrongtype", dtype="TYPE_INT32")
    pinned_repo(tmp_path, "wrongrank", dims="4, 2")
    with running_server(repository=DiskRepository(tmp_path).populate(ModelRepository())) as server:
        with httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
            meta = client.get_model_metadata("pinned")
            # the config's more specific shape, and only the outputs it lists (perf_analyzer reads these)
            assert meta["inputs"] == [{"name": "X", "datatype": "FP32", "shape": [-1, 4]}]
            assert [o["name"] for o in meta["outputs"]] == ["Y"] and meta["outputs"][0]["shape"] == [-1, 4]
            config = client.get_model_config("pinned")
            assert config["input"][0]["dims"] == [4] and config["output"][0]["label_filename"] == "labels.txt"
            x = np.arange(8, dtype=np.float32).reshape(2, 4)
            tensor = httpclient.InferInput("X", [2, 4], "FP32")
            tensor.set_data_from_numpy(x)
            result = client.infer("pinned", [tensor])
            assert np.array_equal(result.as_numpy("Y"), x) and result.as_numpy("Z") is None
            wrong = httpclient.InferInput("X", [2, 5], "FP32")
            wrong.set_data_from_numpy(np.zeros((2, 5), np.float32))
            with pytest.raises(InferenceServerException, match="shape") as err:
                client.infer("pinned", [wrong])
            assert err.value.status() == "400"
            index = {m["name"]: m for m in client.get_model_repository_index()}
            # Triton's ONNX Runtime backend's sentences
            assert "unexpected inference input 'WRONG', allowed inputs are: X" in index["typo"]["reason"]
            assert ("configuration expects datatype TYPE_INT32 for input 'X', model provides TYPE_FP32"
                    in index["wrongtype"]["reason"])
            assert "making complete shape [-1,4,2]" in index["wrongrank"]["reason"]
            for name in ("typo", "wrongtype", "wrongrank"):
                assert not client.is_model_ready(name)


def test_metadata_of_a_model_that_never_built_says_why(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.pbtxt").write_text('name: "bad" platform: "onnxruntime_onnx" input [ { name: ')
    with running_server(repository=DiskRepository(tmp_path).populate(ModelRepository())) as server:
        with httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
            for call in (client.get_model_metadata, client.get_model_config):  # Triton's words for a failed model
                with pytest.raises(InferenceServerException,
                                   match="Request for unknown model: 'bad' has no available versions") as err:
                    call("bad")
                assert err.value.status() == "404"
            reason = {e["name"]: e for e in client.get_model_repository_index()}["bad"]["reason"]
            assert "expected" in reason  # the index says why
            assert client.is_server_live()


def reshaping_onnx(path, batched):
    """Triton's quickstart pattern (densenet_onnx): the model takes [.., 1, 3, 2] and gives [.., 1, 6, 1];
    Y = 2 X flattened."""
    import onnx
    from onnx import TensorProto, helper

    lead = ["N"] if batched else []
    graph = helper.make_graph(
        [helper.make_node("Mul", ["X", "two"], ["T"]),
         helper.make_node("Reshape", ["T", "shape"], ["Y"])], "reshaping",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, lead + [1, 3, 2])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, lead + [1, 6, 1])],
        [helper.make_tensor("two", TensorProto.FLOAT, [], [2.0]),
         helper.make_tensor("shape", TensorProto.INT64, [4 if batched else 3], ([-1] if batched else []) + [1, 6, 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


RESHAPED = """platform: "onnxruntime_onnx"
max_batch_size: {batch}
input [ {{ name: "X", data_type: TYPE_FP32, dims: [ 6 ], reshape: {{ shape: [ 1, 3, 2 ] }} }} ]
output [ {{ name: "Y", data_type: TYPE_FP32, dims: [ 2, 3 ], reshape {{ shape: [ 1, 6, 1 ] }} }} ]
"""


def test_reshape_in_config_as_triton(tmp_path):
    for name, batch in (("flat", 0), ("batched", 8)):
        (tmp_path / name / "1").mkdir(parents=True)
        reshaping_onnx(tmp_path / name / "1" / "model.onnx", batched=bool(batch))
        (tmp_path / name / "config.pbtxt").write_text(RESHAPED.format(batch=batch))
    with running_server(repository=DiskRepository(tmp_path).populate(ModelRepository())) as server:
        with httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
            meta = client.get_model_metadata("batched")
            assert meta["inputs"][0]["shape"] == [-1, 6] and meta["outputs"][0]["shape"] == [-1, 2, 3]
            config = client.get_model_config("flat")
            assert config["input"][0]["reshape"] == {"shape": [1, 3, 2]} and config["output"][0]["dims"] == [2, 3]
            for name, x in (("flat", np.arange(6, dtype=np.float32)),
                            ("batched", np.arange(18, dtype=np.float32).reshape(3, 6))):
                tensor = httpclient.InferInput("X", list(x.shape), "FP32")
                tensor.set_data_from_numpy(x)
                y = client.infer(name, [tensor]).as_numpy("Y")
                want = (2 * x).reshape(((x.shape[0],) if x.ndim == 2 else ()) + (2, 3))
                assert y.shape == want.shape and np.array_equal(y, want)
            wrong = httpclient.InferInput("X", [1, 3, 2], "FP32")  # the model's own dims: clients send the config's
            wrong.set_data_from_numpy(np.zeros((1, 3, 2), np.float32))
            with pytest.raises(InferenceServerException, match="shape"):
                client.infer("batched", [wrong])


def test_max_batch_size_one_is_reported_as_written(tmp_path):
    """A config.pbtxt's max_batch_size 1 batches nothing, yet its clients (perf_analyzer among them) read
    the config to learn that requests carry a batch dimension: it must say 1 and dims without it."""
    (tmp_path / "one" / "1").mkdir(parents=True)
    weight, bias = make_onnx_model(tmp_path / "one" / "1" / "model.onnx")
    (tmp_path / "one" / "config.pbtxt").write_text(
        CONFIG.format(name="one", policy="").replace("max_batch_size: 16", "max_batch_size: 1")
        .replace("preferred_batch_size: [ 4, 8 ] ", ""))  # Triton refuses preferred sizes over max_batch_size
    (tmp_path / "one" / "labels.txt").write_text("a\nb\nc\n")
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    with running_server(repository=registry) as server:
        with httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
            config = client.get_model_config("one")
            assert config["max_batch_size"] == 1 and config["input"][0]["dims"] == [4]
            x = np.ones((1, 4), np.float32)
            tensor = httpclient.InferInput("input", [1, 4], "FP32")
            tensor.set_data_from_numpy(x)
            out = client.infer("one", [tensor]).as_numpy("output")
            assert np.allclose(out, onnx_reference(x, weight, bias), atol=1e-5)


def test_parameters_warmup_and_optimization_are_shown_as_written(tmp_path):
    (tmp_path / "shown" / "1").mkdir(parents=True)
    make_onnx_model(tmp_path / "shown" / "1" / "model.onnx")
    (tmp_path / "shown" / "labels.txt").write_text("a\nb\nc\n")
    extra = """
parameters { key: "note" value: { string_value: "kept" } }
model_warmup [ { name: "zeros" batch_size: 2 inputs { key: "input" value: { data_type: TYPE_FP32 dims: [ 4 ]
  zero_data: true } } } ]
optimization { graph { level: 1 } input_pinned_memory { enable: false } }
"""
    (tmp_path / "shown" / "config.pbtxt").write_text(CONFIG.format(name="shown", policy=extra))
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    import tritonclient.grpc as grpcclient

    with running_server(repository=registry) as server:
        with httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
            config = client.get_model_config("shown")
            assert config["parameters"] == {"note": {"string_value": "kept"}}
            assert config["model_warmup"][0]["name"] == "zeros" and config["model_warmup"][0]["batch_size"] == 2
            assert config["optimization"]["graph"] == {"level": 1}
            assert config["optimization"]["input_pinned_memory"] == {"enable": False}
        with grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}") as client:
            config = client.get_model_config("shown").config
            assert config.parameters["note"].string_value == "kept"
            assert config.model_warmup[0].inputs["input"].zero_data and list(config.model_warmup[0].inputs["input"].dims) == [4]
            assert config.optimization.graph.level == 1


def test_custom_operator_libraries_reach_onnx_runtime(tmp_path):
    """`model_operations { op_library_filename }` is registered with each ONNX Runtime session, as Triton's
    ORT backend does; a library that cannot be loaded leaves the model not ready, naming it. (No custom
    operator library can be built here: onnxruntime's wheel has no headers.)"""
    (tmp_path / "custom" / "1").mkdir(parents=True)
    make_onnx_model(tmp_path / "custom" / "1" / "model.onnx")
    (tmp_path / "custom" / "labels.txt").write_text("a\nb\nc\n")
    missing = tmp_path / "libmissing_ops.so"
    (tmp_path / "custom" / "config.pbtxt").write_text(CONFIG.format(
        name="custom", policy=f'model_operations {{ op_library_filename: "{missing}" }}'))
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    model = registry.get_model("custom")
    assert model.settings.parameters.extra["custom_op_libraries"] == [str(missing)]
    from gpuserve.model_config import model_config
    from gpuserve.server.grpc.convert import config_to_proto

    shown = model_config({"name": "custom", "inputs": [], "outputs": []}, model.settings)
    assert shown["model_operations"] == {"op_library_filename": [str(missing)]}
    assert list(config_to_proto(shown).model_operations.op_library_filename) == [str(missing)]
    with pytest.raises(Exception, match="custom operator library .*libmissing_ops.so could not be loaded"):
        model.load()


def test_rate_limiter_agents_and_cache_are_shown_and_triton_defaults_completed(tmp_path):
    """Triton shows an instance group's `rate_limiter`, `model_repository_agents` and `response_cache { enable:
    false }` as written, and completes `preferred_batch_size` (max_batch_size), the model file name and the
    pinned-memory switches (model_config_utils.cc NormalizeModelConfig); tools reading the config see them."""
    import hashlib

    import tritonclient.grpc as grpcclient

    (tmp_path / "limited" / "1").mkdir(parents=True)
    make_onnx_model(tmp_path / "limited" / "1" / "model.onnx")
    (tmp_path / "limited" / "labels.txt").write_text("a\nb\nc\n")
    digest = hashlib.md5((tmp_path / "limited" / "1" / "model.onnx").read_bytes()).hexdigest()
    extra = f"""
model_repository_agents {{ agents [ {{ name: "checksum" parameters {{ key: "MD5:1/model.onnx" value: "{digest}" }} }} ] }}
response_cache {{ enable: false }}
"""
    text = CONFIG.format(name="limited", policy=extra).replace(
        "instance_group [ { count: 1, kind: KIND_CPU } ]",
        'instance_group [ { name: "pool" count: 1, kind: KIND_CPU rate_limiter { resources { name: "R1" count: 4 } '
        'priority: 2 } } ]'
    ).replace("preferred_batch_size: [ 4, 8 ] ", "")
    (tmp_path / "limited" / "config.pbtxt").write_text(text)
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    with running_server(repository=registry) as server:
        with httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
            config = client.get_model_config("limited")
            assert config["instance_group"][0]["name"] == "pool"  # a group's own name, as written
            assert config["instance_group"][0]["rate_limiter"] == {
                "resources": [{"name": "R1", "count": 4, "global": False}], "priority": 2}
            assert config["model_repository_agents"]["agents"][0]["parameters"] == {"MD5:1/model.onnx": digest}
            assert config["response_cache"] == {"enable": False}
            assert config["dynamic_batching"]["preferred_batch_size"] == [16]
            assert config["default_model_filename"] == "model.onnx"
            assert config["optimization"]["input_pinned_memory"] == {"enable": True}
        with grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}") as client:
            config = client.get_model_config("limited").config
            assert config.instance_group[0].rate_limiter.resources[0].count == 4
            assert config.instance_group[0].rate_limiter.priority == 2
            assert config.model_repository_agents.agents[0].name == "checksum"
            assert config.HasField("response_cache") and not config.response_cache.enable


@pytest.mark.parametrize("agent, reason", [
    ('name: "checksum" parameters { key: "MD5:1/model.onnx" value: "0123" }',
     "Mismatched MD5 hash for file 1/model.onnx, expect: 0123, got: "),
    ('name: "checksum" parameters { key: "MD5:1/gone.bin" value: "0123" }',
     "failed to open text file for read 1/gone.bin"),
    ('name: "checksum" parameters { key: "SHA1:1/model.onnx" value: "0123" }', "Unsupported checksum algorithm"),
    ('name: "checksum" parameters { key: "model.onnx" value: "0123" }', "failed to parse key: model.onnx"),
    ('name: "relocation"', "repository agent 'relocation' is not available"),
])
def test_a_repository_agent_that_refuses_leaves_the_model_unavailable(tmp_path, agent, reason):
    """Triton's checksum agent refuses a model whose file does not hash as its config says (a corrupted or
    half-copied file), and a missing agent refuses the model; the other models keep serving."""
    make_repo(tmp_path, "good", versions=(1,))
    make_repo(tmp_path, "guarded", f"model_repository_agents {{ agents [ {{ {agent} }} ] }}", versions=(1,))
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    with running_server(repository=registry) as server:
        with httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
            states = {m["name"]: m for m in client.get_model_repository_index()}
            assert states["guarded"]["state"] == "UNAVAILABLE" and reason in states["guarded"]["reason"]
            assert client.is_model_ready("good")
